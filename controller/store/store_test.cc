#include "controller/store/store.h"

#include <string>

#include "common/sqlite/database.h"
#include "controller/testing/temp_dir.h"
#include "gtest/gtest.h"

namespace fleet::controller {
namespace {

v1::Release MakeRelease(const std::string& version,
                        const std::string& platform = "linux/amd64") {
  v1::Release r;
  r.set_product("app");
  r.set_version(version);
  r.set_platform(platform);
  r.set_sha256(std::string(32, static_cast<char>(version.back())));
  r.set_size(1234);
  r.mutable_signed_manifest()->set_manifest("manifest-" + version);
  r.set_created_unix_ms(1000);
  return r;
}

v1::UpdateEvent MakeEvent(uint64_t seq, v1::UpdatePhase phase) {
  v1::UpdateEvent e;
  e.set_seq(seq);
  e.set_directive_id("dir-1");
  e.set_rollout_id("ro-1");
  e.set_product("app");
  e.set_to_version("1.1.0");
  e.set_phase(phase);
  return e;
}

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    absl::StatusOr<std::unique_ptr<Store>> store =
        Store::Open(dir_.Join("fleet.db"));
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }

  testing::TempDir dir_;
  std::unique_ptr<Store> store_;
};

TEST_F(StoreTest, OpenMigratesToLatestSchemaAndReopens) {
  store_.reset();
  absl::StatusOr<std::unique_ptr<sqlite::Database>> db =
      sqlite::Database::Open(dir_.Join("fleet.db"));
  ASSERT_TRUE(db.ok()) << db.status();
  absl::StatusOr<int> version = (*db)->SchemaVersion();
  ASSERT_TRUE(version.ok()) << version.status();
  EXPECT_EQ(*version, Store::LatestSchemaVersion());
  EXPECT_GE(*version, 1);
  db->reset();
  // Reopening an up-to-date database applies nothing and keeps the data.
  absl::StatusOr<std::unique_ptr<Store>> again =
      Store::Open(dir_.Join("fleet.db"));
  ASSERT_TRUE(again.ok()) << again.status();
}

TEST_F(StoreTest, RefusesDatabaseFromNewerBinary) {
  store_.reset();
  {
    auto db = sqlite::Database::Open(dir_.Join("fleet.db"));
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE((*db)
                    ->Execute("UPDATE meta SET value = '999' WHERE key = "
                              "'schema_version'")
                    .ok());
  }
  absl::StatusOr<std::unique_ptr<Store>> store =
      Store::Open(dir_.Join("fleet.db"));
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition)
      << store.status();
}

