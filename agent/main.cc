// fleet-agent: keeps one managed program up to date (docs/ARCHITECTURE.md,
// "Agent"). One binary, two roles:
//   supervisor (default)       owns the worker and the managed program
//                              (agent/supervisor.h); no gRPC, one thread
//   --internal-role=worker     started by the supervisor with its socket as
//                              fd 3: journal, session, downloads, updater
// Both parse the same flags, so the supervisor refuses bad ones before any
// child starts. Each runs until SIGTERM/SIGINT.
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "agent/downloader.h"
#include "agent/enrollment.h"
#include "agent/health.h"
#include "agent/identity_renewal.h"
#include "agent/journal.h"
#include "agent/platform/process.h"
#include "agent/session.h"
#include "agent/supervisor.h"
#include "agent/supervisor_client.h"
#include "agent/trust.h"
#include "agent/updater.h"
#include "agent/version.h"
#include "common/backoff.h"
#include "common/files.h"
#include "common/log.h"
#include "common/manifest.h"
#include "common/names.h"
#include "common/tls.h"
#include "common/yaml_config.h"

namespace fleet::agent {
namespace {

struct Flags {
  std::string controller;
  std::string state_dir;
  std::vector<std::string> trust_keys;
  std::string trust_root;
  std::string product;
  std::string exec_path;
  std::vector<std::string> program_args;
  double health_seconds = 5;
  // Slow-retrieval defence (agent/downloader.h DownloadLimits).
  uint64_t download_min_rate = 1024;
  double download_rate_window_seconds = 30;
  double download_deadline_seconds = 3600;
  int keep_versions = 3;  // agent/artifact_cache.h
  double stop_grace_seconds = 10;
  std::string agent_id;
  std::vector<std::string> labels;
  std::string log_level = "info";
  std::string tls_ca;
  std::string enroll_token;
  std::string enroll_token_file;
  bool insecure = false;
  std::string role;  // "" (supervisor) or "worker"
  double worker_stop_grace_seconds = 10;
  std::string health_command;
  std::string health_url;
  double health_timeout_seconds = 5;
  // Agent self-update (docs/ARCHITECTURE.md, "Agent self-update").
  std::string agent_product = "fleet-agent";
  std::string agent_exec;  // default: this binary (/proc/self/exe)
  double agent_trial_seconds = 60;
};

constexpr char kWorkerRoleFlag[] = "--internal-role=worker";

int Fail(const std::string& what, const absl::Status& status) {
  LogError(what, {{"error", status.ToString()}});
  return 1;
}

// The identity in the state dir, or a new one from the enrollment token.
// The controller may be unreachable on a machine's first start: enrollment
// is retried with backoff (1 s doubling to 1 min, jittered) until it
// answers, and a stop signal ends the wait. Any other refusal (a used-up
// token) is final: the operator must act.
absl::StatusOr<AgentIdentity> EnsureIdentity(const Flags& flags,
                                             const sigset_t& stop_signals) {
  absl::StatusOr<std::optional<AgentIdentity>> stored =
      LoadIdentity(flags.state_dir);
  if (!stored.ok()) return stored.status();
  if (stored->has_value()) {
    const AgentIdentity& identity = **stored;
    // The agent still starts: its program keeps running and it keeps
    // trying, but the controller refuses the certificate at the handshake,
    // so say why and what fixes it.
    if (identity.not_after <= absl::Now()) {
      LogError(
          "agent certificate expired: the controller refuses it until the "
          "agent enrolls again (stop the agent, remove the identity dir, "
          "start it with a new --enroll-token)",
          {{"agent_id", identity.agent_id},
           {"expired_at",
            absl::FormatTime(absl::RFC3339_sec, identity.not_after,
                             absl::UTCTimeZone())},
           {"identity_dir", flags.state_dir + "/identity"}});
    }
    return identity;
  }
  if (flags.tls_ca.empty()) {
    return absl::FailedPreconditionError(
        "--tls-ca is required: the fleet CA certificate this agent trusts "
        "(or --insecure for a plaintext controller)");
  }
  std::string token = flags.enroll_token;
  if (token.empty() && !flags.enroll_token_file.empty()) {
    absl::StatusOr<std::string> file = ReadFile(flags.enroll_token_file);
    if (!file.ok()) return file.status();
    token = std::string(absl::StripAsciiWhitespace(*file));
  }
  EnrollOptions options;
  options.state_dir = flags.state_dir;
  options.controller = flags.controller;
  options.ca_file = flags.tls_ca;
  options.token = token;
  options.platform = HostPlatform();
  char host[256] = {0};
  if (gethostname(host, sizeof(host) - 1) == 0) options.hostname = host;
  Backoff backoff(absl::Seconds(1), absl::Minutes(1));
  while (true) {
    absl::StatusOr<AgentIdentity> enrolled = Enroll(options);
    if (enrolled.ok()) {
      LogInfo("enrolled", {{"agent_id", enrolled->agent_id},
                           {"controller", flags.controller}});
      return enrolled;
    }
    if (!absl::IsUnavailable(enrolled.status()) &&
        !absl::IsDeadlineExceeded(enrolled.status()) &&
        !absl::IsResourceExhausted(enrolled.status())) {
      return enrolled.status();
    }
    const absl::Duration wait = backoff.NextDelay();
    LogWarning("enrollment failed; retrying",
               {{"error", enrolled.status().ToString()},
                {"retry_in_ms", absl::ToInt64Milliseconds(wait)}});
    const timespec timeout = absl::ToTimespec(wait);
    if (sigtimedwait(&stop_signals, nullptr, &timeout) > 0) {
      return absl::CancelledError("stopped while waiting to enroll");
    }
  }
}

// What both roles check and derive from the flags.
struct Setup {
  std::map<std::string, std::string> labels;
  std::string exec_path;   // absolute
  std::string agent_exec;  // absolute
  TrustedKeys keys;
};

// Returns 0 and fills `setup`, or the exit code after logging the problem.
int Validate(const Flags& flags, Setup& setup) {
  std::map<std::string, std::string>& labels = setup.labels;
  if (absl::Status s = ValidateProductName(flags.product); !s.ok()) {
    return Fail("bad --product", s);
  }
  for (const std::string& label : flags.labels) {
    const size_t eq = label.find('=');
    if (eq == std::string::npos) {
      return Fail("bad --label",
                  absl::InvalidArgumentError("want key=value, got " + label));
    }
    std::string key = label.substr(0, eq), value = label.substr(eq + 1);
    if (absl::Status s = ValidateLabel(key, value); !s.ok()) {
      return Fail("bad --label", s);
    }
    labels[key] = value;
  }
  if (flags.health_seconds <= 0 || flags.stop_grace_seconds < 0) {
    return Fail("bad duration flag",
                absl::InvalidArgumentError(
                    "--health-seconds must be > 0, --stop-grace-seconds >= 0"));
  }
  std::string exec_path = flags.exec_path;
  if (exec_path.empty() || exec_path.back() == '/') {
    return Fail("bad --exec", absl::InvalidArgumentError(
                                  "want the path of the program's file"));
  }
  if (exec_path[0] != '/') {
    char cwd[4096];
    if (getcwd(cwd, sizeof(cwd)) == nullptr) {
      return Fail("getcwd", absl::ErrnoToStatus(errno, "getcwd"));
    }
    exec_path = JoinPath(cwd, exec_path);
  }

  for (const std::string& path : flags.trust_keys) {
    if (absl::Status s = setup.keys.AddPemFile(path); !s.ok()) {
      return Fail("cannot load --trust-key", s);
    }
  }
  if (absl::Status s = MakeDirs(flags.state_dir, 0700); !s.ok()) {
    return Fail("cannot create --state-dir", s);
  }
  if (absl::Status s = MakeDirs(Dirname(exec_path)); !s.ok()) {
    return Fail("cannot create the directory of --exec", s);
  }
  if (!flags.health_url.empty()) {
    if (absl::Status s = ValidateHealthUrl(flags.health_url); !s.ok()) {
      return Fail("bad --health-url", s);
    }
  }
  if (flags.health_timeout_seconds <= 0) {
    return Fail("bad --health-timeout-seconds",
                absl::InvalidArgumentError("must be > 0"));
  }
  if (absl::Status s = ValidateProductName(flags.agent_product); !s.ok()) {
    return Fail("bad --agent-product", s);
  }
  if (flags.agent_product == flags.product) {
    return Fail(
        "bad --agent-product",
        absl::InvalidArgumentError(
            "--agent-product must differ from --product " + flags.product +
            ": the agent's own binary is a product of its own"));
  }
  if (flags.agent_trial_seconds <= 0) {
    return Fail("bad --agent-trial-seconds",
                absl::InvalidArgumentError("must be > 0"));
  }
  std::string agent_exec = flags.agent_exec;
  if (agent_exec.empty()) {
    // Resolved once, now: after a self-update renamed a new file over it,
    // /proc/self/exe of this process no longer names the path.
    char self[4096];
    const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0) {
      return Fail("readlink /proc/self/exe",
                  absl::ErrnoToStatus(errno, "readlink"));
    }
    agent_exec.assign(self, static_cast<size_t>(n));
  } else if (agent_exec[0] != '/') {
    char cwd[4096];
    if (getcwd(cwd, sizeof(cwd)) == nullptr) {
      return Fail("getcwd", absl::ErrnoToStatus(errno, "getcwd"));
    }
    agent_exec = JoinPath(cwd, agent_exec);
  }
  if (agent_exec == exec_path) {
    return Fail("bad --agent-exec",
                absl::InvalidArgumentError(
                    "--agent-exec must differ from --exec " + exec_path));
  }
  setup.agent_exec = agent_exec;
  setup.exec_path = exec_path;
  return 0;
}

sigset_t BlockStopSignals() {
  // Before any thread exists (gRPC's): every thread inherits the mask, so
  // only sigwait/signalfd ever see these signals.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  return stop_signals;
}

// The supervisor role: `argv` is the agent's own command line, which the
// worker gets again with kWorkerRoleFlag in front.
int RunSupervisor(const Flags& flags, int argc, char** argv) {
  const sigset_t stop_signals = BlockStopSignals();
  Setup setup;
  if (int rc = Validate(flags, setup); rc != 0) return rc;
  if (flags.worker_stop_grace_seconds < 0) {
    return Fail("bad --worker-stop-grace-seconds",
                absl::InvalidArgumentError("must be >= 0"));
  }
  char self[4096];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0)
    return Fail("readlink /proc/self/exe",
                absl::ErrnoToStatus(errno, "readlink"));
  self[n] = '\0';

