#include "common/pki.h"

#include <sys/stat.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "common/files.h"
#include "gtest/gtest.h"

namespace fleet::pki {
namespace {

constexpr absl::Duration kDay = absl::Hours(24);

absl::Time Now() { return absl::FromUnixSeconds(1800000000); }

class PkiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<CertificateAuthority> ca =
        CertificateAuthority::Create("fleet test CA", 3650 * kDay, Now());
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = std::make_unique<CertificateAuthority>(*std::move(ca));
  }

  std::string NewCsr() {
    absl::StatusOr<PrivateKey> key = PrivateKey::Generate();
    EXPECT_TRUE(key.ok()) << key.status();
    absl::StatusOr<std::string> csr = CreateCsr(*key, "anything");
    EXPECT_TRUE(csr.ok()) << csr.status();
    return *csr;
  }

  std::unique_ptr<CertificateAuthority> ca_;
};

TEST_F(PkiTest, CaIsSelfSignedCaValidForItsLifetime) {
  absl::StatusOr<CertificateInfo> info =
      ParseCertificate(ca_->certificate_pem());
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_TRUE(info->is_ca);
  EXPECT_EQ(info->common_name, "fleet test CA");
  EXPECT_EQ(info->not_after, Now() + 3650 * kDay);
  EXPECT_LT(info->not_before, Now());
  EXPECT_TRUE(
      VerifyCertificate(ca_->certificate_pem(), ca_->certificate_pem(), Now())
          .ok());
}

TEST_F(PkiTest, IssuedCertificateCarriesTheIssuersIdentityNotTheCsrs) {
  absl::StatusOr<std::string> cert =
      ca_->Issue(NewCsr(),
                 {.common_name = "agent-7f3a",
                  .role = CertificateRole::kAgent,
                  .validity = 30 * kDay},
                 Now());
  ASSERT_TRUE(cert.ok()) << cert.status();
  absl::StatusOr<CertificateInfo> info = ParseCertificate(*cert);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->common_name, "agent-7f3a");  // not the CSR's "anything"
  EXPECT_EQ(info->role_name, "fleet-agent");
  EXPECT_FALSE(info->is_ca);
  EXPECT_EQ(info->not_after, Now() + 30 * kDay);
  EXPECT_EQ(info->sha256_fingerprint_hex.size(), 64u);
  EXPECT_FALSE(info->serial_hex.empty());
  EXPECT_TRUE(VerifyCertificate(*cert, ca_->certificate_pem(), Now()).ok());
}

// Enrolled labels travel as URI SANs and come back byte for byte, even with
// the characters a URI would otherwise mangle; a certificate without them
// has none.
TEST_F(PkiTest, LabelsRoundTripThroughTheCertificate) {
  const std::map<std::string, std::string> labels = {
      {"ring", "canary"},
      {"site/rack", "a 1%2F:?#[]@!$&'()*+;~"},
      {"empty", ""}};
  absl::StatusOr<std::string> cert =
      ca_->Issue(NewCsr(),
                 {.common_name = "ag-1",
                  .role = CertificateRole::kAgent,
                  .labels = labels},
                 Now());
  ASSERT_TRUE(cert.ok()) << cert.status();
  absl::StatusOr<CertificateInfo> info = ParseCertificate(*cert);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->labels, labels);
  EXPECT_TRUE(VerifyCertificate(*cert, ca_->certificate_pem(), Now()).ok());

  absl::StatusOr<std::string> plain = ca_->Issue(
      NewCsr(), {.common_name = "ag-2", .role = CertificateRole::kAgent},
      Now());
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_TRUE(ParseCertificate(*plain)->labels.empty());

  EXPECT_EQ(ca_->Issue(NewCsr(),
                       {.common_name = "ag-3",
                        .role = CertificateRole::kAgent,
                        .labels = {{"", "x"}}},
                       Now())
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

// A short-lived certificate is backdated by a quarter of its validity, not
// an hour, so most of its lifetime lies ahead (renewal at 2/3 of it works).
TEST_F(PkiTest, ShortLivedCertificateIsBackdatedByAQuarterOfItsValidity) {
  absl::StatusOr<std::string> cert =
      ca_->Issue(NewCsr(),
                 {.common_name = "ag-1",
                  .role = CertificateRole::kAgent,
                  .validity = absl::Seconds(8)},
                 Now());
  ASSERT_TRUE(cert.ok()) << cert.status();
  absl::StatusOr<CertificateInfo> info = ParseCertificate(*cert);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->not_before, Now() - absl::Seconds(2));
  EXPECT_EQ(info->not_after, Now() + absl::Seconds(8));
}

