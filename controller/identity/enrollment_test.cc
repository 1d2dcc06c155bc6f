// EnrollmentService and the agent's enrollment client together: a real
// controller-side service over TLS on 127.0.0.1, a real migrated fleet.db,
// real keys, CSRs and certificates.
#include "agent/enrollment.h"

#include <grpcpp/grpcpp.h>
#include <sys/stat.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "agent/identity_renewal.h"
#include "common/files.h"
#include "common/pki.h"
#include "common/testing/fake_clock.h"
#include "common/testing/test_certificates.h"
#include "common/tls.h"
#include "controller/identity/enrollment_service.h"
#include "controller/identity/identity_store.h"
#include "controller/store/store.h"
#include "gtest/gtest.h"
#include "proto/fleet/v1/enrollment.grpc.pb.h"

namespace fleet::controller {
namespace {

constexpr absl::Duration kDay = absl::Hours(24);

class EnrollmentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = absl::StrCat(std::getenv("TEST_TMPDIR"), "/enroll-",
                        absl::ToUnixNanos(absl::Now()));
    ASSERT_TRUE(MakeDirs(dir_).ok());
    db_path_ = dir_ + "/fleet.db";
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(db_path_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    absl::StatusOr<std::unique_ptr<IdentityStore>> identities =
        IdentityStore::Open(db_path_);
    ASSERT_TRUE(identities.ok()) << identities.status();
    identities_ = *std::move(identities);

    absl::StatusOr<pki::CertificateAuthority> ca =
        pki::CertificateAuthority::Create("fleet CA", 365 * kDay, clock_.Now());
    ASSERT_TRUE(ca.ok());
    ca_ = std::make_unique<pki::CertificateAuthority>(*std::move(ca));
    ca_file_ = Write("ca.crt", ca_->certificate_pem());
    StartServer(testing::IssueTlsFiles(*ca_, ca_file_, dir_, "server",
                                       {.common_name = "controller",
                                        .role = pki::CertificateRole::kServer,
                                        .ip_addresses = {"127.0.0.1"}},
                                       clock_.Now()),
                EnrollmentOptions{});
  }

  void StartServer(const TlsFiles& files, EnrollmentOptions options) {
    if (server_ != nullptr) server_->Shutdown();
    server_files_ = files;
    service_ = std::make_unique<EnrollmentServiceImpl>(*identities_, *ca_,
                                                       clock_, options);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", *MakeServerCredentials(files),
                             &port_);
    builder.RegisterService(service_.get());
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

  std::string NewToken(int uses = 1, absl::Duration ttl = absl::Hours(1),
                       std::map<std::string, std::string> labels = {}) {
    absl::StatusOr<NewEnrollToken> token = identities_->CreateToken(
        labels, uses, ttl, "admin:alice", clock_.Now());
    EXPECT_TRUE(token.ok()) << token.status();
    return token.ok() ? token->token : "";
  }

  absl::StatusOr<agent::AgentIdentity> EnrollAgent(const std::string& name,
                                                   const std::string& token) {
    return agent::Enroll({.state_dir = dir_ + "/" + name,
                          .controller = absl::StrCat("127.0.0.1:", port_),
                          .ca_file = ca_file_,
                          .token = token,
                          .hostname = name + ".example.com",
                          .platform = "linux/amd64"});
  }

