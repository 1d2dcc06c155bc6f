#include "common/sqlite/database.h"

#include <stdlib.h>

#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace fleet::sqlite {
namespace {

constexpr char kInsertItemSql[] = "INSERT INTO items(name, data) VALUES(?, ?)";
constexpr char kCountItemsSql[] = "SELECT COUNT(*) FROM items";
constexpr char kSelectDataSql[] = "SELECT data FROM items WHERE name = ?";

const std::vector<Migration>& Migrations() {
  static const std::vector<Migration> kMigrations = {
      {"items",
       "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT NOT "
       "NULL UNIQUE, data BLOB)"},
      {"index on data", "CREATE INDEX items_by_data ON items(data)"},
  };
  return kMigrations;
}

class DatabaseTest : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::TempDir() + "/database_test_XXXXXX";
    ASSERT_NE(mkdtemp(dir_.data()), nullptr);
    path_ = dir_ + "/test.db";
  }
  void TearDown() override {
    std::string cmd = "rm -rf '" + dir_ + "'";
    ASSERT_EQ(system(cmd.c_str()), 0);
  }

  std::unique_ptr<Database> OpenMigrated() {
    absl::StatusOr<std::unique_ptr<Database>> db = Database::Open(path_);
    EXPECT_TRUE(db.ok()) << db.status();
    if (!db.ok()) return nullptr;
    absl::Status s = (*db)->Migrate(Migrations());
    EXPECT_TRUE(s.ok()) << s;
    return *std::move(db);
  }

  int64_t CountItems(Database& db) {
    absl::StatusOr<Statement*> count = db.Cached(kCountItemsSql);
    EXPECT_TRUE(count.ok()) << count.status();
    absl::StatusOr<bool> row = (*count)->Step();
    EXPECT_TRUE(row.ok() && *row);
    return (*count)->ColumnInt64(0);
  }

  absl::Status Insert(Database& db, absl::string_view name,
                      absl::string_view data) {
    absl::StatusOr<Statement*> insert = db.Cached(kInsertItemSql);
    if (!insert.ok()) return insert.status();
    (*insert)->BindText(1, name);
    (*insert)->BindBlob(2, data);
    return (*insert)->Run();
  }

  std::string dir_;
  std::string path_;
};

TEST_F(DatabaseTest, OpenTurnsOnWalAndForeignKeys) {
  std::unique_ptr<Database> db = OpenMigrated();
  ASSERT_NE(db, nullptr);
  absl::StatusOr<std::unique_ptr<Statement>> mode =
      db->Prepare("PRAGMA journal_mode");
  ASSERT_TRUE(mode.ok());
  ASSERT_TRUE(*(*mode)->Step());
  EXPECT_EQ((*mode)->ColumnText(0), "wal");
  absl::StatusOr<std::unique_ptr<Statement>> fk =
      db->Prepare("PRAGMA foreign_keys");
  ASSERT_TRUE(fk.ok());
  ASSERT_TRUE(*(*fk)->Step());
  EXPECT_EQ((*fk)->ColumnInt64(0), 1);
  EXPECT_EQ(db->path(), path_);
}

TEST_F(DatabaseTest, TransactionRollsBackInDestructor) {
  std::unique_ptr<Database> db = OpenMigrated();
  ASSERT_NE(db, nullptr);
  {
    Transaction txn(*db);
    ASSERT_TRUE(txn.Begin().ok());
    ASSERT_TRUE(Insert(*db, "a", "1").ok());
    EXPECT_EQ(CountItems(*db), 1);
  }
  EXPECT_EQ(CountItems(*db), 0);
}

TEST_F(DatabaseTest, CommittedDataPersistsAcrossReopen) {
  {
    std::unique_ptr<Database> db = OpenMigrated();
    ASSERT_NE(db, nullptr);
    Transaction txn(*db);
    ASSERT_TRUE(txn.Begin().ok());
    ASSERT_TRUE(Insert(*db, "a", "1").ok());
    ASSERT_TRUE(Insert(*db, "b", "2").ok());
    ASSERT_TRUE(txn.Commit().ok());
  }
  std::unique_ptr<Database> db = OpenMigrated();
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(CountItems(*db), 2);
}

