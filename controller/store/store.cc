#include "controller/store/store.h"

#include <algorithm>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/semver.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace fleet::controller {
namespace {

using sqlite::Statement;

// Append-only: a released binary may meet a database written by any older
// one. Never edit a step; add a new one.
const std::vector<sqlite::Migration>& Migrations() {
  static const auto* const kMigrations = new std::vector<sqlite::Migration>{
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
      {"rollouts.max_in_flight",
       R"sql(
ALTER TABLE rollouts ADD COLUMN max_in_flight BLOB NOT NULL DEFAULT x'';
)sql"},
      {"rollouts.failure_policy",
       R"sql(
ALTER TABLE rollouts ADD COLUMN failure_policy BLOB NOT NULL DEFAULT x'';
ALTER TABLE rollouts ADD COLUMN gate_armed_samples INTEGER NOT NULL DEFAULT 0;
)sql"},
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
      // Read and written by controller/identity/identity_store.cc.
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
      // Read and written by controller/identity/identity_store.cc: every
      // root the controller accepted (the pinned one and each PushRoot), so
      // it can send an agent that is several versions behind the whole
      // chain.
      {"trusted root metadata versions",
       R"sql(
CREATE TABLE trust_roots(
  version INTEGER PRIMARY KEY,
  signed_root BLOB NOT NULL,
  expires_ms INTEGER NOT NULL,
  accepted_by TEXT NOT NULL,
  accepted_ms INTEGER NOT NULL);
)sql"},
  };
  return *kMigrations;
}

// ---- blacklist
constexpr char kInsertBlacklistSql[] =
    "INSERT INTO blacklist(product, version, reason, created_by, created_ms) "
    "VALUES(?, ?, ?, ?, ?)";
constexpr char kDeleteBlacklistSql[] =
    "DELETE FROM blacklist WHERE product = ? AND version = ?";
constexpr char kSelectBlacklistSql[] =
    "SELECT product, version, reason, created_by, created_ms FROM blacklist "
    "WHERE product = ? AND version = ?";
constexpr char kListBlacklistSql[] =
    "SELECT product, version, reason, created_by, created_ms FROM blacklist "
    "WHERE (?1 = '' OR product = ?1)";

v1::BlacklistEntry ReadBlacklistEntry(const Statement& s) {
  v1::BlacklistEntry e;
  e.set_product(s.ColumnText(0));
  e.set_version(s.ColumnText(1));
  e.set_reason(s.ColumnText(2));
  e.set_created_by(s.ColumnText(3));
  e.set_created_unix_ms(s.ColumnInt64(4));
  return e;
}

// ---- releases
constexpr char kInsertReleaseSql[] =
    "INSERT INTO releases(product, version, platform, sha256, size, "
    "signed_manifest, created_ms) VALUES(?, ?, ?, ?, ?, ?, ?)";
constexpr char kSelectReleaseSql[] =
    "SELECT product, version, platform, sha256, size, signed_manifest, "
    "created_ms FROM releases WHERE product = ? AND version = ? AND "
    "platform = ?";
constexpr char kListReleasesSql[] =
    "SELECT product, version, platform, sha256, size, signed_manifest, "
    "created_ms FROM releases WHERE (?1 = '' OR product = ?1) AND "
    "(?2 = '' OR platform = ?2)";
constexpr char kReleasePlatformsSql[] =
    "SELECT platform FROM releases WHERE product = ? AND version = ? "
    "ORDER BY platform";
constexpr char kVersionForDigestSql[] =
    "SELECT version FROM releases WHERE product = ? AND platform = ? AND "
    "sha256 = ? ORDER BY created_ms DESC LIMIT 1";

// ---- agents
constexpr char kUpsertAgentSql[] =
    "INSERT INTO agents(agent_id, hostname, platform, agent_version, "
    "labels_json, connected, first_seen_ms, last_seen_ms) "
    "VALUES(?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(agent_id) DO UPDATE SET "
    "hostname = excluded.hostname, platform = excluded.platform, "
    "agent_version = excluded.agent_version, "
    "labels_json = excluded.labels_json, connected = excluded.connected, "
    "last_seen_ms = excluded.last_seen_ms";
constexpr char kDeleteAgentProductsSql[] =
    "DELETE FROM agent_products WHERE agent_id = ?";
constexpr char kInsertAgentProductSql[] =
    "INSERT INTO agent_products(agent_id, product, version, sha256, "
    "previous_versions) VALUES(?, ?, ?, ?, ?)";
constexpr char kSelectAgentProductsSql[] =
    "SELECT product, version, sha256, previous_versions FROM agent_products "
    "WHERE agent_id = ? ORDER BY product";
constexpr char kSelectAgentProductSql[] =
    "SELECT version, previous_versions FROM agent_products "
    "WHERE agent_id = ? AND product = ?";
constexpr char kUpdateAgentProductSql[] =
    "UPDATE agent_products SET version = ?, sha256 = ?, previous_versions = ? "
    "WHERE agent_id = ? AND product = ?";
constexpr char kSelectAgentSql[] =
    "SELECT agent_id, hostname, platform, agent_version, labels_json, "
    "connected, first_seen_ms, last_seen_ms FROM agents WHERE agent_id = ?";
constexpr char kListAgentsSql[] =
    "SELECT agent_id, hostname, platform, agent_version, labels_json, "
    "connected, first_seen_ms, last_seen_ms FROM agents "
    "WHERE ?1 = '' OR agent_id IN "
    "(SELECT agent_id FROM agent_products WHERE product = ?1) "
    "ORDER BY agent_id";
constexpr char kSetAgentConnectedSql[] =
    "UPDATE agents SET connected = ?, last_seen_ms = ? WHERE agent_id = ?";
constexpr char kTouchAgentSql[] =
    "UPDATE agents SET last_seen_ms = ? WHERE agent_id = ?";
constexpr char kDisconnectAllSql[] =
    "UPDATE agents SET connected = 0 WHERE connected != 0";

// ---- events
constexpr char kInsertEventSql[] =
    "INSERT INTO events(agent_id, seq, directive_id, rollout_id, product, "
    "from_version, to_version, phase, error, error_class, duration_ms, bytes, "
    "time_ms, received_ms) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(agent_id, seq) DO NOTHING";
constexpr char kMaxEventSeqSql[] =
    "SELECT MAX(seq) FROM events WHERE agent_id = ?";
constexpr char kListEventsSql[] =
    "SELECT seq, directive_id, rollout_id, product, from_version, to_version, "
    "phase, error, error_class, duration_ms, bytes, time_ms FROM events "
    "WHERE agent_id = ? ORDER BY seq";

// ---- rollouts
constexpr char kInsertRolloutSql[] =
    "INSERT INTO rollouts(rollout_id, product, version, selector, stages, "
    "state, state_reason, current_stage, stage_settled_ms, created_ms, "
    "updated_ms, max_in_flight, failure_policy, gate_armed_samples, "
    "offline_timeout_s) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
constexpr char kUpdateRolloutSql[] =
    "UPDATE rollouts SET state = ?, state_reason = ?, current_stage = ?, "
    "stage_settled_ms = ?, updated_ms = ?, gate_armed_samples = ? "
    "WHERE rollout_id = ?";
constexpr char kSelectRolloutSql[] =
    "SELECT rollout_id, product, version, selector, stages, state, "
    "state_reason, current_stage, stage_settled_ms, created_ms, updated_ms, "
    "max_in_flight, failure_policy, gate_armed_samples, offline_timeout_s "
    "FROM rollouts WHERE rollout_id = ?";
constexpr char kListRolloutsSql[] =
    "SELECT rollout_id, product, version, selector, stages, state, "
    "state_reason, current_stage, stage_settled_ms, created_ms, updated_ms, "
    "max_in_flight, failure_policy, gate_armed_samples, offline_timeout_s "
    "FROM rollouts WHERE (?1 = '' OR product = ?1) AND "
    "(?2 = 0 OR state IN (1, 2, 3)) ORDER BY created_ms DESC, rowid DESC";
constexpr char kUpsertTargetSql[] =
    "INSERT INTO rollout_targets(rollout_id, agent_id, state, from_version, "
    "directive_id, error, stage, updated_ms, revert_state, "
    "revert_directive_id, revert_to_version, revert_error) "
    "VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(rollout_id, agent_id) DO UPDATE SET state = excluded.state, "
    "from_version = excluded.from_version, "
    "directive_id = excluded.directive_id, error = excluded.error, "
    "stage = excluded.stage, updated_ms = excluded.updated_ms, "
    "revert_state = excluded.revert_state, "
    "revert_directive_id = excluded.revert_directive_id, "
    "revert_to_version = excluded.revert_to_version, "
    "revert_error = excluded.revert_error";
constexpr char kSelectTargetSql[] =
    "SELECT agent_id, state, from_version, directive_id, error, stage, "
    "updated_ms, revert_state, revert_directive_id, revert_to_version, "
    "revert_error FROM rollout_targets WHERE rollout_id = ? AND agent_id = ?";
constexpr char kListTargetsSql[] =
    "SELECT agent_id, state, from_version, directive_id, error, stage, "
    "updated_ms, revert_state, revert_directive_id, revert_to_version, "
    "revert_error FROM rollout_targets WHERE rollout_id = ? ORDER BY agent_id";
constexpr char kCountTargetsSql[] =
    "SELECT state, COUNT(*) FROM rollout_targets WHERE rollout_id = ? "
    "GROUP BY state";
constexpr char kCountTargetsByStageSql[] =
    "SELECT stage, state, COUNT(*) FROM rollout_targets WHERE rollout_id = ? "
    "GROUP BY stage, state";
constexpr char kCountRevertsSql[] =
    "SELECT revert_state, COUNT(*) FROM rollout_targets WHERE rollout_id = ? "
    "AND revert_state != 0 GROUP BY revert_state";

// ---- reverts
constexpr char kUpsertRevertSql[] =
    "INSERT INTO reverts(directive_id, agent_id, product, rollout_id, "
    "from_version, to_version, state, error, created_ms, updated_ms) "
    "VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(directive_id) DO UPDATE "
    "SET state = excluded.state, error = excluded.error, "
    "updated_ms = excluded.updated_ms";
constexpr char kSelectRevertSql[] =
    "SELECT directive_id, agent_id, product, rollout_id, from_version, "
    "to_version, state, error, created_ms, updated_ms FROM reverts "
    "WHERE directive_id = ?";
constexpr char kListAgentRevertsSql[] =
    "SELECT directive_id, agent_id, product, rollout_id, from_version, "
    "to_version, state, error, created_ms, updated_ms FROM reverts "
    "WHERE agent_id = ? ORDER BY created_ms DESC, directive_id DESC";

// Previous versions are SemVer strings (validated at the RPC boundary), so a
// comma never occurs inside one.
constexpr char kVersionSeparator[] = ",";
constexpr int kMaxPreviousVersions = 8;

// A statement left mid-iteration keeps its read snapshot open, which would
// make later reads on this connection stale: every use resets on scope exit.
class ScopedStatement {
 public:
  explicit ScopedStatement(Statement* stmt) : stmt_(stmt) {}
  ~ScopedStatement() { stmt_->Reset(); }
  ScopedStatement(const ScopedStatement&) = delete;
  ScopedStatement& operator=(const ScopedStatement&) = delete;
  Statement* operator->() const { return stmt_; }
  Statement& operator*() const { return *stmt_; }