  SupervisorOptions options;
  options.state_dir = flags.state_dir;
  options.program.path = setup.exec_path;
  options.program.args = flags.program_args;
  options.program.env = {{"FLEET_PRODUCT", flags.product},
                         {"FLEET_VERSION", ""}};
  options.self_path = self;
  for (int i = 0; i < argc; ++i) options.self_argv.push_back(argv[i]);
  options.worker.path = self;
  options.worker.args.push_back(kWorkerRoleFlag);
  for (int i = 1; i < argc; ++i) options.worker.args.push_back(argv[i]);
  options.program_stop_grace = absl::Seconds(flags.stop_grace_seconds);
  options.worker_stop_grace = absl::Seconds(flags.worker_stop_grace_seconds);
  options.agent_exec = setup.agent_exec;
  options.agent_trial_window = absl::Seconds(flags.agent_trial_seconds);
  LogInfo("fleet-agent supervisor starting", {{"version", kAgentVersion},
                                              {"product", flags.product},
                                              {"exec", setup.exec_path},
                                              {"agent_exec", setup.agent_exec},
                                              {"state_dir", flags.state_dir}});
  Supervisor supervisor(std::move(options));
  if (absl::Status s = supervisor.Run(stop_signals); !s.ok()) {
    return Fail("supervisor failed", s);
  }
  return 0;
}

