// Health checks a new version must pass in its health window, besides
// staying up for it (ProgramControl::WaitStaysUp):
//   --health-command CMD   /bin/sh -c CMD exits 0 within the timeout
//   --health-url URL       HTTP GET http://HOST:PORT/PATH answers 2xx within
//                          the timeout (cpp-httplib, already in the build;
//                          plain http only: the program is on this machine)
// Each configured check is retried every retry_interval until it passes
// once or the deadline (the end of the health window) passes.
//
//   HealthChecker checker({.command = "curl -fs localhost:8080/ready"});
//   RETURN_IF_ERROR(checker.WaitHealthy(start + window, [] { return false; }));
#ifndef FLEET_AGENT_HEALTH_H_
#define FLEET_AGENT_HEALTH_H_

#include <functional>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace fleet::agent {

struct HealthCheckOptions {
  std::string command;                        // "" : no command check
  std::string url;                            // "" : no HTTP check
  absl::Duration timeout = absl::Seconds(5);  // per attempt
  absl::Duration retry_interval = absl::Milliseconds(500);
  // Added to the command's environment (FLEET_PRODUCT, FLEET_VERSION).
  std::map<std::string, std::string> env;
};

// INVALID_ARGUMENT (saying what is wrong and the accepted form) unless
// `url` is http://HOST[:PORT][/PATH].
absl::Status ValidateHealthUrl(const std::string& url);

class HealthChecker {
 public:
  explicit HealthChecker(HealthCheckOptions options);

  bool enabled() const {
    return !options_.command.empty() || !options_.url.empty();
  }

  // Retries each configured check until it passes once. OK when all have
  // (at once if none is configured); UNAVAILABLE naming the check and its
  // last failure if `deadline` passes first; CANCELLED as soon as `stop`
  // returns true (polled between attempts).
  absl::Status WaitHealthy(absl::Time deadline,
                           const std::function<bool()>& stop) const;

  // One attempt each. OK on exit status 0 / a 2xx answer; UNAVAILABLE
  // saying what happened (exit status, signal, timeout, HTTP status,
  // connection error).
  absl::Status RunCommandOnce() const;
  absl::Status GetUrlOnce() const;

 private:
  HealthCheckOptions options_;
};

}  // namespace fleet::agent

#endif  // FLEET_AGENT_HEALTH_H_
