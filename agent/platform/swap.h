// Atomic replacement of the managed program's executable.
//
// Install protocol (Linux and macOS, one file system):
//   Stage:    copy the verified artifact to EXEC.fleet-new, fsync, chmod 0755
//   Swap:     hard-link EXEC to EXEC.fleet-backup (replacing a stale one),
//             rename(EXEC.fleet-new, EXEC), fsync the directory
//   Commit:   remove EXEC.fleet-backup
//   Rollback: rename(EXEC.fleet-backup, EXEC), fsync the directory
// At no instant is EXEC missing or partial: readers see the old complete
// file or the new complete file. When EXEC does not exist yet (first
// install) there is no backup and Rollback removes EXEC again.
//
// Every step is idempotent, so after a crash at any point the updater can
// repeat Rollback (or Commit) and reach a clean state.
//
// Windows cannot rename over a running executable: it needs rename-aside
// then place-new, and a restart through the service manager (later issue).
//
//   ExecutableSwap swap("/opt/app/bin/app");
//   RETURN_IF_ERROR(swap.Stage(download_path, manifest_digest));
//   RETURN_IF_ERROR(swap.Swap());
//   if (healthy) RETURN_IF_ERROR(swap.Commit());
//   else RETURN_IF_ERROR(swap.Rollback(manifest_digest));
//
// Not thread-safe: one updater drives one ExecutableSwap.
#ifndef FLEET_AGENT_PLATFORM_SWAP_H_
#define FLEET_AGENT_PLATFORM_SWAP_H_

#include <string>

#include "absl/status/status.h"
#include "common/sha256.h"

namespace fleet::agent {

class ExecutableSwap {
 public:
  explicit ExecutableSwap(std::string exec_path);

  const std::string& exec_path() const { return exec_path_; }
  std::string staged_path() const { return exec_path_ + ".fleet-new"; }
  std::string backup_path() const { return exec_path_ + ".fleet-backup"; }

  // Copies `source` to staged_path() (replacing a leftover), hashing the
  // bytes as they are written, fsyncs it and makes it mode 0755. EXEC is not
  // touched. DATA_LOSS if the copy's digest is not `expected` (the staged
  // file is removed); the errno status naming the path on I/O errors.
  absl::Status Stage(const std::string& source, const Digest& expected);

  // Puts the staged file in place of EXEC, keeping the old one as the
  // backup. FAILED_PRECONDITION if nothing is staged. On error EXEC is
  // unchanged (still the old complete file, or still absent).
  absl::Status Swap();

  // Restores what EXEC was before Swap(). With a backup: renames it over
  // EXEC. Without one: if EXEC holds `swapped_in` (the digest Swap() put in
  // place) the swap was a first install and EXEC is removed; otherwise EXEC
  // is already the old file and nothing changes. Also removes a staged file.
  absl::Status Rollback(const Digest& swapped_in);

  // Accepts the swap: removes the backup and any staged leftover.
  absl::Status Commit();

  bool HasBackup() const;

 private:
  std::string exec_path_;
};

}  // namespace fleet::agent

#endif  // FLEET_AGENT_PLATFORM_SWAP_H_
