// `fleetctl rollout ...`: moving a product's fleet to a version.
#ifndef FLEET_CLI_ROLLOUT_COMMANDS_H_
#define FLEET_CLI_ROLLOUT_COMMANDS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
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
// error), or the Rollout as JSON. UsageError for a malformed id; NOT_FOUND
// says to list rollouts.
absl::Status RolloutStatus(const std::string& rollout_id, CommandContext& ctx);

struct RolloutListOptions {
  std::string product;  // "" = all
};

// `rollout list`: AdminService.ListRollouts, newest first, as a table (id,
// product, version, state, stage, target counts, age) or the JSON of the
// ListRolloutsResponse. An empty table prints a note on err instead.
absl::Status RolloutList(const RolloutListOptions& options,
                         CommandContext& ctx);

struct RolloutChangeOptions {
  std::string rollout_id;
  std::string reason;  // optional, shown as the rollout's state reason
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
// `rollout abort ID [--reason]`: AdminService.AbortRollout; as RolloutPause.
absl::Status RolloutAbort(const RolloutChangeOptions& options,
                          CommandContext& ctx);

// "running", "rolled-back": the enum value's name without its prefix, lower
// case, '_' as '-'.
std::string RolloutStateLabel(v1::RolloutState state);
std::string TargetStateLabel(v1::TargetState state);

}  // namespace fleet::cli

#endif  // FLEET_CLI_ROLLOUT_COMMANDS_H_