TEST_F(StoreTest, ReleaseIsUniquePerProductVersionPlatform) {
  ASSERT_TRUE(store_->InsertRelease(MakeRelease("1.0.0")).ok());
  absl::Status dup = store_->InsertRelease(MakeRelease("1.0.0"));
  EXPECT_EQ(dup.code(), absl::StatusCode::kAlreadyExists) << dup;
  EXPECT_NE(dup.message().find("app 1.0.0"), std::string::npos) << dup;
  // Same version, other platform: a different release.
  EXPECT_TRUE(store_->InsertRelease(MakeRelease("1.0.0", "darwin/arm64")).ok());

  absl::StatusOr<v1::Release> got =
      store_->GetRelease("app", "1.0.0", "linux/amd64");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->signed_manifest().manifest(), "manifest-1.0.0");
  EXPECT_EQ(got->size(), 1234u);
  EXPECT_EQ(store_->GetRelease("app", "9.9.9", "linux/amd64").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(StoreTest, ListReleasesNewestVersionFirstBySemVer) {
  for (const char* v : {"1.9.0", "1.10.0", "1.10.0-rc.1", "0.1.0"}) {
    ASSERT_TRUE(store_->InsertRelease(MakeRelease(v)).ok());
  }
  absl::StatusOr<std::vector<v1::Release>> list = store_->ListReleases("", "");
  ASSERT_TRUE(list.ok()) << list.status();
  std::vector<std::string> versions;
  for (const v1::Release& r : *list) versions.push_back(r.version());
  EXPECT_EQ(versions, (std::vector<std::string>{"1.10.0", "1.10.0-rc.1",
                                                "1.9.0", "0.1.0"}));
  EXPECT_EQ(store_->ListReleases("other", "")->size(), 0u);
  EXPECT_EQ(store_->ListReleases("", "darwin/arm64")->size(), 0u);
}

TEST_F(StoreTest, VersionForDigestResolvesByProductPlatformAndDigest) {
  v1::Release r = MakeRelease("1.0.0");
  ASSERT_TRUE(store_->InsertRelease(r).ok());
  auto found = store_->VersionForDigest("app", "linux/amd64", r.sha256());
  ASSERT_TRUE(found.ok());
  EXPECT_EQ(found->value_or(""), "1.0.0");
  auto other_platform =
      store_->VersionForDigest("app", "darwin/arm64", r.sha256());
  ASSERT_TRUE(other_platform.ok());
  EXPECT_FALSE(other_platform->has_value());
}

TEST_F(StoreTest, EventIsStoredOncePerAgentAndSeq) {
  auto first =
      store_->InsertEvent("a1", MakeEvent(1, v1::UPDATE_PHASE_RECEIVED), 10);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(*first);
  // A resend after a reconnect carries the same seq (even if its content
  // were to differ, the first stored copy wins).
  auto again =
      store_->InsertEvent("a1", MakeEvent(1, v1::UPDATE_PHASE_DOWNLOADING), 20);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(*again);
  // The same seq from another agent is a different event.
  EXPECT_TRUE(
      *store_->InsertEvent("a2", MakeEvent(1, v1::UPDATE_PHASE_RECEIVED), 30));
  EXPECT_TRUE(
      *store_->InsertEvent("a1", MakeEvent(2, v1::UPDATE_PHASE_HEALTHY), 40));

  auto events = store_->ListEvents("a1");
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 2u);
  EXPECT_EQ((*events)[0].phase(), v1::UPDATE_PHASE_RECEIVED);
  EXPECT_EQ((*events)[1].phase(), v1::UPDATE_PHASE_HEALTHY);
  EXPECT_EQ(*store_->MaxEventSeq("a1"), 2u);
  EXPECT_EQ(*store_->MaxEventSeq("nobody"), 0u);
}

TEST_F(StoreTest, AgentRoundTripsWithInstalledProductsAndLabels) {
  v1::Agent a;
  a.set_agent_id("a1");
  a.set_hostname("host-1");
  a.set_platform("linux/amd64");
  a.set_agent_version("0.1.0");
  (*a.mutable_labels())["region"] = "eu";
  a.set_connected(true);
  a.set_first_seen_unix_ms(100);
  a.set_last_seen_unix_ms(100);
  v1::InstalledProduct* p = a.add_installed();
  p->set_product("app");
  p->set_version("1.0.0");
  p->set_sha256(std::string(32, 'x'));
  p->add_previous_versions("0.9.0");
  ASSERT_TRUE(store_->UpsertAgent(a).ok());

  // A reconnect rewrites everything but first_seen.
  a.set_first_seen_unix_ms(500);
  a.set_last_seen_unix_ms(500);
  a.mutable_installed(0)->set_version("1.0.0");
  ASSERT_TRUE(store_->UpsertAgent(a).ok());

  absl::StatusOr<v1::Agent> got = store_->GetAgent("a1");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->first_seen_unix_ms(), 100);
  EXPECT_EQ(got->last_seen_unix_ms(), 500);
  EXPECT_EQ(got->labels().at("region"), "eu");
  ASSERT_EQ(got->installed_size(), 1);
  EXPECT_EQ(got->installed(0).previous_versions(0), "0.9.0");

  ASSERT_TRUE(
      store_->SetInstalledVersion("a1", "app", "1.1.0", std::string(32, 'y'))
          .ok());
  got = store_->GetAgent("a1");
  EXPECT_EQ(got->installed(0).version(), "1.1.0");
  EXPECT_EQ(got->installed(0).sha256(), std::string(32, 'y'));
  EXPECT_EQ(got->installed(0).previous_versions_size(), 2);
  EXPECT_EQ(got->installed(0).previous_versions(0), "1.0.0");

  EXPECT_EQ(store_->ListAgents("app")->size(), 1u);
  EXPECT_EQ(store_->ListAgents("other")->size(), 0u);

  ASSERT_TRUE(store_->MarkAllAgentsDisconnected().ok());
  EXPECT_FALSE(store_->GetAgent("a1")->connected());
  EXPECT_EQ(store_->SetAgentConnected("ghost", true, 1).code(),
            absl::StatusCode::kNotFound);
}