 private:
  Statement* stmt_;
};

absl::StatusOr<v1::Release> ReadRelease(const Statement& s) {
  v1::Release r;
  r.set_product(s.ColumnText(0));
  r.set_version(s.ColumnText(1));
  r.set_platform(s.ColumnText(2));
  r.set_sha256(s.ColumnBlob(3));
  r.set_size(static_cast<uint64_t>(s.ColumnInt64(4)));
  if (!r.mutable_signed_manifest()->ParseFromString(s.ColumnBlob(5))) {
    return absl::DataLossError(absl::StrCat("stored manifest of ", r.product(),
                                            " ", r.version(), " ", r.platform(),
                                            " does not parse"));
  }
  r.set_created_unix_ms(s.ColumnInt64(6));
  return r;
}

std::string LabelsToJson(
    const google::protobuf::Map<std::string, std::string>& labels) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [key, value] : labels) j[key] = value;
  return j.dump();
}

absl::Status LabelsFromJson(
    const std::string& text,
    google::protobuf::Map<std::string, std::string>* labels) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::DataLossError("stored labels are not a JSON object: " + text);
  }
  for (const auto& [key, value] : j.items()) {
    if (!value.is_string()) {
      return absl::DataLossError("stored label " + key + " is not a string");
    }
    (*labels)[key] = value.get<std::string>();
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::Agent> ReadAgent(const Statement& s) {
  v1::Agent a;
  a.set_agent_id(s.ColumnText(0));
  a.set_hostname(s.ColumnText(1));
  a.set_platform(s.ColumnText(2));
  a.set_agent_version(s.ColumnText(3));
  RETURN_IF_ERROR(LabelsFromJson(s.ColumnText(4), a.mutable_labels()));
  a.set_connected(s.ColumnInt64(5) != 0);
  a.set_first_seen_unix_ms(s.ColumnInt64(6));
  a.set_last_seen_unix_ms(s.ColumnInt64(7));
  return a;
}

std::string StagesToJson(
    const google::protobuf::RepeatedPtrField<v1::Stage>& stages) {
  nlohmann::json j = nlohmann::json::array();
  for (const v1::Stage& stage : stages) {
    j.push_back(
        {{"percent", stage.percent()}, {"bake_seconds", stage.bake_seconds()}});
  }
  return j.dump();
}

absl::Status StagesFromJson(
    const std::string& text,
    google::protobuf::RepeatedPtrField<v1::Stage>* stages) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_array()) {
    return absl::DataLossError("stored stages are not a JSON array: " + text);
  }
  for (const nlohmann::json& item : j) {
    if (!item.is_object() || !item.contains("percent") ||
        !item["percent"].is_number_unsigned() ||
        !item.contains("bake_seconds") ||
        !item["bake_seconds"].is_number_integer()) {
      return absl::DataLossError("stored stage is malformed: " + item.dump());
    }
    v1::Stage* stage = stages->Add();
    stage->set_percent(item["percent"].get<uint32_t>());
    stage->set_bake_seconds(item["bake_seconds"].get<int64_t>());
  }
  return absl::OkStatus();
}

