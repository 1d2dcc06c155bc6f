#include "controller/backup.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/files.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "controller/blob_store.h"
#include "controller/store/store.h"

namespace fleet::controller {
namespace {

constexpr char kDatabaseName[] = "fleet.db";
constexpr char kLockName[] = "controller.lock";

struct CloseDatabase {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using DatabasePtr = std::unique_ptr<sqlite3, CloseDatabase>;

absl::Status SqliteError(sqlite3* db, const std::string& what) {
  return absl::InternalError(
      absl::StrCat(what, ": ", db ? sqlite3_errmsg(db) : "out of memory"));
}

absl::StatusOr<DatabasePtr> OpenDatabase(const std::string& path, int flags) {
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  DatabasePtr db(raw);
  if (rc != SQLITE_OK) return SqliteError(raw, "open " + path);
  sqlite3_busy_timeout(raw, 5000);
  return db;
}

// The single text value of `sql`'s first row; nullopt if no row.
absl::StatusOr<std::optional<std::string>> QueryText(sqlite3* db,
                                                     const char* sql) {
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr) != SQLITE_OK) {
    return SqliteError(db, sql);
  }
  absl::Cleanup finalize = [stmt] { sqlite3_finalize(stmt); };
  const int rc = sqlite3_step(stmt);
  if (rc == SQLITE_DONE) return std::optional<std::string>();
  if (rc != SQLITE_ROW) return SqliteError(db, sql);
  const unsigned char* text = sqlite3_column_text(stmt, 0);
  return std::optional<std::string>(
      text == nullptr ? "" : reinterpret_cast<const char*>(text));
}

absl::Status CheckIntegrity(sqlite3* db, const std::string& path) {
  ASSIGN_OR_RETURN(std::optional<std::string> result,
                   QueryText(db, "PRAGMA integrity_check"));
  if (result.value_or("") != "ok") {
    return absl::FailedPreconditionError(absl::StrCat(
        path, " fails PRAGMA integrity_check: ", result.value_or("no result"),
        "; use another backup"));
  }
  return absl::OkStatus();
}

// Copies all of `from` into `to` in one step: one read transaction on the
// source, so the copy is a consistent snapshot even while a controller
// writes (WAL readers never block the writer).
absl::Status CopyDatabase(sqlite3* from, sqlite3* to) {
  sqlite3_backup* backup = sqlite3_backup_init(to, "main", from, "main");
  if (backup == nullptr) return SqliteError(to, "start backup");
  int rc;
  do {
    rc = sqlite3_backup_step(backup, -1);
    if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) sqlite3_sleep(50);
  } while (rc == SQLITE_OK || rc == SQLITE_BUSY || rc == SQLITE_LOCKED);
  sqlite3_backup_finish(backup);
  if (rc != SQLITE_DONE) return SqliteError(to, "backup step");
  return absl::OkStatus();
}

// Schema version of a fleet store; FAILED_PRECONDITION if `db` is not one.
absl::StatusOr<int> FleetSchemaVersion(sqlite3* db, const std::string& path) {
  absl::StatusOr<std::optional<std::string>> releases = QueryText(
      db,
      "SELECT name FROM sqlite_master WHERE type = 'table' AND name = "
      "'releases'");
  if (!releases.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        path, " is not an SQLite database (", releases.status().message(),
        "); give a file written by `fleet-controller backup`"));
  }
  absl::StatusOr<std::optional<std::string>> version =
      releases->has_value()
          ? QueryText(db, "SELECT value FROM meta WHERE key = 'schema_version'")
          : absl::StatusOr<std::optional<std::string>>(std::nullopt);
  int number = 0;
  if (!version.ok() || !version->has_value() ||
      !absl::SimpleAtoi(**version, &number) || number < 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        path,
        " is not a fleet controller store (no releases table or schema "
        "version); give a file written by `fleet-controller backup`"));
  }
  return number;
}

}  // namespace

absl::StatusOr<DataDirLock> DataDirLock::Acquire(const std::string& data_dir) {
  RETURN_IF_ERROR(MakeDirs(data_dir, 0700));
  const std::string path = JoinPath(data_dir, kLockName);
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return absl::ErrnoToStatus(errno, "open " + path);
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    close(fd);
    if (error == EWOULDBLOCK) {
      return absl::FailedPreconditionError(absl::StrCat(
          "a fleet-controller is running on ", data_dir, " (it holds ", path,
          "); stop it first (systemctl stop fleet-controller)"));
    }
    return absl::ErrnoToStatus(error, "flock " + path);
  }
  return DataDirLock(fd);
}

DataDirLock::DataDirLock(DataDirLock&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)) {}

