#include "controller/server.h"

#include <map>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/files.h"
#include "common/log.h"
#include "common/root.h"
#include "common/status_macros.h"
#include "controller/admin_service.h"
#include "controller/agent_hub.h"
#include "controller/blob_store.h"
#include "controller/control_loop.h"
#include "controller/http_server.h"
#include "controller/identity/authorizer.h"
#include "controller/identity/enrollment_service.h"
#include "controller/identity/identity_service.h"
#include "controller/identity/identity_store.h"
#include "controller/identity/trust_roots.h"
#include "controller/store/store.h"
#include "controller/telemetry/agent_observer.h"
#include "controller/telemetry/controller_metrics.h"
#include "controller/telemetry/query_engine.h"
#include "controller/telemetry/telemetry_store.h"

namespace fleet::controller {
namespace {

constexpr int kKeepaliveTimeMs = 20'000;
constexpr int kKeepaliveTimeoutMs = 10'000;
constexpr int kMinClientPingIntervalMs = 10'000;
constexpr int kMaxReceiveMessageBytes = 4 * 1024 * 1024;
constexpr absl::Duration kShutdownGrace = absl::Seconds(5);

}  // namespace

void ConfigureServerBuilder(grpc::ServerBuilder& builder) {
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, kKeepaliveTimeMs);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                             kKeepaliveTimeoutMs);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(
      GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
      kMinClientPingIntervalMs);
  builder.SetMaxReceiveMessageSize(kMaxReceiveMessageBytes);
  // gRPC sets SO_REUSEPORT by default: a second controller could then share
  // the port (and split the agents) instead of failing to start.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
}

ControllerServer::ControllerServer(ControllerOptions options,
                                   const Clock& clock)
    : options_(std::move(options)), clock_(clock) {}

ControllerServer::~ControllerServer() { Shutdown(); }

