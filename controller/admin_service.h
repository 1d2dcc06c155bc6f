// AdminService, the operator's API (fleetctl), on gRPC's synchronous API:
// handlers run on gRPC's sync thread pool, so reading an upload or the
// database there blocks nobody else.
//
// Reads use their own database connection (serialized by a mutex); writes
// (storing a release, creating a rollout) go through the control loop and
// wait for its commit. Every RPC validates its input first and answers with
// the most specific status and an operator-readable message.
#ifndef FLEET_CONTROLLER_ADMIN_SERVICE_H_
#define FLEET_CONTROLLER_ADMIN_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/clock.h"
#include "common/manifest.h"
#include "controller/agent_hub.h"
#include "controller/blob_store.h"
#include "controller/control_loop.h"
#include "controller/identity/authorizer.h"
#include "controller/identity/trust_roots.h"
#include "controller/store/store.h"
#include "controller/telemetry/query_engine.h"
#include "proto/fleet/v1/admin.grpc.pb.h"

namespace fleet::controller {

class AdminService final : public v1::AdminService::Service {
 public:
  // All references must outlive the service. `reads` is used only by this
  // service (a connection of its own, not the control loop's).
  AdminService(Store& reads, ControlLoop& loop, const BlobStore& blobs,
               const TrustedKeys& trusted_keys, const Clock& clock);

  // First message: the signed manifest, verified against the trusted keys
  // (PERMISSION_DENIED), validated (INVALID_ARGUMENT) and checked for a
  // duplicate (ALREADY_EXISTS) before any byte is received. Then the bytes:
  // RESOURCE_EXHAUSTED as soon as more arrive than the manifest's size,
  // INVALID_ARGUMENT if the total size or sha256 differ. Nothing is stored
  // unless everything matches.
  grpc::Status PushRelease(grpc::ServerContext* context,
                           grpc::ServerReader<v1::PushReleaseRequest>* reader,
                           v1::Release* response) override;
  grpc::Status ListReleases(grpc::ServerContext* context,
                            const v1::ListReleasesRequest* request,
                            v1::ListReleasesResponse* response) override;
  // NOT_FOUND if absent.
  grpc::Status GetRelease(grpc::ServerContext* context,
                          const v1::GetReleaseRequest* request,
                          v1::Release* response) override;
  grpc::Status ListAgents(grpc::ServerContext* context,
                          const v1::ListAgentsRequest* request,
                          v1::ListAgentsResponse* response) override;
  // INVALID_ARGUMENT for bad names, selector, stages or max_in_flight;
  // FAILED_PRECONDITION if no release of product/version exists (for the
  // selector's platform, when it names one), if the version is blacklisted
  // ("version ... is blacklisted"), or if an active (RUNNING, PAUSED)
  // rollout of the product has a selector that overlaps (SelectorsOverlap;
  // the message then starts "active rollout <id>").
  grpc::Status CreateRollout(grpc::ServerContext* context,
                             const v1::CreateRolloutRequest* request,
                             v1::Rollout* response) override;
  // NOT_FOUND if unknown. With targets and counts.
  grpc::Status GetRollout(grpc::ServerContext* context,
                          const v1::GetRolloutRequest* request,
                          v1::Rollout* response) override;
  grpc::Status ListRollouts(grpc::ServerContext* context,
                            const v1::ListRolloutsRequest* request,
                            v1::ListRolloutsResponse* response) override;
  // INVALID_ARGUMENT for a malformed id or a reason over 500 bytes or with
  // control characters; NOT_FOUND if unknown; FAILED_PRECONDITION naming the
  // state unless the rollout is RUNNING. Returns it PAUSED, with counts.
  grpc::Status PauseRollout(grpc::ServerContext* context,
                            const v1::PauseRolloutRequest* request,
                            v1::Rollout* response) override;
  // As PauseRollout; FAILED_PRECONDITION unless the rollout is PAUSED.
  grpc::Status ResumeRollout(grpc::ServerContext* context,
                             const v1::ResumeRolloutRequest* request,
                             v1::Rollout* response) override;
  // As PauseRollout; FAILED_PRECONDITION unless RUNNING or PAUSED.
  grpc::Status AbortRollout(grpc::ServerContext* context,
                            const v1::AbortRolloutRequest* request,
                            v1::Rollout* response) override;