TEST_F(DatabaseTest, MigrationsAreIdempotentOnReopen) {
  {
    std::unique_ptr<Database> db = OpenMigrated();
    ASSERT_NE(db, nullptr);
    EXPECT_EQ(*db->SchemaVersion(), 2);
    ASSERT_TRUE(Insert(*db, "a", "1").ok());
  }
  std::unique_ptr<Database> db = OpenMigrated();
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(*db->SchemaVersion(), 2);
  EXPECT_EQ(CountItems(*db), 1);
}

TEST_F(DatabaseTest, MigrationsApplyIncrementally) {
  absl::StatusOr<std::unique_ptr<Database>> db = Database::Open(path_);
  ASSERT_TRUE(db.ok());
  EXPECT_EQ(*(*db)->SchemaVersion(), 0);
  std::vector<Migration> first = {Migrations()[0]};
  ASSERT_TRUE((*db)->Migrate(first).ok());
  EXPECT_EQ(*(*db)->SchemaVersion(), 1);
  ASSERT_TRUE((*db)->Migrate(Migrations()).ok());
  EXPECT_EQ(*(*db)->SchemaVersion(), 2);
  // The second migration's index exists.
  absl::StatusOr<std::unique_ptr<Statement>> idx = (*db)->Prepare(
      "SELECT COUNT(*) FROM sqlite_master WHERE name = 'items_by_data'");
  ASSERT_TRUE(idx.ok());
  ASSERT_TRUE(*(*idx)->Step());
  EXPECT_EQ((*idx)->ColumnInt64(0), 1);
}

TEST_F(DatabaseTest, FailedMigrationLeavesVersionAndDataUnchanged) {
  std::unique_ptr<Database> db = OpenMigrated();
  ASSERT_NE(db, nullptr);
  ASSERT_TRUE(Insert(*db, "a", "1").ok());

  std::vector<Migration> broken = Migrations();
  // The first statement succeeds, the second fails: both must roll back.
  broken.push_back({"half applied",
                    "DELETE FROM items; INSERT INTO no_such_table VALUES(1)"});
  absl::Status s = db->Migrate(broken);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("migration 3 (half applied)"),
            absl::string_view::npos)
      << s;
  EXPECT_NE(s.message().find("no_such_table"), absl::string_view::npos) << s;
  EXPECT_EQ(*db->SchemaVersion(), 2);
  EXPECT_EQ(CountItems(*db), 1);
}

TEST_F(DatabaseTest, NewerSchemaIsRefused) {
  {
    std::unique_ptr<Database> db = OpenMigrated();
    ASSERT_NE(db, nullptr);
  }
  absl::StatusOr<std::unique_ptr<Database>> db = Database::Open(path_);
  ASSERT_TRUE(db.ok());
  std::vector<Migration> older = {Migrations()[0]};
  absl::Status s = (*db)->Migrate(older);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_EQ(*(*db)->SchemaVersion(), 2);
}

TEST_F(DatabaseTest, UniqueViolationIsAlreadyExists) {
  std::unique_ptr<Database> db = OpenMigrated();
  ASSERT_NE(db, nullptr);
  ASSERT_TRUE(Insert(*db, "a", "1").ok());
  absl::Status s = Insert(*db, "a", "2");
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists) << s;
  EXPECT_NE(s.message().find("UNIQUE"), absl::string_view::npos) << s;
  EXPECT_NE(s.message().find("INSERT INTO items"), absl::string_view::npos)
      << s;
  // The statement is usable again after the failure.
  EXPECT_TRUE(Insert(*db, "b", "2").ok());
  EXPECT_EQ(CountItems(*db), 2);

  absl::Status pk =
      db->Execute("INSERT INTO items(id, name) VALUES(1, 'dup-id')");
  EXPECT_EQ(pk.code(), absl::StatusCode::kAlreadyExists) << pk;
}

