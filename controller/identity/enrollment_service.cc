#include "controller/identity/enrollment_service.h"

#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/grpc_status.h"
#include "common/ids.h"
#include "common/log.h"
#include "common/names.h"
#include "common/tls.h"

namespace fleet::controller {
namespace {

constexpr size_t kMaxCsrBytes = 16 * 1024;
constexpr size_t kMaxHostnameBytes = 253;
constexpr size_t kMaxTrackedPeers = 100000;

grpc::Status Invalid(const std::string& message) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, message);
}

// The peer's address without its port ("ipv4:10.0.0.5:51234" ->
// "ipv4:10.0.0.5"), so reconnecting from new ports shares one budget.
std::string PeerHost(const std::string& peer) {
  const size_t colon = peer.rfind(':');
  return colon == std::string::npos ? peer : peer.substr(0, colon);
}

}  // namespace

absl::StatusOr<absl::Duration> ParseCertificateValidity(
    absl::string_view text) {
  absl::Duration validity;
  bool parsed = false;
  if (absl::ConsumeSuffix(&text, "d")) {
    int64_t days = 0;
    parsed = absl::SimpleAtoi(text, &days) && days > 0 && days <= 3650;
    if (parsed) validity = absl::Hours(24) * days;
  } else {
    parsed = absl::ParseDuration(text, &validity);
  }
  if (!parsed || validity < absl::Seconds(1) ||
      validity > absl::Hours(24 * 3650)) {
    return absl::InvalidArgumentError(
        "agent certificate validity must be a duration from 1s to 3650d, "
        "like 90d, 36h or 10m");
  }
  return validity;
}

EnrollmentServiceImpl::EnrollmentServiceImpl(
    IdentityStore& identities, const pki::CertificateAuthority& ca,
    const Clock& clock, EnrollmentOptions options)
    : identities_(identities), ca_(ca), clock_(clock), options_(options) {}

bool EnrollmentServiceImpl::AllowAttempt(const std::string& peer,
                                         absl::Time now) {
  absl::MutexLock lock(&mu_);
  if (attempts_.size() > kMaxTrackedPeers) attempts_.clear();
  Window& window = attempts_[peer];
  if (now - window.start >= absl::Minutes(1)) {
    window.start = now;
    window.attempts = 0;
  }
  return ++window.attempts <= options_.attempts_per_minute;
}

grpc::Status EnrollmentServiceImpl::Enroll(grpc::ServerContext* context,
                                           const v1::EnrollRequest* request,
                                           v1::EnrollResponse* response) {
  const absl::Time now = clock_.Now();
  if (!AllowAttempt(PeerHost(context->peer()), now)) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        "too many enrollment attempts from this address; "
                        "retry in a minute");
  }
  if (request->token().empty()) return Invalid("token is required");
  if (request->csr_pem().empty() || request->csr_pem().size() > kMaxCsrBytes) {
    return Invalid(absl::StrCat("csr_pem must be 1..", kMaxCsrBytes, " bytes"));
  }
  if (request->hostname().size() > kMaxHostnameBytes) {
    return Invalid("hostname is longer than 253 bytes");
  }
  for (char c : request->hostname()) {
    if (static_cast<unsigned char>(c) < 0x21 || c == 0x7f) {
      return Invalid("hostname contains a space or control character");
    }
  }
  if (absl::Status s = ValidatePlatform(request->platform()); !s.ok()) {
    return ToGrpcStatus(s);
  }

  // Issue first: a CSR that does not verify never spends a token use.
  // The token's labels go into the certificate, so the token must be
  // spent before issuing; a CSR that does not verify must still not spend
  // it, hence the check against a throw-away issue first.
  const std::string agent_id = NewId("ag");
  absl::StatusOr<std::string> probe =
      ca_.Issue(request->csr_pem(),
                {.common_name = agent_id,
                 .role = pki::CertificateRole::kAgent,
                 .validity = options_.certificate_validity},
                now);
  if (!probe.ok()) {
    return Invalid(absl::StrCat("csr_pem: ", probe.status().message()));
  }
  absl::StatusOr<EnrollTokenInfo> token =
      identities_.RedeemToken(request->token(), now);
  if (!token.ok()) {
    LogWarning("enrollment refused",
               {{"peer", context->peer()},
                {"hostname", request->hostname()},
                {"error", std::string(token.status().message())}});
    return ToGrpcStatus(token.status());
  }
  absl::StatusOr<std::string> certificate =
      ca_.Issue(request->csr_pem(),
                {.common_name = agent_id,
                 .role = pki::CertificateRole::kAgent,
                 .labels = token->labels,
                 .validity = options_.certificate_validity},
                now);
  if (!certificate.ok()) {
    // The same CSR issued a moment ago: only a label the CA cannot encode
    // gets here, and token labels were validated at creation.
    return ToGrpcStatus(certificate.status());
  }
  (void)identities_.AppendAudit(
      absl::StrCat("agent:", agent_id), "Enroll",
      absl::StrCat("token ", token->token_id, " hostname ", request->hostname(),
                   " platform ", request->platform()),
      now);
  LogInfo("agent enrolled", {{"agent_id", agent_id},
                             {"hostname", request->hostname()},
                             {"token_id", token->token_id}});
  response->set_agent_id(agent_id);
  response->set_certificate_pem(*std::move(certificate));
  response->set_ca_certificate_pem(ca_.certificate_pem());
  for (const auto& [key, value] : token->labels) {
    (*response->mutable_labels())[key] = value;
  }
  return grpc::Status::OK;
}

