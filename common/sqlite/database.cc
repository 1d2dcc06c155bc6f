#include "common/sqlite/database.h"

#include <sqlite3.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace fleet::sqlite {
namespace {

constexpr int kBusyTimeoutMs = 5000;
constexpr size_t kSqlSnippetLength = 80;

constexpr char kCreateMetaSql[] =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT "
    "NULL)";
constexpr char kSelectVersionSql[] =
    "SELECT value FROM meta WHERE key = 'schema_version'";
constexpr char kUpsertVersionSql[] =
    "INSERT INTO meta(key, value) VALUES('schema_version', ?) "
    "ON CONFLICT(key) DO UPDATE SET value = excluded.value";

std::string Snippet(absl::string_view sql) {
  std::string out;
  for (char c : sql.substr(0, kSqlSnippetLength)) {
    out.push_back(c == '\n' || c == '\t' ? ' ' : c);
  }
  if (sql.size() > kSqlSnippetLength) out += "...";
  return out;
}

absl::StatusCode CodeFor(int extended) {
  switch (extended) {
    case SQLITE_CONSTRAINT_UNIQUE:
    case SQLITE_CONSTRAINT_PRIMARYKEY:
      return absl::StatusCode::kAlreadyExists;
    default:
      break;
  }
  switch (extended & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return absl::StatusCode::kUnavailable;
    case SQLITE_FULL:
      return absl::StatusCode::kResourceExhausted;
    default:
      return absl::StatusCode::kInternal;
  }
}

absl::Status SqliteError(sqlite3* db, int rc, absl::string_view what,
                         absl::string_view sql) {
  int extended = db != nullptr ? sqlite3_extended_errcode(db) : rc;
  // The connection's last error may be stale; trust `rc` for the class.
  if ((extended & 0xff) != (rc & 0xff)) extended = rc;
  const char* msg = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  return absl::Status(CodeFor(extended),
                      absl::StrCat(what, ": ", msg, " (sqlite code ", extended,
                                   ") in \"", Snippet(sql), "\""));
}

absl::StatusOr<sqlite3_stmt*> PrepareRaw(sqlite3* db, absl::string_view sql,
                                         unsigned int flags) {
  sqlite3_stmt* stmt = nullptr;
  const char* tail = nullptr;
  int rc = sqlite3_prepare_v3(db, sql.data(), static_cast<int>(sql.size()),
                              flags, &stmt, &tail);
  if (rc != SQLITE_OK) {
    sqlite3_finalize(stmt);
    return SqliteError(db, rc, "prepare", sql);
  }
  if (stmt == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("prepare: no statement in \"", Snippet(sql), "\""));
  }
  // Prepare compiles only the first statement; silently dropping the rest
  // would hide a bug, so only trailing whitespace/semicolons are allowed.
  absl::string_view rest(tail, sql.data() + sql.size() - tail);
  for (char c : rest) {
    if (c != ' ' && c != '\n' && c != '\t' && c != '\r' && c != ';') {
      sqlite3_finalize(stmt);
      return absl::InvalidArgumentError(
          absl::StrCat("prepare: more than one statement in \"", Snippet(sql),
                       "\" (use Execute for scripts)"));
    }
  }
  return stmt;
}

}  // namespace

// ---------------------------------------------------------------------------
// Statement

Statement::~Statement() { sqlite3_finalize(stmt_); }

void Statement::BindInt64(int index, int64_t value) {
  sqlite3_bind_int64(stmt_, index, value);
}

void Statement::BindText(int index, absl::string_view value) {
  sqlite3_bind_text64(stmt_, index, value.data(), value.size(),
                      SQLITE_TRANSIENT, SQLITE_UTF8);
}

void Statement::BindBlob(int index, absl::string_view value) {
  // A null data pointer would bind NULL rather than an empty blob.
  static const char kEmpty = 0;
  sqlite3_bind_blob64(stmt_, index, value.empty() ? &kEmpty : value.data(),
                      value.size(), SQLITE_TRANSIENT);
}