  // INVALID_ARGUMENT for a bad product or version, or a reason that is empty,
  // over 500 bytes or has control characters; ALREADY_EXISTS if the version
  // is already blacklisted. Aborts the version's active rollouts.
  grpc::Status AddBlacklist(grpc::ServerContext* context,
                            const v1::AddBlacklistRequest* request,
                            v1::AddBlacklistResponse* response) override;
  // INVALID_ARGUMENT for a bad product or version; NOT_FOUND if the version
  // is not blacklisted.
  grpc::Status RemoveBlacklist(grpc::ServerContext* context,
                               const v1::RemoveBlacklistRequest* request,
                               v1::RemoveBlacklistResponse* response) override;
  grpc::Status ListBlacklist(grpc::ServerContext* context,
                             const v1::ListBlacklistRequest* request,
                             v1::ListBlacklistResponse* response) override;
  // Runs a telemetry query (controller/telemetry/query_engine.h) on its own
  // read connection to telemetry.db. INVALID_ARGUMENT for a malformed query
  // (with the column), an unknown metric/label/field, a bad range or step,
  // or too many points; RESOURCE_EXHAUSTED for a scan over the row limit;
  // UNAVAILABLE if telemetry is not enabled (SetTelemetry not called).
  grpc::Status QueryTelemetry(grpc::ServerContext* context,
                              const v1::QueryTelemetryRequest* request,
                              v1::QueryTelemetryResponse* response) override;
  // Version, schema version, server clock (for clock-skew checks), start
  // time and connected agents (as stored). Never fails but on a database
  // error (INTERNAL).
  grpc::Status GetServerInfo(grpc::ServerContext* context,
                             const v1::GetServerInfoRequest* request,
                             v1::ServerInfo* response) override;
  // Root of trust (needs SetTrust with roots). INVALID_ARGUMENT without a
  // root or for one that does not parse; FAILED_PRECONDITION without
  // --trust-root or for a version other than current + 1; PERMISSION_DENIED
  // for too few valid signatures of the current or the new root keys. The
  // accepted root is stored, audited and sent to connected agents.
  grpc::Status PushRoot(grpc::ServerContext* context,
                        const v1::PushRootRequest* request,
                        v1::PushRootResponse* response) override;
  // FAILED_PRECONDITION without --trust-root.
  grpc::Status GetRoot(grpc::ServerContext* context,
                       const v1::GetRootRequest* request,
                       v1::GetRootResponse* response) override;
  // `roots` (nullptr: the controller runs with --trust-key) and `hub` (for
  // sending pushed roots and the agents' reported roots in ListAgents;
  // nullptr in unit tests) must outlive the service; call before serving.
  void SetTrust(TrustRoots* roots, AgentHub* hub) {
    roots_ = roots;
    hub_ = hub;
  }
  // `engine` must outlive the service; call before serving.
  void SetTelemetry(const telemetry::QueryEngine* engine) {
    telemetry_ = engine;
  }
  // Every call must come from an admin (UNAUTHENTICATED without a client
  // certificate, PERMISSION_DENIED for an agent's); changes are audited
  // under the caller's name. Without an authorizer (a service built by hand
  // in a unit test) calls are not checked. `authorizer` must outlive the
  // service; call before serving.
  void SetAuthorizer(const Authorizer* authorizer) { authorizer_ = authorizer; }

 private:
  // The admin making the call, or why it may not.
  absl::StatusOr<PeerIdentity> Caller(grpc::ServerContext* context) const;
  void Audit(const PeerIdentity& caller, absl::string_view action,
             absl::string_view detail) const;

  absl::StatusOr<v1::Release> DoPushRelease(
      grpc::ServerContext* context,
      grpc::ServerReader<v1::PushReleaseRequest>* reader);
  absl::Status CheckNotStored(const v1::ReleaseManifest& manifest);
  grpc::Status ChangeRollout(const std::string& rollout_id,
                             RolloutCommand command, const std::string& reason,
                             v1::Rollout* response, bool rollback = false);
  // The rollout with its counts (and targets if asked).
  absl::StatusOr<v1::Rollout> View(const RolloutRecord& record,
                                   bool with_targets)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(reads_mu_);

  absl::Mutex reads_mu_;
  Store* const reads_ ABSL_PT_GUARDED_BY(reads_mu_);
  ControlLoop& loop_;
  const BlobStore& blobs_;
  const TrustedKeys& trusted_keys_;
  const Clock& clock_;
  const telemetry::QueryEngine* telemetry_ = nullptr;
  const Authorizer* authorizer_ = nullptr;
  TrustRoots* roots_ = nullptr;
  AgentHub* hub_ = nullptr;
  const absl::Time started_ = clock_.Now();
};

}  // namespace fleet::controller

#endif  // FLEET_CONTROLLER_ADMIN_SERVICE_H_
