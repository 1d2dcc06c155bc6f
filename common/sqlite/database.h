// A thin RAII layer over SQLite (in the spirit of Chromium's sql/).
//
//   ASSIGN_OR_RETURN(std::unique_ptr<Database> db, Database::Open(path));
//   RETURN_IF_ERROR(db->Migrate(kMigrations));
//   Transaction txn(*db);
//   RETURN_IF_ERROR(txn.Begin());
//   ASSIGN_OR_RETURN(Statement* insert, db->Cached(kInsertReleaseSql));
//   insert->BindText(1, product);
//   RETURN_IF_ERROR(insert->Run());
//   RETURN_IF_ERROR(txn.Commit());   // destructor rolls back otherwise
//
// Thread-safety: a Database and its statements belong to one thread at a
// time (callers serialize access, e.g. one writer thread).
#ifndef FLEET_COMMON_SQLITE_DATABASE_H_
#define FLEET_COMMON_SQLITE_DATABASE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

struct sqlite3;
struct sqlite3_stmt;

namespace fleet::sqlite {

// A prepared statement. Bind parameters are 1-based, columns 0-based.
class Statement {
 public:
  ~Statement();
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  void BindInt64(int index, int64_t value);
  void BindText(int index, absl::string_view value);
  void BindBlob(int index, absl::string_view value);
  void BindNull(int index);

  // Advances to the next row: true if a row is available, false when done.
  // INTERNAL (or the mapped SQLite error) on failure, e.g. a constraint
  // violation maps to ALREADY_EXISTS for UNIQUE/PRIMARY KEY.
  absl::StatusOr<bool> Step();
  // Steps until done, for statements that return no rows; then Reset().
  absl::Status Run();
  // Resets the statement and clears bindings for reuse.
  void Reset();

  int64_t ColumnInt64(int col) const;
  std::string ColumnText(int col) const;
  std::string ColumnBlob(int col) const;
  bool ColumnIsNull(int col) const;

 private:
  friend class Database;
  Statement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  sqlite3* db_;
  sqlite3_stmt* stmt_;
};

// One schema step. Migrations are applied in order, each in its own
// transaction, and the schema version (index + 1) is stored in the `meta`
// table; a database whose version is newer than the code knows is refused
// with FAILED_PRECONDITION.
struct Migration {
  const char* description;
  const char* sql;  // may hold several statements
};

class Database {
 public:
  // Opens (creating if missing) the file, turns on WAL, foreign keys,
  // synchronous=NORMAL (FULL when `durable`), and a busy timeout.
  static absl::StatusOr<std::unique_ptr<Database>> Open(const std::string& path,
                                                        bool durable = false);
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  // Runs one or more statements that return no rows.
  absl::Status Execute(absl::string_view sql);

  // A new statement owned by the caller.
  absl::StatusOr<std::unique_ptr<Statement>> Prepare(absl::string_view sql);
  // A statement cached by its SQL text, reset and ready; owned by the
  // Database. INVALID_ARGUMENT / INTERNAL if it does not compile.
  absl::StatusOr<Statement*> Cached(const char* sql);

  absl::Status Migrate(const std::vector<Migration>& migrations);
  // 0 before any migration.
  absl::StatusOr<int> SchemaVersion();

  int64_t LastInsertRowId() const;
  int Changes() const;  // rows changed by the last statement
  sqlite3* raw() const { return db_; }
  const std::string& path() const { return path_; }

 private:
  Database(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  sqlite3* db_;
  std::string path_;
  std::unordered_map<const char*, std::unique_ptr<Statement>> cache_;
};

// BEGIN IMMEDIATE on Begin(); rolls back in the destructor unless Commit()
// succeeded.
class Transaction {
 public:
  explicit Transaction(Database& db) : db_(db) {}
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;

  absl::Status Begin();
  absl::Status Commit();
  void Rollback();

 private:
  Database& db_;
  bool open_ = false;
};

}  // namespace fleet::sqlite

#endif  // FLEET_COMMON_SQLITE_DATABASE_H_