TEST_F(StoreTest, RolloutsAndTargetsRoundTripNewestFirst) {
  for (int i = 0; i < 2; ++i) {
    RolloutRecord r;
    r.rollout.set_rollout_id("ro-" + std::to_string(i));
    r.rollout.set_product("app");
    r.rollout.set_version("1.1.0");
    r.rollout.mutable_selector()->set_platform("linux/amd64");
    v1::Stage* stage = r.rollout.add_stages();
    stage->set_percent(100);
    stage->set_bake_seconds(30);
    r.rollout.set_state(v1::ROLLOUT_STATE_RUNNING);
    r.rollout.set_created_unix_ms(1000);  // same ms: insertion order decides
    if (i == 1) {
      r.rollout.mutable_failure_policy()->set_max_failure_rate(0.05);
      r.rollout.mutable_failure_policy()->set_min_samples(3);
      r.rollout.mutable_failure_policy()->set_action(v1::FAILURE_ACTION_ABORT);
      r.rollout.mutable_failure_policy()->set_blacklist(true);
    }
    ASSERT_TRUE(store_->InsertRollout(r).ok());
  }
  auto list = store_->ListRollouts("", /*active_only=*/false);
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].rollout.rollout_id(), "ro-1");
  EXPECT_EQ((*list)[0].rollout.stages(0).bake_seconds(), 30);
  EXPECT_EQ((*list)[0].rollout.selector().platform(), "linux/amd64");
  EXPECT_EQ((*list)[0].rollout.failure_policy().max_failure_rate(), 0.05);
  EXPECT_EQ((*list)[0].rollout.failure_policy().min_samples(), 3u);
  EXPECT_EQ((*list)[0].rollout.failure_policy().action(),
            v1::FAILURE_ACTION_ABORT);
  EXPECT_TRUE((*list)[0].rollout.failure_policy().blacklist());
  EXPECT_FALSE((*list)[1].rollout.has_failure_policy());

  RolloutRecord done = (*list)[1];
  done.rollout.set_state(v1::ROLLOUT_STATE_COMPLETED);
  done.stage_settled_ms = 77;
  done.gate_armed_samples = 12;
  ASSERT_TRUE(store_->UpdateRollout(done).ok());
  EXPECT_EQ(store_->ListRollouts("app", /*active_only=*/true)->size(), 1u);
  EXPECT_EQ(store_->GetRollout("ro-0")->stage_settled_ms, 77);
  EXPECT_EQ(store_->GetRollout("ro-0")->gate_armed_samples, 12u);
  EXPECT_EQ(store_->GetRollout("nope").status().code(),
            absl::StatusCode::kNotFound);

  v1::RolloutTarget t;
  t.set_agent_id("a1");
  t.set_state(v1::TARGET_STATE_DIRECTED);
  t.set_directive_id("dir-1");
  ASSERT_TRUE(store_->UpsertTarget("ro-1", t).ok());
  t.set_state(v1::TARGET_STATE_HEALTHY);
  ASSERT_TRUE(store_->UpsertTarget("ro-1", t).ok());
  t.set_agent_id("a2");
  t.set_state(v1::TARGET_STATE_PENDING);
  ASSERT_TRUE(store_->UpsertTarget("ro-1", t).ok());

  auto targets = store_->ListTargets("ro-1");
  ASSERT_EQ(targets->size(), 2u);
  EXPECT_EQ((*targets)[0].state(), v1::TARGET_STATE_HEALTHY);
  auto counts = store_->CountTargetsByState("ro-1");
  ASSERT_TRUE(counts.ok());
  EXPECT_EQ((*counts)[v1::TARGET_STATE_HEALTHY], 1u);
  EXPECT_EQ((*counts)[v1::TARGET_STATE_PENDING], 1u);
  EXPECT_FALSE(store_->GetTarget("ro-0", "a1")->has_value());

  t.set_agent_id("a3");
  t.set_stage(1);
  ASSERT_TRUE(store_->UpsertTarget("ro-1", t).ok());
  auto by_stage = store_->CountTargetsByStageAndState("ro-1");
  ASSERT_TRUE(by_stage.ok()) << by_stage.status();
  using Key = std::pair<uint32_t, v1::TargetState>;
  EXPECT_EQ(*by_stage,
            (std::map<Key, uint32_t>{{{0, v1::TARGET_STATE_PENDING}, 1},
                                     {{0, v1::TARGET_STATE_HEALTHY}, 1},
                                     {{1, v1::TARGET_STATE_PENDING}, 1}}));
  EXPECT_TRUE(store_->CountTargetsByStageAndState("ro-0")->empty());
}

