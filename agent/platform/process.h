// Runs and supervises the managed program: one child process, in its own
// process group, restarted with exponential backoff when it dies on its own,
// stopped with SIGTERM then SIGKILL.
//
//   ProgramSupervisor program({.path = "/opt/app/bin/app", .args = {"-v"}});
//   RETURN_IF_ERROR(program.Start());
//   ...
//   RETURN_IF_ERROR(program.Stop(absl::Seconds(10)));
//
// The supervisor knows nothing about updates or the controller: the updater
// drives it around a swap (Stop, swap, Start, WaitStaysUp), and the later
// supervisor/worker split can own it in the supervisor process unchanged.
//
// One monitor thread per supervisor spawns (fork/execve) and reaps (blocking
// waitid on the child's pid, no polling). POSIX only (Linux, macOS); Windows
// needs the service manager and is a later issue.
#ifndef FLEET_AGENT_PLATFORM_PROCESS_H_
#define FLEET_AGENT_PLATFORM_PROCESS_H_

#include <signal.h>
#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/platform/program_control.h"

namespace fleet::agent {

// What to run.
struct ProgramSpec {
  std::string path;               // executable, run as argv[0]
  std::vector<std::string> args;  // argv[1..]
  // Set in the child's environment on top of the agent's own (overriding
  // variables of the same name).
  std::map<std::string, std::string> env;
};

struct RestartPolicy {
  // Delay before the first automatic restart; doubles per consecutive crash.
  absl::Duration initial_backoff = absl::Milliseconds(500);
  absl::Duration max_backoff = absl::Seconds(30);
  // A run that lasted at least this long resets the delay to initial_backoff.
  absl::Duration reset_after = absl::Seconds(30);
  // Linux: the program gets SIGKILL when the agent dies (PR_SET_PDEATHSIG),
  // so an agent killed with SIGKILL leaves no program behind for its next
  // start to duplicate. The supervisor/worker split (the supervisor re-execs
  // itself on self-update) must turn this off and adopt its children instead.
  bool die_with_agent = true;
};

// How SpawnProcess starts a child.
struct SpawnOptions {
  // Linux: the child gets SIGKILL when the thread that forked it ends
  // (PR_SET_PDEATHSIG); see RestartPolicy::die_with_agent.
  bool die_with_parent = true;
  // Inherited by the child as fd 3 (>= 0), for the worker's supervisor
  // socket; every other descriptor is closed in the child.
  int pass_fd = -1;
};

// fork/execve of `spec` into a new process group, signal mask and handlers
// reset; returns the child's pid once exec succeeded, or exec's errno as a
// status naming the path. Call it from a thread that lives as long as the
// child should when die_with_parent is set.
absl::StatusOr<pid_t> SpawnProcess(const ProgramSpec& spec,
                                   const SpawnOptions& options);

class ProgramSupervisor : public ProgramControl {
 public:
  explicit ProgramSupervisor(ProgramSpec spec, RestartPolicy policy = {});
  // Stops the program (SIGTERM, 5 s grace, SIGKILL) and joins the monitor.
  ~ProgramSupervisor() override;
  ProgramSupervisor(const ProgramSupervisor&) = delete;
  ProgramSupervisor& operator=(const ProgramSupervisor&) = delete;

  // Replaces what the next process start runs; a running process is not
  // affected. Thread-safe.
  void SetSpec(ProgramSpec spec);
  // Sets one environment variable for processes started from now on.
  void SetEnv(const std::string& name, const std::string& value) override;
  ProgramSpec spec() const;

  // Starts the program and keeps it running (restarting it with backoff
  // after unexpected exits) until Stop(). Returns once the process is
  // spawned. OK at once if it is already wanted and running. On a spawn
  // failure (e.g. NOT_FOUND for a missing executable, the errno status
  // naming the path) nothing runs and the program is not wanted.
  absl::Status Start() override;

  // Stops the program and cancels any pending restart: SIGTERM to its
  // process group, up to `grace` for it to exit, then SIGKILL to the group.
  // Returns once the process is reaped. OK if nothing was running.
  absl::Status Stop(absl::Duration grace) override;

  // Waits until the process that is running now has been up for `window`
  // since it started. OK if it stayed up; UNAVAILABLE (saying how and when it
  // ended) if it exited within the window; FAILED_PRECONDITION if nothing is
  // running; CANCELLED if CancelWaits() is called meanwhile.
  absl::Status WaitStaysUp(absl::Duration window) override;

  // Makes every WaitStaysUp in progress return CANCELLED at once (waits
  // that start later are not affected). For shutdown: the health window
  // must not delay the agent's exit.
  void CancelWaits() override;

  ProgramState state() const override;

 private:
  void MonitorLoop();

  const RestartPolicy policy_;
  mutable absl::Mutex mu_;
  // Signalled on every change below.
  absl::CondVar cv_;
  ProgramSpec spec_ ABSL_GUARDED_BY(mu_);
  bool wanted_ ABSL_GUARDED_BY(mu_) = false;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t wait_cancels_ ABSL_GUARDED_BY(mu_) = 0;
  // True while the monitor is spawning outside the lock.
  bool spawning_ ABSL_GUARDED_BY(mu_) = false;
  // Set by Start() to ask the monitor for an immediate (non-restart) spawn.
  bool start_requested_ ABSL_GUARDED_BY(mu_) = false;
  // Status of the last spawn that Start() asked for.
  absl::Status start_result_ ABSL_GUARDED_BY(mu_);
  uint64_t start_results_ ABSL_GUARDED_BY(mu_) = 0;
  pid_t pid_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time started_ ABSL_GUARDED_BY(mu_);
  absl::Time next_start_ ABSL_GUARDED_BY(mu_);
  absl::Duration backoff_ ABSL_GUARDED_BY(mu_);
  uint64_t runs_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t ended_runs_ ABSL_GUARDED_BY(mu_) = 0;
  uint32_t restarts_ ABSL_GUARDED_BY(mu_) = 0;
  std::string last_exit_ ABSL_GUARDED_BY(mu_);
  int last_exit_signal_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time last_ended_ ABSL_GUARDED_BY(mu_);

  std::thread monitor_;
};

// How a child ended, from waitid: "exit status 3", "signal 9 (Killed)".
std::string DescribeExit(const siginfo_t& info);

// Resident set size of a process in bytes, from /proc/PID/statm (Linux).
// NOT_FOUND if the process does not exist; UNIMPLEMENTED elsewhere.
absl::StatusOr<uint64_t> ResidentBytes(pid_t pid);
// User + system CPU time of a process in ms, from /proc/PID/stat (Linux).
absl::StatusOr<uint64_t> CpuMillis(pid_t pid);

}  // namespace fleet::agent

#endif  // FLEET_AGENT_PLATFORM_PROCESS_H_
