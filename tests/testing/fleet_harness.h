// A whole fleet on 127.0.0.1 for end-to-end tests: a real fleet-controller
// process with its SQLite file in a temp dir, real fleet-agent processes
// managing real sample programs, fleetctl runs, and direct AdminService calls.
//
//   FleetHarness fleet;
//   ASSERT_TRUE(fleet.StartController().ok());
//   AgentHandle* a = fleet.StartAgent("a1");
//   RunResult r = fleet.Fleetctl({"release", "push", ...});
//
// Every process started is killed (with its process group) when the harness
// is destroyed, also when the test fails half-way.
#ifndef FLEET_TESTS_TESTING_FLEET_HARNESS_H_
#define FLEET_TESTS_TESTING_FLEET_HARNESS_H_

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/ed25519.h"
#include "proto/fleet/v1/admin.grpc.pb.h"
#include "tests/testing/process.h"

namespace fleet::testing {

// What a sample program reports about itself in its status file.
struct SampleStatus {
  std::string version;
  pid_t pid = 0;
};

// One directive as the agent journaled it (agent/journal.cc, table updates):
// when it arrived (created_ms) and its last state change (updated_ms; for a
// final state, when the agent finished it).
struct JournalUpdate {
  std::string directive_id;
  std::string rollout_id;
  std::string from_version;
  // The version the directive's signed manifest names (the journal's
  // to_version column is left empty until the agent has checked the
  // manifest, and is not rewritten after).
  std::string to_version;
  int kind = 0;       // v1::DirectiveKind
  std::string state;  // "HEALTHY", "ROLLED_BACK", ...
  int64_t created_ms = 0;
  int64_t updated_ms = 0;
};

struct AgentHandle {
  std::string name;
  std::string dir;          // everything of this agent lives below
  std::string state_dir;    // --state-dir
  std::string exec_path;    // --exec: the managed program's path
  std::string status_path;  // where the sample program writes "VERSION PID"
  std::unique_ptr<Subprocess> process;

  // The sample program's last status, if its file exists and parses.
  std::optional<SampleStatus> Status() const;
  // True if the status names `version` and its pid is alive and runs
  // `exec_path`.
  bool Runs(const std::string& version) const;
  // Every directive in the agent's journal, oldest first. Reads the live
  // journal (SQLite WAL allows a reader beside the agent).
  absl::StatusOr<std::vector<JournalUpdate>> JournalUpdates() const;
  // Makes programs from FleetHarness::MakeCrashWhereMarkedApp(version) exit 1
  // at once on this agent from their next start on.
  absl::Status MarkCrash(const std::string& version) const;
};

class FleetHarness {
 public:
  FleetHarness();
  ~FleetHarness();

  const std::string& dir() const { return dir_; }
  const std::string& private_key_path() const { return private_key_path_; }
  const Ed25519PrivateKey& release_key() const { return *release_key_; }
  std::string controller_address() const;
  std::string controller_data_dir() const { return dir_ + "/controller"; }

  // Starts fleet-controller on 127.0.0.1 with a free port (the same port
  // again on a restart) and waits until it accepts RPCs. `extra_flags` are
  // appended (e.g. --trust-root FILE).
  absl::Status StartController(std::vector<std::string> extra_flags = {});

  // Starts a fleet-agent managing product `product` whose program lives at
  // DIR/<name>/bin/<product>. `trust_key` defaults to the release key.
  // `extra_env` adds to the agent's environment (e.g. a failpoint).
  AgentHandle* StartAgent(const std::string& name,
                          const std::string& product = "app",
                          std::vector<std::string> extra_flags = {},
                          const std::string& trust_key = "",
                          std::map<std::string, std::string> extra_env = {});
  std::vector<AgentHandle*> agents();

  // Writes a sample program for `version` (see deploy/sample-app) and
  // returns its path. `crash`: the program exits 1 at once.
  std::string MakeSampleApp(const std::string& version, bool crash = false);
  // A program for `version` that behaves as the sample program, except on
  // agents marked with AgentHandle::MarkCrash(version), where it exits 1 at
  // once: one signed release that is healthy on some agents and crashes on
  // others, as a bad release that only shows under some conditions does.
  std::string MakeCrashWhereMarkedApp(const std::string& version);
  // Installs a program at an agent's exec path before it starts (as an
  // operator's installer would).
  absl::Status Preinstall(AgentHandle* agent, const std::string& program);

  // SIGKILLs the controller (no shutdown of any kind) and reaps it; the data
  // dir stays for a StartController() on the same port.
  void KillController();

  // Runs fleetctl with --controller set.
  RunResult Fleetctl(std::vector<std::string> args);
  // Starts fleetctl with --controller set in the background, stdout and
  // stderr to `log_path`; the caller waits for it. Killed with the harness
  // if the caller does not.
  Subprocess* StartFleetctl(std::vector<std::string> args,
                            const std::string& log_path);
  // `fleetctl release push` of `file` signed with the release key.
  RunResult PushRelease(const std::string& product, const std::string& version,
                        const std::string& file,
                        const std::string& platform = "");

  v1::AdminService::Stub& admin();

  // Polls GetRollout until it is COMPLETED or ABORTED, or `timeout` passes.
  absl::StatusOr<v1::Rollout> WaitForRolloutEnd(const std::string& rollout_id,
                                                absl::Duration timeout);

  // Logs of every process, for failure messages.
  std::string DumpLogs() const;

 private:
  std::string dir_;
  std::string public_key_path_;
  std::string private_key_path_;
  std::optional<Ed25519PrivateKey> release_key_;
  int grpc_port_ = 0;
  std::unique_ptr<Subprocess> controller_;
  std::vector<std::unique_ptr<AgentHandle>> agents_;
  std::vector<std::unique_ptr<Subprocess>> fleetctls_;
  std::unique_ptr<v1::AdminService::Stub> admin_;
};

}  // namespace fleet::testing

#endif  // FLEET_TESTS_TESTING_FLEET_HARNESS_H_
