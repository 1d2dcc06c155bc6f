// Who may call what. Every RPC handler asks the Authorizer before it acts:
// AdminService and IdentityService need an admin certificate, AgentService
// an agent certificate whose CN is the agent id the stream speaks for (and
// that is not revoked). EnrollmentService needs no certificate.
//
// Enrolled labels: an agent's certificate carries the labels of the token it
// enrolled with (common/pki.h). ApplyEnrolledLabels makes them win over the
// labels the agent reports in its Hello, so rollout selectors can trust
// them; a Hello that contradicts one is logged and audited.
//
// With `insecure` (the controller's --insecure flag, plaintext gRPC) there
// are no certificates: every caller is let through (operators as
// "operator"), and agents are who they claim to be. Tests of unrelated
// features and local demos use that; production does not.
//
// Thread-safe.
#ifndef FLEET_CONTROLLER_IDENTITY_AUTHORIZER_H_
#define FLEET_CONTROLLER_IDENTITY_AUTHORIZER_H_

#include <grpcpp/grpcpp.h>

#include <deque>
#include <string>
#include <thread>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "common/clock.h"
#include "common/pki.h"
#include "common/tls.h"
#include "controller/identity/identity_store.h"
#include "google/protobuf/map.h"

namespace fleet::controller {

class Authorizer {
 public:
  // `identities` may be null only when `insecure`; it and `clock` must
  // outlive this.
  Authorizer(bool insecure, IdentityStore* identities, const Clock& clock)
      : insecure_(insecure), identities_(identities), clock_(clock) {}
  // Writes the audit records still queued by AuditLater.
  ~Authorizer();
  Authorizer(const Authorizer&) = delete;
  Authorizer& operator=(const Authorizer&) = delete;

  bool insecure() const { return insecure_; }

  // An operator: UNAUTHENTICATED without a client certificate,
  // PERMISSION_DENIED for any role but admin.
  absl::StatusOr<PeerIdentity> Admin(const grpc::AuthContext& auth) const;

  // The agent `claimed_agent_id`: UNAUTHENTICATED without a certificate,
  // PERMISSION_DENIED for another role, a certificate naming another agent,
  // or a revoked agent.
  absl::StatusOr<PeerIdentity> Agent(const grpc::AuthContext& auth,
                                     absl::string_view claimed_agent_id) const;

  // Whether `agent_id` is revoked (false when insecure).
  bool IsRevoked(const std::string& agent_id) const;

  // "admin:alice" / "agent:ag-..." ("operator" when insecure), for the audit
  // log.
  static std::string Actor(const PeerIdentity& peer);

  // Records `action` by `peer` in the audit log (best effort: a failed
  // write is logged, never fails the call it describes).
  void Audit(const PeerIdentity& peer, absl::string_view action,
             absl::string_view detail) const;

  // Replaces, in `labels` (a Hello's), every key the agent's certificate
  // enrolled with the enrolled value, and adds enrolled keys it lacks; keys
  // the certificate does not name stay the agent's. A contradicting value
  // is logged as a warning and audited (as "agent:ID" "LabelOverridden"),
  // once per agent, key and claimed value while the controller runs. Safe
  // in a gRPC reaction: no disk I/O on the calling thread (the audit record
  // is written by a background thread). No-op when insecure or without an
  // agent certificate. Call after Agent() accepted the caller.
  void ApplyEnrolledLabels(
      const grpc::AuthContext& auth,
      google::protobuf::Map<std::string, std::string>& labels) const;

 private:
  struct PendingAudit {
    std::string actor, action, detail;
    absl::Time time;
  };
  // Queues an audit record for the background writer (started on first
  // use). Never blocks on the database.
  void AuditLater(PendingAudit record) const;
  void WriteQueuedAudits() const;
  bool AuditReady() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const bool insecure_;
  IdentityStore* const identities_;
  const Clock& clock_;

  mutable absl::Mutex mu_;
  mutable std::deque<PendingAudit> audit_queue_ ABSL_GUARDED_BY(mu_);
  mutable bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  mutable std::thread audit_writer_ ABSL_GUARDED_BY(mu_);
  // "agent\0key\0claimed" already warned about; bounded.
  mutable absl::flat_hash_set<std::string> overrides_seen_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fleet::controller

#endif  // FLEET_CONTROLLER_IDENTITY_AUTHORIZER_H_