grpc::Status EnrollmentServiceImpl::Renew(grpc::ServerContext* context,
                                          const v1::RenewRequest* request,
                                          v1::RenewResponse* response) {
  const absl::Time now = clock_.Now();
  // Who is renewing comes from the verified certificate only.
  absl::StatusOr<pki::CertificateInfo> current =
      PeerCertificateOf(*context->auth_context());
  if (!current.ok()) return ToGrpcStatus(current.status());
  const std::string& agent_id = current->common_name;
  if (current->role_name != pki::RoleName(pki::CertificateRole::kAgent)) {
    return grpc::Status(
        grpc::StatusCode::PERMISSION_DENIED,
        absl::StrCat("\"", agent_id, "\" holds a ", current->role_name,
                     " certificate; only an agent renews its certificate "
                     "here (operators: fleetctl pki issue)"));
  }
  absl::StatusOr<bool> revoked = identities_.IsRevoked(agent_id);
  if (!revoked.ok() || *revoked) {
    // Fails closed, as the Authorizer does.
    LogWarning("renewal refused: agent revoked",
               {{"agent_id", agent_id}, {"peer", context->peer()}});
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        absl::StrCat("agent ", agent_id,
                                     " is revoked; enroll the machine again"));
  }
  // The handshake checked expiry against the real clock; check again
  // against the controller's, which tests can move.
  if (current->not_after <= now) {
    return grpc::Status(
        grpc::StatusCode::UNAUTHENTICATED,
        absl::StrCat("the certificate of agent ", agent_id,
                     " has expired; enroll again with a new token"));
  }
  if (!AllowAttempt(absl::StrCat("agent:", agent_id), now)) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        "too many renewals by this agent; retry in a minute");
  }
  if (request->csr_pem().empty() || request->csr_pem().size() > kMaxCsrBytes) {
    return Invalid(absl::StrCat("csr_pem must be 1..", kMaxCsrBytes, " bytes"));
  }
  absl::StatusOr<std::string> certificate =
      ca_.Issue(request->csr_pem(),
                {.common_name = agent_id,
                 .role = pki::CertificateRole::kAgent,
                 .labels = current->labels,
                 .validity = options_.certificate_validity},
                now);
  if (!certificate.ok()) {
    return Invalid(absl::StrCat("csr_pem: ", certificate.status().message()));
  }
  absl::StatusOr<pki::CertificateInfo> issued =
      pki::ParseCertificate(*certificate);
  if (!issued.ok()) return ToGrpcStatus(issued.status());
  const std::string expires = absl::FormatTime(
      absl::RFC3339_sec, issued->not_after, absl::UTCTimeZone());
  (void)identities_.AppendAudit(
      absl::StrCat("agent:", agent_id), "Renew",
      absl::StrCat("serial ", current->serial_hex, " -> ", issued->serial_hex,
                   ", valid until ", expires),
      now);
  LogInfo("agent certificate renewed", {{"agent_id", agent_id},
                                        {"serial", issued->serial_hex},
                                        {"not_after", expires}});
  response->set_agent_id(agent_id);
  response->set_certificate_pem(*std::move(certificate));
  response->set_ca_certificate_pem(ca_.certificate_pem());
  for (const auto& [key, value] : current->labels) {
    (*response->mutable_labels())[key] = value;
  }
  return grpc::Status::OK;
}

}  // namespace fleet::controller