absl::StatusOr<RolloutRecord> ReadRollout(const Statement& s) {
  RolloutRecord record;
  v1::Rollout& r = record.rollout;
  r.set_rollout_id(s.ColumnText(0));
  r.set_product(s.ColumnText(1));
  r.set_version(s.ColumnText(2));
  if (!r.mutable_selector()->ParseFromString(s.ColumnBlob(3))) {
    return absl::DataLossError("stored selector of rollout " + r.rollout_id() +
                               " does not parse");
  }
  RETURN_IF_ERROR(StagesFromJson(s.ColumnText(4), r.mutable_stages()));
  r.set_state(static_cast<v1::RolloutState>(s.ColumnInt64(5)));
  r.set_state_reason(s.ColumnText(6));
  r.set_current_stage(static_cast<uint32_t>(s.ColumnInt64(7)));
  record.stage_settled_ms = s.ColumnInt64(8);
  r.set_created_unix_ms(s.ColumnInt64(9));
  r.set_updated_unix_ms(s.ColumnInt64(10));
  if (!r.mutable_max_in_flight()->ParseFromString(s.ColumnBlob(11))) {
    return absl::DataLossError("stored max_in_flight of rollout " +
                               r.rollout_id() + " does not parse");
  }
  if (r.max_in_flight().limit_case() == v1::MaxInFlight::LIMIT_NOT_SET) {
    r.clear_max_in_flight();
  }
  if (!r.mutable_failure_policy()->ParseFromString(s.ColumnBlob(12))) {
    return absl::DataLossError("stored failure_policy of rollout " +
                               r.rollout_id() + " does not parse");
  }
  if (r.failure_policy().ByteSizeLong() == 0) r.clear_failure_policy();
  record.gate_armed_samples = static_cast<uint32_t>(s.ColumnInt64(13));
  r.set_offline_timeout_seconds(s.ColumnInt64(14));
  return record;
}