DataDirLock& DataDirLock::operator=(DataDirLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

DataDirLock::~DataDirLock() {
  if (fd_ >= 0) close(fd_);  // releases the flock
}

absl::Status BackupDataDir(const std::string& data_dir, const std::string& to) {
  const std::string source = JoinPath(data_dir, kDatabaseName);
  if (!PathExists(source)) {
    return absl::NotFoundError(absl::StrCat("no ", kDatabaseName, " in ",
                                            data_dir, "; check --data-dir"));
  }
  if (PathExists(to)) {
    return absl::AlreadyExistsError(
        absl::StrCat(to,
                     " exists; remove it or choose another --to (nothing is "
                     "overwritten)"));
  }
  // Not read-only: a WAL reader may need to create the -shm file when the
  // controller is stopped. It only ever reads.
  ASSIGN_OR_RETURN(DatabasePtr from,
                   OpenDatabase(source, SQLITE_OPEN_READWRITE));
  ASSIGN_OR_RETURN(int version, FleetSchemaVersion(from.get(), source));
  (void)version;

  const std::string temp = absl::StrCat(to, ".tmp-", getpid());
  absl::Cleanup remove_temp = [&temp] { (void)RemoveFile(temp); };
  {
    ASSIGN_OR_RETURN(
        DatabasePtr copy,
        OpenDatabase(temp, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                               SQLITE_OPEN_EXCLUSIVE));
    RETURN_IF_ERROR(CopyDatabase(from.get(), copy.get()));
    // The copy inherits WAL mode from the source's header; a backup must be
    // one file that can be moved alone.
    if (sqlite3_exec(copy.get(), "PRAGMA journal_mode=DELETE", nullptr, nullptr,
                     nullptr) != SQLITE_OK) {
      return SqliteError(copy.get(), "journal_mode of " + temp);
    }
    RETURN_IF_ERROR(CheckIntegrity(copy.get(), temp));
  }
  RETURN_IF_ERROR(FsyncPath(temp));
  if (chmod(temp.c_str(), 0600) != 0) {
    return absl::ErrnoToStatus(errno, "chmod " + temp);
  }
  RETURN_IF_ERROR(DurableRename(temp, to));
  std::move(remove_temp).Cancel();
  return absl::OkStatus();
}

absl::StatusOr<RestoreResult> RestoreDataDir(const std::string& from,
                                             const std::string& data_dir,
                                             const RestoreOptions& options) {
  if (!PathExists(from)) {
    return absl::NotFoundError(
        absl::StrCat(from, " does not exist; check --from"));
  }
  ASSIGN_OR_RETURN(DataDirLock lock, DataDirLock::Acquire(data_dir));
  RestoreResult result;

  // 1. Check the backup and copy it to a temp file beside fleet.db.
  const std::string target = JoinPath(data_dir, kDatabaseName);
  const std::string temp = absl::StrCat(target, ".restore-", getpid());
  absl::Cleanup remove_temp = [&temp] {
    for (const char* suffix : {"", "-wal", "-shm", "-journal"}) {
      (void)RemoveFile(temp + suffix);
    }
  };
  {
    ASSIGN_OR_RETURN(DatabasePtr backup,
                     OpenDatabase(from, SQLITE_OPEN_READONLY));
    ASSIGN_OR_RETURN(result.backup_schema_version,
                     FleetSchemaVersion(backup.get(), from));
    if (result.backup_schema_version > Store::LatestSchemaVersion()) {
      return absl::FailedPreconditionError(absl::StrCat(
          from, " has schema version ", result.backup_schema_version,
          " but this fleet-controller knows only up to ",
          Store::LatestSchemaVersion(),
          "; restore it with the fleet-controller that wrote it (or newer)"));
    }
    RETURN_IF_ERROR(CheckIntegrity(backup.get(), from));
    ASSIGN_OR_RETURN(
        DatabasePtr copy,
        OpenDatabase(temp, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                               SQLITE_OPEN_EXCLUSIVE));
    RETURN_IF_ERROR(CopyDatabase(backup.get(), copy.get()));
  }

  // 2. Migrate the copy to today's schema and check its releases' blobs.
  {
    ASSIGN_OR_RETURN(std::unique_ptr<Store> store, Store::Open(temp));
    ASSIGN_OR_RETURN(std::vector<v1::Release> releases,
                     store->ListReleases("", ""));
    result.releases = static_cast<int>(releases.size());
    ASSIGN_OR_RETURN(std::unique_ptr<BlobStore> blobs,
                     BlobStore::Open(data_dir));
    std::vector<std::string> missing;
    for (const v1::Release& release : releases) {
      Digest digest{};
      if (release.sha256().size() != digest.size()) continue;
      std::copy(release.sha256().begin(), release.sha256().end(),
                digest.begin());
      if (!blobs->Contains(digest)) {
        missing.push_back(
            absl::StrCat(release.product(), " ", release.version(), " ",
                         release.platform(), " (", DigestToHex(digest), ")"));
      }
    }
    if (!missing.empty() && !options.allow_missing_blobs) {
      return absl::FailedPreconditionError(absl::StrCat(
          missing.size(), " release(s) of the backup have no blob in ",
          JoinPath(data_dir, "blobs"), ": ",
          absl::StrJoin(missing.begin(),
                        missing.begin() + std::min<size_t>(missing.size(), 5),
                        ", "),
          missing.size() > 5 ? ", ..." : "",
          "; copy the blobs saved with the backup first (cp -a "
          "--no-clobber BACKUP/blobs DATA_DIR/) or pass "
          "--allow-missing-blobs"));
    }
  }  // closing the Store checkpoints the copy's WAL into it

  // 3. Set the current database aside (checkpointed, so the file alone is
  // complete) and rename the copy in. A stale -wal next to the new file
  // would be replayed onto it, so none may survive.
  if (PathExists(target)) {
    {
      ASSIGN_OR_RETURN(DatabasePtr current,
                       OpenDatabase(target, SQLITE_OPEN_READWRITE));
      if (sqlite3_exec(current.get(), "PRAGMA wal_checkpoint(TRUNCATE)",
                       nullptr, nullptr, nullptr) != SQLITE_OK) {
        return SqliteError(current.get(), "checkpoint " + target);
      }
    }
    result.previous_database = absl::StrCat(target, ".before-restore-",
                                            absl::ToUnixSeconds(absl::Now()));
    RETURN_IF_ERROR(DurableRename(target, result.previous_database));
  }
  for (const char* suffix : {"-wal", "-shm"}) {
    RETURN_IF_ERROR(RemoveFile(target + suffix));
    RETURN_IF_ERROR(RemoveFile(temp + suffix));
  }
  RETURN_IF_ERROR(FsyncPath(temp));
  RETURN_IF_ERROR(DurableRename(temp, target));
  std::move(remove_temp).Cancel();
  return result;
}

int RunDataCommand(int argc, char** argv) {
  CLI::App app{
      "fleet-controller backup|restore: copy the controller's "
      "database out and back"};
  app.require_subcommand(1);
  std::string data_dir, to, from;
  bool allow_missing_blobs = false;

  CLI::App* backup = app.add_subcommand(
      "backup",
      "Copy DATA_DIR/fleet.db to a new file (SQLite online backup; safe "
      "while the controller runs). Copy DATA_DIR/blobs afterwards: "
      "cp -a --no-clobber DATA_DIR/blobs BACKUP_DIR/");
  backup->add_option("--data-dir", data_dir, "the controller's data dir")
      ->required();
  backup->add_option("--to", to, "the backup file to create (must not exist)")
      ->required();

  CLI::App* restore = app.add_subcommand(
      "restore",
      "Replace DATA_DIR/fleet.db with a backup (the controller must be "
      "stopped; the old database is kept as fleet.db.before-restore-*)");
  restore->add_option("--from", from, "a file written by backup")->required();
  restore->add_option("--data-dir", data_dir, "the controller's data dir")
      ->required();
  restore->add_flag("--allow-missing-blobs", allow_missing_blobs,
                    "restore even if artifacts of some releases are not in "
                    "DATA_DIR/blobs");
  CLI11_PARSE(app, argc, argv);

  if (backup->parsed()) {
    absl::Status status = BackupDataDir(data_dir, to);
    if (!status.ok()) {
      std::fprintf(stderr, "backup failed: %s\n",
                   std::string(status.message()).c_str());
      return 1;
    }
    std::printf("backed up %s to %s\n",
                JoinPath(data_dir, kDatabaseName).c_str(), to.c_str());
    return 0;
  }
  RestoreOptions options;
  options.allow_missing_blobs = allow_missing_blobs;
  absl::StatusOr<RestoreResult> result =
      RestoreDataDir(from, data_dir, options);
  if (!result.ok()) {
    std::fprintf(stderr, "restore failed: %s\n",
                 std::string(result.status().message()).c_str());
    return 1;
  }
  std::printf("restored %s into %s (schema version %d, %d releases)\n",
              from.c_str(), data_dir.c_str(), result->backup_schema_version,
              result->releases);
  if (!result->previous_database.empty()) {
    std::printf("previous database kept as %s\n",
                result->previous_database.c_str());
  }
  return 0;
}

}  // namespace fleet::controller
