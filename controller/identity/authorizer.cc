#include "controller/identity/authorizer.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace fleet::controller {
namespace {

// Bounds the memory of a controller facing agents that keep inventing
// labels; forgetting only means warning (and auditing) again.
constexpr size_t kMaxOverridesRemembered = 10000;
// Audit records of label overrides waiting for the writer thread; beyond it
// they are dropped (each is also in the log).
constexpr size_t kMaxQueuedAudits = 10000;

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

Authorizer::~Authorizer() {
  std::thread writer;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    writer = std::move(audit_writer_);
  }
  if (writer.joinable()) writer.join();
}

void Authorizer::AuditLater(PendingAudit record) const {
  if (identities_ == nullptr) return;
  absl::MutexLock lock(&mu_);
  if (stopping_) return;
  if (audit_queue_.size() >= kMaxQueuedAudits) {
    LogWarning("audit queue full; record dropped",
               {{"action", record.action}, {"actor", record.actor}});
    return;
  }
  audit_queue_.push_back(std::move(record));
  if (!audit_writer_.joinable()) {
    audit_writer_ = std::thread([this] { WriteQueuedAudits(); });
  }
}

bool Authorizer::AuditReady() const {
  return stopping_ || !audit_queue_.empty();
}

void Authorizer::WriteQueuedAudits() const {
  while (true) {
    PendingAudit record;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &Authorizer::AuditReady));
      if (audit_queue_.empty()) return;  // stopping, all written
      record = std::move(audit_queue_.front());
      audit_queue_.pop_front();
    }
    absl::Status written = identities_->AppendAudit(record.actor, record.action,
                                                    record.detail, record.time);
    if (!written.ok()) {
      LogError("audit write failed",
               {{"action", record.action},
                {"error", std::string(written.message())}});
    }
  }
}

void Authorizer::ApplyEnrolledLabels(
    const grpc::AuthContext& auth,
    google::protobuf::Map<std::string, std::string>& labels) const {
  if (insecure_) return;
  absl::StatusOr<pki::CertificateInfo> cert = PeerCertificateOf(auth);
  if (!cert.ok() || cert->labels.empty()) return;
  for (const auto& [key, enrolled] : cert->labels) {
    auto it = labels.find(key);
    if (it == labels.end()) {
      labels[key] = enrolled;
      continue;
    }
    if (it->second == enrolled) continue;
    const std::string claimed = it->second;
    it->second = enrolled;
    bool first_time;
    {
      absl::MutexLock lock(&mu_);
      if (overrides_seen_.size() >= kMaxOverridesRemembered) {
        overrides_seen_.clear();
      }
      first_time = overrides_seen_
                       .insert(absl::StrCat(
                           cert->common_name, absl::string_view("\0", 1), key,
                           absl::string_view("\0", 1), claimed))
                       .second;
    }
    if (!first_time) continue;
    LogWarning(
        "agent reports a label that contradicts its enrolled one; the "
        "enrolled value wins",
        {{"agent_id", cert->common_name},
         {"label", key},
         {"enrolled", enrolled},
         {"claimed", claimed}});
    AuditLater({absl::StrCat("agent:", cert->common_name), "LabelOverridden",
                absl::StrCat("label ", key, ": claimed \"", claimed,
                             "\", enrolled \"", enrolled, "\" kept"),
                clock_.Now()});
  }
}

}  // namespace fleet::controller
