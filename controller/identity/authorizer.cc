#include "controller/identity/authorizer.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace fleet::controller {
namespace {

PeerIdentity InsecurePeer() {
  return PeerIdentity{pki::CertificateRole::kAdmin, "operator", ""};
}

}  // namespace

absl::StatusOr<PeerIdentity> Authorizer::Admin(
    const grpc::AuthContext& auth) const {
  if (insecure_) return InsecurePeer();
  absl::StatusOr<PeerIdentity> peer = PeerIdentityOf(auth);
  if (!peer.ok()) return peer.status();
  if (peer->role != pki::CertificateRole::kAdmin) {
    return absl::PermissionDeniedError(
        absl::StrCat("\"", peer->name, "\" holds a ", pki::RoleName(peer->role),
                     " certificate; this call needs an admin certificate "
                     "(fleetctl pki issue --role admin)"));
  }
  return peer;
}

absl::StatusOr<PeerIdentity> Authorizer::Agent(
    const grpc::AuthContext& auth, absl::string_view claimed_agent_id) const {
  if (insecure_) {
    return PeerIdentity{pki::CertificateRole::kAgent,
                        std::string(claimed_agent_id), ""};
  }
  absl::StatusOr<PeerIdentity> peer = PeerIdentityOf(auth);
  if (!peer.ok()) return peer.status();
  if (peer->role != pki::CertificateRole::kAgent) {
    return absl::PermissionDeniedError(absl::StrCat(
        "\"", peer->name, "\" holds a ", pki::RoleName(peer->role),
        " certificate; only an enrolled agent may connect as an agent"));
  }
  if (peer->name != claimed_agent_id) {
    return absl::PermissionDeniedError(
        absl::StrCat("certificate is for agent ", peer->name,
                     ", not for the claimed agent ", claimed_agent_id));
  }
  if (IsRevoked(peer->name)) {
    return absl::PermissionDeniedError(absl::StrCat(
        "agent ", peer->name, " is revoked; enroll the machine again"));
  }
  return peer;
}

bool Authorizer::IsRevoked(const std::string& agent_id) const {
  if (insecure_ || identities_ == nullptr) return false;
  absl::StatusOr<bool> revoked = identities_->IsRevoked(agent_id);
  if (!revoked.ok()) {
    // Fail closed: an unreadable revocation list lets nobody in.
    LogError("revocation check failed",
             {{"agent_id", agent_id},
              {"error", std::string(revoked.status().message())}});
    return true;
  }
  return *revoked;
}

std::string Authorizer::Actor(const PeerIdentity& peer) {
  if (peer.certificate_sha256.empty()) return peer.name;
  return absl::StrCat(
      peer.role == pki::CertificateRole::kAgent ? "agent:" : "admin:",
      peer.name);
}

void Authorizer::Audit(const PeerIdentity& peer, absl::string_view action,
                       absl::string_view detail) const {
  if (identities_ == nullptr) return;
  absl::Status written = identities_->AppendAudit(
      Actor(peer), std::string(action), std::string(detail), clock_.Now());
  if (!written.ok()) {
    LogError("audit write failed", {{"action", std::string(action)},
                                    {"error", std::string(written.message())}});
  }
}

}  // namespace fleet::controller
