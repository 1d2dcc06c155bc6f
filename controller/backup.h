// Backup and restore of a controller's data dir, and the lock that tells a
// running controller apart from a stopped one.
//
// What a backup holds: fleet.db (releases, agents, rollouts, targets,
// events, blacklist), copied with SQLite's online backup API, so it is taken
// while the controller runs and is one consistent snapshot. What it does not
// hold:
//   - blobs/ (artifacts by sha256). They are content-addressed and written
//     once (temp file, fsync, rename), so a plain copy taken after the
//     database backup (`cp -a --no-clobber DATA_DIR/blobs BACKUP_DIR/`) is
//     consistent with it: every release in the snapshot had its blob renamed
//     in before the release row was committed. Restore checks that every
//     release's blob is present in the target data dir.
//   - telemetry.db (time series with a retention window); after a restore
//     history starts empty.
//
//   RETURN_IF_ERROR(BackupDataDir("/var/lib/fleet-controller", "/b/fleet.db"));
//   // controller stopped:
//   RETURN_IF_ERROR(RestoreDataDir("/b/fleet.db", "/var/lib/fleet-controller",
//                                  {}));
#ifndef FLEET_CONTROLLER_BACKUP_H_
#define FLEET_CONTROLLER_BACKUP_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace fleet::controller {

// An exclusive flock(2) on DATA_DIR/controller.lock, held by a running
// controller for its whole life and by restore while it swaps files. The
// kernel drops it when the process dies, so a crashed controller never
// leaves a stale lock behind.
class DataDirLock {
 public:
  // Creates the data dir (0700) if missing. FAILED_PRECONDITION naming the
  // data dir if another process (or another DataDirLock in this process)
  // holds it.
  static absl::StatusOr<DataDirLock> Acquire(const std::string& data_dir);

  DataDirLock(DataDirLock&& other) noexcept;
  DataDirLock& operator=(DataDirLock&& other) noexcept;
  DataDirLock(const DataDirLock&) = delete;
  DataDirLock& operator=(const DataDirLock&) = delete;
  ~DataDirLock();

 private:
  explicit DataDirLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

// Copies DATA_DIR/fleet.db into a new file `to` (one self-contained SQLite
// file, rollback journal mode) with the online backup API, checks it with
// PRAGMA integrity_check, fsyncs it and renames it into place. Safe while a
// controller writes the database. NOT_FOUND if there is no fleet.db;
// ALREADY_EXISTS if `to` exists (nothing is overwritten); the SQLite error
// otherwise. On failure no file is left at `to`.
absl::Status BackupDataDir(const std::string& data_dir, const std::string& to);

struct RestoreOptions {
  // Restore even if some releases' blobs are not in DATA_DIR/blobs (their
  // artifacts cannot be served until the blobs are copied in).
  bool allow_missing_blobs = false;
};

// What RestoreDataDir did.
struct RestoreResult {
  int backup_schema_version = 0;  // migrated to the latest on restore
  int releases = 0;
  // The data dir's previous fleet.db, moved aside; "" if there was none.
  std::string previous_database;
};

// Replaces DATA_DIR/fleet.db with the backup `from`. Refuses, changing
// nothing, with FAILED_PRECONDITION when a controller holds the data dir,
// when `from` is not a fleet store (no schema version or no releases
// table), has a newer schema than this binary knows, fails
// integrity_check, or names blobs missing from DATA_DIR/blobs (unless
// allowed). The previous database is checkpointed and kept beside it as
// fleet.db.before-restore-<unix seconds>; the restored one is migrated to
// the current schema.
absl::StatusOr<RestoreResult> RestoreDataDir(const std::string& from,
                                             const std::string& data_dir,
                                             const RestoreOptions& options);

// `fleet-controller backup|restore ...`: argv[0] is the program, argv[1]
// the subcommand. Returns the process exit code; errors name the problem
// and the fix on stderr.
int RunDataCommand(int argc, char** argv);

}  // namespace fleet::controller

#endif  // FLEET_CONTROLLER_BACKUP_H_
