// Real child processes for end-to-end tests: start, signal, wait, capture.
//
//   Subprocess controller({Runfile("controller/fleet-controller"), ...},
//                         dir + "/controller.log");
//   ASSERT_TRUE(controller.Start().ok());
//   ...
//   // The destructor SIGKILLs the process group if it is still running, so
//   // a failing test never leaves a process behind.
#ifndef FLEET_TESTS_TESTING_PROCESS_H_
#define FLEET_TESTS_TESTING_PROCESS_H_

#include <sys/types.h>

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace fleet::testing {

// Path of a file in this test's runfiles, e.g. "agent/fleet-agent".
std::string Runfile(const std::string& workspace_relative_path);

// A fresh directory under $TEST_TMPDIR (or /tmp), removed by nobody: Bazel
// cleans TEST_TMPDIR, and keeping it helps debugging outside Bazel.
std::string MakeTempDir(const std::string& prefix);

class Subprocess {
 public:
  // `argv[0]` is the program path. stdout and stderr go to `log_path`
  // (appended). `env` adds to (or overrides) this process's environment.
  Subprocess(std::vector<std::string> argv, std::string log_path,
             std::map<std::string, std::string> env = {});
  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  // Starts the process in its own process group.
  absl::Status Start();
  pid_t pid() const { return pid_; }
  bool running();
  // SIGTERM, then SIGKILL after `grace`. Returns the wait status.
  int Stop(absl::Duration grace = absl::Seconds(10));
  // SIGKILL to the whole process group, then reaps.
  void Kill();
  // Waits up to `timeout` for exit; the wait status, or nullopt on timeout.
  std::optional<int> Wait(absl::Duration timeout);

  const std::string& log_path() const { return log_path_; }
  std::string ReadLog() const;

 private:
  std::vector<std::string> argv_;
  std::string log_path_;
  std::map<std::string, std::string> env_;
  pid_t pid_ = -1;
  std::optional<int> exit_status_;
};

struct RunResult {
  int exit_code = -1;  // -1 if killed by a signal or timed out
  std::string out;
  std::string err;
};

// Runs a command to completion (killing it after `timeout`) and captures
// its stdout and stderr.
RunResult Run(const std::vector<std::string>& argv,
              const std::map<std::string, std::string>& env = {},
              absl::Duration timeout = absl::Seconds(60));

// Polls `done` every 50 ms until it returns true or `timeout` passes.
bool WaitFor(const std::function<bool()>& done, absl::Duration timeout);

// A TCP port on 127.0.0.1 that was free a moment ago.
int PickFreePort();

// Every live process (zombies left out) whose command line, split at its
// NULs, `match` accepts; in /proc order. For counting instances and
// finding processes a test did not start itself (a supervisor's children).
std::vector<pid_t> ProcessesWhere(
    const std::function<bool(const std::vector<std::string>& argv)>& match);

}  // namespace fleet::testing

#endif  // FLEET_TESTS_TESTING_PROCESS_H_
