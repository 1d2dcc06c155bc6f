// What the updater needs from whoever runs the managed program: start it
// with a version, stop it, wait out its health window, read its state.
//
// Two implementations: ProgramSupervisor (agent/platform/process.h) runs the
// program in this process, and SupervisorClient (agent/supervisor_client.h)
// asks the agent's supervisor process to do it over the internal socket, so
// the program outlives a crash of the worker that drives updates.
#ifndef FLEET_AGENT_PLATFORM_PROGRAM_CONTROL_H_
#define FLEET_AGENT_PLATFORM_PROGRAM_CONTROL_H_

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace fleet::agent {

// A snapshot of the supervised program.
struct ProgramState {
  bool wanted = false;    // Start() called and no Stop() since
  pid_t pid = 0;          // 0 when no process is running
  absl::Time started;     // start of the current (or last) process
  uint64_t runs = 0;      // processes started, automatic restarts included
  uint32_t restarts = 0;  // automatic restarts after unexpected exits
  // How the last process ended, e.g. "exit status 3" or "signal 9"; "" if
  // none has ended yet.
  std::string last_exit;
  int last_exit_signal = 0;  // the signal that ended it, 0 if it exited
};

class ProgramControl {
 public:
  virtual ~ProgramControl() = default;

  // Sets one environment variable for processes started from now on.
  virtual void SetEnv(const std::string& name, const std::string& value) = 0;

  // Starts the program and keeps it running (restarting it with backoff
  // after unexpected exits) until Stop(). OK at once if it is already
  // wanted and running. On a spawn failure (e.g. NOT_FOUND for a missing
  // executable, naming the path) nothing runs and the program is not wanted.
  virtual absl::Status Start() = 0;

  // Stops the program and cancels any pending restart: SIGTERM to its
  // process group, up to `grace` for it to exit, then SIGKILL to the group.
  // Returns once the process is reaped. OK if nothing was running.
  virtual absl::Status Stop(absl::Duration grace) = 0;

  // Waits until the process that is running now has been up for `window`
  // since it started. OK if it stayed up; UNAVAILABLE (saying how and when
  // it ended) if it exited within the window; FAILED_PRECONDITION if nothing
  // is running; CANCELLED if CancelWaits() is called meanwhile.
  virtual absl::Status WaitStaysUp(absl::Duration window) = 0;

  // Makes every WaitStaysUp in progress return CANCELLED at once.
  virtual void CancelWaits() = 0;

  virtual ProgramState state() const = 0;
};

}  // namespace fleet::agent

#endif  // FLEET_AGENT_PLATFORM_PROGRAM_CONTROL_H_