TEST_F(DatabaseTest, BlobsRoundTripWithNulBytes) {
  std::unique_ptr<Database> db = OpenMigrated();
  ASSERT_NE(db, nullptr);
  const std::string blob("\0a\0\xff\0", 5);
  ASSERT_TRUE(Insert(*db, "bin", blob).ok());
  ASSERT_TRUE(Insert(*db, "empty", "").ok());
  EXPECT_GT(db->LastInsertRowId(), 0);
  EXPECT_EQ(db->Changes(), 1);

  absl::StatusOr<std::unique_ptr<Statement>> select =
      db->Prepare(kSelectDataSql);
  ASSERT_TRUE(select.ok());
  (*select)->BindText(1, "bin");
  ASSERT_TRUE(*(*select)->Step());
  EXPECT_EQ((*select)->ColumnBlob(0), blob);
  EXPECT_FALSE(*(*select)->Step());
  (*select)->Reset();
  (*select)->BindText(1, "empty");
  ASSERT_TRUE(*(*select)->Step());
  EXPECT_FALSE((*select)->ColumnIsNull(0));
  EXPECT_EQ((*select)->ColumnBlob(0), "");
}

TEST_F(DatabaseTest, NullsAndIntegersRoundTrip) {
  std::unique_ptr<Database> db = OpenMigrated();
  ASSERT_NE(db, nullptr);
  absl::StatusOr<std::unique_ptr<Statement>> insert =
      db->Prepare("INSERT INTO items(id, name, data) VALUES(?, ?, ?)");
  ASSERT_TRUE(insert.ok());
  (*insert)->BindInt64(1, int64_t{1} << 40);
  (*insert)->BindText(2, "n");
  (*insert)->BindNull(3);
  ASSERT_TRUE((*insert)->Run().ok());
  EXPECT_EQ(db->LastInsertRowId(), int64_t{1} << 40);
  absl::StatusOr<std::unique_ptr<Statement>> select =
      db->Prepare("SELECT id, data FROM items");
  ASSERT_TRUE(select.ok());
  ASSERT_TRUE(*(*select)->Step());
  EXPECT_EQ((*select)->ColumnInt64(0), int64_t{1} << 40);
  EXPECT_TRUE((*select)->ColumnIsNull(1));
}

TEST_F(DatabaseTest, CachedStatementIsReusedAndReset) {
  std::unique_ptr<Database> db = OpenMigrated();
  ASSERT_NE(db, nullptr);
  absl::StatusOr<Statement*> first = db->Cached(kSelectDataSql);
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(Insert(*db, "a", "x").ok());
  (*first)->BindText(1, "a");
  ASSERT_TRUE(*(*first)->Step());  // left mid-iteration on purpose
  absl::StatusOr<Statement*> second = db->Cached(kSelectDataSql);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(*first, *second);
  // Reset cleared the binding: name = NULL matches nothing.
  EXPECT_FALSE(*(*second)->Step());
}

TEST_F(DatabaseTest, BadSqlIsAnErrorNotACrash) {
  std::unique_ptr<Database> db = OpenMigrated();
  ASSERT_NE(db, nullptr);
  absl::StatusOr<std::unique_ptr<Statement>> bad = db->Prepare("SELEC 1");
  EXPECT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("SELEC 1"), absl::string_view::npos)
      << bad.status();
  EXPECT_FALSE(db->Cached("SELECT * FROM no_such_table").ok());
  EXPECT_FALSE(db->Execute("DROP TABLE no_such_table").ok());
  EXPECT_EQ(db->Prepare("SELECT 1; SELECT 2").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(DatabaseTest, SecondWriterIsUnavailableWhileLocked) {
  std::unique_ptr<Database> db = OpenMigrated();
  ASSERT_NE(db, nullptr);
  absl::StatusOr<std::unique_ptr<Database>> other = Database::Open(path_);
  ASSERT_TRUE(other.ok());
  // Shorten the wait so the test does not sit out the 5 s busy timeout.
  ASSERT_TRUE((*other)->Execute("PRAGMA busy_timeout = 10").ok());
  Transaction txn(*db);
  ASSERT_TRUE(txn.Begin().ok());
  Transaction blocked(**other);
  absl::Status s = blocked.Begin();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
}

TEST(DatabaseOpenTest, UnopenablePathFails) {
  absl::StatusOr<std::unique_ptr<Database>> db =
      Database::Open("/no/such/dir/x.db");
  EXPECT_FALSE(db.ok());
}

}  // namespace
}  // namespace fleet::sqlite
