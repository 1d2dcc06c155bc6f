// The authorization matrix over real mutual TLS on 127.0.0.1: which
// certificate may call IdentityService, and which may speak for an agent.
#include "controller/identity/identity_service.h"

#include <grpcpp/grpcpp.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/files.h"
#include "common/pki.h"
#include "common/testing/fake_clock.h"
#include "common/testing/test_certificates.h"
#include "common/tls.h"
#include "controller/identity/authorizer.h"
#include "controller/identity/identity_store.h"
#include "controller/store/store.h"
#include "gtest/gtest.h"
#include "proto/fleet/v1/agent.grpc.pb.h"

namespace fleet::controller {
namespace {

constexpr absl::Duration kDay = absl::Hours(24);

// Stands in for AgentService.Connect's first check: the caller names the
// agent it speaks for in metadata; the answer is Authorizer::Agent's.
class AgentProbe final : public v1::AgentService::Service {
 public:
  explicit AgentProbe(const Authorizer& authorizer) : authorizer_(authorizer) {}
  grpc::Status FetchArtifact(grpc::ServerContext* context,
                             const v1::FetchArtifactRequest*,
                             grpc::ServerWriter<v1::ArtifactChunk>*) override {
    auto claimed = context->client_metadata().find("agent-id");
    std::string agent_id =
        claimed == context->client_metadata().end()
            ? ""
            : std::string(claimed->second.data(), claimed->second.size());
    absl::StatusOr<PeerIdentity> peer =
        authorizer_.Agent(*context->auth_context(), agent_id);
    if (!peer.ok()) {
      return grpc::Status(static_cast<grpc::StatusCode>(peer.status().code()),
                          std::string(peer.status().message()));
    }
    return grpc::Status::OK;
  }

 private:
  const Authorizer& authorizer_;
};

class IdentityServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = absl::StrCat(std::getenv("TEST_TMPDIR"), "/identity-",
                        absl::ToUnixNanos(absl::Now()));
    ASSERT_TRUE(MakeDirs(dir_).ok());
    ASSERT_TRUE(Store::Open(dir_ + "/fleet.db").ok());
    identities_ = *IdentityStore::Open(dir_ + "/fleet.db");
    ca_ = std::make_unique<pki::CertificateAuthority>(
        *pki::CertificateAuthority::Create("fleet CA", 365 * kDay,
                                           clock_.Now()));
    ca_file_ = Write("ca.crt", ca_->certificate_pem());
    admin_ = Issue("alice", pki::CertificateRole::kAdmin);
    agent_ = Issue("ag-0123456789abcdef", pki::CertificateRole::kAgent);
  }

  void Start(bool insecure) {
    authorizer_ =
        std::make_unique<Authorizer>(insecure, identities_.get(), clock_);
    service_ = std::make_unique<IdentityServiceImpl>(
        *identities_, *authorizer_, clock_, [this](const std::string& id) {
          closed_.push_back(id);
          return true;
        });
    probe_ = std::make_unique<AgentProbe>(*authorizer_);
    grpc::ServerBuilder builder;
    std::shared_ptr<grpc::ServerCredentials> credentials =
        insecure ? grpc::InsecureServerCredentials()
                 : *MakeServerCredentials(
                       Issue("controller", pki::CertificateRole::kServer));
    builder.AddListeningPort("127.0.0.1:0", credentials, &port_);
    builder.RegisterService(service_.get());
    builder.RegisterService(probe_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
  }

  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown();
  }

  std::string Write(const std::string& name, const std::string& data) {
    const std::string path = dir_ + "/" + name;
    EXPECT_TRUE(WriteFileAtomically(path, data).ok());
    return path;
  }

  TlsFiles Issue(const std::string& name, pki::CertificateRole role) {
    pki::IssueOptions options{.common_name = name, .role = role};
    if (role == pki::CertificateRole::kServer) {
      options.ip_addresses = {"127.0.0.1"};
    }
    return testing::IssueTlsFiles(*ca_, ca_file_, dir_, name, options,
                                  clock_.Now());
  }

  std::shared_ptr<grpc::Channel> Channel(const TlsFiles& as) {
    return grpc::CreateChannel(absl::StrCat("127.0.0.1:", port_),
                               *MakeChannelCredentials(as));
  }

  grpc::StatusCode CreateToken(const TlsFiles& as) {
    auto stub = v1::IdentityService::NewStub(Channel(as));
    grpc::ClientContext context;
    v1::CreateEnrollTokenRequest request;
    request.set_uses(2);
    v1::CreateEnrollTokenResponse response;
    return stub->CreateEnrollToken(&context, request, &response).error_code();
  }

  grpc::StatusCode ConnectAs(const TlsFiles& as, const std::string& agent_id) {
    auto stub = v1::AgentService::NewStub(Channel(as));
    grpc::ClientContext context;
    context.AddMetadata("agent-id", agent_id);
    auto reader = stub->FetchArtifact(&context, v1::FetchArtifactRequest());
    v1::ArtifactChunk chunk;
    while (reader->Read(&chunk)) {
    }
    return reader->Finish().error_code();
  }

