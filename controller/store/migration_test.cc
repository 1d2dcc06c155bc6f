// Upgrades from every earlier schema version: a database is built at
// version k (1 .. latest-1) from the historical migration steps below, filled
// with rows through the columns that existed then, and opened with the
// current Store. The rows must survive and every column added after k must
// read as its default.
//
// The steps are copied here on purpose: store.cc's migrations are
// append-only, so these fixtures are the schemas older binaries really
// wrote. When a migration is added to store.cc, append its SQL here too
// (FixturesCoverEveryEarlierVersion fails until then).
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "common/sqlite/database.h"
#include "controller/store/store.h"
#include "controller/testing/temp_dir.h"

namespace fleet::controller {
namespace {

const std::vector<sqlite::Migration>& HistoricalSchema() {
  static const auto* const kSteps = new std::vector<sqlite::Migration>{
      // v1
      {"releases, agents, rollouts, targets, events",
       R"sql(
CREATE TABLE releases(
  product TEXT NOT NULL,
  version TEXT NOT NULL,
  platform TEXT NOT NULL,
  sha256 BLOB NOT NULL,
  size INTEGER NOT NULL,
  signed_manifest BLOB NOT NULL,
  created_ms INTEGER NOT NULL,
  UNIQUE(product, version, platform));
CREATE INDEX releases_by_digest ON releases(product, platform, sha256);

CREATE TABLE agents(
  agent_id TEXT PRIMARY KEY,
  hostname TEXT NOT NULL,
  platform TEXT NOT NULL,
  agent_version TEXT NOT NULL,
  labels_json TEXT NOT NULL,
  connected INTEGER NOT NULL,
  first_seen_ms INTEGER NOT NULL,
  last_seen_ms INTEGER NOT NULL);

CREATE TABLE agent_products(
  agent_id TEXT NOT NULL REFERENCES agents(agent_id) ON DELETE CASCADE,
  product TEXT NOT NULL,
  version TEXT NOT NULL,
  sha256 BLOB NOT NULL,
  previous_versions TEXT NOT NULL,
  PRIMARY KEY(agent_id, product)) WITHOUT ROWID;
CREATE INDEX agent_products_by_product ON agent_products(product);

CREATE TABLE rollouts(
  rollout_id TEXT PRIMARY KEY,
  product TEXT NOT NULL,
  version TEXT NOT NULL,
  selector BLOB NOT NULL,
  stages BLOB NOT NULL,
  state INTEGER NOT NULL,
  state_reason TEXT NOT NULL,
  current_stage INTEGER NOT NULL,
  stage_settled_ms INTEGER NOT NULL,
  created_ms INTEGER NOT NULL,
  updated_ms INTEGER NOT NULL);
CREATE INDEX rollouts_by_product ON rollouts(product, created_ms);

CREATE TABLE rollout_targets(
  rollout_id TEXT NOT NULL REFERENCES rollouts(rollout_id),
  agent_id TEXT NOT NULL,
  state INTEGER NOT NULL,
  from_version TEXT NOT NULL,
  directive_id TEXT NOT NULL,
  error TEXT NOT NULL,
  stage INTEGER NOT NULL,
  updated_ms INTEGER NOT NULL,
  PRIMARY KEY(rollout_id, agent_id)) WITHOUT ROWID;
CREATE INDEX rollout_targets_by_agent ON rollout_targets(agent_id);

CREATE TABLE events(
  agent_id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  directive_id TEXT NOT NULL,
  rollout_id TEXT NOT NULL,
  product TEXT NOT NULL,
  from_version TEXT NOT NULL,
  to_version TEXT NOT NULL,
  phase INTEGER NOT NULL,
  error TEXT NOT NULL,
  error_class TEXT NOT NULL,
  duration_ms INTEGER NOT NULL,
  bytes INTEGER NOT NULL,
  time_ms INTEGER NOT NULL,
  received_ms INTEGER NOT NULL,
  PRIMARY KEY(agent_id, seq)) WITHOUT ROWID;
CREATE INDEX events_by_received ON events(received_ms);
)sql"},
      // v2
      {"blacklist of bad versions",
       R"sql(
CREATE TABLE blacklist(
  product TEXT NOT NULL,
  version TEXT NOT NULL,
  reason TEXT NOT NULL,
  created_by TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  PRIMARY KEY(product, version)) WITHOUT ROWID;
)sql"},
      // v3
      {"rollouts.max_in_flight",
       R"sql(
ALTER TABLE rollouts ADD COLUMN max_in_flight BLOB NOT NULL DEFAULT x'';
)sql"},
      // v4
      {"rollouts.failure_policy",
       R"sql(
ALTER TABLE rollouts ADD COLUMN failure_policy BLOB NOT NULL DEFAULT x'';
ALTER TABLE rollouts ADD COLUMN gate_armed_samples INTEGER NOT NULL DEFAULT 0;
)sql"},
      // v5
      {"rollouts.offline_timeout_s, revert progress of targets, reverts",
       R"sql(
ALTER TABLE rollouts ADD COLUMN offline_timeout_s INTEGER NOT NULL DEFAULT 600;
ALTER TABLE rollout_targets ADD COLUMN revert_state INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollout_targets ADD COLUMN revert_directive_id TEXT NOT NULL
  DEFAULT '';
ALTER TABLE rollout_targets ADD COLUMN revert_to_version TEXT NOT NULL
  DEFAULT '';
ALTER TABLE rollout_targets ADD COLUMN revert_error TEXT NOT NULL DEFAULT '';
CREATE TABLE reverts(
  directive_id TEXT PRIMARY KEY,
  agent_id TEXT NOT NULL,
  product TEXT NOT NULL,
  rollout_id TEXT NOT NULL,
  from_version TEXT NOT NULL,
  to_version TEXT NOT NULL,
  state INTEGER NOT NULL,
  error TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  updated_ms INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX reverts_by_agent ON reverts(agent_id, created_ms);
)sql"},
      // v6
      {"enrollment tokens, revoked agents, audit log",
       R"sql(
CREATE TABLE enroll_tokens(
  token_sha256 TEXT PRIMARY KEY,
  token_id TEXT NOT NULL UNIQUE,
  labels TEXT NOT NULL,
  uses_left INTEGER NOT NULL,
  expires_ms INTEGER NOT NULL,
  created_by TEXT NOT NULL,
  created_ms INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE revoked_agents(
  agent_id TEXT PRIMARY KEY,
  reason TEXT NOT NULL,
  revoked_by TEXT NOT NULL,
  revoked_ms INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE audit_log(
  id INTEGER PRIMARY KEY,
  time_ms INTEGER NOT NULL,
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  detail TEXT NOT NULL);
)sql"},
  };
  return *kSteps;
}

constexpr char kProduct[] = "app";
constexpr char kPlatform[] = "linux/amd64";
constexpr char kRollout[] = "r-1";
constexpr char kAgent[] = "agent-1";
const std::string kDigest(32, '\x5a');

std::string Selector() {
  v1::Selector selector;
  selector.set_platform(kPlatform);
  (*selector.mutable_labels())["env"] = "prod";
  return selector.SerializeAsString();
}

// Builds fleet.db at schema version k and fills it through the columns of
// version k only, the way a binary of that version would have.
void BuildDatabaseAt(const std::string& path, int k) {
  std::vector<sqlite::Migration> steps(HistoricalSchema().begin(),
                                       HistoricalSchema().begin() + k);
  auto db = sqlite::Database::Open(path);
  ASSERT_TRUE(db.ok()) << db.status();
  ASSERT_TRUE((*db)->Migrate(steps).ok());

  auto run = [&](const std::string& sql,
                 const std::vector<std::string>& text_args,
                 const std::vector<std::string>& blob_args = {}) {
    auto stmt = (*db)->Prepare(sql);
    ASSERT_TRUE(stmt.ok()) << stmt.status() << " in " << sql;
    int i = 1;
    for (const std::string& arg : text_args) (*stmt)->BindText(i++, arg);
    for (const std::string& arg : blob_args) (*stmt)->BindBlob(i++, arg);
    absl::Status s = (*stmt)->Run();
    ASSERT_TRUE(s.ok()) << s << " in " << sql;
  };

  v1::SignedManifest manifest;
  manifest.set_manifest("manifest bytes");
  run("INSERT INTO releases(product, version, platform, size, created_ms, "
      "sha256, signed_manifest) VALUES(?, '1.2.0', ?, 4096, 1000, ?, ?)",
      {kProduct, kPlatform}, {kDigest, manifest.SerializeAsString()});
  run("INSERT INTO agents(agent_id, hostname, platform, agent_version, "
      "labels_json, connected, first_seen_ms, last_seen_ms) "
      "VALUES(?, 'web-01', ?, '0.1.0', '{\"env\":\"prod\"}', 1, 100, 200)",
      {kAgent, kPlatform});
  run("INSERT INTO agent_products(agent_id, product, version, "
      "previous_versions, sha256) VALUES(?, ?, '1.1.0', '1.0.0', ?)",
      {kAgent, kProduct}, {kDigest});
  run("INSERT INTO rollouts(rollout_id, product, version, state, "
      "state_reason, current_stage, stage_settled_ms, created_ms, updated_ms, "
      "stages, selector) VALUES(?, ?, '1.2.0', 2, 'running', 1, 0, 300, 400, "
      "'[{\"percent\":10,\"bake_seconds\":60},"
      "{\"percent\":100,\"bake_seconds\":0}]', ?)",
      {kRollout, kProduct}, {Selector()});
  run("INSERT INTO rollout_targets(rollout_id, agent_id, state, from_version, "
      "directive_id, error, stage, updated_ms) "
      "VALUES(?, ?, 7, '1.1.0', 'd-1', '', 0, 500)",
      {kRollout, kAgent});
  for (int seq = 1; seq <= 2; ++seq) {
    run("INSERT INTO events(agent_id, seq, directive_id, rollout_id, product, "
        "from_version, to_version, phase, error, error_class, duration_ms, "
        "bytes, time_ms, received_ms) VALUES(?, " +
            std::to_string(seq) + ", 'd-1', ?, ?, '1.1.0', '1.2.0', " +
            std::to_string(seq) + ", '', '', 5, 4096, 600, 700)",
        {kAgent, kRollout, kProduct});
  }
  if (k >= 2) {
    run("INSERT INTO blacklist(product, version, reason, created_by, "
        "created_ms) VALUES(?, '1.1.5', 'crashes on start', 'operator', 800)",
        {kProduct});
  }
  if (k >= 3) {
    v1::MaxInFlight max_in_flight;
    max_in_flight.set_count(3);
    run("UPDATE rollouts SET max_in_flight = ?", {},
        {max_in_flight.SerializeAsString()});
  }
  if (k >= 4) {
    v1::FailurePolicy policy;
    policy.set_max_failure_rate(0.05);
    policy.set_min_samples(4);
    policy.set_action(v1::FAILURE_ACTION_ABORT);
    run("UPDATE rollouts SET failure_policy = ?, gate_armed_samples = 2", {},
        {policy.SerializeAsString()});
  }
  if (k >= 5) {
    run("UPDATE rollouts SET offline_timeout_s = 120", {});
    run("UPDATE rollout_targets SET revert_state = 2, "
        "revert_directive_id = 'rv-1', revert_to_version = '1.1.0'",
        {});
  }
  if (k >= 6) {
    run("INSERT INTO audit_log(time_ms, actor, action, detail) "
        "VALUES(900, 'admin:alice', 'PushRelease', 'app 1.2.0')",
        {});
  }
}

TEST(MigrationTest, FixturesCoverEveryEarlierVersion) {
  const int latest = Store::LatestSchemaVersion();
  EXPECT_GE(static_cast<int>(HistoricalSchema().size()), latest - 1)
      << "store.cc has migration " << latest
      << "; append the SQL of every step before it to HistoricalSchema()";
  EXPECT_LE(static_cast<int>(HistoricalSchema().size()), latest);
}

class UpgradeFromTest : public ::testing::TestWithParam<int> {};

TEST_P(UpgradeFromTest, RowsSurviveAndNewColumnsHaveDefaults) {
  const int k = GetParam();
  ASSERT_LE(k, static_cast<int>(HistoricalSchema().size()))
      << "no fixture for schema version " << k;
  testing::TempDir dir;
  const std::string path = dir.Join("fleet.db");
  BuildDatabaseAt(path, k);
  if (HasFatalFailure()) return;

  auto store = Store::Open(path);
  ASSERT_TRUE(store.ok()) << store.status();
  {
    auto db = sqlite::Database::Open(path);
    ASSERT_TRUE(db.ok());
    EXPECT_EQ(*(*db)->SchemaVersion(), Store::LatestSchemaVersion());
    // v6: the audit log survives; v7: the root table exists, empty.
    auto audit = (*db)->Prepare("SELECT count(*) FROM audit_log");
    ASSERT_TRUE(audit.ok()) << audit.status();
    ASSERT_TRUE(*(*audit)->Step());
    EXPECT_EQ((*audit)->ColumnInt64(0), k >= 6 ? 1 : 0);
    auto roots = (*db)->Prepare("SELECT count(*) FROM trust_roots");
    ASSERT_TRUE(roots.ok()) << roots.status();
    ASSERT_TRUE(*(*roots)->Step());
    EXPECT_EQ((*roots)->ColumnInt64(0), 0);
  }

  auto release = (*store)->GetRelease(kProduct, "1.2.0", kPlatform);
  ASSERT_TRUE(release.ok()) << release.status();
  EXPECT_EQ(release->sha256(), kDigest);
  EXPECT_EQ(release->size(), 4096u);
  EXPECT_EQ(release->signed_manifest().manifest(), "manifest bytes");
  auto version = (*store)->VersionForDigest(kProduct, kPlatform, kDigest);
  ASSERT_TRUE(version.ok());
  EXPECT_EQ(version->value_or(""), "1.2.0");

  auto agent = (*store)->GetAgent(kAgent);
  ASSERT_TRUE(agent.ok()) << agent.status();
  EXPECT_EQ(agent->hostname(), "web-01");
  EXPECT_EQ(agent->labels().at("env"), "prod");
  ASSERT_EQ(agent->installed_size(), 1);
  EXPECT_EQ(agent->installed(0).version(), "1.1.0");
  ASSERT_EQ(agent->installed(0).previous_versions_size(), 1);
  EXPECT_EQ(agent->installed(0).previous_versions(0), "1.0.0");

  auto record = (*store)->GetRollout(kRollout);
  ASSERT_TRUE(record.ok()) << record.status();
  const v1::Rollout& rollout = record->rollout;
  EXPECT_EQ(rollout.state(), v1::ROLLOUT_STATE_RUNNING);
  EXPECT_EQ(rollout.current_stage(), 1u);
  EXPECT_EQ(rollout.selector().labels().at("env"), "prod");
  ASSERT_EQ(rollout.stages_size(), 2);
  EXPECT_EQ(rollout.stages(0).percent(), 10u);
  EXPECT_EQ(rollout.stages(0).bake_seconds(), 60);
  // v3: max in flight; unset (no limit) when the rollout predates it.
  if (k >= 3) {
    EXPECT_EQ(rollout.max_in_flight().count(), 3u);
  } else {
    EXPECT_EQ(rollout.max_in_flight().limit_case(),
              v1::MaxInFlight::LIMIT_NOT_SET);
  }
  // v4: failure gate; none (rate 0, min samples 0) when it predates it.
  if (k >= 4) {
    EXPECT_DOUBLE_EQ(rollout.failure_policy().max_failure_rate(), 0.05);
    EXPECT_EQ(rollout.failure_policy().action(), v1::FAILURE_ACTION_ABORT);
    EXPECT_EQ(record->gate_armed_samples, 2u);
  } else {
    EXPECT_EQ(rollout.failure_policy().max_failure_rate(), 0);
    EXPECT_EQ(rollout.failure_policy().min_samples(), 0u);
    EXPECT_EQ(record->gate_armed_samples, 0u);
  }
  // v5: offline timeout, 600 s by default.
  EXPECT_EQ(rollout.offline_timeout_seconds(), k >= 5 ? 120 : 600);

  auto targets = (*store)->ListTargets(kRollout);
  ASSERT_TRUE(targets.ok()) << targets.status();
  ASSERT_EQ(targets->size(), 1u);
  const v1::RolloutTarget& target = (*targets)[0];
  EXPECT_EQ(target.agent_id(), kAgent);
  EXPECT_EQ(target.state(), v1::TARGET_STATE_HEALTHY);
  EXPECT_EQ(target.from_version(), "1.1.0");
  EXPECT_EQ(target.directive_id(), "d-1");
  if (k >= 5) {
    EXPECT_EQ(target.revert_state(), v1::TARGET_STATE_DIRECTED);
    EXPECT_EQ(target.revert_directive_id(), "rv-1");
  } else {
    EXPECT_EQ(target.revert_state(), v1::TARGET_STATE_UNSPECIFIED);
    EXPECT_EQ(target.revert_directive_id(), "");
  }

  auto events = (*store)->ListEvents(kAgent);
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->size(), 2u);
  EXPECT_EQ((*events)[1].seq(), 2u);
  EXPECT_EQ((*events)[1].phase(), v1::UPDATE_PHASE_DOWNLOADING);
  EXPECT_EQ((*events)[1].bytes(), 4096u);
  EXPECT_EQ(*(*store)->MaxEventSeq(kAgent), 2u);

  auto blacklist = (*store)->ListBlacklist("");
  ASSERT_TRUE(blacklist.ok()) << blacklist.status();
  if (k >= 2) {
    ASSERT_EQ(blacklist->size(), 1u);
    EXPECT_EQ((*blacklist)[0].reason(), "crashes on start");
  } else {
    EXPECT_TRUE(blacklist->empty());
  }

  // The migrated database takes writes of today's shape.
  RolloutRecord fresh;
  fresh.rollout.set_rollout_id("r-2");
  fresh.rollout.set_product(kProduct);
  fresh.rollout.set_version("1.3.0");
  fresh.rollout.set_state(v1::ROLLOUT_STATE_RUNNING);
  fresh.rollout.add_stages()->set_percent(100);
  fresh.rollout.mutable_max_in_flight()->set_percent(20);
  fresh.rollout.set_offline_timeout_seconds(30);
  ASSERT_TRUE((*store)->InsertRollout(fresh).ok());
  auto reread = (*store)->GetRollout("r-2");
  ASSERT_TRUE(reread.ok()) << reread.status();
  EXPECT_EQ(reread->rollout.max_in_flight().percent(), 20u);
  EXPECT_EQ(reread->rollout.offline_timeout_seconds(), 30);
}

INSTANTIATE_TEST_SUITE_P(
    EveryEarlierVersion, UpgradeFromTest,
    // Evaluated when the tests are registered, after static initialization.
    ::testing::Range(1, Store::LatestSchemaVersion()));

TEST(MigrationTest, NewerSchemaIsRefused) {
  testing::TempDir dir;
  const std::string path = dir.Join("fleet.db");
  ASSERT_TRUE(Store::Open(path).ok());
  {
    auto db = sqlite::Database::Open(path);
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE((*db)
                    ->Execute("UPDATE meta SET value = '" +
                              std::to_string(Store::LatestSchemaVersion() + 1) +
                              "' WHERE key = 'schema_version'")
                    .ok());
  }
  auto store = Store::Open(path);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(store.status().message().find("newer"), std::string::npos)
      << store.status();
}

}  // namespace
}  // namespace fleet::controller
