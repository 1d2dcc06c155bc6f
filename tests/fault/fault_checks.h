// What the fault-injection suite checks after an agent was killed at some
// point of an update and restarted: the program on disk and running, and
// the controller's record of the update. All of it read from the real
// artifacts: /proc, the executable's bytes, the controller's SQLite file
// (read-only).
#ifndef FLEET_TESTS_FAULT_FAULT_CHECKS_H_
#define FLEET_TESTS_FAULT_FAULT_CHECKS_H_

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/fleet/v1/agent.pb.h"
#include "tests/testing/fleet_harness.h"

namespace fleet::testing {

// Pids of the live processes that run `exec_path`: its path is their
// argv[0], or argv[1] of an interpreter (a script runs as `sh EXEC`).
// Zombies are not counted.
std::vector<pid_t> ProgramInstances(const std::string& exec_path);

// The pid of the live fleet-controller serving `data_dir` (its
// `--data-dir` argument), or 0.
pid_t ControllerPid(const std::string& data_dir);

// True if `pid` is stopped (SIGSTOP): state T in /proc/PID/stat.
bool IsStopped(pid_t pid);

// One row of the controller's events table.
struct StoredEvent {
  int64_t seq = 0;
  std::string directive_id;
  v1::UpdatePhase phase = v1::UPDATE_PHASE_UNSPECIFIED;
  int64_t bytes = 0;
  std::string error_class;
  std::string error;
};

// Every event the controller stored for `agent_id`, by seq, from
// DATA_DIR/fleet.db opened read-only (WAL: beside the running controller).
absl::StatusOr<std::vector<StoredEvent>> ControllerEvents(
    const std::string& data_dir, const std::string& agent_id);

// Problems with one agent's stored events for one directive, the only one
// it was given ("" when all is well): seqs not exactly 1..N (an event lost
// or stored twice), a phase out of order or repeated (only DOWNLOADING may
// repeat: each retry reports it with the bytes already on disk), not
// exactly one final phase, or a final phase other than `final_phase`. With
// `phases` not empty, the distinct phases must be exactly those.
std::string EventProblems(const std::vector<StoredEvent>& events,
                          const std::string& directive_id,
                          v1::UpdatePhase final_phase,
                          const std::vector<v1::UpdatePhase>& phases = {});

// Problems with what `agent` left on disk and running ("" when all is
// well): EXEC must be an executable file whose sha256 is `want_sha256_hex`,
// without staged or backup leftovers, and exactly one live instance of it
// must run, reporting `want_version`. Polls up to `timeout` for that state
// (a restarted agent starts the program, and a killed agent's program is
// ended by the kernel a moment after it), then checks it stays for a
// second.
std::string ProgramProblems(const AgentHandle& agent,
                            const std::string& want_version,
                            const std::string& want_sha256_hex,
                            absl::Duration timeout);

// A copy of the sample program for `version` padded with a comment to
// `size` bytes, so its download takes many chunks. Empty on failure.
std::string MakePaddedSampleApp(FleetHarness& fleet, const std::string& version,
                                size_t size, bool crash = false);

// A failpoint that fired (agent/failpoint.h, FLEET_AGENT_FAILPOINT_MARKER).
struct FiredFailpoint {
  std::string point;
  pid_t pid = 0;  // the process it fired in
};

// Waits up to `timeout` for the marker file and parses it.
absl::StatusOr<FiredFailpoint> AwaitFailpoint(const std::string& marker,
                                              absl::Duration timeout);

// Waits for the failpoint `spec` (FLEET_AGENT_FAILPOINT's value) to kill a
// process of `agent`. If it killed the process the test started (a
// single-process agent, or the supervisor), checks that it died of SIGKILL
// and starts it again, as systemd would; a worker killed under a
// supervisor is the supervisor's to restart.
absl::Status AwaitFailpointKillAndRestart(AgentHandle& agent,
                                          const std::string& marker,
                                          const std::string& spec,
                                          absl::Duration timeout);

// Waits until `agent_id` is connected and reports product "app" at
// `version` (so a rollout created next sees it with that from_version).
bool WaitForAgentReporting(FleetHarness& fleet, const std::string& agent_id,
                           const std::string& version, absl::Duration timeout);

// `fleetctl -o json rollout create --product app --version V [--selector S]`:
// the rollout id, or "" with `*error` set.
std::string CreateRollout(FleetHarness& fleet, const std::string& version,
                          const std::string& selector, std::string* error);

// The final outcome the controller shows for the rollout's only target once
// the rollout ended, with its directive id; an error if it did not end in
// `timeout` or has not exactly one target.
absl::StatusOr<v1::RolloutTarget> WaitForOnlyTargetFinal(
    FleetHarness& fleet, const std::string& rollout_id, absl::Duration timeout);

// --- Agent self-update (the agent's own binary as the product) ---

// The product name fleet-agent reports its own binary as (its
// --agent-product default).
inline constexpr char kAgentProduct[] = "fleet-agent";

// An agent like FleetHarness::StartAgent's (product "app", the harness's
// release key, --health-seconds 1) that runs from its own copy of the real
// fleet-agent binary, AgentBinary(agent), so a self-update can replace that
// file; `extra_flags` (e.g. --agent-trial-seconds) and `extra_env` (e.g. a
// failpoint) are added. Not started: the caller preinstalls the program and
// starts agent->process (killed with its process group when destroyed).
// nullptr if the copy fails.
std::unique_ptr<AgentHandle> MakeSelfUpdatingAgent(
    FleetHarness& fleet, const std::string& name,
    std::vector<std::string> extra_flags = {},
    std::map<std::string, std::string> extra_env = {});
std::string AgentBinary(const AgentHandle& agent);

// A new agent release: the real fleet-agent binary with `tag` appended (a
// different sha256; the ELF loader ignores trailing bytes, so it really
// runs as fleet-agent). Written below the harness dir; "" on failure.
std::string MakeNewAgentBinary(FleetHarness& fleet, const std::string& tag);

// Waits until `agent_id` is connected and reports `product` at `version`
// (any version if empty) and, if `sha256_hex` is not empty, with that
// digest.
bool WaitForProductReported(FleetHarness& fleet, const std::string& agent_id,
                            const std::string& product,
                            const std::string& version,
                            const std::string& sha256_hex,
                            absl::Duration timeout);

// `fleetctl -o json rollout create --product P --version V`: the rollout id,
// or "" with `*error` set.
std::string CreateProductRollout(FleetHarness& fleet,
                                 const std::string& product,
                                 const std::string& version,
                                 std::string* error);

// Problems with the agent's own processes and binary ("" when all is well):
// AgentBinary(agent) must hold `want_sha256_hex`, without staged or backup
// leftovers or STATE/agent-trial; the supervisor named by supervisor.pid
// must be alive and run that binary (/proc/PID/exe's digest), as must
// exactly one worker. Polls up to `timeout`, like ProgramProblems.
std::string AgentProblems(const AgentHandle& agent,
                          const std::string& want_sha256_hex,
                          absl::Duration timeout);

// The pid a role's pidfile (supervisor, worker, program) names, 0 if none.
pid_t RolePid(const AgentHandle& agent, const std::string& role);

}  // namespace fleet::testing

#endif  // FLEET_TESTS_FAULT_FAULT_CHECKS_H_