  std::string dir_;
  FakeClock clock_{absl::Now()};
  std::unique_ptr<IdentityStore> identities_;
  std::unique_ptr<pki::CertificateAuthority> ca_;
  std::string ca_file_;
  TlsFiles admin_;
  TlsFiles agent_;
  std::unique_ptr<Authorizer> authorizer_;
  std::unique_ptr<IdentityServiceImpl> service_;
  std::unique_ptr<AgentProbe> probe_;
  std::vector<std::string> closed_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

TEST_F(IdentityServiceTest, OnlyAdminsManageIdentities) {
  Start(/*insecure=*/false);
  EXPECT_EQ(CreateToken(admin_), grpc::StatusCode::OK);
  EXPECT_EQ(CreateToken(agent_), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(CreateToken(TlsFiles{ca_file_, "", ""}),
            grpc::StatusCode::UNAUTHENTICATED);

  // Only the admin's call is in the audit log, under its name.
  auto stub = v1::IdentityService::NewStub(Channel(admin_));
  grpc::ClientContext context;
  v1::ListAuditResponse audit;
  ASSERT_TRUE(stub->ListAudit(&context, v1::ListAuditRequest(), &audit).ok());
  ASSERT_EQ(audit.records_size(), 1);
  EXPECT_EQ(audit.records(0).actor(), "admin:alice");
  EXPECT_EQ(audit.records(0).action(), "CreateEnrollToken");
}

TEST_F(IdentityServiceTest, AgentsSpeakOnlyForThemselvesUntilRevoked) {
  Start(/*insecure=*/false);
  EXPECT_EQ(ConnectAs(agent_, "ag-0123456789abcdef"), grpc::StatusCode::OK);
  EXPECT_EQ(ConnectAs(agent_, "ag-ffffffffffffffff"),
            grpc::StatusCode::PERMISSION_DENIED);
  // An operator cannot impersonate an agent.
  EXPECT_EQ(ConnectAs(admin_, "alice"), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(ConnectAs(TlsFiles{ca_file_, "", ""}, "ag-0123456789abcdef"),
            grpc::StatusCode::UNAUTHENTICATED);

  auto stub = v1::IdentityService::NewStub(Channel(admin_));
  grpc::ClientContext context;
  v1::RevokeAgentRequest request;
  request.set_agent_id("ag-0123456789abcdef");
  request.set_reason("machine decommissioned");
  v1::RevokeAgentResponse response;
  ASSERT_TRUE(stub->RevokeAgent(&context, request, &response).ok());
  EXPECT_TRUE(response.stream_closed());
  EXPECT_EQ(closed_, std::vector<std::string>{"ag-0123456789abcdef"});
  EXPECT_EQ(ConnectAs(agent_, "ag-0123456789abcdef"),
            grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(IdentityServiceTest, TokensListedWithoutSecretsAndDeletable) {
  Start(/*insecure=*/false);
  auto stub = v1::IdentityService::NewStub(Channel(admin_));
  v1::CreateEnrollTokenResponse created;
  {
    grpc::ClientContext context;
    v1::CreateEnrollTokenRequest request;
    request.set_ttl_seconds(600);
    (*request.mutable_labels())["region"] = "eu";
    ASSERT_TRUE(stub->CreateEnrollToken(&context, request, &created).ok());
  }
  EXPECT_TRUE(absl::StartsWith(created.token(), "fleet-enroll-"));
  EXPECT_EQ(created.info().uses_left(), 1);
  EXPECT_EQ(created.info().expires_unix_ms(),
            absl::ToUnixMillis(clock_.Now() + absl::Minutes(10)));
  {
    grpc::ClientContext context;
    v1::ListEnrollTokensResponse listed;
    ASSERT_TRUE(
        stub->ListEnrollTokens(&context, v1::ListEnrollTokensRequest(), &listed)
            .ok());
    ASSERT_EQ(listed.tokens_size(), 1);
    EXPECT_EQ(listed.tokens(0).token_id(), created.info().token_id());
    EXPECT_FALSE(absl::StrContains(listed.DebugString(), created.token()));
  }
  {
    grpc::ClientContext context;
    v1::DeleteEnrollTokenRequest request;
    request.set_token_id(created.info().token_id());
    v1::DeleteEnrollTokenResponse response;
    ASSERT_TRUE(stub->DeleteEnrollToken(&context, request, &response).ok());
  }
  {
    grpc::ClientContext context;
    v1::DeleteEnrollTokenRequest request;
    request.set_token_id(created.info().token_id());
    v1::DeleteEnrollTokenResponse response;
    EXPECT_EQ(
        stub->DeleteEnrollToken(&context, request, &response).error_code(),
        grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext context;
    v1::CreateEnrollTokenRequest request;
    request.set_uses(-1);
    v1::CreateEnrollTokenResponse response;
    EXPECT_EQ(
        stub->CreateEnrollToken(&context, request, &response).error_code(),
        grpc::StatusCode::INVALID_ARGUMENT);
  }
}

TEST_F(IdentityServiceTest, InsecureModeLetsEveryoneThroughForLocalUse) {
  Start(/*insecure=*/true);
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", port_),
                                     grpc::InsecureChannelCredentials());
  auto stub = v1::IdentityService::NewStub(channel);
  grpc::ClientContext context;
  v1::CreateEnrollTokenResponse response;
  EXPECT_TRUE(stub->CreateEnrollToken(&context, v1::CreateEnrollTokenRequest(),
                                      &response)
                  .ok());
  EXPECT_FALSE(authorizer_->IsRevoked("ag-1"));
}

}  // namespace
}  // namespace fleet::controller
