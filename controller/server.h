// fleet-controller assembled: the SQLite store, the blob store, the control
// loop, AgentService (callback API) and AdminService (sync API) on one gRPC
// server, and the HTTP health endpoint.
//
//   ControllerServer server(options);
//   ASSIGN_OR_RETURN(int port, server.Start());
//   ...                      // until SIGTERM
//   server.Shutdown();
#ifndef FLEET_CONTROLLER_SERVER_H_
#define FLEET_CONTROLLER_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/manifest.h"
#include "common/pki.h"
#include "common/tls.h"
#include "controller/agent_hub.h"
#include "proto/fleet/v1/release.pb.h"

namespace fleet::controller {

class AdminService;
class Authorizer;
class TrustRoots;
class EnrollmentServiceImpl;
class IdentityServiceImpl;
class IdentityStore;
class BlobStore;
class ControlLoop;
class HttpServer;
class Store;
namespace telemetry {
class ControllerMetrics;
class QueryEngine;
class TelemetryRecorder;
class TelemetryStore;
}  // namespace telemetry

struct ControllerOptions {
  // Holds fleet.db (SQLite) and blobs/; created if missing.
  std::string data_dir;
  // gRPC "HOST:PORT"; port 0 picks a free port.
  std::string listen_address = "127.0.0.1:7443";
  // Telemetry rows (telemetry.db) older than this are deleted; 0 keeps
  // everything.
  absl::Duration telemetry_retention = absl::Hours(24 * 30);
  // HTTP "HOST:PORT" for /healthz, /metrics and /api/v1/query; "" disables
  // HTTP.
  std::string http_address = "127.0.0.1:7480";
  // PEM Ed25519 public keys whose signatures releases must carry (one
  // signature suffices): the simple mode, without root metadata.
  std::vector<std::string> trust_key_paths;
  // Root metadata file (fleetctl keys root init/rotate): the release keys
  // and threshold, rotated by PushRoot and sent to agents. When set it wins
  // over trust_key_paths (which are then ignored, with a warning). One of
  // the two is required.
  std::string trust_root_path;
  // Per-agent message rate on the Connect stream.
  StreamRateLimit agent_rate_limit;
  // Told to agents in Welcome.
  absl::Duration heartbeat_interval = absl::Seconds(10);
  // Offline timeout of rollouts created without their own (see
  // Rollout.offline_timeout_seconds).
  absl::Duration offline_timeout = absl::Minutes(10);
  // Transport security (docs/security.md). Unless `insecure`, gRPC speaks
  // TLS with tls.cert_file/key_file and verifies client certificates
  // against tls.ca_file; all three are required. `insecure` is plaintext
  // with no caller checks, for local demos and tests of other features.
  bool insecure = false;
  TlsFiles tls;
  // The CA's private key. With it the controller enrolls agents that
  // present a token (EnrollmentService); without it, agents need
  // certificates issued offline (fleetctl pki issue --role agent).
  std::string tls_ca_key_file;
  // Lifetime of agent certificates issued by Enroll and Renew.
  absl::Duration agent_cert_validity = absl::Hours(24 * 365);
};

// gRPC server settings: keepalive pings every 20 s (10 s timeout), pings
// from clients accepted every 10 s even without calls, 4 MiB messages, no
// SO_REUSEPORT (a busy port is an error, not a shared one).
void ConfigureServerBuilder(grpc::ServerBuilder& builder);

class ControllerServer {
 public:
  // `clock` must outlive the server.
  explicit ControllerServer(ControllerOptions options,
                            const Clock& clock = RealClock::Get());
  // Shuts down if running.
  ~ControllerServer();
  ControllerServer(const ControllerServer&) = delete;
  ControllerServer& operator=(const ControllerServer&) = delete;

  // Loads the trust keys and TLS files, opens the data dir, starts the
  // control loop, the gRPC server and (if configured) HTTP. Returns the
  // bound gRPC port. INVALID_ARGUMENT without trust keys or root, without
  // TLS files
  // (unless insecure) or with bad options; NOT_FOUND / INVALID_ARGUMENT for
  // unreadable keys or certificates; UNAVAILABLE if an address cannot be
  // bound. Call once.
  absl::StatusOr<int> Start();
  int grpc_port() const { return grpc_port_; }
  int http_port() const { return http_port_; }  // 0 if HTTP is disabled
  size_t ConnectedAgents() const;

  // Ends agent streams with UNAVAILABLE, lets in-flight RPCs finish (5 s at
  // most), commits what the control loop holds and stops. Idempotent.
  void Shutdown();

 private:
  // Root-of-trust gauges on /metrics (fleet_root_*, fleet_agents_root).
  void AddRootMetrics();

  ControllerOptions options_;
  const Clock& clock_;
  TrustedKeys trusted_keys_;
  // Declared in dependency order: destroyed users first.
  std::unique_ptr<Store> write_store_;
  std::unique_ptr<Store> read_store_;
  std::unique_ptr<IdentityStore> identities_;
  std::unique_ptr<TrustRoots> roots_;
  std::unique_ptr<Authorizer> authorizer_;
  std::unique_ptr<pki::CertificateAuthority> ca_;
  std::unique_ptr<BlobStore> blobs_;
  std::unique_ptr<telemetry::ControllerMetrics> metrics_;
  std::unique_ptr<telemetry::TelemetryStore> telemetry_;
  std::unique_ptr<telemetry::QueryEngine> queries_;
  std::unique_ptr<telemetry::TelemetryRecorder> recorder_;
  std::unique_ptr<ControlLoop> loop_;
  std::unique_ptr<AgentHub> hub_;
  std::unique_ptr<AdminService> admin_;
  std::unique_ptr<IdentityServiceImpl> identity_service_;
  std::unique_ptr<EnrollmentServiceImpl> enrollment_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<HttpServer> http_;
  int grpc_port_ = 0;
  int http_port_ = 0;
  bool running_ = false;
};

}  // namespace fleet::controller

#endif  // FLEET_CONTROLLER_SERVER_H_