TEST_F(PkiTest, ServerCertificateHasSansAndNeedsThem) {
  absl::StatusOr<std::string> cert =
      ca_->Issue(NewCsr(),
                 {.common_name = "controller",
                  .role = CertificateRole::kServer,
                  .dns_names = {"localhost", "fleet.example.com"},
                  .ip_addresses = {"127.0.0.1", "::1"}},
                 Now());
  ASSERT_TRUE(cert.ok()) << cert.status();
  absl::StatusOr<CertificateInfo> info = ParseCertificate(*cert);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->role_name, "fleet-server");
  EXPECT_EQ(info->dns_names,
            (std::vector<std::string>{"localhost", "fleet.example.com"}));
  EXPECT_EQ(info->ip_addresses, (std::vector<std::string>{"127.0.0.1", "::1"}));

  absl::StatusOr<std::string> bare = ca_->Issue(
      NewCsr(), {.common_name = "controller", .role = CertificateRole::kServer},
      Now());
  EXPECT_EQ(bare.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(PkiTest, CertificateNeverOutlivesItsCa) {
  absl::StatusOr<std::string> cert =
      ca_->Issue(NewCsr(),
                 {.common_name = "a",
                  .role = CertificateRole::kAdmin,
                  .validity = 100000 * kDay},
                 Now());
  ASSERT_TRUE(cert.ok());
  EXPECT_EQ(ParseCertificate(*cert)->not_after, Now() + 3650 * kDay);
}

TEST_F(PkiTest, VerifyRefusesExpiredNotYetValidAndForeignCertificates) {
  absl::StatusOr<std::string> cert =
      ca_->Issue(NewCsr(), {.common_name = "agent-1", .validity = kDay}, Now());
  ASSERT_TRUE(cert.ok());

  absl::Status expired =
      VerifyCertificate(*cert, ca_->certificate_pem(), Now() + 2 * kDay);
  EXPECT_EQ(expired.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(absl::StrContains(expired.message(), "expired")) << expired;

  absl::Status early =
      VerifyCertificate(*cert, ca_->certificate_pem(), Now() - 2 * kDay);
  EXPECT_EQ(early.code(), absl::StatusCode::kUnauthenticated);

  absl::StatusOr<CertificateAuthority> other =
      CertificateAuthority::Create("other CA", 3650 * kDay, Now());
  ASSERT_TRUE(other.ok());
  absl::Status foreign =
      VerifyCertificate(*cert, other->certificate_pem(), Now());
  EXPECT_EQ(foreign.code(), absl::StatusCode::kUnauthenticated);
}

TEST_F(PkiTest, IssueRefusesBadInput) {
  const std::string csr = NewCsr();
  struct Case {
    const char* name;
    std::string csr;
    IssueOptions options;
  } cases[] = {
      {"empty common name", csr, {.common_name = ""}},
      {"long common name", csr, {.common_name = std::string(65, 'a')}},
      {"control character", csr, {.common_name = "a\nb"}},
      {"bad ip", csr, {.common_name = "a", .ip_addresses = {"300.1.1.1"}}},
      {"comma in dns name",
       csr,
       {.common_name = "a", .dns_names = {"a,IP:1.2.3.4"}}},
      {"zero validity",
       csr,
       {.common_name = "a", .validity = absl::ZeroDuration()}},
      {"not a csr", "hello", {.common_name = "a"}},
      {"a certificate instead of a csr",
       ca_->certificate_pem(),
       {.common_name = "a"}},
  };
  for (const Case& c : cases) {
    absl::StatusOr<std::string> cert = ca_->Issue(c.csr, c.options, Now());
    EXPECT_EQ(cert.status().code(), absl::StatusCode::kInvalidArgument)
        << c.name << ": " << cert.status();
  }
}

TEST_F(PkiTest, IssueRefusesCsrWithBrokenSignature) {
  std::string csr = NewCsr();
  // Change one base64 character a few characters before the end of the
  // body: inside the signature, and not a padding bit the decoder drops.
  size_t pos = csr.find("-----END");
  ASSERT_NE(pos, std::string::npos);
  int seen = 0;
  while (pos > 0 && seen < 8) {
    --pos;
    if (std::isalnum(static_cast<unsigned char>(csr[pos]))) ++seen;
  }
  csr[pos] = csr[pos] == 'A' ? 'B' : 'A';
  absl::StatusOr<std::string> cert =
      ca_->Issue(csr, {.common_name = "a"}, Now());
  EXPECT_EQ(cert.status().code(), absl::StatusCode::kInvalidArgument)
      << cert.status();
}

TEST_F(PkiTest, LoadChecksTheKeyBelongsToTheCa) {
  EXPECT_TRUE(
      CertificateAuthority::Load(ca_->certificate_pem(), ca_->key().pem())
          .ok());
  absl::StatusOr<PrivateKey> stranger = PrivateKey::Generate();
  ASSERT_TRUE(stranger.ok());
  EXPECT_EQ(CertificateAuthority::Load(ca_->certificate_pem(), stranger->pem())
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  absl::StatusOr<std::string> leaf =
      ca_->Issue(NewCsr(), {.common_name = "a"}, Now());
  ASSERT_TRUE(leaf.ok());
  EXPECT_EQ(CertificateAuthority::Load(*leaf, ca_->key().pem()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(PkiTest, KeyFileIsPrivateAndNeverOverwritten) {
  const std::string path = std::string(std::getenv("TEST_TMPDIR")) + "/key.pem";
  std::remove(path.c_str());
  ASSERT_TRUE(ca_->key().WritePemFile(path).ok());
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600);
  EXPECT_EQ(ca_->key().WritePemFile(path).code(),
            absl::StatusCode::kAlreadyExists);
  absl::StatusOr<PrivateKey> loaded = PrivateKey::LoadPemFile(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->pem(), ca_->key().pem());
}

// The OpenSSL command line, an independent implementation of the same
// checks, agrees that each chain verifies and fits its role's purpose only.
TEST_F(PkiTest, OpensslCliVerifiesTheChainForTheRolesPurpose) {
  const std::string dir = std::getenv("TEST_TMPDIR");
  absl::StatusOr<std::string> server =
      ca_->Issue(NewCsr(),
                 {.common_name = "controller",
                  .role = CertificateRole::kServer,
                  .dns_names = {"localhost"}},
                 Now());
  absl::StatusOr<std::string> agent =
      ca_->Issue(NewCsr(), {.common_name = "agent-1"}, Now());
  ASSERT_TRUE(server.ok() && agent.ok());
  auto write = [&](const std::string& name, const std::string& data) {
    std::ofstream(dir + "/" + name) << data;
    return dir + "/" + name;
  };
  const std::string ca = write("ca.pem", ca_->certificate_pem());
  const std::string server_pem = write("server.pem", *server);
  const std::string agent_pem = write("agent.pem", *agent);
  auto verify = [&](const std::string& purpose, const std::string& cert) {
    const std::string command =
        "openssl verify -attime " +
        std::to_string(absl::ToUnixSeconds(Now() + absl::Hours(1))) +
        " -purpose " + purpose + " -CAfile " + ca + " " + cert +
        " >/dev/null 2>&1";
    return std::system(command.c_str());
  };
  EXPECT_EQ(verify("sslserver", server_pem), 0);
  EXPECT_NE(verify("sslclient", server_pem), 0);
  EXPECT_EQ(verify("sslclient", agent_pem), 0);
  EXPECT_NE(verify("sslserver", agent_pem), 0);
}

}  // namespace
}  // namespace fleet::pki