v1::RolloutTarget ReadTarget(const Statement& s) {
  v1::RolloutTarget t;
  t.set_agent_id(s.ColumnText(0));
  t.set_state(static_cast<v1::TargetState>(s.ColumnInt64(1)));
  t.set_from_version(s.ColumnText(2));
  t.set_directive_id(s.ColumnText(3));
  t.set_error(s.ColumnText(4));
  t.set_stage(static_cast<uint32_t>(s.ColumnInt64(5)));
  t.set_updated_unix_ms(s.ColumnInt64(6));
  t.set_revert_state(static_cast<v1::TargetState>(s.ColumnInt64(7)));
  t.set_revert_directive_id(s.ColumnText(8));
  t.set_revert_to_version(s.ColumnText(9));
  t.set_revert_error(s.ColumnText(10));
  return t;
}

RevertRecord ReadRevert(const Statement& s) {
  RevertRecord r;
  r.directive_id = s.ColumnText(0);
  r.agent_id = s.ColumnText(1);
  r.product = s.ColumnText(2);
  r.rollout_id = s.ColumnText(3);
  r.from_version = s.ColumnText(4);
  r.to_version = s.ColumnText(5);
  r.state = static_cast<v1::TargetState>(s.ColumnInt64(6));
  r.error = s.ColumnText(7);
  r.created_ms = s.ColumnInt64(8);
  r.updated_ms = s.ColumnInt64(9);
  return r;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Store>> Store::Open(const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<sqlite::Database> db,
                   sqlite::Database::Open(path));
  RETURN_IF_ERROR(db->Migrate(Migrations()));
  // The pages every batch touches (one events leaf per reporting agent, the
  // index tails, agents and targets) must stay cached: with SQLite's 2 MiB
  // default, 1,000 agents reporting at once re-read leaves from the OS on
  // every batch. Memory is used only as the database grows.
  RETURN_IF_ERROR(db->Execute("PRAGMA cache_size=-32768"));
  return std::unique_ptr<Store>(new Store(std::move(db)));
}

int Store::LatestSchemaVersion() {
  return static_cast<int>(Migrations().size());
}

absl::Status Store::RunInTransaction(absl::FunctionRef<absl::Status()> fn) {
  sqlite::Transaction txn(*db_);
  RETURN_IF_ERROR(txn.Begin());
  RETURN_IF_ERROR(fn());
  return txn.Commit();
}

absl::Status Store::RunInSavepoint(absl::FunctionRef<absl::Status()> fn) {
  const std::string name = absl::StrCat("sp", savepoint_depth_);
  RETURN_IF_ERROR(db_->Execute("SAVEPOINT " + name));
  ++savepoint_depth_;
  absl::Status status = fn();
  --savepoint_depth_;
  if (status.ok()) return db_->Execute("RELEASE " + name);
  absl::Status undo =
      db_->Execute(absl::StrCat("ROLLBACK TO ", name, "; RELEASE ", name));
  if (!undo.ok()) {
    return absl::InternalError(absl::StrCat(
        status.message(), "; undoing it failed too: ", undo.message()));
  }
  return status;
}

// ---------------------------------------------------------------- releases

absl::Status Store::InsertRelease(const v1::Release& release) {
  ASSIGN_OR_RETURN(Statement * raw, db_->Cached(kInsertReleaseSql));
  ScopedStatement s(raw);
  s->BindText(1, release.product());
  s->BindText(2, release.version());
  s->BindText(3, release.platform());
  s->BindBlob(4, release.sha256());
  s->BindInt64(5, static_cast<int64_t>(release.size()));
  s->BindBlob(6, release.signed_manifest().SerializeAsString());
  s->BindInt64(7, release.created_unix_ms());
  absl::Status status = s->Run();
  if (absl::IsAlreadyExists(status)) {
    return absl::AlreadyExistsError(
        absl::StrCat("release ", release.product(), " ", release.version(),
                     " for ", release.platform(), " already exists"));
  }
  return status;
}

absl::StatusOr<v1::Release> Store::GetRelease(absl::string_view product,
                                              absl::string_view version,
                                              absl::string_view platform) {
  ASSIGN_OR_RETURN(Statement * raw, db_->Cached(kSelectReleaseSql));
  ScopedStatement s(raw);
  s->BindText(1, product);
  s->BindText(2, version);
  s->BindText(3, platform);
  ASSIGN_OR_RETURN(bool row, s->Step());
  if (!row) {
    return absl::NotFoundError(
        absl::StrCat("no release ", product, " ", version, " for ", platform));
  }
  return ReadRelease(*s);
}

absl::StatusOr<std::vector<v1::Release>> Store::ListReleases(
    absl::string_view product, absl::string_view platform) {
  ASSIGN_OR_RETURN(Statement * raw, db_->Cached(kListReleasesSql));
  ScopedStatement s(raw);
  s->BindText(1, product);
  s->BindText(2, platform);
  std::vector<v1::Release> out;
  while (true) {
    ASSIGN_OR_RETURN(bool row, s->Step());
    if (!row) break;
    ASSIGN_OR_RETURN(v1::Release release, ReadRelease(*s));
    out.push_back(std::move(release));
  }
  std::sort(out.begin(), out.end(),
            [](const v1::Release& a, const v1::Release& b) {
              if (a.product() != b.product()) return a.product() < b.product();
              int c = CompareVersions(a.version(), b.version());
              if (c != 0) return c > 0;
              return a.platform() < b.platform();
            });
  return out;
}

