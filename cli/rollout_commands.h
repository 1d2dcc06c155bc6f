// `fleetctl rollout ...`: moving a product's fleet to a version.
#ifndef FLEET_CLI_ROLLOUT_COMMANDS_H_
#define FLEET_CLI_ROLLOUT_COMMANDS_H_

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cli/command_context.h"
#include "proto/fleet/v1/admin.pb.h"

namespace fleet::cli {

struct RolloutCreateOptions {
  std::string product;
  std::string version;
  std::vector<std::string> selector;  // "key=value" label pairs
  std::string platform;               // "" = every platform
  std::vector<std::string> stages;    // percents, e.g. {"10", "50", "100"}
  std::string bake;                   // ParseHumanDuration; needs stages
  std::string max_in_flight;          // "5" or "20%"; "" = no limit
  // The failure gate; "" = no gate. "5%" or a fraction such as "0.05".
  std::string max_failure_rate;
  std::string min_samples;  // a count, at least 1; "" = 1; needs the rate
  std::string on_failure;   // "pause" (default) or "abort"
  bool blacklist_on_failure = false;  // needs the rate
};

// Checks the options and builds the request. UsageError naming the flag for
// a bad product, version, platform, selector pair (not key=value, invalid
// label, key given twice), stage (not 1..100, not increasing), bake time or
// max in flight (not a count of 1 or more, nor a percent 1%..100%), failure
// rate (not 0%..100% nor a fraction 0..1), min samples (not a count),
// --on-failure (not pause or abort), or a gate flag without
// --max-failure-rate.
absl::StatusOr<v1::CreateRolloutRequest> BuildCreateRolloutRequest(
    const RolloutCreateOptions& options);

// `rollout create`: AdminService.CreateRollout; prints "rollout ID created:
// N targets" (table, plus a note on err when N is 0) or the Rollout (json).
// FAILED_PRECONDITION (no such release, or none for --platform) says how to
// push it; FAILED_PRECONDITION "active rollout <id> ..." (an overlapping
// rollout runs) says to wait for it or abort it; FAILED_PRECONDITION
// "version ... is blacklisted" points at the blacklist; other failures via
// ExplainRpcError.
absl::Status RolloutCreate(const RolloutCreateOptions& options,
                           CommandContext& ctx);

// `rollout status ID`: AdminService.GetRollout; prints the rollout's state,
// stage, counts and ages, then one row per target (agent, state, from → to,
// error), or the Rollout as JSON. Once targets were directed back (abort
// --rollback, leading back), a ROLLBACK line counts them and a REVERT
// column shows each one's version and progress. UsageError for a malformed id;
// NOT_FOUND says to list rollouts.
absl::Status RolloutStatus(const std::string& rollout_id, CommandContext& ctx);

struct RolloutListOptions {
  std::string product;  // "" = all
};

// `rollout list`: AdminService.ListRollouts, newest first, as a table (id,
// product, version, state, stage, target counts, age) or the JSON of the
// ListRolloutsResponse. An empty table prints a note on err instead.
absl::Status RolloutList(const RolloutListOptions& options,
                         CommandContext& ctx);

// How `rollout status ID --watch` ended, as the process's exit code. 0 is
// completed; 1 and 2 keep their meaning from cli/errors.h (the watch could
// not go on: controller refused or unreachable for longer than --timeout;
// bad flags). A script waiting on a rollout reads:
//   0  COMPLETED: every target is final
//   3  ABORTED: by an operator, by the failure gate (--on-failure abort) or
//      because its version was blacklisted; the state reason says which
//   4  PAUSED by the failure gate (reason "gate: ..."): the rollout will not
//      move until an operator resumes or aborts it, so waiting longer is
//      pointless. A pause by an operator does NOT end the watch: someone
//      decided to hold it and will resume it.
inline constexpr int kExitRolloutAborted = 3;
inline constexpr int kExitRolloutPausedByGate = 4;

struct RolloutWatchOptions {
  std::string rollout_id;
  std::string interval = "1s";  // between polls, ParseHumanDuration, >= 100ms
  // Redraw one frame in place (ANSI cursor movement) instead of printing a
  // line per change. nullopt: when out is std::cout and stdout is a
  // terminal.
  std::optional<bool> terminal;
  // Waits between polls; absl::SleepFor when empty. Tests pass one that
  // advances a FakeClock.
  std::function<void(absl::Duration)> sleep;
};

// `rollout status ID --watch`: polls AdminService.GetRollout every interval
// until the rollout is COMPLETED, ABORTED or PAUSED by its gate and no target
// is still being directed back to its previous version
// (counts.reverting == 0).
//  - terminal: a frame redrawn in place: state and reason, an overall
//    progress bar, one row per stage (targets, pending, in flight, succeeded,
//    failed, skipped), targets directed back (reverting, reverted, revert
//    failed) when there are any, the gate's state.
//  - not a terminal (pipes, CI logs, tests): one line per change, starting
//    with the UTC time, carrying the same facts; nothing while nothing
//    changes.
//  - json: one compact JSON object (the Rollout, as `status -o json`) per
//    line whenever any field of the rollout changed (JSON lines).
// Returns OK when COMPLETED; a status with ExitCodeFor() ==
// kExitRolloutAborted or kExitRolloutPausedByGate naming the state and its
// reason otherwise. UsageError for a malformed id or interval; NOT_FOUND
// says to list rollouts; UNAVAILABLE and DEADLINE_EXCEEDED are retried
// (a note on err, once per outage; a restarting controller does not end the
// watch) until the controller has been unreachable for longer than
// --timeout, then fail as ExplainRpcError; other errors fail at once.
absl::Status RolloutWatch(const RolloutWatchOptions& options,
                          CommandContext& ctx);

// Per-stage progress of a rollout, from its targets (RolloutTarget.stage;
// out-of-range stages count in the last one). Pending is PENDING; in flight
// DIRECTED to RESTARTED; succeeded HEALTHY; failed FAILED and ROLLED_BACK;
// skipped SKIPPED.
struct StageProgress {
  uint32_t percent = 100;
  uint32_t total = 0;
  uint32_t pending = 0;
  uint32_t in_flight = 0;
  uint32_t succeeded = 0;
  uint32_t failed = 0;
  uint32_t skipped = 0;
};
std::vector<StageProgress> StageBreakdown(const v1::Rollout& rollout);

struct RolloutChangeOptions {
  std::string rollout_id;
  std::string reason;     // optional, shown as the rollout's state reason
  bool rollback = false;  // abort only: AbortRolloutRequest.rollback
};

// `rollout pause ID [--reason]`: AdminService.PauseRollout. Prints "rollout
// ID paused: ..." with what still moves and how to resume, or the Rollout as
// JSON. UsageError for a malformed id; NOT_FOUND says to list rollouts;
// FAILED_PRECONDITION (not running) gives the controller's message and
// points at `rollout status`.
absl::Status RolloutPause(const RolloutChangeOptions& options,
                          CommandContext& ctx);
// `rollout resume ID`: AdminService.ResumeRollout; as RolloutPause.
absl::Status RolloutResume(const std::string& rollout_id, CommandContext& ctx);
// `rollout abort ID [--reason] [--rollback]`: AdminService.AbortRollout; as
// RolloutPause. With rollback the request asks the controller to lead every
// target that left its from_version (updated or in flight) back to it with a
// ROLLBACK directive, and the output says so.
absl::Status RolloutAbort(const RolloutChangeOptions& options,
                          CommandContext& ctx);

// "running", "rolled-back": the enum value's name without its prefix, lower
// case, '_' as '-'.
std::string RolloutStateLabel(v1::RolloutState state);
std::string TargetStateLabel(v1::TargetState state);
// The labels in colour for tables (CommandContext::Paint): completed and
// healthy green, paused and rolled back yellow, aborted and failed red,
// pending and skipped dim; the rest plain.
std::string PaintedRolloutState(v1::RolloutState state,
                                const CommandContext& ctx);
std::string PaintedTargetState(v1::TargetState state,
                               const CommandContext& ctx);

}  // namespace fleet::cli

#endif  // FLEET_CLI_ROLLOUT_COMMANDS_H_
