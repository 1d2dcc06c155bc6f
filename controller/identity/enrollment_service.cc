#include "controller/identity/enrollment_service.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/ids.h"
#include "common/log.h"
#include "common/names.h"

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
  const std::string agent_id = NewId("ag");
  absl::StatusOr<std::string> certificate =
      ca_.Issue(request->csr_pem(),
                {.common_name = agent_id,
                 .role = pki::CertificateRole::kAgent,
                 .validity = options_.certificate_validity},
                now);
  if (!certificate.ok()) {
    return Invalid(absl::StrCat("csr_pem: ", certificate.status().message()));
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

}  // namespace fleet::controller
