#include "controller/backup.h"

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "common/files.h"
#include "common/sha256.h"
#include "controller/blob_store.h"
#include "controller/store/store.h"
#include "controller/testing/temp_dir.h"

namespace fleet::controller {
namespace {

using testing::TempDir;

constexpr char kArtifact[] = "the artifact's bytes";

// A data dir as a controller leaves it: fleet.db with one release (whose
// blob is in blobs/) and one agent.
void MakeDataDir(const std::string& data_dir) {
  ASSERT_TRUE(MakeDirs(data_dir, 0700).ok());
  auto blobs = BlobStore::Open(data_dir);
  ASSERT_TRUE(blobs.ok()) << blobs.status();
  auto writer = (*blobs)->NewWriter();
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE((*writer)->Append(kArtifact).ok());
  const Digest digest = Sha256Of(kArtifact);
  ASSERT_TRUE((*writer)->Commit(digest, sizeof(kArtifact) - 1).ok());

  auto store = Store::Open(JoinPath(data_dir, "fleet.db"));
  ASSERT_TRUE(store.ok()) << store.status();
  v1::Release release;
  release.set_product("app");
  release.set_version("1.0.0");
  release.set_platform("linux/amd64");
  release.set_sha256(std::string(digest.begin(), digest.end()));
  release.set_size(sizeof(kArtifact) - 1);
  ASSERT_TRUE((*store)->InsertRelease(release).ok());
  v1::Agent agent;
  agent.set_agent_id("agent-1");
  agent.set_hostname("web-01");
  agent.set_platform("linux/amd64");
  ASSERT_TRUE((*store)->UpsertAgent(agent).ok());
}

TEST(BackupTest, BackupIsOneSelfContainedFileThatRestores) {
  TempDir dir;
  const std::string data = dir.Join("data");
  MakeDataDir(data);
  const std::string backup = dir.Join("fleet-backup.db");
  ASSERT_TRUE(BackupDataDir(data, backup).ok());
  EXPECT_FALSE(PathExists(backup + "-wal"));

  // Restore into a new data dir that got the blobs copied first.
  const std::string restored = dir.Join("restored");
  ASSERT_TRUE(MakeDirs(JoinPath(restored, "blobs"), 0700).ok());
  ASSERT_EQ(
      system(("cp -a " + JoinPath(data, "blobs") + " " + restored).c_str()), 0);
  auto result = RestoreDataDir(backup, restored, {});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->releases, 1);
  EXPECT_EQ(result->backup_schema_version, Store::LatestSchemaVersion());
  EXPECT_EQ(result->previous_database, "");