  std::string dir_;
  std::string db_path_;
  FakeClock clock_{absl::Now()};  // certificates meet real TLS handshakes
  std::unique_ptr<Store> store_;
  std::unique_ptr<IdentityStore> identities_;
  std::unique_ptr<pki::CertificateAuthority> ca_;
  std::string ca_file_;
  TlsFiles server_files_;
  std::unique_ptr<EnrollmentServiceImpl> service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

TEST_F(EnrollmentTest, TokenBuysAnAgentCertificateStoredInTheStateDir) {
  absl::StatusOr<agent::AgentIdentity> identity =
      EnrollAgent("a1", NewToken(1, absl::Hours(1), {{"region", "eu"}}));
  ASSERT_TRUE(identity.ok()) << identity.status();
  EXPECT_TRUE(absl::StartsWith(identity->agent_id, "ag-"));

  // The files are there, the key private, and they load back as one.
  struct stat st;
  ASSERT_EQ(stat(identity->files.key_file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600);
  absl::StatusOr<std::optional<agent::AgentIdentity>> loaded =
      agent::LoadIdentity(dir_ + "/a1");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_TRUE(loaded->has_value());
  EXPECT_EQ((*loaded)->agent_id, identity->agent_id);

  // The certificate is the CA's, names the agent and carries the agent role.
  absl::StatusOr<std::string> cert = ReadFile(identity->files.cert_file);
  ASSERT_TRUE(cert.ok());
  EXPECT_TRUE(
      pki::VerifyCertificate(*cert, ca_->certificate_pem(), absl::Now()).ok());
  absl::StatusOr<pki::CertificateInfo> info = pki::ParseCertificate(*cert);
  EXPECT_EQ(info->common_name, identity->agent_id);
  EXPECT_EQ(info->role_name, "fleet-agent");

  // The enrollment is audited.
  absl::StatusOr<std::vector<AuditEntry>> audit = identities_->ListAudit(10);
  ASSERT_TRUE(audit.ok());
  ASSERT_EQ(audit->size(), 1u);
  EXPECT_EQ((*audit)[0].actor, "agent:" + identity->agent_id);
  EXPECT_EQ((*audit)[0].action, "Enroll");
}

TEST_F(EnrollmentTest, TokensAreSingleUseUnlessGivenMoreUses) {
  const std::string once = NewToken(1);
  ASSERT_TRUE(EnrollAgent("a1", once).ok());
  absl::StatusOr<agent::AgentIdentity> again = EnrollAgent("a2", once);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kUnauthenticated)
      << again.status();
  EXPECT_FALSE(PathExists(dir_ + "/a2/identity/agent.crt"));

  const std::string twice = NewToken(2);
  absl::StatusOr<agent::AgentIdentity> b1 = EnrollAgent("b1", twice);
  absl::StatusOr<agent::AgentIdentity> b2 = EnrollAgent("b2", twice);
  ASSERT_TRUE(b1.ok() && b2.ok());
  EXPECT_NE(b1->agent_id, b2->agent_id);
  EXPECT_EQ(EnrollAgent("b3", twice).status().code(),
            absl::StatusCode::kUnauthenticated);
}

TEST_F(EnrollmentTest, ExpiredAndUnknownTokensAreRefusedAlike) {
  const std::string token = NewToken(5, absl::Minutes(10));
  clock_.Advance(absl::Minutes(11));
  absl::StatusOr<agent::AgentIdentity> expired = EnrollAgent("a1", token);
  EXPECT_EQ(expired.status().code(), absl::StatusCode::kUnauthenticated);
  absl::StatusOr<agent::AgentIdentity> unknown =
      EnrollAgent("a2", "fleet-enroll-not-a-real-token");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kUnauthenticated);
  // Same words for both: a caller learns nothing about which it was.
  EXPECT_EQ(
      expired.status().message().substr(expired.status().message().find(':')),
      unknown.status().message().substr(unknown.status().message().find(':')));
}

TEST_F(EnrollmentTest, BadCsrIsRefusedWithoutSpendingTheToken) {
  const std::string token = NewToken(1);
  auto channel =
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", port_),
                          *MakeChannelCredentials(TlsFiles{ca_file_, "", ""}));
  auto stub = v1::EnrollmentService::NewStub(channel);
  v1::EnrollRequest request;
  request.set_token(token);
  request.set_csr_pem("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n");
  request.set_platform("linux/amd64");
  v1::EnrollResponse response;
  grpc::ClientContext context;
  grpc::Status status = stub->Enroll(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(status.error_message(), "csr_pem"));

  // The token still has its use.
  EXPECT_TRUE(EnrollAgent("a1", token).ok());
}

