// The supervisor role of fleet-agent (the default role): a small,
// single-threaded process that owns the agent's child processes and nothing
// else. It holds no controller stream, no journal and no gRPC.
//
//   supervisor ──fork/exec──▶ worker   (fleet-agent --internal-role=worker,
//       │                              socketpair end as fd 3: the stream,
//       │                              downloads, journal, update machine)
//       └──────fork/exec──▶ managed program (own process group)
//
// The worker asks over the socket (agent/supervisor.proto) to start, stop
// and health-wait the program. A worker that dies is restarted with backoff
// while the program keeps running: a worker crash never restarts the
// program. The program is restarted with backoff when it dies while wanted.
//
// Both children get PR_SET_PDEATHSIG(SIGKILL): a supervisor killed with
// SIGKILL takes them along, so the next supervisor (systemd's restart)
// starts from nothing and runs exactly one program. The signal fires when
// the *thread* that forked ends, and this class forks only from the thread
// that calls Run() and never starts another one — which is also what lets a
// later execve of the supervisor keep its children. As a second line
// (a program that cleared its death signal, or the instant between fork
// and prctl), Run() first ends any process that STATE/program.pid or
// STATE/worker.pid names if its kernel start time still matches.
//
// SIGHUP (systemctl reload) makes the supervisor execve its own binary
// again once no worker request is in flight — same pid, the program and the
// worker stay its children (the program is not restarted), their state and
// the worker's socket pass in FLEET_SUPERVISOR_HANDOVER — and then replace
// the worker, so a package upgrade takes effect in both roles. The same
// step is what an agent self-update will use after its trial commits.
//
// Files in the state dir (how tests and operators tell the roles apart):
//   supervisor.lock  flock held while a supervisor runs (a second one fails)
//   supervisor.pid   "PID START_TICKS\n" of this process
//   worker.pid       of the current worker, removed when it ends
//   program.pid      of the current program process, removed when it ends
//   agent-trial      while an agent self-update's trial runs (see above)
// START_TICKS is field 22 of /proc/PID/stat, so a recycled pid never
// matches.
#ifndef FLEET_AGENT_SUPERVISOR_H_
#define FLEET_AGENT_SUPERVISOR_H_

#include <signal.h>
#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "agent/platform/process.h"
#include "agent/supervisor.pb.h"
#include "agent/supervisor_channel.h"

namespace fleet::agent {

// The worker's exit status for an error only the operator can fix (bad
// flags, no identity and no usable enrollment token, ...): restarting it
// cannot help, so the supervisor stops the program and exits with an
// error too, as the single-process agent did (EX_CONFIG).
inline constexpr int kWorkerConfigErrorExit = 78;

// Set in the trial worker's environment: the directive id of the agent
// self-update it is the trial of.
inline constexpr char kAgentTrialEnv[] = "FLEET_AGENT_TRIAL";
// Set in a worker's environment after an agent trial failed: "<directive
// id> <reason>", for the journal's ROLLED_BACK.
inline constexpr char kAgentTrialFailedEnv[] = "FLEET_AGENT_TRIAL_FAILED";

struct SupervisorOptions {
  // The managed program; FLEET_VERSION is set from each StartProgram.
  ProgramSpec program;
  // The worker's command line (the agent binary, --internal-role=worker and
  // the agent's own flags). It gets the socket as fd 3.
  ProgramSpec worker;
  std::string state_dir;
  RestartPolicy program_restart;
  RestartPolicy worker_restart;
  // This binary and its command line, for a reload (SIGHUP): the supervisor
  // execve()s them, keeping its pid and its children.
  std::string self_path;
  std::vector<std::string> self_argv;
  // SIGTERM-to-SIGKILL grace for the worker when the supervisor stops.
  absl::Duration worker_stop_grace = absl::Seconds(10);
  // The same for the program when the supervisor stops.
  absl::Duration program_stop_grace = absl::Seconds(10);
  // The agent's own binary, which a self-update replaces (--agent-exec;
  // normally self_path). Empty: self-update refused.
  std::string agent_exec;
  // How long a trial worker has, from its start, to commit.
  absl::Duration agent_trial_window = absl::Seconds(60);
};

class Supervisor {
 public:
  explicit Supervisor(SupervisorOptions options);
  ~Supervisor();
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  // Takes the state dir's lock, ends leftovers of an earlier supervisor,
  // starts the worker and serves it until one of `stop_signals` arrives
  // (the caller has blocked them, and this thread must be the only one);
  // then stops the worker, then the program, and returns OK. If the worker
  // exits with kWorkerConfigErrorExit, stops the program and returns
  // FAILED_PRECONDITION.
  // FAILED_PRECONDITION if another supervisor runs on the state dir; the
  // errno status for a failing lock, signalfd or poll.
  absl::Status Run(const sigset_t& stop_signals);