void Statement::BindNull(int index) { sqlite3_bind_null(stmt_, index); }

absl::StatusOr<bool> Statement::Step() {
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  absl::Status status = SqliteError(db_, rc, "step", sqlite3_sql(stmt_));
  // Resetting makes the statement reusable and releases its read lock.
  sqlite3_reset(stmt_);
  return status;
}

absl::Status Statement::Run() {
  while (true) {
    absl::StatusOr<bool> row = Step();
    if (!row.ok()) {
      Reset();
      return row.status();
    }
    if (!*row) break;
  }
  Reset();
  return absl::OkStatus();
}

void Statement::Reset() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
}

int64_t Statement::ColumnInt64(int col) const {
  return sqlite3_column_int64(stmt_, col);
}

std::string Statement::ColumnText(int col) const {
  const unsigned char* text = sqlite3_column_text(stmt_, col);
  int size = sqlite3_column_bytes(stmt_, col);
  if (text == nullptr) return "";
  return std::string(reinterpret_cast<const char*>(text),
                     static_cast<size_t>(size));
}

std::string Statement::ColumnBlob(int col) const {
  const void* data = sqlite3_column_blob(stmt_, col);
  int size = sqlite3_column_bytes(stmt_, col);
  if (data == nullptr) return "";
  return std::string(static_cast<const char*>(data), static_cast<size_t>(size));
}

bool Statement::ColumnIsNull(int col) const {
  return sqlite3_column_type(stmt_, col) == SQLITE_NULL;
}

// ---------------------------------------------------------------------------
// Database

absl::StatusOr<std::unique_ptr<Database>> Database::Open(
    const std::string& path, bool durable) {
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(
      path.c_str(), &raw,
      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
      nullptr);
  if (rc != SQLITE_OK) {
    absl::Status status = SqliteError(raw, rc, "open " + path, "");
    sqlite3_close(raw);
    return status;
  }
  sqlite3_extended_result_codes(raw, 1);
  std::unique_ptr<Database> db(new Database(raw, path));
  sqlite3_busy_timeout(raw, kBusyTimeoutMs);
  RETURN_IF_ERROR(db->Execute("PRAGMA journal_mode=WAL"));
  RETURN_IF_ERROR(db->Execute("PRAGMA foreign_keys=ON"));
  RETURN_IF_ERROR(db->Execute(durable ? "PRAGMA synchronous=FULL"
                                      : "PRAGMA synchronous=NORMAL"));
  return db;
}

Database::~Database() {
  // Cached statements must be finalized before the connection can close.
  cache_.clear();
  sqlite3_close(db_);
}