absl::StatusOr<std::vector<std::string>> Store::ReleasePlatforms(
    absl::string_view product, absl::string_view version) {
  ASSIGN_OR_RETURN(Statement * raw, db_->Cached(kReleasePlatformsSql));
  ScopedStatement s(raw);
  s->BindText(1, product);
  s->BindText(2, version);
  std::vector<std::string> out;
  while (true) {
    ASSIGN_OR_RETURN(bool row, s->Step());
    if (!row) break;
    out.push_back(s->ColumnText(0));
  }
  return out;
}

absl::StatusOr<std::optional<std::string>> Store::VersionForDigest(
    absl::string_view product, absl::string_view platform,
    absl::string_view sha256) {
  ASSIGN_OR_RETURN(Statement * raw, db_->Cached(kVersionForDigestSql));
  ScopedStatement s(raw);
  s->BindText(1, product);
  s->BindText(2, platform);
  s->BindBlob(3, sha256);
  ASSIGN_OR_RETURN(bool row, s->Step());
  if (!row) return std::optional<std::string>();
  return std::optional<std::string>(s->ColumnText(0));
}

// ------------------------------------------------------------------ agents

absl::Status Store::UpsertAgent(const v1::Agent& agent) {
  {
    ASSIGN_OR_RETURN(Statement * raw, db_->Cached(kUpsertAgentSql));
    ScopedStatement s(raw);
    s->BindText(1, agent.agent_id());
    s->BindText(2, agent.hostname());
    s->BindText(3, agent.platform());
    s->BindText(4, agent.agent_version());
    s->BindText(5, LabelsToJson(agent.labels()));
    s->BindInt64(6, agent.connected() ? 1 : 0);
    s->BindInt64(7, agent.first_seen_unix_ms());
    s->BindInt64(8, agent.last_seen_unix_ms());
    RETURN_IF_ERROR(s->Run());
  }
  return ReplaceInstalled(agent);
}

absl::Status Store::ReplaceInstalled(const v1::Agent& agent) {
  {
    ASSIGN_OR_RETURN(Statement * raw, db_->Cached(kDeleteAgentProductsSql));
    ScopedStatement s(raw);
    s->BindText(1, agent.agent_id());
    RETURN_IF_ERROR(s->Run());
  }
  for (const v1::InstalledProduct& p : agent.installed()) {
    ASSIGN_OR_RETURN(Statement * raw, db_->Cached(kInsertAgentProductSql));
    ScopedStatement s(raw);
    s->BindText(1, agent.agent_id());
    s->BindText(2, p.product());
    s->BindText(3, p.version());
    s->BindBlob(4, p.sha256());
    s->BindText(5, absl::StrJoin(p.previous_versions(), kVersionSeparator));
    RETURN_IF_ERROR(s->Run());
  }
  return absl::OkStatus();
}