TEST_F(StoreTest, FailedSavepointUndoesOnlyItsOwnWrites) {
  absl::Status status = store_->RunInTransaction([&]() -> absl::Status {
    EXPECT_TRUE(store_
                    ->RunInSavepoint([&] {
                      return store_->InsertRelease(MakeRelease("1.0.0"));
                    })
                    .ok());
    absl::Status failed = store_->RunInSavepoint([&]() -> absl::Status {
      EXPECT_TRUE(store_->InsertRelease(MakeRelease("2.0.0")).ok());
      return store_->InsertRelease(MakeRelease("1.0.0"));  // duplicate
    });
    EXPECT_EQ(failed.code(), absl::StatusCode::kAlreadyExists);
    return absl::OkStatus();
  });
  ASSERT_TRUE(status.ok()) << status;
  auto list = store_->ListReleases("", "");
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].version(), "1.0.0");
}

TEST_F(StoreTest, FailedTransactionStoresNothing) {
  absl::Status status = store_->RunInTransaction([&]() -> absl::Status {
    EXPECT_TRUE(store_->InsertRelease(MakeRelease("1.0.0")).ok());
    return absl::InternalError("boom");
  });
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(store_->ListReleases("", "")->size(), 0u);
}

TEST_F(StoreTest, BlacklistKeepsWhoWhenWhyOncePerVersion) {
  auto entry = [](const std::string& product, const std::string& version) {
    v1::BlacklistEntry e;
    e.set_product(product);
    e.set_version(version);
    e.set_reason("crashes on start");
    e.set_created_by("operator");
    e.set_created_unix_ms(1700);
    return e;
  };
  ASSERT_TRUE(store_->InsertBlacklist(entry("app", "1.2.0")).ok());
  ASSERT_TRUE(store_->InsertBlacklist(entry("app", "1.10.0")).ok());
  ASSERT_TRUE(store_->InsertBlacklist(entry("db", "2.0.0")).ok());
  absl::Status dup = store_->InsertBlacklist(entry("app", "1.2.0"));
  EXPECT_EQ(dup.code(), absl::StatusCode::kAlreadyExists) << dup;

  absl::StatusOr<std::optional<v1::BlacklistEntry>> got =
      store_->GetBlacklist("app", "1.2.0");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->reason(), "crashes on start");
  EXPECT_EQ((*got)->created_by(), "operator");
  EXPECT_EQ((*got)->created_unix_ms(), 1700);
  EXPECT_FALSE(store_->GetBlacklist("app", "1.3.0")->has_value());

  absl::StatusOr<std::vector<v1::BlacklistEntry>> app =
      store_->ListBlacklist("app");
  ASSERT_TRUE(app.ok());
  ASSERT_EQ(app->size(), 2u);
  EXPECT_EQ((*app)[0].version(), "1.10.0");  // SemVer order, newest first
  EXPECT_EQ((*app)[1].version(), "1.2.0");
  EXPECT_EQ(store_->ListBlacklist("")->size(), 3u);

  ASSERT_TRUE(store_->DeleteBlacklist("app", "1.2.0").ok());
  EXPECT_EQ(store_->DeleteBlacklist("app", "1.2.0").code(),
            absl::StatusCode::kNotFound);
  EXPECT_FALSE(store_->GetBlacklist("app", "1.2.0")->has_value());
}

