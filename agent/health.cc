#include "agent/health.h"

#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "agent/platform/process.h"
#include "httplib.h"

namespace fleet::agent {
namespace {

struct ParsedUrl {
  std::string host;
  int port = 80;
  std::string path = "/";
};

absl::StatusOr<ParsedUrl> ParseHttpUrl(const std::string& url) {
  constexpr absl::string_view kScheme = "http://";
  const auto bad = [&url](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("--health-url ", url, ": ", why,
                     "; want http://HOST[:PORT][/PATH], e.g. "
                     "http://127.0.0.1:8080/healthz"));
  };
  if (!absl::StartsWith(url, kScheme)) return bad("not an http:// URL");
  std::string rest = url.substr(kScheme.size());
  ParsedUrl out;
  const size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  if (slash != std::string::npos) out.path = rest.substr(slash);
  if (authority.empty()) return bad("no host");
  const size_t colon = authority.rfind(':');
  if (colon != std::string::npos) {
    if (!absl::SimpleAtoi(authority.substr(colon + 1), &out.port) ||
        out.port <= 0 || out.port > 65535) {
      return bad("bad port");
    }
    authority = authority.substr(0, colon);
  }
  if (authority.empty()) return bad("no host");
  out.host = authority;
  return out;
}

}  // namespace

absl::Status ValidateHealthUrl(const std::string& url) {
  return ParseHttpUrl(url).status();
}

HealthChecker::HealthChecker(HealthCheckOptions options)
    : options_(std::move(options)) {}

absl::Status HealthChecker::RunCommandOnce() const {
  ProgramSpec spec;
  spec.path = "/bin/sh";
  spec.args = {"-c", options_.command};
  spec.env = options_.env;
  SpawnOptions spawn;
  spawn.die_with_parent = true;
  absl::StatusOr<pid_t> pid = SpawnProcess(spec, spawn);
  if (!pid.ok()) {
    return absl::UnavailableError(absl::StrCat(
        "health command could not start: ", pid.status().message()));
  }
  const absl::Time deadline = absl::Now() + options_.timeout;
  int status = 0;
  for (;;) {
    const pid_t done = waitpid(*pid, &status, WNOHANG);
    if (done == *pid) break;
    if (done < 0 && errno != EINTR) {
      return absl::ErrnoToStatus(errno, "waitpid for the health command");
    }
    if (absl::Now() >= deadline) {
      kill(-*pid, SIGKILL);  // its own process group: the shell's children too
      while (waitpid(*pid, &status, 0) < 0 && errno == EINTR) {
      }
      return absl::UnavailableError(
          absl::StrCat("health command did not finish within ",
                       absl::FormatDuration(options_.timeout)));
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return absl::OkStatus();
  if (WIFEXITED(status)) {
    return absl::UnavailableError(absl::StrCat(
        "health command exited with status ", WEXITSTATUS(status)));
  }
  return absl::UnavailableError(
      absl::StrCat("health command ended by signal ", WTERMSIG(status)));
}

absl::Status HealthChecker::GetUrlOnce() const {
  absl::StatusOr<ParsedUrl> url = ParseHttpUrl(options_.url);
  if (!url.ok()) return url.status();
  httplib::Client client(url->host, url->port);
  const int64_t us = absl::ToInt64Microseconds(options_.timeout);
  client.set_connection_timeout(us / 1000000, us % 1000000);
  client.set_read_timeout(us / 1000000, us % 1000000);
  client.set_write_timeout(us / 1000000, us % 1000000);
  httplib::Result result = client.Get(url->path.c_str());
  if (!result) {
    return absl::UnavailableError(absl::StrCat(
        "health URL ", options_.url, ": ", httplib::to_string(result.error())));
  }
  if (result->status < 200 || result->status > 299) {
    return absl::UnavailableError(absl::StrCat(
        "health URL ", options_.url, " answered HTTP ", result->status));
  }
  return absl::OkStatus();
}

absl::Status HealthChecker::WaitHealthy(
    absl::Time deadline, const std::function<bool()>& stop) const {
  const std::pair<bool, absl::Status (HealthChecker::*)() const> checks[] = {
      {!options_.command.empty(), &HealthChecker::RunCommandOnce},
      {!options_.url.empty(), &HealthChecker::GetUrlOnce}};
  for (const auto& [configured, check] : checks) {
    if (!configured) continue;
    for (;;) {
      if (stop()) return absl::CancelledError("health check cancelled");
      absl::Status result = (this->*check)();
      if (result.ok()) break;
      if (result.code() == absl::StatusCode::kInvalidArgument) return result;
      const absl::Time now = absl::Now();
      if (now >= deadline) {
        return absl::UnavailableError(absl::StrCat(
            "not healthy by the end of the health window: ", result.message()));
      }
      absl::SleepFor(std::min(options_.retry_interval, deadline - now));
    }
  }
  return absl::OkStatus();
}

}  // namespace fleet::agent