absl::StatusOr<int> ControllerServer::Start() {
  if (options_.data_dir.empty()) {
    return absl::InvalidArgumentError("a data directory is required");
  }
  if (options_.trust_key_paths.empty() && options_.trust_root_path.empty()) {
    return absl::InvalidArgumentError(
        "release trust is required: --trust-root FILE (root metadata from "
        "fleetctl keys root init) or at least one --trust-key FILE");
  }
  if (options_.heartbeat_interval < absl::Seconds(1)) {
    return absl::InvalidArgumentError("heartbeat interval must be >= 1s");
  }
  if (options_.offline_timeout < absl::Seconds(1) ||
      options_.offline_timeout > absl::Hours(24 * 30)) {
    return absl::InvalidArgumentError(
        "offline timeout must be between 1s and 30 days");
  }
  std::optional<v1::SignedRoot> pinned_root;
  if (!options_.trust_root_path.empty()) {
    absl::StatusOr<v1::SignedRoot> root =
        LoadRootFile(options_.trust_root_path);
    if (!root.ok()) {
      return absl::Status(
          root.status().code(),
          absl::StrCat("--trust-root: ", root.status().message()));
    }
    pinned_root = *std::move(root);
    if (!options_.trust_key_paths.empty()) {
      LogWarning(
          "--trust-root is set: releases are verified with its release keys "
          "and threshold; --trust-key is ignored",
          {{"trust_root", options_.trust_root_path}});
    }
  } else {
    for (const std::string& path : options_.trust_key_paths) {
      absl::Status added = trusted_keys_.AddPemFile(path);
      if (!added.ok()) {
        return absl::Status(added.code(),
                            absl::StrCat("trust key: ", added.message()));
      }
    }
  }
  RETURN_IF_ERROR(MakeDirs(options_.data_dir, 0700));
  const std::string db_path = JoinPath(options_.data_dir, "fleet.db");
  ASSIGN_OR_RETURN(write_store_, Store::Open(db_path));
  ASSIGN_OR_RETURN(read_store_, Store::Open(db_path));
  RETURN_IF_ERROR(write_store_->MarkAllAgentsDisconnected());
  ASSIGN_OR_RETURN(blobs_, BlobStore::Open(options_.data_dir));
  ASSIGN_OR_RETURN(identities_, IdentityStore::Open(db_path));
  if (pinned_root) {
    absl::StatusOr<std::unique_ptr<TrustRoots>> roots =
        TrustRoots::Open(*pinned_root, *identities_, clock_);
    if (!roots.ok()) {
      return absl::Status(
          roots.status().code(),
          absl::StrCat("--trust-root: ", roots.status().message()));
    }
    roots_ = *std::move(roots);
    trusted_keys_ = TrustedKeys::Live(&roots_->chain());
    if (roots_->chain().Current().Expired(clock_.Now())) {
      LogWarning(
          "the root of trust has expired: releases are refused until "
          "operators push a re-signed root (fleetctl keys root push)",
          {{"root_version", roots_->chain().version()}});
    }
  }
  authorizer_ = std::make_unique<Authorizer>(options_.insecure,
                                             identities_.get(), clock_);
  std::shared_ptr<grpc::ServerCredentials> credentials;
  if (options_.insecure) {
    credentials = grpc::InsecureServerCredentials();
    LogWarning(
        "gRPC is plaintext and callers are not authenticated "
        "(--insecure); use TLS outside a lab",
        {{"listen", options_.listen_address}});
  } else {
    const TlsFiles& tls = options_.tls;
    if (tls.ca_file.empty() || tls.cert_file.empty() || tls.key_file.empty()) {
      return absl::InvalidArgumentError(
          "TLS needs --tls-ca, --tls-cert and --tls-key (or --pki DIR from "
          "fleetctl pki init); --insecure runs plaintext");
    }
    ASSIGN_OR_RETURN(credentials, MakeServerCredentials(tls));
    if (!options_.tls_ca_key_file.empty()) {
      ASSIGN_OR_RETURN(std::string ca_pem, ReadFile(tls.ca_file));
      ASSIGN_OR_RETURN(std::string ca_key_pem,
                       ReadFile(options_.tls_ca_key_file));
      absl::StatusOr<pki::CertificateAuthority> ca =
          pki::CertificateAuthority::Load(ca_pem, ca_key_pem);
      if (!ca.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("--tls-ca-key ", options_.tls_ca_key_file, ": ",
                         ca.status().message()));
      }
      ca_ = std::make_unique<pki::CertificateAuthority>(*std::move(ca));
      enrollment_ = std::make_unique<EnrollmentServiceImpl>(
          *identities_, *ca_, clock_,
          EnrollmentOptions{.certificate_validity =
                                options_.agent_cert_validity});
    }
  }

  // Telemetry lives in telemetry.db, written by its own thread, so neither
  // streams nor the control loop ever wait on a telemetry write.
  ASSIGN_OR_RETURN(metrics_, telemetry::ControllerMetrics::Open(
                                 db_path, [this] { return ConnectedAgents(); },
                                 [this] { return telemetry_->Backlog(); }));
  telemetry::TelemetryStore::Options telemetry_options;
  telemetry_options.path = JoinPath(options_.data_dir, "telemetry.db");
  telemetry_options.fleet_db_path = db_path;
  telemetry_options.retention = options_.telemetry_retention;
  telemetry_options.metrics = metrics_->store_metrics();
  ASSIGN_OR_RETURN(telemetry_,
                   telemetry::TelemetryStore::Open(telemetry_options, clock_));
  queries_ = std::make_unique<telemetry::QueryEngine>(telemetry_options.path);
  recorder_ =
      std::make_unique<telemetry::TelemetryRecorder>(*telemetry_, *metrics_);

  ControlLoopOptions loop_options;
  loop_options.heartbeat_interval = options_.heartbeat_interval;
  loop_options.on_commit = [metrics = metrics_.get()](double seconds) {
    metrics->FleetWrite(seconds);
  };
  loop_options.offline_timeout = options_.offline_timeout;
  loop_options.on_events_stored = [telemetry = telemetry_.get()](
                                      const std::string& agent_id,
                                      int64_t received_ms,
                                      std::vector<v1::UpdateEvent> events) {
    telemetry->RecordEvents(agent_id, received_ms, std::move(events));
  };
  loop_ = std::make_unique<ControlLoop>(*write_store_, clock_, loop_options);
  hub_ = std::make_unique<AgentHub>(*loop_, *blobs_);
  hub_->SetObserver(recorder_.get());
  hub_->SetAuthorizer(authorizer_.get());
  hub_->SetStreamRateLimit(options_.agent_rate_limit);
  if (roots_ != nullptr) hub_->SetRoots(&roots_->chain());
  AddRootMetrics();
  loop_->Start(*hub_);
  admin_ = std::make_unique<AdminService>(*read_store_, *loop_, *blobs_,
                                          trusted_keys_, clock_);
  admin_->SetTelemetry(queries_.get());
  admin_->SetAuthorizer(authorizer_.get());
  admin_->SetTrust(roots_.get(), hub_.get());
  identity_service_ = std::make_unique<IdentityServiceImpl>(
      *identities_, *authorizer_, clock_, [this](const std::string& agent_id) {
        return hub_->CloseAgent(
            agent_id, absl::PermissionDeniedError("this agent was revoked"));
      });

  grpc::ServerBuilder builder;
  ConfigureServerBuilder(builder);
  builder.AddListeningPort(options_.listen_address, credentials, &grpc_port_);
  builder.RegisterService(hub_.get());
  builder.RegisterService(admin_.get());
  builder.RegisterService(identity_service_.get());
  if (enrollment_ != nullptr) builder.RegisterService(enrollment_.get());
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || grpc_port_ == 0) {
    loop_->Stop();
    return absl::UnavailableError(
        absl::StrCat("cannot listen for gRPC on ", options_.listen_address));
  }
  running_ = true;
  telemetry_->Start();

  if (!options_.http_address.empty()) {
    http_ = std::make_unique<HttpServer>([this] { return ConnectedAgents(); });
    http_->SetMetrics([this] { return metrics_->Render(); });
    http_->SetQuery([this](const v1::QueryTelemetryRequest& request) {
      return queries_->Run(request);
    });
    absl::StatusOr<int> port = http_->Start(options_.http_address);
    if (!port.ok()) {
      Shutdown();
      return port.status();
    }
    http_port_ = *port;
  }
  return grpc_port_;
}

