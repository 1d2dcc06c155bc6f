// IdentityService (proto/fleet/v1/enrollment.proto): operators manage
// enrollment tokens, revoke agents and read the audit log. Admin-only;
// every change is audited.
#ifndef FLEET_CONTROLLER_IDENTITY_IDENTITY_SERVICE_H_
#define FLEET_CONTROLLER_IDENTITY_IDENTITY_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <functional>
#include <string>

#include "common/clock.h"
#include "controller/identity/authorizer.h"
#include "controller/identity/identity_store.h"
#include "proto/fleet/v1/enrollment.grpc.pb.h"

namespace fleet::controller {

class IdentityServiceImpl final : public v1::IdentityService::Service {
 public:
  // Ends the agent's open stream, if any; true if one was open.
  using CloseAgentStream = std::function<bool(const std::string& agent_id)>;

  // All references must outlive the service.
  IdentityServiceImpl(IdentityStore& identities, const Authorizer& authorizer,
                      const Clock& clock, CloseAgentStream close_agent_stream);

  grpc::Status CreateEnrollToken(
      grpc::ServerContext* context, const v1::CreateEnrollTokenRequest* request,
      v1::CreateEnrollTokenResponse* response) override;
  grpc::Status ListEnrollTokens(
      grpc::ServerContext* context, const v1::ListEnrollTokensRequest* request,
      v1::ListEnrollTokensResponse* response) override;
  grpc::Status DeleteEnrollToken(
      grpc::ServerContext* context, const v1::DeleteEnrollTokenRequest* request,
      v1::DeleteEnrollTokenResponse* response) override;
  grpc::Status RevokeAgent(grpc::ServerContext* context,
                           const v1::RevokeAgentRequest* request,
                           v1::RevokeAgentResponse* response) override;
  grpc::Status ListAudit(grpc::ServerContext* context,
                         const v1::ListAuditRequest* request,
                         v1::ListAuditResponse* response) override;

 private:
  IdentityStore& identities_;
  const Authorizer& authorizer_;
  const Clock& clock_;
  CloseAgentStream close_agent_stream_;
};

}  // namespace fleet::controller

#endif  // FLEET_CONTROLLER_IDENTITY_IDENTITY_SERVICE_H_