 private:
  struct Child {
    std::string name;  // "worker" or "program", for logs and pidfiles
    ProgramSpec spec;
    RestartPolicy policy;
    bool wanted = false;
    pid_t pid = 0;
    absl::Time started;
    absl::Time next_start = absl::InfiniteFuture();
    absl::Duration backoff;
    uint64_t runs = 0;
    uint32_t restarts = 0;
    std::string last_exit;
    int last_exit_signal = 0;
    absl::Time last_ended;
    // While a stop is in progress: when SIGKILL follows the SIGTERM.
    absl::Time kill_at = absl::InfiniteFuture();
    bool stopping = false;
  };
  // An agent self-update between BeginAgentTrial and its commit or
  // rollback.
  struct AgentTrial {
    std::string directive_id;
    std::string old_sha256_hex;  // AGENT_EXEC before the trial
    std::string new_sha256_hex;
    bool worker_started = false;  // the trial worker was spawned
    absl::Time deadline = absl::InfiniteFuture();  // set at that spawn
    // Set once the trial failed; the rollback runs when the trial worker
    // is gone.
    std::string failure;
    absl::Time retry_restore = absl::InfiniteFuture();
  };
  struct PendingWait {
    uint64_t id;
    uint64_t run;  // the program run it watches
    absl::Time deadline;
  };

  absl::Status Spawn(Child& child, bool requested);
  void BeginStop(Child& child, absl::Duration grace);
  void ReapChildren();
  void OnExit(Child& child, const siginfo_t& info);
  void RunTimers(absl::Time now);
  absl::Time NextTimer() const;
  void ReadWorker();
  void CloseWorkerSocket();
  void Handle(const internal::SupervisorRequest& request);
  void Reply(uint64_t id, const absl::Status& status);
  void FillStatus(internal::ProgramStatus* status) const;
  void WritePidFile(const Child& child);
  void RemovePidFile(const Child& child);
  void EndLeftover(const std::string& pidfile);
  // No request in flight and no stop in progress: nothing a re-exec would
  // lose.
  bool Quiet() const;
  // execve of options_.self_path with the children's state in the
  // environment; returns only if it failed (logged; the loop goes on).
  void ReExec();
  // After a ReExec: takes the children and the worker's socket over from
  // the environment. False (nothing adopted) on a normal start.
  bool AdoptFromHandover();
  // Agent self-update (see the file comment).
  absl::Status BeginAgentTrial(const internal::BeginAgentTrial& request);
  absl::Status CommitAgentTrial(const internal::CommitAgentTrial& request);
  // Marks the trial failed with `reason` and kills the trial worker; the
  // rollback follows once it is reaped (at once if none runs).
  void FailAgentTrial(const std::string& reason);
  // Puts the old agent binary back, removes STATE/agent-trial and starts
  // the old worker. On a failed rename retries every second, the worker
  // kept down (the old binary must be back before an old worker runs).
  void RollBackAgentTrial();
  // At start, before any child: a trial recorded by a supervisor that died
  // mid-trial is rolled back; re-execs the old binary if this is not it.
  void RecoverInterruptedAgentTrial();
  std::string AgentTrialPath() const;
  // The worker's spec for a normal (not trial) start.
  void UseNormalWorker();

  SupervisorOptions options_;
  Child worker_;
  Child program_;
  int lock_fd_ = -1;
  int signal_fd_ = -1;
  int socket_fd_ = -1;  // the supervisor's end of the worker's socketpair
  FrameBuffer inbox_;
  std::vector<PendingWait> waits_;
  std::vector<uint64_t> stop_waiters_;
  bool shutting_down_ = false;
  bool reexec_requested_ = false;
  // Set when the worker exited with kWorkerConfigErrorExit.
  bool worker_config_error_ = false;
  std::optional<AgentTrial> trial_;
  // kAgentTrialFailedEnv for the workers started after a failed trial.
  std::string trial_failed_;
  // The next ReExec follows a committed trial: the worker already runs the
  // new binary and is kept.
  bool commit_reexec_ = false;
  // Set by AdoptFromHandover when the handover came from a commit.
  bool keep_adopted_worker_ = false;
};

// The start time of `pid` in clock ticks since boot (/proc/PID/stat field
// 22); NOT_FOUND if no such process, FAILED_PRECONDITION for a zombie.
absl::StatusOr<uint64_t> ProcessStartTicks(pid_t pid);

}  // namespace fleet::agent

#endif  // FLEET_AGENT_SUPERVISOR_H_