void ControllerServer::AddRootMetrics() {
  telemetry::MetricsRegistry& registry = metrics_->registry();
  telemetry::MetricFamily& version = registry.AddGauge(
      "fleet_root_version",
      "Version of the controller's current root of trust (0: --trust-key)", {});
  telemetry::MetricFamily& expires = registry.AddGauge(
      "fleet_root_expires_timestamp_seconds",
      "When the controller's root of trust expires (Unix seconds)", {});
  telemetry::MetricFamily& agents = registry.AddGauge(
      "fleet_agents_root",
      "Connected agents by the root version their latest heartbeat reported "
      "and whether it has expired (expired roots refuse new installs)",
      {"root_version", "expired"});
  registry.AddCollector([this, &version, &expires, &agents] {
    if (roots_ != nullptr) {
      version.Set({}, static_cast<double>(roots_->chain().version()));
      expires.Set({}, static_cast<double>(
                          absl::ToUnixSeconds(roots_->chain().expires())));
    } else {
      version.Set({}, 0);
    }
    std::map<std::pair<uint64_t, bool>, int> counts;
    for (const auto& [agent_id, status] : hub_->RootStatuses()) {
      ++counts[{status.version, status.expired}];
    }
    agents.Clear();
    for (const auto& [key, count] : counts) {
      agents.Set({absl::StrCat(key.first), key.second ? "true" : "false"},
                 count);
    }
  });
}

size_t ControllerServer::ConnectedAgents() const {
  return hub_ == nullptr ? 0 : hub_->ConnectedCount();
}

void ControllerServer::Shutdown() {
  if (!running_) return;
  running_ = false;
  hub_->CloseAll(absl::UnavailableError("the controller is shutting down"));
  // Admin handlers may be waiting on the control loop, so it keeps running
  // until every RPC has finished.
  server_->Shutdown(absl::ToChronoTime(absl::Now() + kShutdownGrace));
  loop_->Stop();
  if (http_ != nullptr) http_->Stop();
  // After the loop's last commit, so its last events are copied too.
  telemetry_->Stop();
}

}  // namespace fleet::controller