// The worker role: everything that talks to the controller.
int RunWorker(const Flags& flags) {
  const sigset_t stop_signals = BlockStopSignals();
  Setup setup;
  if (int rc = Validate(flags, setup); rc != 0) return rc;
  absl::StatusOr<std::unique_ptr<AgentTrust>> trust =
      UseTrustRoot(flags.trust_root, flags.state_dir, setup.keys);
  if (!trust.ok()) return Fail("no release trust", trust.status());
  const std::map<std::string, std::string>& labels = setup.labels;
  const std::string& exec_path = setup.exec_path;
  const TrustedKeys& keys = setup.keys;
  // The supervisor's socket; checked before anything else so a worker
  // started by hand fails clearly.
  if (fcntl(kWorkerSocketFd, F_GETFD) < 0) {
    return Fail("no supervisor socket",
                absl::FailedPreconditionError(
                    "--internal-role=worker is started by the fleet-agent "
                    "supervisor only; run fleet-agent without it"));
  }
  fcntl(kWorkerSocketFd, F_SETFD, FD_CLOEXEC);
  SupervisorClient program(kWorkerSocketFd);
  absl::StatusOr<std::unique_ptr<UpdateJournal>> journal =
      UpdateJournal::Open(JoinPath(flags.state_dir, "journal.db"));
  if (!journal.ok()) return Fail("cannot open journal", journal.status());
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  std::string preferred_id = flags.agent_id;
  std::optional<AgentIdentity> enrolled;  // renewed before it expires
  if (flags.insecure) {
    credentials = grpc::InsecureChannelCredentials();
    LogWarning("talking plaintext to the controller (--insecure)");
  } else {
    absl::StatusOr<AgentIdentity> identity =
        EnsureIdentity(flags, stop_signals);
    if (!identity.ok()) return Fail("no agent identity", identity.status());
    if (!flags.agent_id.empty() && flags.agent_id != identity->agent_id) {
      return Fail(
          "bad --agent-id",
          absl::InvalidArgumentError("--agent-id " + flags.agent_id +
                                     " differs from the enrolled identity " +
                                     identity->agent_id + "; drop the flag"));
    }
    preferred_id = identity->agent_id;
    enrolled = *identity;
    absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> tls =
        MakeChannelCredentials(identity->files);
    if (!tls.ok()) return Fail("cannot load the agent identity", tls.status());
    credentials = *std::move(tls);
  }
  absl::StatusOr<std::string> agent_id = (*journal)->AgentId(preferred_id);
  if (!agent_id.ok()) return Fail("bad agent id", agent_id.status());

  const char* trial_env = getenv(kAgentTrialEnv);
  const std::string trial_id = trial_env == nullptr ? "" : trial_env;
  LogInfo("fleet-agent worker starting", {{"version", kAgentVersion},
                                          {"agent_trial", trial_id},
                                          {"agent_id", *agent_id},
                                          {"controller", flags.controller},
                                          {"product", flags.product},
                                          {"exec", exec_path},
                                          {"platform", HostPlatform()},
                                          {"trusted_keys", keys.size()}});

  // Its channel follows certificate renewals (agent/identity_renewal.h).
  auto stub = std::make_unique<RenewingAgentStub>(
      flags.controller, AgentChannelArguments(), credentials);
  std::unique_ptr<IdentityRenewer> renewer;
  if (enrolled) {
    renewer = StartIdentityRenewal(flags.controller, *enrolled, *stub);
  }

  const DownloadLimits limits = {
      .min_bytes_per_second = flags.download_min_rate,
      .rate_window = absl::Seconds(flags.download_rate_window_seconds),
      .transfer_deadline = absl::Seconds(flags.download_deadline_seconds)};
  ArtifactCache version_cache(JoinPath(flags.state_dir, "versions"),
                              flags.keep_versions);
  Downloader downloader(*stub, JoinPath(flags.state_dir, "downloads"), limits,
                        &version_cache);
  // The agent's own releases: a cache and downloads of their own, so the
  // last --keep-versions are kept per product.
  ArtifactCache agent_cache(JoinPath(flags.state_dir, "agent-versions"),
                            flags.keep_versions);
  Downloader agent_downloader(*stub,
                              JoinPath(flags.state_dir, "agent-downloads"),
                              limits, &agent_cache);
  UpdaterOptions updater_options;
  updater_options.agent.product = flags.agent_product;
  updater_options.agent.exec_path = setup.agent_exec;
  updater_options.agent.version = kAgentVersion;
  updater_options.agent.trial = &program;
  updater_options.agent.downloader = &agent_downloader;
  updater_options.agent.trial_directive_id = trial_id;
  if (const char* failed = getenv(kAgentTrialFailedEnv); failed != nullptr) {
    updater_options.agent.trial_failed = failed;
  }
  updater_options.product = flags.product;
  updater_options.exec_path = exec_path;
  updater_options.health_window = absl::Seconds(flags.health_seconds);
  updater_options.stop_grace = absl::Seconds(flags.stop_grace_seconds);
  updater_options.stop_program_on_stop = false;
  updater_options.health.command = flags.health_command;
  updater_options.health.url = flags.health_url;
  updater_options.health.timeout = absl::Seconds(flags.health_timeout_seconds);
  Updater updater(updater_options, **journal, keys, downloader, program);
  updater.Start();

  SessionOptions session_options;
  session_options.agent_id = *agent_id;
  session_options.agent_version = kAgentVersion;
  session_options.product = flags.product;
  session_options.exec_path = exec_path;
  session_options.agent_product = flags.agent_product;
  session_options.agent_exec_path = setup.agent_exec;
  session_options.state_dir = flags.state_dir;
  session_options.labels = labels;
  Session session(session_options, *stub, **journal, updater,
                  [&program](v1::Heartbeat& hb) {
                    ProgramState state = program.state();
                    hb.set_program_restarts(state.restarts);
                    if (state.pid == 0) return;
                    if (auto rss = ResidentBytes(state.pid); rss.ok()) {
                      hb.set_program_rss_bytes(*rss);
                    }
                    if (auto cpu = CpuMillis(state.pid); cpu.ok()) {
                      hb.set_program_cpu_ms(*cpu);
                    }
                  });
  session.SetTrust(trust->get());
  std::thread session_thread([&session] { session.Run(); });

  // Until a stop signal, or until the supervisor is gone (it normally takes
  // us along with PR_SET_PDEATHSIG; this covers the rest).
  for (;;) {
    const timespec tick = absl::ToTimespec(absl::Seconds(1));
    const int signal = sigtimedwait(&stop_signals, nullptr, &tick);
    if (signal > 0) {
      LogInfo("fleet-agent worker stopping", {{"signal", strsignal(signal)}});
      break;
    }
    if (!program.connected()) {
      LogWarning("the supervisor is gone; worker exiting");
      break;
    }
  }
  session.Shutdown();
  session_thread.join();
  // Leaves an unfinished update to the next start, and the program to the
  // supervisor.
  updater.Stop();
  LogInfo("fleet-agent worker stopped");
  return 0;
}

}  // namespace
}  // namespace fleet::agent

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--") break;
    if (arg == "--version") {
      std::printf("fleet-agent %s\n", fleet::agent::kAgentVersion);
      return 0;
    }
  }
  fleet::agent::Flags flags;
  // The worker role flag is internal: taken out before parsing, so it is no
  // option, no config key and not in --help. Only argv[1] counts: that is
  // where the supervisor puts it.
  std::vector<char*> args(argv, argv + argc);
  if (argc > 1 && std::string(argv[1]) == fleet::agent::kWorkerRoleFlag) {
    flags.role = "worker";
    args.erase(args.begin() + 1);
  }
  const int supervisor_argc = argc;
  char** const supervisor_argv = argv;
  argc = static_cast<int>(args.size());
  argv = args.data();
  CLI::App app{
      "fleet-agent: keeps one program up to date.\n"
      "Usage: fleet-agent --controller HOST:PORT --state-dir DIR "
      "--trust-key FILE --product NAME --exec PATH [-- PROGRAM ARGS]"};
  app.add_option("--controller", flags.controller,
                 "fleet-controller address, HOST:PORT")
      ->required();
  app.add_option("--state-dir", flags.state_dir,
                 "journal and downloads (created)")
      ->required();
  app.add_option("--trust-key", flags.trust_keys,
                 "release public key (PEM); repeatable")
      ->allow_extra_args(false);
  app.add_option("--trust-root", flags.trust_root,
                 "root metadata pinned at install (fleetctl keys root init); "
                 "wins over --trust-key; newer roots from the controller are "
                 "kept in STATE/root.json")
      ->check(CLI::ExistingFile);
  app.add_option("--product", flags.product, "the product this agent manages")
      ->required();
  app.add_option("--exec", flags.exec_path,
                 "the managed program's executable (may not exist yet)")
      ->required();
  app.add_option("--download-min-rate", flags.download_min_rate,
                 "bytes/s a download must average over each rate window, "
                 "or it is cut and retried (0: no floor)")
      ->capture_default_str();
  app.add_option("--download-rate-window-seconds",
                 flags.download_rate_window_seconds,
                 "the window --download-min-rate is measured over")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--download-deadline-seconds", flags.download_deadline_seconds,
                 "one transfer attempt is cut and retried after this long "
                 "(0: no deadline)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--keep-versions", flags.keep_versions,
                 "verified downloads kept in STATE_DIR/versions for rollback "
                 "without a transfer (0: none)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--health-seconds", flags.health_seconds,
                 "a new version must stay up this long to commit")
      ->capture_default_str();
  app.add_option("--stop-grace-seconds", flags.stop_grace_seconds,
                 "SIGTERM to SIGKILL grace when stopping the program")
      ->capture_default_str();
  app.add_option("--agent-id", flags.agent_id,
                 "default: generated once and kept in the journal");
  app.add_option("--label", flags.labels, "key=value; repeatable")
      ->allow_extra_args(false);
  app.add_option("--tls-ca", flags.tls_ca,
                 "the fleet CA certificate (PEM): the controller must present "
                 "a certificate it issued")
      ->check(CLI::ExistingFile);
  app.add_option("--enroll-token", flags.enroll_token,
                 "one-time token (fleetctl enroll-token create) used on the "
                 "first start to get this agent's certificate");
  app.add_option("--enroll-token-file", flags.enroll_token_file,
                 "file holding the enrollment token (keeps it out of ps)")
      ->check(CLI::ExistingFile);
  app.add_flag("--insecure", flags.insecure,
               "plaintext gRPC to a controller started with --insecure");
  app.add_option("--log-level", flags.log_level, "debug, info, warning, error")
      ->capture_default_str();
  app.add_option("--health-command", flags.health_command,
                 "a new version is healthy only once /bin/sh -c CMD exits 0 "
                 "within the health window (retried; FLEET_VERSION is set)");
  app.add_option("--health-url", flags.health_url,
                 "a new version is healthy only once GET http://HOST:PORT/PATH "
                 "answers 2xx within the health window (retried)");
  app.add_option("--health-timeout-seconds", flags.health_timeout_seconds,
                 "limit for one health command run or HTTP GET")
      ->capture_default_str();
  app.add_option("--agent-product", flags.agent_product,
                 "the product name of this agent's own binary: releases of "
                 "it update the agent itself")
      ->capture_default_str();
  app.add_option("--agent-exec", flags.agent_exec,
                 "the agent's own binary, replaced by a self-update "
                 "(default: this binary's path at start)");
  app.add_option("--agent-trial-seconds", flags.agent_trial_seconds,
                 "a new agent binary must connect and commit within this "
                 "long, or the old one is put back")
      ->capture_default_str();
  app.add_option("--worker-stop-grace-seconds", flags.worker_stop_grace_seconds,
                 "SIGTERM to SIGKILL grace when the supervisor stops its "
                 "worker")
      ->capture_default_str();
  bool version = false;  // handled before parsing; listed for --help
  app.add_flag("--version", version, "print the version and exit");
  app.add_option("program_args", flags.program_args,
                 "arguments for the program, after --");
  fleet::AddYamlConfig(app);
  if (std::optional<int> exit = fleet::ParseCommandLine(app, argc, argv)) {
    return *exit;
  }

  fleet::LogLevel level;
  if (!fleet::ParseLogLevel(flags.log_level, &level)) {
    std::fprintf(stderr, "unknown --log-level %s\n", flags.log_level.c_str());
    return 2;
  }
  if (flags.role == "worker") {
    fleet::InitLogging("agent-worker", level);
    // RunWorker fails (1) only on errors found while starting, which a
    // restart cannot fix: tell the supervisor so it does not retry.
    const int rc = fleet::agent::RunWorker(flags);
    return rc == 1 ? fleet::agent::kWorkerConfigErrorExit : rc;
  }
  fleet::InitLogging("agent", level);
  return fleet::agent::RunSupervisor(flags, supervisor_argc, supervisor_argv);
}
