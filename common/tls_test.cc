#include "common/tls.h"

#include <grpcpp/grpcpp.h>

#include <cstdlib>
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/files.h"
#include "common/pki.h"
#include "common/testing/test_certificates.h"
#include "gtest/gtest.h"
#include "proto/fleet/v1/agent.grpc.pb.h"

namespace fleet {
namespace {

using pki::CertificateRole;

constexpr absl::Duration kDay = absl::Hours(24);

// Answers FetchArtifact with one chunk naming the caller's identity, or
// fails the call with PeerIdentityOf's status.
class WhoAmIService final : public v1::AgentService::Service {
  grpc::Status FetchArtifact(
      grpc::ServerContext* context, const v1::FetchArtifactRequest*,
      grpc::ServerWriter<v1::ArtifactChunk>* writer) override {
    absl::StatusOr<PeerIdentity> peer =
        PeerIdentityOf(*context->auth_context());
    if (!peer.ok()) {
      return grpc::Status(static_cast<grpc::StatusCode>(peer.status().code()),
                          std::string(peer.status().message()));
    }
    v1::ArtifactChunk chunk;
    chunk.set_data(absl::StrCat(pki::RoleName(peer->role), ":", peer->name));
    writer->Write(chunk);
    return grpc::Status::OK;
  }
};

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = absl::StrCat(std::getenv("TEST_TMPDIR"), "/tls-",
                        absl::ToUnixNanos(absl::Now()));
    ASSERT_TRUE(MakeDirs(dir_).ok());
    absl::StatusOr<pki::CertificateAuthority> ca =
        pki::CertificateAuthority::Create("fleet CA", 365 * kDay, absl::Now());
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = std::make_unique<pki::CertificateAuthority>(*std::move(ca));
    ca_file_ = Write("ca.pem", ca_->certificate_pem());

    server_files_ = Issue(*ca_, "server",
                          {.common_name = "controller",
                           .role = CertificateRole::kServer,
                           .dns_names = {"localhost"},
                           .ip_addresses = {"127.0.0.1"}});
    absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> creds =
        MakeServerCredentials(server_files_);
    ASSERT_TRUE(creds.ok()) << creds.status();
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", *creds, &port_);
    builder.RegisterService(&service_);
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

  // Key + certificate files for `options`, issued by `ca` at `now`.
  TlsFiles Issue(const pki::CertificateAuthority& ca, const std::string& name,
                 const pki::IssueOptions& options,
                 absl::Time now = absl::Now()) {
    return testing::IssueTlsFiles(ca, ca_file_, dir_, name, options, now);
  }

  // Calls the server with `files` as the client's credentials: the
  // identity string, or the call's status.
  absl::StatusOr<std::string> Call(const TlsFiles& files) {
    absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> creds =
        MakeChannelCredentials(files);
    if (!creds.ok()) return creds.status();
    return CallWith(*creds);
  }

  absl::StatusOr<std::string> CallWith(
      std::shared_ptr<grpc::ChannelCredentials> creds) {
    auto channel =
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port_), creds);
    auto stub = v1::AgentService::NewStub(channel);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(10));
    v1::FetchArtifactRequest request;
    auto reader = stub->FetchArtifact(&context, request);
    v1::ArtifactChunk chunk;
    std::string identity;
    while (reader->Read(&chunk)) identity = chunk.data();
    grpc::Status status = reader->Finish();
    if (!status.ok()) {
      return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                          status.error_message());
    }
    return identity;
  }

  std::string dir_;
  std::unique_ptr<pki::CertificateAuthority> ca_;
  std::string ca_file_;
  TlsFiles server_files_;
  WhoAmIService service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

TEST_F(TlsTest, AgentAndAdminCertificatesNameTheirRoleAndIdentity) {
  TlsFiles agent = Issue(*ca_, "agent", {.common_name = "agent-1"});
  TlsFiles admin = Issue(
      *ca_, "admin", {.common_name = "alice", .role = CertificateRole::kAdmin});
  absl::StatusOr<std::string> as_agent = Call(agent);
  ASSERT_TRUE(as_agent.ok()) << as_agent.status();
  EXPECT_EQ(*as_agent, "fleet-agent:agent-1");
  absl::StatusOr<std::string> as_admin = Call(admin);
  ASSERT_TRUE(as_admin.ok()) << as_admin.status();
  EXPECT_EQ(*as_admin, "fleet-admin:alice");
}

TEST_F(TlsTest, ClientWithoutCertificateConnectsButHasNoIdentity) {
  absl::StatusOr<std::string> result = Call(TlsFiles{ca_file_, "", ""});
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnauthenticated)
      << result.status();
}

TEST_F(TlsTest, CertificatesTheCaDidNotIssueOrThatExpiredFailTheHandshake) {
  absl::StatusOr<pki::CertificateAuthority> other =
      pki::CertificateAuthority::Create("rogue CA", 365 * kDay, absl::Now());
  ASSERT_TRUE(other.ok());
  TlsFiles foreign = Issue(*other, "foreign", {.common_name = "agent-1"});
  EXPECT_EQ(Call(foreign).status().code(), absl::StatusCode::kUnavailable);

  TlsFiles expired =
      Issue(*ca_, "expired", {.common_name = "agent-1", .validity = kDay},
            absl::Now() - 3 * kDay);
  EXPECT_EQ(Call(expired).status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(TlsTest, ClientRefusesServerItsCaDidNotIssue) {
  absl::StatusOr<pki::CertificateAuthority> other =
      pki::CertificateAuthority::Create("rogue CA", 365 * kDay, absl::Now());
  ASSERT_TRUE(other.ok());
  const std::string rogue_ca = Write("rogue-ca.pem", other->certificate_pem());
  TlsFiles agent = Issue(*ca_, "agent", {.common_name = "agent-1"});
  agent.ca_file = rogue_ca;
  EXPECT_EQ(Call(agent).status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(TlsTest, PlaintextClientCannotTalkToTlsServer) {
  EXPECT_EQ(CallWith(grpc::InsecureChannelCredentials()).status().code(),
            absl::StatusCode::kUnavailable);
}

TEST_F(TlsTest, BadFilesAreClearErrorsAtStartup) {
  TlsFiles missing = server_files_;
  missing.key_file = dir_ + "/nope.key";
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> creds =
      MakeServerCredentials(missing);
  EXPECT_EQ(creds.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(creds.status().message(), "nope.key"));

  TlsFiles agent = Issue(*ca_, "agent", {.common_name = "agent-1"});
  TlsFiles mismatched = server_files_;
  mismatched.key_file = agent.key_file;
  creds = MakeServerCredentials(mismatched);
  EXPECT_EQ(creds.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(creds.status().message(), "does not belong"))
      << creds.status();

  TlsFiles not_pem = server_files_;
  not_pem.cert_file = Write("garbage.crt", "hello");
  EXPECT_EQ(MakeChannelCredentials(not_pem).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace fleet