TEST_F(EnrollmentTest, AttemptsArePerPeerRateLimited) {
  StartServer(server_files_, EnrollmentOptions{.attempts_per_minute = 2});
  EXPECT_EQ(EnrollAgent("a1", "fleet-enroll-x").status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(EnrollAgent("a2", "fleet-enroll-y").status().code(),
            absl::StatusCode::kUnauthenticated);
  const std::string token = NewToken(1);
  EXPECT_EQ(EnrollAgent("a3", token).status().code(),
            absl::StatusCode::kResourceExhausted);
  clock_.Advance(absl::Minutes(1));
  EXPECT_TRUE(EnrollAgent("a3", token).ok());
}

TEST_F(EnrollmentTest, AgentRefusesAControllerItsCaDidNotCertify) {
  absl::StatusOr<pki::CertificateAuthority> rogue =
      pki::CertificateAuthority::Create("rogue", 365 * kDay, clock_.Now());
  ASSERT_TRUE(rogue.ok());
  ca_file_ = Write("rogue.crt", rogue->certificate_pem());
  const std::string token = NewToken(1);
  EXPECT_EQ(EnrollAgent("a1", token).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_FALSE(PathExists(dir_ + "/a1/identity"));
}

TEST_F(EnrollmentTest, TokensAreStoredOnlyAsDigests) {
  const std::string token = NewToken(3, absl::Hours(2), {{"channel", "beta"}});
  store_.reset();
  identities_.reset();
  absl::StatusOr<std::string> db = ReadFile(db_path_);
  ASSERT_TRUE(db.ok());
  absl::StatusOr<std::string> wal = ReadFile(db_path_ + "-wal");
  EXPECT_FALSE(absl::StrContains(*db, token));
  if (wal.ok()) {
    EXPECT_FALSE(absl::StrContains(*wal, token));
  }
  EXPECT_TRUE(
      absl::StrContains(*db + (wal.ok() ? *wal : ""), TokenDigest(token)));

  identities_ = *IdentityStore::Open(db_path_);
  absl::StatusOr<std::vector<EnrollTokenInfo>> listed =
      identities_->ListTokens(clock_.Now());
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].uses_left, 3);
  EXPECT_EQ((*listed)[0].labels.at("channel"), "beta");
  EXPECT_TRUE(identities_->DeleteToken((*listed)[0].token_id).ok());
  EXPECT_EQ(identities_->RedeemToken(token, clock_.Now()).status().code(),
            absl::StatusCode::kUnauthenticated);
}

TEST_F(EnrollmentTest, RevocationIsRecordedOnceAndSurvivesReopen) {
  ASSERT_TRUE(
      identities_
          ->RevokeAgent("ag-1", "stolen laptop", "admin:alice", clock_.Now())
          .ok());
  ASSERT_TRUE(
      identities_->RevokeAgent("ag-1", "again", "admin:bob", clock_.Now())
          .ok());
  EXPECT_TRUE(*identities_->IsRevoked("ag-1"));
  EXPECT_FALSE(*identities_->IsRevoked("ag-2"));
  // Kept in memory for stream reactions, and loaded again after a restart.
  identities_ = *IdentityStore::Open(db_path_);
  EXPECT_TRUE(*identities_->IsRevoked("ag-1"));
  EXPECT_FALSE(*identities_->IsRevoked("ag-2"));
}