  auto store = Store::Open(JoinPath(restored, "fleet.db"));
  ASSERT_TRUE(store.ok()) << store.status();
  auto agent = (*store)->GetAgent("agent-1");
  ASSERT_TRUE(agent.ok()) << agent.status();
  EXPECT_EQ(agent->hostname(), "web-01");
  EXPECT_TRUE((*store)->GetRelease("app", "1.0.0", "linux/amd64").ok());
}

TEST(BackupTest, BackupWhileAWriterCommitsIsAConsistentSnapshot) {
  TempDir dir;
  const std::string data = dir.Join("data");
  MakeDataDir(data);
  // A second connection commits an event per transaction the whole time,
  // like the control loop of a running controller.
  std::atomic<bool> stop{false};
  std::atomic<int> written{0};
  std::thread writer([&] {
    auto store = Store::Open(JoinPath(data, "fleet.db"));
    if (!store.ok()) return;
    for (uint64_t seq = 1; !stop.load(); ++seq) {
      v1::UpdateEvent event;
      event.set_seq(seq);
      event.set_directive_id("d-1");
      event.set_phase(v1::UPDATE_PHASE_DOWNLOADING);
      if (!(*store)->InsertEvent("agent-1", event, 1000).ok()) return;
      written.store(static_cast<int>(seq));
    }
  });
  while (written.load() < 50) std::this_thread::yield();
  const std::string backup = dir.Join("live.db");
  absl::Status status = BackupDataDir(data, backup);
  const int at_least = written.load();
  while (written.load() < at_least + 50) std::this_thread::yield();
  stop = true;
  writer.join();
  ASSERT_TRUE(status.ok()) << status;

  const std::string restored = dir.Join("restored");
  auto result = RestoreDataDir(backup, restored, {.allow_missing_blobs = true});
  ASSERT_TRUE(result.ok()) << result.status();
  auto store = Store::Open(JoinPath(restored, "fleet.db"));
  ASSERT_TRUE(store.ok());
  auto events = (*store)->ListEvents("agent-1");
  ASSERT_TRUE(events.ok());
  // A prefix of the writer's commits, without holes: 1..n in order.
  ASSERT_FALSE(events->empty());
  for (size_t i = 0; i < events->size(); ++i) {
    ASSERT_EQ((*events)[i].seq(), i + 1);
  }
  EXPECT_LT(static_cast<int>(events->size()), written.load());
}

TEST(BackupTest, BackupNeverOverwritesAndNeedsADatabase) {
  TempDir dir;
  const std::string data = dir.Join("data");
  MakeDataDir(data);
  const std::string backup = dir.Join("b.db");
  ASSERT_TRUE(WriteNewFile(backup, "precious", 0600).ok());
  EXPECT_EQ(BackupDataDir(data, backup).code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(*ReadFile(backup), "precious");
  EXPECT_EQ(BackupDataDir(dir.Join("nowhere"), dir.Join("c.db")).code(),
            absl::StatusCode::kNotFound);
  EXPECT_FALSE(PathExists(dir.Join("c.db")));
}

TEST(RestoreTest, RefusesWhileAControllerHoldsTheDataDir) {
  TempDir dir;
  const std::string data = dir.Join("data");
  MakeDataDir(data);
  const std::string backup = dir.Join("b.db");
  ASSERT_TRUE(BackupDataDir(data, backup).ok());
  auto lock = DataDirLock::Acquire(data);  // what a running controller holds
  ASSERT_TRUE(lock.ok()) << lock.status();
  auto result = RestoreDataDir(backup, data, {});
  ASSERT_EQ(result.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(result.status().message().find("stop it first"), std::string::npos);
  *lock = std::move(*DataDirLock::Acquire(dir.Join("other")));  // releases
  EXPECT_TRUE(RestoreDataDir(backup, data, {}).ok());
}

TEST(RestoreTest, KeepsThePreviousDatabaseAside) {
  TempDir dir;
  const std::string data = dir.Join("data");
  MakeDataDir(data);
  const std::string backup = dir.Join("b.db");
  ASSERT_TRUE(BackupDataDir(data, backup).ok());
  {
    // Written after the backup: gone from fleet.db after the restore, kept
    // in the set-aside copy.
    auto store = Store::Open(JoinPath(data, "fleet.db"));
    ASSERT_TRUE(store.ok());
    v1::Agent agent;
    agent.set_agent_id("agent-2");
    ASSERT_TRUE((*store)->UpsertAgent(agent).ok());
  }
  auto result = RestoreDataDir(backup, data, {});
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_NE(result->previous_database, "");
  auto restored = Store::Open(JoinPath(data, "fleet.db"));
  ASSERT_TRUE(restored.ok());
  EXPECT_EQ((*restored)->GetAgent("agent-2").status().code(),
            absl::StatusCode::kNotFound);
  auto previous = Store::Open(result->previous_database);
  ASSERT_TRUE(previous.ok());
  EXPECT_TRUE((*previous)->GetAgent("agent-2").ok());
}

TEST(RestoreTest, RefusesMissingBlobsUnlessAllowed) {
  TempDir dir;
  const std::string data = dir.Join("data");
  MakeDataDir(data);
  const std::string backup = dir.Join("b.db");
  ASSERT_TRUE(BackupDataDir(data, backup).ok());
  const std::string fresh = dir.Join("fresh");
  auto refused = RestoreDataDir(backup, fresh, {});
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("app 1.0.0 linux/amd64"),
            std::string::npos)
      << refused.status();
  EXPECT_FALSE(PathExists(JoinPath(fresh, "fleet.db")));
  EXPECT_TRUE(
      RestoreDataDir(backup, fresh, {.allow_missing_blobs = true}).ok());
}

TEST(RestoreTest, RefusesFilesThatAreNotFleetStores) {
  TempDir dir;
  const std::string data = dir.Join("data");
  MakeDataDir(data);
  const std::string garbage = dir.Join("garbage.db");
  ASSERT_TRUE(WriteNewFile(garbage, std::string(8192, 'x'), 0600).ok());
  auto result = RestoreDataDir(garbage, data, {});
  EXPECT_EQ(result.status().code(), absl::StatusCode::kFailedPrecondition)
      << result.status();

  const std::string other = dir.Join("other.db");
  {
    auto db = sqlite::Database::Open(other);
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE((*db)->Execute("CREATE TABLE notes(text TEXT)").ok());
  }
  result = RestoreDataDir(other, data, {});
  EXPECT_EQ(result.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(result.status().message().find("not a fleet controller store"),
            std::string::npos)
      << result.status();

  EXPECT_EQ(RestoreDataDir(dir.Join("missing.db"), data, {}).status().code(),
            absl::StatusCode::kNotFound);
  // The data dir is untouched by every refusal.
  auto store = Store::Open(JoinPath(data, "fleet.db"));
  ASSERT_TRUE(store.ok());
  EXPECT_TRUE((*store)->GetAgent("agent-1").ok());
}

TEST(RestoreTest, RefusesANewerSchema) {
  TempDir dir;
  const std::string data = dir.Join("data");
  MakeDataDir(data);
  const std::string backup = dir.Join("b.db");
  ASSERT_TRUE(BackupDataDir(data, backup).ok());
  {
    auto db = sqlite::Database::Open(backup);
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE((*db)
                    ->Execute("UPDATE meta SET value = '" +
                              std::to_string(Store::LatestSchemaVersion() + 1) +
                              "' WHERE key = 'schema_version'")
                    .ok());
  }
  auto result = RestoreDataDir(backup, data, {});
  ASSERT_EQ(result.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(result.status().message().find("knows only up to"),
            std::string::npos)
      << result.status();
}

TEST(RestoreTest, RefusesACorruptBackup) {
  TempDir dir;
  const std::string data = dir.Join("data");
  MakeDataDir(data);
  const std::string backup = dir.Join("b.db");
  ASSERT_TRUE(BackupDataDir(data, backup).ok());
  // Break the b-tree page type of every page but the first (the header and
  // schema stay readable, the tables do not).
  auto bytes = ReadFile(backup);
  ASSERT_TRUE(bytes.ok());
  std::string damaged = *bytes;
  const size_t page_size = (static_cast<unsigned char>(damaged[16]) << 8) |
                           static_cast<unsigned char>(damaged[17]);
  ASSERT_GE(page_size, 512u);
  ASSERT_GT(damaged.size(), page_size);
  for (size_t page = page_size; page < damaged.size(); page += page_size) {
    damaged[page] = '\x7f';
  }
  ASSERT_TRUE(RemoveFile(backup).ok());
  ASSERT_TRUE(WriteNewFile(backup, damaged, 0600).ok());
  auto result = RestoreDataDir(backup, data, {});
  EXPECT_FALSE(result.ok());
  auto store = Store::Open(JoinPath(data, "fleet.db"));
  ASSERT_TRUE(store.ok());
  EXPECT_TRUE((*store)->GetAgent("agent-1").ok());
}

}  // namespace
}  // namespace fleet::controller
