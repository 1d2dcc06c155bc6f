#include "controller/identity/identity_service.h"

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/grpc_status.h"
#include "common/names.h"

namespace fleet::controller {
namespace {

constexpr size_t kMaxReasonBytes = 500;
constexpr int kDefaultAuditLimit = 100;
constexpr int kMaxAuditLimit = 10000;

void ToProto(const EnrollTokenInfo& info, v1::EnrollToken* token) {
  token->set_token_id(info.token_id);
  for (const auto& [key, value] : info.labels) {
    (*token->mutable_labels())[key] = value;
  }
  token->set_uses_left(info.uses_left);
  token->set_expires_unix_ms(absl::ToUnixMillis(info.expires));
  token->set_created_by(info.created_by);
  token->set_created_unix_ms(absl::ToUnixMillis(info.created));
}

}  // namespace

IdentityServiceImpl::IdentityServiceImpl(IdentityStore& identities,
                                         const Authorizer& authorizer,
                                         const Clock& clock,
                                         CloseAgentStream close_agent_stream)
    : identities_(identities),
      authorizer_(authorizer),
      clock_(clock),
      close_agent_stream_(std::move(close_agent_stream)) {}

grpc::Status IdentityServiceImpl::CreateEnrollToken(
    grpc::ServerContext* context, const v1::CreateEnrollTokenRequest* request,
    v1::CreateEnrollTokenResponse* response) {
  absl::StatusOr<PeerIdentity> peer =
      authorizer_.Admin(*context->auth_context());
  if (!peer.ok()) return ToGrpcStatus(peer.status());
  if (request->ttl_seconds() < 0 || request->uses() < 0) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "ttl_seconds and uses must not be negative");
  }
  const absl::Duration ttl = request->ttl_seconds() == 0
                                 ? absl::Hours(1)
                                 : absl::Seconds(request->ttl_seconds());
  const int64_t uses = request->uses() == 0 ? 1 : request->uses();
  std::map<std::string, std::string> labels(request->labels().begin(),
                                            request->labels().end());
  absl::StatusOr<NewEnrollToken> token = identities_.CreateToken(
      labels, uses, ttl, Authorizer::Actor(*peer), clock_.Now());
  if (!token.ok()) return ToGrpcStatus(token.status());
  authorizer_.Audit(*peer, "CreateEnrollToken",
                    absl::StrCat("token ", token->info.token_id, " uses ", uses,
                                 " ttl ", absl::FormatDuration(ttl)));
  response->set_token(token->token);
  ToProto(token->info, response->mutable_info());
  return grpc::Status::OK;
}

grpc::Status IdentityServiceImpl::ListEnrollTokens(
    grpc::ServerContext* context, const v1::ListEnrollTokensRequest*,
    v1::ListEnrollTokensResponse* response) {
  absl::StatusOr<PeerIdentity> peer =
      authorizer_.Admin(*context->auth_context());
  if (!peer.ok()) return ToGrpcStatus(peer.status());
  absl::StatusOr<std::vector<EnrollTokenInfo>> tokens =
      identities_.ListTokens(clock_.Now());
  if (!tokens.ok()) return ToGrpcStatus(tokens.status());
  for (const EnrollTokenInfo& info : *tokens) {
    ToProto(info, response->add_tokens());
  }
  return grpc::Status::OK;
}

grpc::Status IdentityServiceImpl::DeleteEnrollToken(
    grpc::ServerContext* context, const v1::DeleteEnrollTokenRequest* request,
    v1::DeleteEnrollTokenResponse*) {
  absl::StatusOr<PeerIdentity> peer =
      authorizer_.Admin(*context->auth_context());
  if (!peer.ok()) return ToGrpcStatus(peer.status());
  if (request->token_id().empty() || request->token_id().size() > 64) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "token_id must be the 12-character id from "
                        "fleetctl enroll-token list");
  }
  absl::Status deleted = identities_.DeleteToken(request->token_id());
  if (!deleted.ok()) return ToGrpcStatus(deleted);
  authorizer_.Audit(*peer, "DeleteEnrollToken",
                    absl::StrCat("token ", request->token_id()));
  return grpc::Status::OK;
}

grpc::Status IdentityServiceImpl::RevokeAgent(
    grpc::ServerContext* context, const v1::RevokeAgentRequest* request,
    v1::RevokeAgentResponse* response) {
  absl::StatusOr<PeerIdentity> peer =
      authorizer_.Admin(*context->auth_context());
  if (!peer.ok()) return ToGrpcStatus(peer.status());
  if (absl::Status s = ValidateId(request->agent_id(), "agent_id"); !s.ok()) {
    return ToGrpcStatus(s);
  }
  if (request->reason().size() > kMaxReasonBytes) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "reason is longer than 500 bytes");
  }
  absl::Status revoked =
      identities_.RevokeAgent(request->agent_id(), request->reason(),
                              Authorizer::Actor(*peer), clock_.Now());
  if (!revoked.ok()) return ToGrpcStatus(revoked);
  // Recorded first, so a stream that races to reconnect is refused.
  response->set_stream_closed(close_agent_stream_ != nullptr &&
                              close_agent_stream_(request->agent_id()));
  authorizer_.Audit(
      *peer, "RevokeAgent",
      absl::StrCat("agent ", request->agent_id(), ": ", request->reason()));
  return grpc::Status::OK;
}

grpc::Status IdentityServiceImpl::ListAudit(grpc::ServerContext* context,
                                            const v1::ListAuditRequest* request,
                                            v1::ListAuditResponse* response) {
  absl::StatusOr<PeerIdentity> peer =
      authorizer_.Admin(*context->auth_context());
  if (!peer.ok()) return ToGrpcStatus(peer.status());
  if (request->limit() < 0 || request->limit() > kMaxAuditLimit) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("limit must be 0..", kMaxAuditLimit));
  }
  absl::StatusOr<std::vector<AuditEntry>> entries = identities_.ListAudit(
      request->limit() == 0 ? kDefaultAuditLimit : request->limit());
  if (!entries.ok()) return ToGrpcStatus(entries.status());
  for (const AuditEntry& entry : *entries) {
    v1::AuditRecord* record = response->add_records();
    record->set_time_unix_ms(absl::ToUnixMillis(entry.time));
    record->set_actor(entry.actor);
    record->set_action(entry.action);
    record->set_detail(entry.detail);
  }
  return grpc::Status::OK;
}

}  // namespace fleet::controller
