// The controller's persistent state: releases, agents, rollouts and their
// targets, the agents' update events and the blacklist of bad versions, in one
// SQLite database.
//
// The schema is versioned in code (kMigrations in store.cc) and migrated on
// Open. Methods speak the domain (proto messages as rows), never SQL, so that
// another backend (PostgreSQL) can implement the same surface later.
//
//   ASSIGN_OR_RETURN(std::unique_ptr<Store> store, Store::Open(path));
//   RETURN_IF_ERROR(store->RunInTransaction([&]() -> absl::Status {
//     return store->InsertRelease(release);
//   }));
//
// Thread-safety: a Store is one database connection and belongs to one
// thread at a time; callers serialize access. Open one Store per thread that
// needs the database (the control loop writes, admin reads use another).
#ifndef FLEET_CONTROLLER_STORE_STORE_H_
#define FLEET_CONTROLLER_STORE_STORE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/sqlite/database.h"
#include "proto/fleet/v1/admin.pb.h"
#include "proto/fleet/v1/agent.pb.h"
#include "proto/fleet/v1/release.pb.h"

namespace fleet::controller {

// A stored rollout: the wire message without counts and targets, plus the
// bookkeeping the rollout logic needs between decisions.
struct RolloutRecord {
  v1::Rollout rollout;
  // When every target of the current stage became final (the start of the
  // stage's bake time); 0 while the stage is still in progress.
  int64_t stage_settled_ms = 0;
  // The failure gate evaluates only once the rollout has more samples than
  // this: 0 at creation, the samples counted at a trip and at a resume.
  uint32_t gate_armed_samples = 0;
};

// A ROLLBACK directive outside a rollout's forward path: an agent led back
// from a blacklisted version, or a target of a rollout aborted with
// rollback sent back to its from_version. Events naming directive_id move
// `state` like a rollout target's.
struct RevertRecord {
  std::string directive_id;
  std::string agent_id;
  std::string product;
  // The rollout it belongs to (the aborted one, or the one whose gate
  // blacklisted the version); "" when an operator blacklisted it.
  std::string rollout_id;
  std::string from_version;  // the version it leaves
  std::string to_version;
  // DIRECTED (sent, not acknowledged) .. HEALTHY, FAILED, ROLLED_BACK.
  v1::TargetState state = v1::TARGET_STATE_DIRECTED;
  std::string error;
  int64_t created_ms = 0;
  int64_t updated_ms = 0;
};

class Store {
 public:
  // Opens (creating if missing) the database at `path` and migrates it to
  // the newest schema. FAILED_PRECONDITION if the file's schema is newer than
  // this binary knows; the SQLite error otherwise.
  static absl::StatusOr<std::unique_ptr<Store>> Open(const std::string& path);

  // The schema version this binary migrates to.
  static int LatestSchemaVersion();

  // Runs `fn` in one transaction: committed if `fn` returns OK, rolled back
  // otherwise (the status of `fn`, or of the commit, is returned).
  absl::Status RunInTransaction(absl::FunctionRef<absl::Status()> fn);
  // Runs `fn` inside a savepoint of the open transaction: its writes are
  // undone if it fails, the rest of the transaction is kept.
  // REQUIRES: inside RunInTransaction.
  absl::Status RunInSavepoint(absl::FunctionRef<absl::Status()> fn);

  // ---- releases
  // ALREADY_EXISTS if (product, version, platform) is stored.
  absl::Status InsertRelease(const v1::Release& release);
  // NOT_FOUND if absent.
  absl::StatusOr<v1::Release> GetRelease(absl::string_view product,
                                         absl::string_view version,
                                         absl::string_view platform);
  // Filters are exact matches; "" matches all. Sorted by product, then
  // newest version first (SemVer precedence), then platform.
  absl::StatusOr<std::vector<v1::Release>> ListReleases(
      absl::string_view product, absl::string_view platform);
  // The platforms a release of product/version exists for, sorted.
  absl::StatusOr<std::vector<std::string>> ReleasePlatforms(
      absl::string_view product, absl::string_view version);
  // The version of `product` on `platform` whose artifact has `sha256`
  // (32 raw bytes); nullopt if none.
  absl::StatusOr<std::optional<std::string>> VersionForDigest(
      absl::string_view product, absl::string_view platform,
      absl::string_view sha256);