TEST_F(StoreTest, RevertsRoundTripAndTargetsKeepRevertProgress) {
  RevertRecord revert;
  revert.directive_id = "dir-back";
  revert.agent_id = "agent-1";
  revert.product = "app";
  revert.rollout_id = "ro-1";
  revert.from_version = "2.0.0";
  revert.to_version = "1.0.0";
  revert.created_ms = 100;
  revert.updated_ms = 100;
  ASSERT_TRUE(store_->UpsertRevert(revert).ok());
  RevertRecord older = revert;
  older.directive_id = "dir-older";
  older.created_ms = 50;
  ASSERT_TRUE(store_->UpsertRevert(older).ok());
  revert.state = v1::TARGET_STATE_FAILED;
  revert.error = "health: exit status 1";
  revert.updated_ms = 200;
  revert.to_version = "ignored on update";
  ASSERT_TRUE(store_->UpsertRevert(revert).ok());

  std::optional<RevertRecord> found = *store_->GetRevert("dir-back");
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->state, v1::TARGET_STATE_FAILED);
  EXPECT_EQ(found->error, "health: exit status 1");
  EXPECT_EQ(found->to_version, "1.0.0");
  EXPECT_EQ(found->rollout_id, "ro-1");
  EXPECT_EQ(found->created_ms, 100);
  EXPECT_EQ(found->updated_ms, 200);
  EXPECT_FALSE(store_->GetRevert("dir-none")->has_value());
  std::vector<RevertRecord> listed = *store_->ListAgentReverts("agent-1");
  ASSERT_EQ(listed.size(), 2u);
  EXPECT_EQ(listed[0].directive_id, "dir-back");
  EXPECT_TRUE(store_->ListAgentReverts("agent-2")->empty());

  RolloutRecord record;
  record.rollout.set_rollout_id("ro-1");
  record.rollout.set_product("app");
  record.rollout.set_version("2.0.0");
  record.rollout.add_stages()->set_percent(100);
  record.rollout.set_offline_timeout_seconds(90);
  ASSERT_TRUE(store_->InsertRollout(record).ok());
  EXPECT_EQ(store_->GetRollout("ro-1")->rollout.offline_timeout_seconds(), 90);
  for (const char* agent : {"agent-1", "agent-2", "agent-3"}) {
    v1::RolloutTarget t;
    t.set_agent_id(agent);
    t.set_state(v1::TARGET_STATE_HEALTHY);
    if (std::string(agent) != "agent-3") {
      t.set_revert_state(std::string(agent) == "agent-1"
                             ? v1::TARGET_STATE_HEALTHY
                             : v1::TARGET_STATE_DIRECTED);
      t.set_revert_directive_id(std::string("dir-") + agent);
      t.set_revert_to_version("1.0.0");
      t.set_revert_error("none yet");
    }
    ASSERT_TRUE(store_->UpsertTarget("ro-1", t).ok());
  }
  std::optional<v1::RolloutTarget> t = *store_->GetTarget("ro-1", "agent-1");
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->revert_state(), v1::TARGET_STATE_HEALTHY);
  EXPECT_EQ(t->revert_directive_id(), "dir-agent-1");
  EXPECT_EQ(t->revert_to_version(), "1.0.0");
  EXPECT_EQ(t->revert_error(), "none yet");
  std::map<v1::TargetState, uint32_t> reverts =
      *store_->CountRevertsByState("ro-1");
  EXPECT_EQ(reverts, (std::map<v1::TargetState, uint32_t>{
                         {v1::TARGET_STATE_DIRECTED, 1},
                         {v1::TARGET_STATE_HEALTHY, 1}}));
}

}  // namespace
}  // namespace fleet::controller
