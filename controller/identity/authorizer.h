// Who may call what. Every RPC handler asks the Authorizer before it acts:
// AdminService and IdentityService need an admin certificate, AgentService
// an agent certificate whose CN is the agent id the stream speaks for (and
// that is not revoked). EnrollmentService needs no certificate.
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

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/clock.h"
#include "common/tls.h"
#include "controller/identity/identity_store.h"

namespace fleet::controller {

class Authorizer {
 public:
  // `identities` may be null only when `insecure`; it and `clock` must
  // outlive this.
  Authorizer(bool insecure, IdentityStore* identities, const Clock& clock)
      : insecure_(insecure), identities_(identities), clock_(clock) {}

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

 private:
  const bool insecure_;
  IdentityStore* const identities_;
  const Clock& clock_;
};

}  // namespace fleet::controller

#endif  // FLEET_CONTROLLER_IDENTITY_AUTHORIZER_H_