  // ---- agents
  // Inserts or replaces the agent and its installed products. Keeps the
  // stored first_seen time when the agent is already known.
  absl::Status UpsertAgent(const v1::Agent& agent);
  // NOT_FOUND if unknown.
  absl::StatusOr<v1::Agent> GetAgent(absl::string_view agent_id);
  // Agents sorted by id; with `product` non-empty only those that list it as
  // installed.
  absl::StatusOr<std::vector<v1::Agent>> ListAgents(absl::string_view product);
  // Sets connected and last_seen. NOT_FOUND if the agent is unknown.
  absl::Status SetAgentConnected(absl::string_view agent_id, bool connected,
                                 int64_t now_ms);
  absl::Status TouchAgent(absl::string_view agent_id, int64_t now_ms);
  // At start-up no stream is open, whatever the last run left behind.
  absl::Status MarkAllAgentsDisconnected();
  // Records that the agent now runs `version` of `product` (digest
  // `sha256`); the version it ran before becomes the newest previous one.
  absl::Status SetInstalledVersion(absl::string_view agent_id,
                                   absl::string_view product,
                                   absl::string_view version,
                                   absl::string_view sha256);

  // ---- events
  // Stores the event unless (agent_id, event.seq) is already stored.
  // Returns true if it was new.
  absl::StatusOr<bool> InsertEvent(absl::string_view agent_id,
                                   const v1::UpdateEvent& event,
                                   int64_t received_ms);
  // Highest stored seq for the agent; 0 if none.
  absl::StatusOr<uint64_t> MaxEventSeq(absl::string_view agent_id);
  // Events of one agent in seq order (for tests and diagnostics).
  absl::StatusOr<std::vector<v1::UpdateEvent>> ListEvents(
      absl::string_view agent_id);

  // ---- rollouts
  // ALREADY_EXISTS if the id is taken.
  absl::Status InsertRollout(const RolloutRecord& record);
  // Writes state, reason, current stage, settled time and updated time.
  // NOT_FOUND if the rollout is unknown.
  absl::Status UpdateRollout(const RolloutRecord& record);
  // NOT_FOUND if unknown.
  absl::StatusOr<RolloutRecord> GetRollout(absl::string_view rollout_id);
  // Newest first; "" matches every product; `active_only` keeps PENDING,
  // RUNNING and PAUSED rollouts.
  absl::StatusOr<std::vector<RolloutRecord>> ListRollouts(
      absl::string_view product, bool active_only);

  // Inserts or replaces the target (rollout_id, target.agent_id).
  absl::Status UpsertTarget(absl::string_view rollout_id,
                            const v1::RolloutTarget& target);
  // nullopt if the agent is not a target of the rollout.
  absl::StatusOr<std::optional<v1::RolloutTarget>> GetTarget(
      absl::string_view rollout_id, absl::string_view agent_id);
  // Sorted by agent id.
  absl::StatusOr<std::vector<v1::RolloutTarget>> ListTargets(
      absl::string_view rollout_id);
  // How many targets of the rollout are in each state (absent: none).
  absl::StatusOr<std::map<v1::TargetState, uint32_t>> CountTargetsByState(
      absl::string_view rollout_id);

  // How many targets of the rollout are in each (stage, state): enough to
  // evaluate the failure gate and whether the current stage is settled
  // without reading every target row.
  absl::StatusOr<std::map<std::pair<uint32_t, v1::TargetState>, uint32_t>>
  CountTargetsByStageAndState(absl::string_view rollout_id);

  // How many targets of the rollout are in each revert_state, without
  // targets never directed back.
  absl::StatusOr<std::map<v1::TargetState, uint32_t>> CountRevertsByState(
      absl::string_view rollout_id);

  // ---- reverts
  // Inserts the revert, or updates state, error and updated time of the one
  // with its directive id.
  absl::Status UpsertRevert(const RevertRecord& revert);
  // nullopt if no revert has that directive id.
  absl::StatusOr<std::optional<RevertRecord>> GetRevert(
      absl::string_view directive_id);
  // The agent's reverts, newest first.
  absl::StatusOr<std::vector<RevertRecord>> ListAgentReverts(
      absl::string_view agent_id);

  // ---- blacklist
  // ALREADY_EXISTS if (product, version) is already blacklisted.
  absl::Status InsertBlacklist(const v1::BlacklistEntry& entry);
  // NOT_FOUND if (product, version) is not blacklisted.
  absl::Status DeleteBlacklist(absl::string_view product,
                               absl::string_view version);
  // nullopt if (product, version) is not blacklisted.
  absl::StatusOr<std::optional<v1::BlacklistEntry>> GetBlacklist(
      absl::string_view product, absl::string_view version);
  // "" matches every product. Sorted by product, then newest version first.
  absl::StatusOr<std::vector<v1::BlacklistEntry>> ListBlacklist(
      absl::string_view product);

 private:
  explicit Store(std::unique_ptr<sqlite::Database> db) : db_(std::move(db)) {}

  absl::Status ReplaceInstalled(const v1::Agent& agent);
  absl::Status ReadInstalled(v1::Agent& agent);
  absl::StatusOr<std::map<v1::TargetState, uint32_t>> CountByState(
      const char* sql, absl::string_view rollout_id);

  std::unique_ptr<sqlite::Database> db_;
  int savepoint_depth_ = 0;
};

}  // namespace fleet::controller

#endif  // FLEET_CONTROLLER_STORE_STORE_H_
