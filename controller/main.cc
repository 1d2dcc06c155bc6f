// fleet-controller: parses flags, starts ControllerServer, waits for SIGTERM
// or SIGINT, shuts down cleanly.
#include <signal.h>
#include <string.h>

#include <CLI/CLI.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "common/files.h"
#include "common/log.h"
#include "common/yaml_config.h"
#include "controller/backup.h"
#include "controller/identity/enrollment_service.h"
#include "controller/server.h"
#include "controller/telemetry/telemetry_store.h"
#include "controller/version.h"

namespace {

constexpr const char* kVersion = fleet::controller::kControllerVersion;

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 &&
      (std::string(argv[1]) == "backup" || std::string(argv[1]) == "restore")) {
    return fleet::controller::RunDataCommand(argc, argv);
  }
  fleet::controller::ControllerOptions options;
  std::string log_level = "info";
  int heartbeat_seconds = 10;
  std::string offline_timeout = "10m";
  std::string telemetry_retention = "30d";
  std::string agent_cert_validity = "365d";

  CLI::App app{"fleet-controller: keeps software on many machines up to date"};
  app.set_version_flag("--version",
                       std::string("fleet-controller ") + kVersion);
  app.add_option("--data-dir", options.data_dir,
                 "Directory for fleet.db and blobs/ (created if missing)")
      ->required();
  app.add_option("--listen", options.listen_address,
                 "gRPC address HOST:PORT (port 0: any free port)")
      ->capture_default_str();
  app.add_option("--http-listen", options.http_address,
                 "HTTP address HOST:PORT for /healthz, /metrics and "
                 "/api/v1/query (\"\" disables)")
      ->capture_default_str();
  app.add_option("--trust-key", options.trust_key_paths,
                 "Ed25519 public key (PEM) trusted to sign releases; "
                 "repeatable (ignored when --trust-root is given)")
      ->check(CLI::ExistingFile);
  app.add_option("--trust-root", options.trust_root_path,
                 "Root metadata (fleetctl keys root init): release keys and "
                 "threshold, rotated with fleetctl keys root push and sent to "
                 "agents; wins over --trust-key")
      ->check(CLI::ExistingFile);
  app.add_option("--agent-rate-limit",
                 options.agent_rate_limit.messages_per_second,
                 "Messages per second an agent may send on its stream before "
                 "it is ended with RESOURCE_EXHAUSTED (0: no limit)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1e6));
  app.add_option("--agent-rate-burst", options.agent_rate_limit.burst,
                 "Messages an agent may send at once above that rate")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 1e6));
  app.add_option("--heartbeat-seconds", heartbeat_seconds,
                 "Heartbeat interval told to agents")
      ->capture_default_str()
      ->check(CLI::Range(1, 3600));
  app.add_option("--offline-timeout", offline_timeout,
                 "Default time a disconnected agent may hold a rollout stage "
                 "before its target is SKIPPED (e.g. 10m, 90s; rollouts may "
                 "set their own)")
      ->capture_default_str()
      ->check([](const std::string& text) -> std::string {
        absl::Duration d;
        if (!absl::ParseDuration(text, &d) || d < absl::Seconds(1) ||
            d > absl::Hours(24 * 30)) {
          return "must be a duration from 1s to 720h, like 10m or 90s";
        }
        return "";
      });
  app.add_option("--telemetry-retention", telemetry_retention,
                 "Delete telemetry (heartbeats, update events) older than "
                 "this: 30d, 12h, ... or 0 to keep everything")
      ->capture_default_str()
      ->check([](const std::string& text) -> std::string {
        absl::StatusOr<absl::Duration> parsed =
            fleet::controller::telemetry::ParseRetention(text);
        return parsed.ok() ? "" : std::string(parsed.status().message());
      });
  app.add_option("--agent-cert-validity", agent_cert_validity,
                 "Lifetime of the certificates agents get at enrollment and "
                 "renewal (e.g. 90d, 36h); agents renew at 2/3 of it")
      ->capture_default_str()
      ->check([](const std::string& text) -> std::string {
        auto parsed = fleet::controller::ParseCertificateValidity(text);
        return parsed.ok() ? "" : std::string(parsed.status().message());
      });
  std::string pki_dir;
  app.add_option("--pki", pki_dir,
                 "Directory from `fleetctl pki init`: ca.crt, controller.crt "
                 "and controller.key for TLS, and ca.key (if present) to "
                 "enroll agents; --tls-* flags override single files")
      ->check(CLI::ExistingDirectory);
  app.add_option("--tls-ca", options.tls.ca_file,
                 "Fleet CA certificate (PEM): client certificates must chain "
                 "to it")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-cert", options.tls.cert_file,
                 "This controller's server certificate (PEM)")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-key", options.tls.key_file,
                 "The server certificate's private key (PEM)")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-ca-key", options.tls_ca_key_file,
                 "The CA's private key: enables agent enrollment with tokens")
      ->check(CLI::ExistingFile);
  app.add_flag("--insecure", options.insecure,
               "Plaintext gRPC and no caller authentication (labs and tests "
               "only)");
  app.add_option("--log-level", log_level, "debug, info, warning or error")
      ->capture_default_str()
      ->check(CLI::IsMember({"debug", "info", "warning", "error"}));
  fleet::AddYamlConfig(app);
  if (std::optional<int> exit = fleet::ParseCommandLine(app, argc, argv)) {
    return *exit;
  }

  fleet::LogLevel level = fleet::LogLevel::kInfo;
  fleet::ParseLogLevel(log_level, &level);
  fleet::InitLogging("controller", level);
  if (!pki_dir.empty()) {
    auto fill = [&](std::string& path, const char* name) {
      if (path.empty()) path = fleet::JoinPath(pki_dir, name);
    };
    fill(options.tls.ca_file, "ca.crt");
    fill(options.tls.cert_file, "controller.crt");
    fill(options.tls.key_file, "controller.key");
    if (options.tls_ca_key_file.empty() &&
        fleet::PathExists(fleet::JoinPath(pki_dir, "ca.key"))) {
      options.tls_ca_key_file = fleet::JoinPath(pki_dir, "ca.key");
    }
  }
  options.heartbeat_interval = absl::Seconds(heartbeat_seconds);
  absl::ParseDuration(offline_timeout, &options.offline_timeout);
  options.telemetry_retention =
      *fleet::controller::telemetry::ParseRetention(telemetry_retention);
  options.agent_cert_validity =
      *fleet::controller::ParseCertificateValidity(agent_cert_validity);

  // Every thread started from here on inherits the mask, so only sigwait
  // below sees these signals.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  // Held until exit: a second controller, or a restore, on this data dir
  // is refused while this one runs.
  absl::StatusOr<fleet::controller::DataDirLock> lock =
      fleet::controller::DataDirLock::Acquire(options.data_dir);
  if (!lock.ok()) {
    fleet::LogError("cannot start", {{"error", lock.status().ToString()}});
    return 1;
  }
  fleet::controller::ControllerServer server(options);
  absl::StatusOr<int> port = server.Start();
  if (!port.ok()) {
    fleet::LogError("cannot start", {{"error", port.status().ToString()}});
    return 1;
  }
  fleet::LogInfo("listening", {{"grpc_port", server.grpc_port()},
                               {"http_port", server.http_port()},
                               {"listen", options.listen_address},
                               {"http_listen", options.http_address},
                               {"data_dir", options.data_dir},
                               {"version", kVersion}});

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  fleet::LogInfo("shutting down", {{"signal", strsignal(signal_number)}});
  server.Shutdown();
  fleet::LogInfo("stopped");
  return 0;
}