TEST_F(EnrollmentTest, CreateTokenValidatesItsArguments) {
  EXPECT_EQ(identities_->CreateToken({}, 0, absl::Hours(1), "a", clock_.Now())
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      identities_->CreateToken({}, 1, absl::Hours(24 * 31), "a", clock_.Now())
          .status()
          .code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(identities_
                ->CreateToken({{"Bad Key", "x"}}, 1, absl::Hours(1), "a",
                              clock_.Now())
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

// The token's labels are in the certificate, and a renewal keeps them with
// the agent id and role, for a new key, replacing the pair on disk.
TEST_F(EnrollmentTest, RenewalKeepsAgentIdRoleAndEnrolledLabels) {
  absl::StatusOr<agent::AgentIdentity> enrolled =
      EnrollAgent("a1", NewToken(1, absl::Hours(1), {{"ring", "canary"}}));
  ASSERT_TRUE(enrolled.ok()) << enrolled.status();
  const std::string old_cert = *ReadFile(enrolled->files.cert_file);
  const std::string old_key = *ReadFile(enrolled->files.key_file);
  EXPECT_EQ(pki::ParseCertificate(old_cert)->labels,
            (std::map<std::string, std::string>{{"ring", "canary"}}));

  absl::StatusOr<agent::AgentIdentity> renewed = agent::RenewIdentity(
      absl::StrCat("127.0.0.1:", port_), *enrolled, absl::Seconds(10));
  ASSERT_TRUE(renewed.ok()) << renewed.status();
  EXPECT_EQ(renewed->agent_id, enrolled->agent_id);
  EXPECT_EQ(renewed->files.cert_file, enrolled->files.cert_file);
  const std::string new_cert = *ReadFile(enrolled->files.cert_file);
  EXPECT_NE(new_cert, old_cert);
  EXPECT_NE(*ReadFile(enrolled->files.key_file), old_key);  // a new key
  absl::StatusOr<pki::CertificateInfo> info = pki::ParseCertificate(new_cert);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->common_name, enrolled->agent_id);
  EXPECT_EQ(info->role_name, "fleet-agent");
  EXPECT_EQ(info->labels,
            (std::map<std::string, std::string>{{"ring", "canary"}}));
  EXPECT_FALSE(PathExists(enrolled->files.cert_file + ".next"));
  EXPECT_FALSE(PathExists(enrolled->files.key_file + ".next"));
  struct stat st;
  ASSERT_EQ(stat(enrolled->files.key_file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600);
  // What is on disk loads as one identity, and the renewal is audited.
  absl::StatusOr<std::optional<agent::AgentIdentity>> loaded =
      agent::LoadIdentity(dir_ + "/a1");
  ASSERT_TRUE(loaded.ok() && loaded->has_value()) << loaded.status();
  EXPECT_EQ((*loaded)->agent_id, enrolled->agent_id);
  absl::StatusOr<std::vector<AuditEntry>> audit = identities_->ListAudit(10);
  ASSERT_TRUE(audit.ok());
  ASSERT_FALSE(audit->empty());
  EXPECT_EQ((*audit)[0].actor, "agent:" + enrolled->agent_id);
  EXPECT_EQ((*audit)[0].action, "Renew");
}

TEST_F(EnrollmentTest, RenewalIsRefusedToRevokedAgentsOperatorsAndStrangers) {
  absl::StatusOr<agent::AgentIdentity> enrolled = EnrollAgent("a1", NewToken());
  ASSERT_TRUE(enrolled.ok()) << enrolled.status();
  const std::string cert_before = *ReadFile(enrolled->files.cert_file);
  ASSERT_TRUE(
      identities_
          ->RevokeAgent(enrolled->agent_id, "test", "admin:alice", clock_.Now())
          .ok());
  absl::StatusOr<agent::AgentIdentity> revoked = agent::RenewIdentity(
      absl::StrCat("127.0.0.1:", port_), *enrolled, absl::Seconds(10));
  EXPECT_EQ(revoked.status().code(), absl::StatusCode::kPermissionDenied)
      << revoked.status();
  EXPECT_TRUE(absl::StrContains(revoked.status().message(), "revoked"));
  // The old pair stays as it was.
  EXPECT_EQ(*ReadFile(enrolled->files.cert_file), cert_before);
  EXPECT_FALSE(PathExists(enrolled->files.key_file + ".next"));

  auto renew_as = [&](const TlsFiles& files) {
    auto stub = v1::EnrollmentService::NewStub(grpc::CreateChannel(
        absl::StrCat("127.0.0.1:", port_), *MakeChannelCredentials(files)));
    v1::RenewRequest request;
    request.set_csr_pem(*pki::CreateCsr(*pki::PrivateKey::Generate()));
    v1::RenewResponse response;
    grpc::ClientContext context;
    return stub->Renew(&context, request, &response);
  };
  const TlsFiles admin = testing::IssueTlsFiles(
      *ca_, ca_file_, dir_, "admin",
      {.common_name = "alice", .role = pki::CertificateRole::kAdmin},
      clock_.Now());
  grpc::Status as_admin = renew_as(admin);
  EXPECT_EQ(as_admin.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(absl::StrContains(as_admin.error_message(), "only an agent"))
      << as_admin.error_message();
  grpc::Status anonymous = renew_as(TlsFiles{ca_file_, "", ""});
  EXPECT_EQ(anonymous.error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

// A crash between the two renames of a renewal is finished at the next
// load; a crash before them leaves the old pair.
TEST_F(EnrollmentTest, InterruptedRenewalIsFinishedOrUndoneAtLoad) {
  absl::StatusOr<agent::AgentIdentity> enrolled = EnrollAgent("a1", NewToken());
  ASSERT_TRUE(enrolled.ok()) << enrolled.status();
  const TlsFiles& files = enrolled->files;
  const std::string old_cert = *ReadFile(files.cert_file);
  const std::string old_key = *ReadFile(files.key_file);
  absl::StatusOr<pki::PrivateKey> key = pki::PrivateKey::Generate();
  ASSERT_TRUE(key.ok());
  absl::StatusOr<std::string> cert = ca_->Issue(
      *pki::CreateCsr(*key),
      {.common_name = enrolled->agent_id, .role = pki::CertificateRole::kAgent},
      clock_.Now());
  ASSERT_TRUE(cert.ok());

  // Both pending, nothing renamed: dropped, the old pair stays.
  ASSERT_TRUE(WriteFileAtomically(files.key_file + ".next", key->pem()).ok());
  ASSERT_TRUE(WriteFileAtomically(files.cert_file + ".next", *cert).ok());
  ASSERT_TRUE(agent::LoadIdentity(dir_ + "/a1").ok());
  EXPECT_EQ(*ReadFile(files.cert_file), old_cert);
  EXPECT_EQ(*ReadFile(files.key_file), old_key);
  EXPECT_FALSE(PathExists(files.key_file + ".next"));
  EXPECT_FALSE(PathExists(files.cert_file + ".next"));

  // The new key in place, its certificate pending: finished.
  ASSERT_TRUE(WriteFileAtomically(files.key_file, key->pem(), 0600).ok());
  ASSERT_TRUE(WriteFileAtomically(files.cert_file + ".next", *cert).ok());
  absl::StatusOr<std::optional<agent::AgentIdentity>> loaded =
      agent::LoadIdentity(dir_ + "/a1");
  ASSERT_TRUE(loaded.ok() && loaded->has_value()) << loaded.status();
  EXPECT_EQ(*ReadFile(files.cert_file), *cert);
  EXPECT_FALSE(PathExists(files.cert_file + ".next"));
}

// The renewer renews at 2/3 of a short-lived certificate's lifetime, with
// the same agent id, and hands the new identity on.
TEST_F(EnrollmentTest, RenewerRenewsAtTwoThirdsOfTheLifetime) {
  StartServer(server_files_,
              EnrollmentOptions{.certificate_validity = absl::Seconds(3)});
  absl::StatusOr<agent::AgentIdentity> enrolled = EnrollAgent("a1", NewToken());
  ASSERT_TRUE(enrolled.ok()) << enrolled.status();
  EXPECT_EQ(agent::RenewalTime(*enrolled),
            enrolled->not_before +
                (enrolled->not_after - enrolled->not_before) * 2 / 3);
  // Renewed certificates live long, so exactly one renewal is due.
  StartServer(server_files_,
              EnrollmentOptions{.certificate_validity = absl::Hours(1)});

  absl::Mutex mu;
  std::vector<agent::AgentIdentity> handed;
  agent::IdentityRenewer renewer(
      {.controller = absl::StrCat("127.0.0.1:", port_),
       .backoff_base = absl::Milliseconds(100)},
      *enrolled, [&](const agent::AgentIdentity& renewed) {
        absl::MutexLock lock(&mu);
        handed.push_back(renewed);
      });
  renewer.Start();
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (renewer.renewals() == 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  const absl::Time renewed_at = absl::Now();
  renewer.Stop();
  ASSERT_EQ(renewer.renewals(), 1u);
  // Not before it was due (second granularity of certificate times aside).
  EXPECT_GE(renewed_at, agent::RenewalTime(*enrolled));
  absl::MutexLock lock(&mu);
  ASSERT_EQ(handed.size(), 1u);
  EXPECT_EQ(handed[0].agent_id, enrolled->agent_id);
  EXPECT_GT(handed[0].not_after, enrolled->not_after + absl::Minutes(30));
  EXPECT_EQ(renewer.current().not_after, handed[0].not_after);
}

TEST(CertificateValidityTest, ParsesDaysAndDurationsWithinBounds) {
  EXPECT_EQ(*ParseCertificateValidity("90d"), absl::Hours(24 * 90));
  EXPECT_EQ(*ParseCertificateValidity("36h"), absl::Hours(36));
  EXPECT_EQ(*ParseCertificateValidity("8s"), absl::Seconds(8));
  for (const char* bad : {"", "0d", "-1d", "0s", "500ms", "3651d", "x", "1y"}) {
    EXPECT_EQ(ParseCertificateValidity(bad).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
}

}  // namespace
}  // namespace fleet::controller
