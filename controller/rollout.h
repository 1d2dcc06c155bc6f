// Rollout logic as pure functions over stored state: who is a target, what
// an update event does to a target, when a stage is done and when a rollout
// completes. No I/O and no clock reads: callers pass `now` (from a
// fleet::Clock), so every decision is reproducible in tests.
//
// Model. A rollout names a product and version, a selector and an ordered
// list of stages (percent of the selected fleet, bake time). Each target is
// assigned to a stage's cohort by a stable hash of (rollout id, agent id);
// directives go only to targets whose stage is at or below the rollout's
// current stage. A stage is settled when every target in it and before it is
// final; after its bake time the next stage starts. A rollout with targets
// completes when all of them are final. A rollout without targets keeps
// running so agents that connect later can join it.
//
// Target states follow the table in docs/ARCHITECTURE.md: events move a
// target forward only, a final target never changes, and events of a
// directive that is not the target's current one do not move it.
#ifndef FLEET_CONTROLLER_ROLLOUT_H_
#define FLEET_CONTROLLER_ROLLOUT_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "controller/store/store.h"
#include "proto/fleet/v1/admin.pb.h"
#include "proto/fleet/v1/agent.pb.h"
#include "proto/fleet/v1/release.pb.h"

namespace fleet::controller {

using Stages = google::protobuf::RepeatedPtrField<v1::Stage>;

// HEALTHY, FAILED, ROLLED_BACK and SKIPPED.
bool IsFinal(v1::TargetState state);
// "HEALTHY", "FAILED", ... (the enum name without its prefix).
std::string TargetStateName(v1::TargetState state);

// The target state an event phase moves a target to; UNSPECIFIED for an
// unknown phase.
v1::TargetState TargetStateForPhase(v1::UpdatePhase phase);

// Applies `event` to `target` if it moves it: the event names the target's
// current directive, the target is not final, and the new state is final or
// further along. Then sets state, error (for FAILED and ROLLED_BACK) and
// updated time, and returns true; otherwise leaves `target` alone and
// returns false.
bool ApplyEvent(const v1::UpdateEvent& event, absl::Time now,
                v1::RolloutTarget& target);

// INVALID_ARGUMENT naming the bad field: a platform that is not "os/arch",
// a bad label key or value.
absl::Status ValidateSelector(const v1::Selector& selector);

// The stages a rollout runs: one stage of 100 % without bake when `stages`
// is empty. INVALID_ARGUMENT unless percents are in 1..100, strictly
// increasing and end at 100, and bake times are in [0, 30 days].
absl::StatusOr<Stages> NormalizeStages(const Stages& stages);

// The index of the stage whose cohort holds `agent_id`: stable for a given
// rollout, spreading agents evenly over percent buckets.
// REQUIRES: stages normalized (non-empty, ending at 100).
uint32_t StageOf(absl::string_view rollout_id, absl::string_view agent_id,
                 const Stages& stages);

// True if the agent is on the selector's platform (when set) and carries
// every one of its labels with the same value.
bool SelectorMatches(const v1::Selector& selector, const v1::Agent& agent);

// True if some agent could match both selectors: the platforms are equal or
// either is empty, and no label key is required with different values.
bool SelectorsOverlap(const v1::Selector& a, const v1::Selector& b);

// The target `agent` starts as in `rollout`, or nullopt if it is not one:
// it must list the rollout's product as installed (any version, even ""),
// run on a platform in `release_platforms` (where a release of the product
// and version exists) and match the selector. Agents already on the version
// start HEALTHY, the rest PENDING.
std::optional<v1::RolloutTarget> NewTarget(
    const v1::Rollout& rollout, const v1::Agent& agent,
    const std::vector<std::string>& release_platforms, absl::Time now);

// True if `target` should be sent a new directive now: the rollout is
// RUNNING, the target PENDING and in a started stage.
bool NeedsDirective(const RolloutRecord& record,
                    const v1::RolloutTarget& target);

// What an operator asks of a rollout.
enum class RolloutCommand { kPause, kResume, kAbort };
// "pause", "resume", "abort".
std::string RolloutCommandName(RolloutCommand command);
// "RUNNING", "PAUSED", ... (the enum name without its prefix).
std::string RolloutStateName(v1::RolloutState state);

// Applies `command` to `record`: pause moves RUNNING to PAUSED, resume moves
// PAUSED to RUNNING, abort moves RUNNING or PAUSED to ABORTED (final). Sets
// the state reason ("paused by operator: <reason>", ...) and updated time.
// FAILED_PRECONDITION naming the rollout's state for any other transition;
// `record` is then unchanged.
absl::Status ApplyRolloutCommand(RolloutCommand command,
                                 absl::string_view reason, absl::Time now,
                                 RolloutRecord& record);

// OK if `limit` is unset, a count of 1 or more, or a percent in 1..100;
// INVALID_ARGUMENT naming max_in_flight otherwise.
absl::Status ValidateMaxInFlight(const v1::MaxInFlight& limit);

// How many more targets may be directed now: the limit (a count, or a
// percent of counts.total() rounded up and at least 1) minus the targets in
// flight, never below 0. UINT32_MAX when `limit` is unset.
uint32_t DirectiveBudget(const v1::MaxInFlight& limit,
                         const v1::TargetCounts& counts);

// OK if `policy` has max_failure_rate in [0, 1]; INVALID_ARGUMENT naming
// failure_policy.max_failure_rate otherwise (NaN included).
absl::Status ValidateFailurePolicy(const v1::FailurePolicy& policy);

// False for the default policy (max_failure_rate 0 and min_samples 0): no
// gate.
bool HasGate(const v1::FailurePolicy& policy);

// Why a failure gate tripped.
struct GateTrip {
  uint32_t failed = 0;   // FAILED or ROLLED_BACK targets
  uint32_t samples = 0;  // HEALTHY, FAILED or ROLLED_BACK targets
  // "gate: 3 of 5 finished targets failed (60% > 5%)"
  std::string reason;
};

// Evaluates the gate of `policy` over `counts` (samples = healthy + failed;
// SKIPPED targets are no sample). Trips when the policy has a gate, samples
// exceed `armed_samples` (the samples seen when the gate was last re-armed
// by a resume; 0 for a new rollout), samples >= min_samples and
// failed / samples > max_failure_rate (strictly: a rate equal to the
// threshold does not trip). nullopt when it does not trip.
std::optional<GateTrip> EvaluateGate(const v1::FailurePolicy& policy,
                                     const v1::TargetCounts& counts,
                                     uint32_t armed_samples);

// Applies a trip to a RUNNING rollout: PAUSED (action PAUSE or unspecified)
// or ABORTED (action ABORT) with the trip's reason, updated time `now`.
void ApplyGateTrip(const GateTrip& trip, const v1::FailurePolicy& policy,
                   absl::Time now, RolloutRecord& record);

// The blacklist entry a trip of a policy with `blacklist` adds: a reason
// naming the rollout and the counts, created_by "gate:<rollout id>", no
// created time.
v1::BlacklistEntry GateBlacklistEntry(const GateTrip& trip,
                                      const v1::Rollout& rollout);

// Moves a RUNNING rollout forward given all of its targets: settles the
// current stage, starts the next one after the bake time, completes the
// rollout when every target is final on the last stage. Returns true if
// `record` changed (state, reason, current stage, settled or updated time).
bool AdvanceRollout(const std::vector<v1::RolloutTarget>& targets,
                    absl::Time now, RolloutRecord& record);

// Counts by state; the vector form also counts revert states (reverting,
// reverted, revert_failed).
v1::TargetCounts CountTargets(
    const std::map<v1::TargetState, uint32_t>& by_state);
v1::TargetCounts CountTargets(const std::vector<v1::RolloutTarget>& targets);
// Adds targets by revert_state (DIRECTED..RESTARTED: reverting, HEALTHY:
// reverted, FAILED or ROLLED_BACK: revert_failed) to `counts`.
void AddRevertCounts(const std::map<v1::TargetState, uint32_t>& by_revert_state,
                     v1::TargetCounts& counts);

// ---- offline timeout
// OK for 0 (use the controller's default) up to 30 days; INVALID_ARGUMENT
// naming offline_timeout_seconds otherwise.
absl::Status ValidateOfflineTimeout(int64_t seconds);

// Skips a target whose agent cannot be reached: if the rollout is RUNNING,
// the target is not final and in a started stage, and the agent has been
// offline since `offline_since` for at least the rollout's offline timeout,
// the target becomes SKIPPED (final, no gate sample) with an error saying
// since when. Its directive id is kept, so events the agent sends later
// are recognised once it is taken back. Returns true if `target` changed.
bool SkipIfOffline(const v1::Rollout& rollout, absl::Time offline_since,
                   absl::Time now, v1::RolloutTarget& target);

// Takes back a SKIPPED target whose agent reconnected while the rollout is
// RUNNING or PAUSED: HEALTHY if the agent already runs the rollout's
// version, DIRECTED if a directive was sent before it was skipped (resent
// unless the agent has it), PENDING otherwise (from_version refreshed).
// Returns true if `target` changed; a COMPLETED or ABORTED rollout keeps
// its skipped targets.
bool RetakeSkippedTarget(const v1::Rollout& rollout,
                         absl::string_view installed_version, absl::Time now,
                         v1::RolloutTarget& target);

// ---- going back (abort with rollback, leading back from a blacklist)
// True if an abort with rollback directs `target` back to its from_version:
// it has not been directed back yet and it left from_version or may have —
// in flight, HEALTHY on the rollout's version coming from another one, or
// SKIPPED after a directive was sent.
bool NeedsRevert(const v1::Rollout& rollout, const v1::RolloutTarget& target);

// Applies an event of the revert's directive like ApplyEvent does to a
// target. Returns true if `revert` changed.
bool ApplyRevertEvent(const v1::UpdateEvent& event, absl::Time now,
                      RevertRecord& revert);

// Copies a revert's directive id, version, state and error into the
// target's revert_* fields.
void SetRevertProgress(const RevertRecord& revert, v1::RolloutTarget& target);

// Where an agent running blacklisted `installed.version()` is led back to:
// the first of its previous_versions (newest first) that is not
// blacklisted and has a release for its platform (`released`, newest
// first), else the newest release in `released` that is not blacklisted.
// `released` lists the versions released for the agent's platform; nullopt
// if no version qualifies.
std::optional<std::string> LeadBackVersion(
    const v1::InstalledProduct& installed,
    const std::vector<std::string>& released,
    const std::vector<std::string>& blacklisted);

// The rollout a blacklist entry came from: "<id>" for created_by
// "gate:<id>", "" for an operator's entry.
std::string BlacklistRolloutId(const v1::BlacklistEntry& entry);

// An UPDATE directive carrying the release's signed manifest, no deadline.
v1::UpdateDirective MakeDirective(const std::string& directive_id,
                                  const std::string& rollout_id,
                                  const v1::Release& release);
// The directive of `revert` carrying the release of its to_version: kind
// ROLLBACK when to_version is lower than from_version (or either is not
// SemVer), UPDATE when it is higher (so the agent still checks expiry).
v1::UpdateDirective MakeRevertDirective(const RevertRecord& revert,
                                        const v1::Release& release);

}  // namespace fleet::controller

#endif  // FLEET_CONTROLLER_ROLLOUT_H_
