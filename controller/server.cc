#include "controller/server.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/files.h"
#include "common/log.h"
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
  if (options_.trust_key_paths.empty()) {
    return absl::InvalidArgumentError(
        "at least one trusted release key (--trust-key) is required");
  }
  if (options_.heartbeat_interval < absl::Seconds(1)) {
    return absl::InvalidArgumentError("heartbeat interval must be >= 1s");
  }
  if (options_.offline_timeout < absl::Seconds(1) ||
      options_.offline_timeout > absl::Hours(24 * 30)) {
    return absl::InvalidArgumentError(
        "offline timeout must be between 1s and 30 days");
  }
  for (const std::string& path : options_.trust_key_paths) {
    absl::Status added = trusted_keys_.AddPemFile(path);
    if (!added.ok()) {
      return absl::Status(added.code(),
                          absl::StrCat("trust key: ", added.message()));
    }
  }
  RETURN_IF_ERROR(MakeDirs(options_.data_dir, 0700));
  const std::string db_path = JoinPath(options_.data_dir, "fleet.db");
  ASSIGN_OR_RETURN(write_store_, Store::Open(db_path));
  ASSIGN_OR_RETURN(read_store_, Store::Open(db_path));
  RETURN_IF_ERROR(write_store_->MarkAllAgentsDisconnected());
  ASSIGN_OR_RETURN(blobs_, BlobStore::Open(options_.data_dir));
  ASSIGN_OR_RETURN(identities_, IdentityStore::Open(db_path));
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
      enrollment_ =
          std::make_unique<EnrollmentServiceImpl>(*identities_, *ca_, clock_);
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
  loop_ = std::make_unique<ControlLoop>(*write_store_, clock_, loop_options);
  hub_ = std::make_unique<AgentHub>(*loop_, *blobs_);
  hub_->SetObserver(recorder_.get());
  hub_->SetAuthorizer(authorizer_.get());
  loop_->Start(*hub_);
  admin_ = std::make_unique<AdminService>(*read_store_, *loop_, *blobs_,
                                          trusted_keys_, clock_);
  admin_->SetTelemetry(queries_.get());
  admin_->SetAuthorizer(authorizer_.get());
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