absl::Status Database::Execute(absl::string_view sql) {
  // sqlite3_exec needs a NUL-terminated string.
  std::string text(sql.data(), sql.size());
  char* error = nullptr;
  int rc = sqlite3_exec(db_, text.c_str(), nullptr, nullptr, &error);
  if (rc != SQLITE_OK) {
    std::string msg = error != nullptr ? error : sqlite3_errstr(rc);
    sqlite3_free(error);
    int extended = sqlite3_extended_errcode(db_);
    if ((extended & 0xff) != (rc & 0xff)) extended = rc;
    return absl::Status(CodeFor(extended),
                        absl::StrCat("execute: ", msg, " (sqlite code ",
                                     extended, ") in \"", Snippet(sql), "\""));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Statement>> Database::Prepare(
    absl::string_view sql) {
  ASSIGN_OR_RETURN(sqlite3_stmt * stmt, PrepareRaw(db_, sql, 0));
  return std::unique_ptr<Statement>(new Statement(db_, stmt));
}

absl::StatusOr<Statement*> Database::Cached(const char* sql) {
  auto it = cache_.find(sql);
  if (it != cache_.end()) {
    it->second->Reset();
    return it->second.get();
  }
  ASSIGN_OR_RETURN(sqlite3_stmt * stmt,
                   PrepareRaw(db_, sql, SQLITE_PREPARE_PERSISTENT));
  auto inserted =
      cache_.emplace(sql, std::unique_ptr<Statement>(new Statement(db_, stmt)));
  return inserted.first->second.get();
}

absl::StatusOr<int> Database::SchemaVersion() {
  RETURN_IF_ERROR(Execute(kCreateMetaSql));
  ASSIGN_OR_RETURN(std::unique_ptr<Statement> select,
                   Prepare(kSelectVersionSql));
  ASSIGN_OR_RETURN(bool has_row, select->Step());
  if (!has_row) return 0;
  std::string text = select->ColumnText(0);
  int version = 0;
  for (char c : text) {
    if (c < '0' || c > '9' || version > 100'000'000) {
      return absl::DataLossError(absl::StrCat(
          "meta.schema_version is not a number: \"", text, "\" in ", path_));
    }
    version = version * 10 + (c - '0');
  }
  if (text.empty()) {
    return absl::DataLossError(
        absl::StrCat("meta.schema_version is empty in ", path_));
  }
  return version;
}

absl::Status Database::Migrate(const std::vector<Migration>& migrations) {
  ASSIGN_OR_RETURN(int current, SchemaVersion());
  const int known = static_cast<int>(migrations.size());
  if (current > known) {
    return absl::FailedPreconditionError(absl::StrCat(
        "database ", path_, " has schema version ", current,
        " but this binary knows only up to ", known,
        "; refusing to open a database written by a newer version"));
  }
  for (int i = current; i < known; ++i) {
    const Migration& m = migrations[i];
    Transaction txn(*this);
    RETURN_IF_ERROR(txn.Begin());
    // Re-read inside the write lock: another process may have migrated
    // between our first read and BEGIN IMMEDIATE.
    ASSIGN_OR_RETURN(int locked_version, SchemaVersion());
    if (locked_version > i) {
      if (locked_version > known) {
        return absl::FailedPreconditionError(absl::StrCat(
            "database ", path_, " has schema version ", locked_version,
            " but this binary knows only up to ", known));
      }
      i = locked_version - 1;
      continue;
    }
    absl::Status applied = Execute(m.sql);
    if (!applied.ok()) {
      return absl::Status(applied.code(),
                          absl::StrCat("migration ", i + 1, " (", m.description,
                                       ") failed: ", applied.message()));
    }
    ASSIGN_OR_RETURN(std::unique_ptr<Statement> bump,
                     Prepare(kUpsertVersionSql));
    bump->BindText(1, absl::StrCat(i + 1));
    RETURN_IF_ERROR(bump->Run());
    RETURN_IF_ERROR(txn.Commit());
  }
  return absl::OkStatus();
}

int64_t Database::LastInsertRowId() const {
  return sqlite3_last_insert_rowid(db_);
}

int Database::Changes() const { return sqlite3_changes(db_); }

// ---------------------------------------------------------------------------
// Transaction

Transaction::~Transaction() {
  if (open_) Rollback();
}

absl::Status Transaction::Begin() {
  if (open_) {
    return absl::FailedPreconditionError("transaction already begun");
  }
  RETURN_IF_ERROR(db_.Execute("BEGIN IMMEDIATE"));
  open_ = true;
  return absl::OkStatus();
}

absl::Status Transaction::Commit() {
  if (!open_) {
    return absl::FailedPreconditionError("commit without an open transaction");
  }
  absl::Status status = db_.Execute("COMMIT");
  // On a failed COMMIT (e.g. SQLITE_BUSY) the transaction is still open, and
  // the destructor's rollback releases it.
  if (status.ok()) open_ = false;
  return status;
}

void Transaction::Rollback() {
  if (!open_) return;
  open_ = false;
  // Ignored: fails only when SQLite already rolled back on its own (e.g.
  // after SQLITE_FULL), which is the outcome we want anyway.
  (void)db_.Execute("ROLLBACK");
}

}  // namespace fleet::sqlite
