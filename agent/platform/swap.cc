#include "agent/platform/swap.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/status_macros.h"

namespace fleet::agent {
namespace {

absl::Status CopyAndHash(const std::string& source, const std::string& dest,
                         Digest* digest) {
  int in = open(source.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) return absl::ErrnoToStatus(errno, "open " + source);
  absl::Cleanup close_in = [in] { close(in); };
  int out = open(dest.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (out < 0) return absl::ErrnoToStatus(errno, "create " + dest);
  absl::Cleanup close_out = [&out] {
    if (out >= 0) close(out);
  };
  Sha256 hasher;
  std::vector<char> buf(1 << 20);
  for (;;) {
    ssize_t n = read(in, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, "read " + source);
    }
    if (n == 0) break;
    hasher.Update(buf.data(), static_cast<size_t>(n));
    for (ssize_t off = 0; off < n;) {
      ssize_t w = write(out, buf.data() + off, static_cast<size_t>(n - off));
      if (w < 0) {
        if (errno == EINTR) continue;
        return absl::ErrnoToStatus(errno, "write " + dest);
      }
      off += w;
    }
  }
  if (fchmod(out, 0755) != 0)
    return absl::ErrnoToStatus(errno, "chmod " + dest);
  if (fsync(out) != 0) return absl::ErrnoToStatus(errno, "fsync " + dest);
  int fd = out;
  out = -1;
  // A close error after a successful fsync can still mean lost data (NFS).
  if (close(fd) != 0) return absl::ErrnoToStatus(errno, "close " + dest);
  *digest = hasher.Finish();
  return absl::OkStatus();
}

}  // namespace

ExecutableSwap::ExecutableSwap(std::string exec_path)
    : exec_path_(std::move(exec_path)) {}

bool ExecutableSwap::HasBackup() const { return PathExists(backup_path()); }

absl::Status ExecutableSwap::Stage(const std::string& source,
                                   const Digest& expected) {
  const std::string staged = staged_path();
  RETURN_IF_ERROR(RemoveFile(staged));
  Digest digest;
  absl::Status copied = CopyAndHash(source, staged, &digest);
  if (!copied.ok()) {
    (void)RemoveFile(staged);
    return copied;
  }
  if (digest != expected) {
    (void)RemoveFile(staged);
    return absl::DataLossError(absl::StrCat(
        "staged copy of ", source, " has sha256 ", DigestToHex(digest),
        ", expected ", DigestToHex(expected)));
  }
  return FsyncDir(Dirname(exec_path_));
}

absl::Status ExecutableSwap::Swap() {
  const std::string staged = staged_path();
  const std::string backup = backup_path();
  if (!PathExists(staged)) {
    return absl::FailedPreconditionError("nothing staged at " + staged);
  }
  // link(2) never replaces, and a stale backup belongs to an update that
  // was already committed or rolled back.
  RETURN_IF_ERROR(RemoveFile(backup));
  if (link(exec_path_.c_str(), backup.c_str()) != 0 && errno != ENOENT) {
    return absl::ErrnoToStatus(errno, "link " + exec_path_ + " -> " + backup);
  }
  if (rename(staged.c_str(), exec_path_.c_str()) != 0) {
    absl::Status status =
        absl::ErrnoToStatus(errno, "rename " + staged + " -> " + exec_path_);
    (void)RemoveFile(backup);
    return status;
  }
  return FsyncDir(Dirname(exec_path_));
}

absl::Status ExecutableSwap::Rollback(const Digest& swapped_in) {
  const std::string backup = backup_path();
  RETURN_IF_ERROR(RemoveFile(staged_path()));
  if (PathExists(backup)) {
    if (rename(backup.c_str(), exec_path_.c_str()) != 0) {
      return absl::ErrnoToStatus(errno,
                                 "rename " + backup + " -> " + exec_path_);
    }
    // rename(2) between two links of one file does nothing; that happens
    // when a crash fell between link() and rename() in Swap().
    RETURN_IF_ERROR(RemoveFile(backup));
    return FsyncDir(Dirname(exec_path_));
  }
  if (!PathExists(exec_path_)) return absl::OkStatus();
  absl::StatusOr<Digest> current = Sha256OfFile(exec_path_);
  if (!current.ok()) return current.status();
  if (*current != swapped_in) return absl::OkStatus();
  RETURN_IF_ERROR(RemoveFile(exec_path_));
  return FsyncDir(Dirname(exec_path_));
}

absl::Status ExecutableSwap::Commit() {
  RETURN_IF_ERROR(RemoveFile(backup_path()));
  RETURN_IF_ERROR(RemoveFile(staged_path()));
  return FsyncDir(Dirname(exec_path_));
}

}  // namespace fleet::agent