absl::Status Store::ReadInstalled(v1::Agent& agent) {
  ASSIGN_OR_RETURN(Statement * raw, db_->Cached(kSelectAgentProductsSql));
  ScopedStatement s(raw);
  s->BindText(1, agent.agent_id());
  while (true) {
    ASSIGN_OR_RETURN(bool row, s->Step());
    if (!row) break;
    v1::InstalledProduct* p = agent.add_installed();
    p->set_product(s->ColumnText(0));
    p->set_version(s->ColumnText(1));
    p->set_sha256(s->ColumnBlob(2));
    std::string previous = s->ColumnText(3);
    if (!previous.empty()) {
      for (absl::string_view v : absl::StrSplit(previous, kVersionSeparator)) {
        p->add_previous_versions(std::string(v));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::Agent> Store::GetAgent(absl::string_view agent_id) {
  v1::Agent agent;
  {
    ASSIGN_OR_RETURN(Statement * raw, db_->Cached(kSelectAgentSql));
    ScopedStatement s(raw);
    s->BindText(1, agent_id);
    ASSIGN_OR_RETURN(bool row, s->Step());
    if (!row) return absl::NotFoundError(absl::StrCat("no agent ", agent_id));
    ASSIGN_OR_RETURN(agent, ReadAgent(*s));
  }
  RETURN_IF_ERROR(ReadInstalled(agent));
  return agent;
}

absl::StatusOr<std::vector<v1::Agent>> Store::ListAgents(
    absl::string_view product) {
  std::vector<v1::Agent> out;
  {
    ASSIGN_OR_RETURN(Statement * raw, db_->Cached(kListAgentsSql));
    ScopedStatement s(raw);
    s->BindText(1, product);
    while (true) {
      ASSIGN_OR_RETURN(bool row, s->Step());
      if (!row) break;
      ASSIGN_OR_RETURN(v1::Agent agent, ReadAgent(*s));
      out.push_back(std::move(agent));
    }
  }
  for (v1::Agent& agent : out) RETURN_IF_ERROR(ReadInstalled(agent));
  return out;
}

absl::Status Store::SetAgentConnected(absl::string_view agent_id,
                                      bool connected, int64_t now_ms) {
  ASSIGN_OR_RETURN(Statement * raw, db_->Cached(kSetAgentConnectedSql));
  ScopedStatement s(raw);
  s->BindInt64(1, connected ? 1 : 0);
  s->BindInt64(2, now_ms);
  s->BindText(3, agent_id);
  RETURN_IF_ERROR(s->Run());
  if (db_->Changes() == 0) {
    return absl::NotFoundError(absl::StrCat("no agent ", agent_id));
  }
  return absl::OkStatus();
}

absl::Status Store::TouchAgent(absl::string_view agent_id, int64_t now_ms) {
  ASSIGN_OR_RETURN(Statement * raw, db_->Cached(kTouchAgentSql));
  ScopedStatement s(raw);
  s->BindInt64(1, now_ms);
  s->BindText(2, agent_id);
  return s->Run();
}

absl::Status Store::MarkAllAgentsDisconnected() {
  ASSIGN_OR_RETURN(Statement * raw, db_->Cached(kDisconnectAllSql));
  ScopedStatement s(raw);
  return s->Run();
}

absl::Status Store::SetInstalledVersion(absl::string_view agent_id,
                                        absl::string_view product,
                                        absl::string_view version,
                                        absl::string_view sha256) {
  std::string old_version, previous;
  {
    ASSIGN_OR_RETURN(Statement * raw, db_->Cached(kSelectAgentProductSql));
    ScopedStatement s(raw);
    s->BindText(1, agent_id);
    s->BindText(2, product);
    ASSIGN_OR_RETURN(bool row, s->Step());
    if (!row) {
      return absl::NotFoundError(
          absl::StrCat("agent ", agent_id, " does not run ", product));
    }
    old_version = s->ColumnText(0);
    previous = s->ColumnText(1);
  }
  std::vector<std::string> versions;
  if (!old_version.empty() && old_version != version) {
    versions.push_back(old_version);
  }
  if (!previous.empty()) {
    for (absl::string_view v : absl::StrSplit(previous, kVersionSeparator)) {
      if (v != version && v != old_version &&
          versions.size() < kMaxPreviousVersions) {
        versions.emplace_back(v);
      }
    }
  }
  ASSIGN_OR_RETURN(Statement * raw, db_->Cached(kUpdateAgentProductSql));
  ScopedStatement s(raw);
  s->BindText(1, version);
  s->BindBlob(2, sha256);
  s->BindText(3, absl::StrJoin(versions, kVersionSeparator));
  s->BindText(4, agent_id);
  s->BindText(5, product);
  return s->Run();
}

// ------------------------------------------------------------------ events

absl::StatusOr<bool> Store::InsertEvent(absl::string_view agent_id,
                                        const v1::UpdateEvent& event,
                                        int64_t received_ms) {
  ASSIGN_OR_RETURN(Statement * raw, db_->Cached(kInsertEventSql));
  ScopedStatement s(raw);
  s->BindText(1, agent_id);
  s->BindInt64(2, static_cast<int64_t>(event.seq()));
  s->BindText(3, event.directive_id());
  s->BindText(4, event.rollout_id());
  s->BindText(5, event.product());
  s->BindText(6, event.from_version());
  s->BindText(7, event.to_version());
  s->BindInt64(8, event.phase());
  s->BindText(9, event.error());
  s->BindText(10, event.error_class());
  s->BindInt64(11, event.duration_ms());
  s->BindInt64(12, static_cast<int64_t>(event.bytes()));
  s->BindInt64(13, event.time_unix_ms());
  s->BindInt64(14, received_ms);
  RETURN_IF_ERROR(s->Run());
  return db_->Changes() == 1;
}

absl::StatusOr<uint64_t> Store::MaxEventSeq(absl::string_view agent_id) {
  ASSIGN_OR_RETURN(Statement * raw, db_->Cached(kMaxEventSeqSql));
  ScopedStatement s(raw);
  s->BindText(1, agent_id);
  ASSIGN_OR_RETURN(bool row, s->Step());
  if (!row || s->ColumnIsNull(0)) return 0;
  return static_cast<uint64_t>(s->ColumnInt64(0));
}

absl::StatusOr<std::vector<v1::UpdateEvent>> Store::ListEvents(
    absl::string_view agent_id) {
  ASSIGN_OR_RETURN(Statement * raw, db_->Cached(kListEventsSql));
  ScopedStatement s(raw);
  s->BindText(1, agent_id);
  std::vector<v1::UpdateEvent> out;
  while (true) {
    ASSIGN_OR_RETURN(bool row, s->Step());
    if (!row) break;
    v1::UpdateEvent& e = out.emplace_back();
    e.set_seq(static_cast<uint64_t>(s->ColumnInt64(0)));
    e.set_directive_id(s->ColumnText(1));
    e.set_rollout_id(s->ColumnText(2));
    e.set_product(s->ColumnText(3));
    e.set_from_version(s->ColumnText(4));
    e.set_to_version(s->ColumnText(5));
    e.set_phase(static_cast<v1::UpdatePhase>(s->ColumnInt64(6)));
    e.set_error(s->ColumnText(7));
    e.set_error_class(s->ColumnText(8));
    e.set_duration_ms(s->ColumnInt64(9));
    e.set_bytes(static_cast<uint64_t>(s->ColumnInt64(10)));
    e.set_time_unix_ms(s->ColumnInt64(11));
  }
  return out;
}

// ---------------------------------------------------------------- rollouts

absl::Status Store::InsertRollout(const RolloutRecord& record) {
  const v1::Rollout& r = record.rollout;
  ASSIGN_OR_RETURN(Statement * raw, db_->Cached(kInsertRolloutSql));
  ScopedStatement s(raw);
  s->BindText(1, r.rollout_id());
  s->BindText(2, r.product());
  s->BindText(3, r.version());
  s->BindBlob(4, r.selector().SerializeAsString());
  s->BindBlob(5, StagesToJson(r.stages()));
  s->BindInt64(6, r.state());
  s->BindText(7, r.state_reason());
  s->BindInt64(8, r.current_stage());
  s->BindInt64(9, record.stage_settled_ms);
  s->BindInt64(10, r.created_unix_ms());
  s->BindInt64(11, r.updated_unix_ms());
  s->BindBlob(12, r.max_in_flight().SerializeAsString());
  s->BindBlob(13, r.failure_policy().SerializeAsString());
  s->BindInt64(14, record.gate_armed_samples);
  s->BindInt64(15, r.offline_timeout_seconds());
  return s->Run();
}

absl::Status Store::UpdateRollout(const RolloutRecord& record) {
  const v1::Rollout& r = record.rollout;
  ASSIGN_OR_RETURN(Statement * raw, db_->Cached(kUpdateRolloutSql));
  ScopedStatement s(raw);
  s->BindInt64(1, r.state());
  s->BindText(2, r.state_reason());
  s->BindInt64(3, r.current_stage());
  s->BindInt64(4, record.stage_settled_ms);
  s->BindInt64(5, r.updated_unix_ms());
  s->BindInt64(6, record.gate_armed_samples);
  s->BindText(7, r.rollout_id());
  RETURN_IF_ERROR(s->Run());
  if (db_->Changes() == 0) {
    return absl::NotFoundError("no rollout " + r.rollout_id());
  }
  return absl::OkStatus();
}

absl::StatusOr<RolloutRecord> Store::GetRollout(absl::string_view rollout_id) {
  ASSIGN_OR_RETURN(Statement * raw, db_->Cached(kSelectRolloutSql));
  ScopedStatement s(raw);
  s->BindText(1, rollout_id);
  ASSIGN_OR_RETURN(bool row, s->Step());
  if (!row) return absl::NotFoundError(absl::StrCat("no rollout ", rollout_id));
  return ReadRollout(*s);
}

absl::StatusOr<std::vector<RolloutRecord>> Store::ListRollouts(
    absl::string_view product, bool active_only) {
  ASSIGN_OR_RETURN(Statement * raw, db_->Cached(kListRolloutsSql));
  ScopedStatement s(raw);
  s->BindText(1, product);
  s->BindInt64(2, active_only ? 1 : 0);
  std::vector<RolloutRecord> out;
  while (true) {
    ASSIGN_OR_RETURN(bool row, s->Step());
    if (!row) break;
    ASSIGN_OR_RETURN(RolloutRecord record, ReadRollout(*s));
    out.push_back(std::move(record));
  }
  return out;
}

absl::Status Store::UpsertTarget(absl::string_view rollout_id,
                                 const v1::RolloutTarget& target) {
  ASSIGN_OR_RETURN(Statement * raw, db_->Cached(kUpsertTargetSql));
  ScopedStatement s(raw);
  s->BindText(1, rollout_id);
  s->BindText(2, target.agent_id());
  s->BindInt64(3, target.state());
  s->BindText(4, target.from_version());
  s->BindText(5, target.directive_id());
  s->BindText(6, target.error());
  s->BindInt64(7, target.stage());
  s->BindInt64(8, target.updated_unix_ms());
  s->BindInt64(9, target.revert_state());
  s->BindText(10, target.revert_directive_id());
  s->BindText(11, target.revert_to_version());
  s->BindText(12, target.revert_error());
  return s->Run();
}

absl::StatusOr<std::optional<v1::RolloutTarget>> Store::GetTarget(
    absl::string_view rollout_id, absl::string_view agent_id) {
  ASSIGN_OR_RETURN(Statement * raw, db_->Cached(kSelectTargetSql));
  ScopedStatement s(raw);
  s->BindText(1, rollout_id);
  s->BindText(2, agent_id);
  ASSIGN_OR_RETURN(bool row, s->Step());
  if (!row) return std::optional<v1::RolloutTarget>();
  return std::optional<v1::RolloutTarget>(ReadTarget(*s));
}

absl::StatusOr<std::vector<v1::RolloutTarget>> Store::ListTargets(
    absl::string_view rollout_id) {
  ASSIGN_OR_RETURN(Statement * raw, db_->Cached(kListTargetsSql));
  ScopedStatement s(raw);
  s->BindText(1, rollout_id);
  std::vector<v1::RolloutTarget> out;
  while (true) {
    ASSIGN_OR_RETURN(bool row, s->Step());
    if (!row) break;
    out.push_back(ReadTarget(*s));
  }
  return out;
}

absl::StatusOr<std::map<v1::TargetState, uint32_t>> Store::CountTargetsByState(
    absl::string_view rollout_id) {
  return CountByState(kCountTargetsSql, rollout_id);
}

absl::StatusOr<std::map<std::pair<uint32_t, v1::TargetState>, uint32_t>>
Store::CountTargetsByStageAndState(absl::string_view rollout_id) {
  ASSIGN_OR_RETURN(Statement * raw, db_->Cached(kCountTargetsByStageSql));
  ScopedStatement s(raw);
  s->BindText(1, rollout_id);
  std::map<std::pair<uint32_t, v1::TargetState>, uint32_t> out;
  while (true) {
    ASSIGN_OR_RETURN(bool row, s->Step());
    if (!row) break;
    out[{static_cast<uint32_t>(s->ColumnInt64(0)),
         static_cast<v1::TargetState>(s->ColumnInt64(1))}] =
        static_cast<uint32_t>(s->ColumnInt64(2));
  }
  return out;
}

absl::StatusOr<std::map<v1::TargetState, uint32_t>> Store::CountRevertsByState(
    absl::string_view rollout_id) {
  return CountByState(kCountRevertsSql, rollout_id);
}

absl::StatusOr<std::map<v1::TargetState, uint32_t>> Store::CountByState(
    const char* sql, absl::string_view rollout_id) {
  ASSIGN_OR_RETURN(Statement * raw, db_->Cached(sql));
  ScopedStatement s(raw);
  s->BindText(1, rollout_id);
  std::map<v1::TargetState, uint32_t> out;
  while (true) {
    ASSIGN_OR_RETURN(bool row, s->Step());
    if (!row) break;
    out[static_cast<v1::TargetState>(s->ColumnInt64(0))] =
        static_cast<uint32_t>(s->ColumnInt64(1));
  }
  return out;
}

// ----------------------------------------------------------------- reverts

absl::Status Store::UpsertRevert(const RevertRecord& revert) {
  ASSIGN_OR_RETURN(Statement * raw, db_->Cached(kUpsertRevertSql));
  ScopedStatement s(raw);
  s->BindText(1, revert.directive_id);
  s->BindText(2, revert.agent_id);
  s->BindText(3, revert.product);
  s->BindText(4, revert.rollout_id);
  s->BindText(5, revert.from_version);
  s->BindText(6, revert.to_version);
  s->BindInt64(7, revert.state);
  s->BindText(8, revert.error);
  s->BindInt64(9, revert.created_ms);
  s->BindInt64(10, revert.updated_ms);
  return s->Run();
}

absl::StatusOr<std::optional<RevertRecord>> Store::GetRevert(
    absl::string_view directive_id) {
  ASSIGN_OR_RETURN(Statement * raw, db_->Cached(kSelectRevertSql));
  ScopedStatement s(raw);
  s->BindText(1, directive_id);
  ASSIGN_OR_RETURN(bool row, s->Step());
  if (!row) return std::optional<RevertRecord>();
  return std::optional<RevertRecord>(ReadRevert(*s));
}

absl::StatusOr<std::vector<RevertRecord>> Store::ListAgentReverts(
    absl::string_view agent_id) {
  ASSIGN_OR_RETURN(Statement * raw, db_->Cached(kListAgentRevertsSql));
  ScopedStatement s(raw);
  s->BindText(1, agent_id);
  std::vector<RevertRecord> out;
  while (true) {
    ASSIGN_OR_RETURN(bool row, s->Step());
    if (!row) break;
    out.push_back(ReadRevert(*s));
  }
  return out;
}

// --------------------------------------------------------------- blacklist

absl::Status Store::InsertBlacklist(const v1::BlacklistEntry& entry) {
  ASSIGN_OR_RETURN(Statement * raw, db_->Cached(kInsertBlacklistSql));
  ScopedStatement s(raw);
  s->BindText(1, entry.product());
  s->BindText(2, entry.version());
  s->BindText(3, entry.reason());
  s->BindText(4, entry.created_by());
  s->BindInt64(5, entry.created_unix_ms());
  absl::Status status = s->Run();
  if (absl::IsAlreadyExists(status)) {
    return absl::AlreadyExistsError(absl::StrCat(
        entry.product(), " ", entry.version(), " is already blacklisted"));
  }
  return status;
}

absl::Status Store::DeleteBlacklist(absl::string_view product,
                                    absl::string_view version) {
  ASSIGN_OR_RETURN(Statement * raw, db_->Cached(kDeleteBlacklistSql));
  ScopedStatement s(raw);
  s->BindText(1, product);
  s->BindText(2, version);
  RETURN_IF_ERROR(s->Run());
  if (db_->Changes() == 0) {
    return absl::NotFoundError(
        absl::StrCat(product, " ", version, " is not blacklisted"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<v1::BlacklistEntry>> Store::GetBlacklist(
    absl::string_view product, absl::string_view version) {
  ASSIGN_OR_RETURN(Statement * raw, db_->Cached(kSelectBlacklistSql));
  ScopedStatement s(raw);
  s->BindText(1, product);
  s->BindText(2, version);
  ASSIGN_OR_RETURN(bool row, s->Step());
  if (!row) return std::optional<v1::BlacklistEntry>();
  return std::optional<v1::BlacklistEntry>(ReadBlacklistEntry(*s));
}

absl::StatusOr<std::vector<v1::BlacklistEntry>> Store::ListBlacklist(
    absl::string_view product) {
  ASSIGN_OR_RETURN(Statement * raw, db_->Cached(kListBlacklistSql));
  ScopedStatement s(raw);
  s->BindText(1, product);
  std::vector<v1::BlacklistEntry> out;
  while (true) {
    ASSIGN_OR_RETURN(bool row, s->Step());
    if (!row) break;
    out.push_back(ReadBlacklistEntry(*s));
  }
  // Same order as releases: by product, newest version first.
  std::sort(out.begin(), out.end(),
            [](const v1::BlacklistEntry& a, const v1::BlacklistEntry& b) {
              if (a.product() != b.product()) return a.product() < b.product();
              return CompareVersions(a.version(), b.version()) > 0;
            });
  return out;
}

}  // namespace fleet::controller
