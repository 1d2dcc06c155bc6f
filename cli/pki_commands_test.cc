#include "cli/pki_commands.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "cli/command_context.h"
#include "cli/errors.h"
#include "common/files.h"
#include "common/pki.h"
#include "common/testing/fake_clock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace fleet::cli {
namespace {

std::string MakeTempDir() {
  std::string pattern = ::testing::TempDir() + "/pki_test_XXXXXX";
  EXPECT_NE(mkdtemp(pattern.data()), nullptr);
  return pattern;
}

int ModeOf(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return -1;
  return st.st_mode & 0777;
}

std::string Read(const std::string& path) {
  absl::StatusOr<std::string> data = ReadFile(path);
  EXPECT_TRUE(data.ok()) << data.status();
  return data.ok() ? *data : "";
}

class PkiCommandsTest : public ::testing::Test {
 protected:
  CommandContext Context(OutputFormat format = OutputFormat::kTable) {
    GlobalOptions options;
    options.output = format;
    return CommandContext(options, io_);
  }

  std::ostringstream out_;
  std::ostringstream err_;
  FakeClock clock_;
  Io io_{out_, err_, false, clock_};
};

TEST_F(PkiCommandsTest, InitWritesACaAndCertificatesThatChainToIt) {
  const std::string dir = MakeTempDir() + "/pki";
  CommandContext ctx = Context();
  ASSERT_TRUE(PkiInit({.out_dir = dir,
                       .hosts = {"fleet.example.com", "10.0.0.5", "::1"},
                       .admin_name = "alice"},
                      ctx)
                  .ok())
      << err_.str();
  EXPECT_EQ(ModeOf(dir), 0700);
  EXPECT_EQ(ModeOf(dir + "/ca.key"), 0600);
  EXPECT_EQ(ModeOf(dir + "/controller.key"), 0600);
  EXPECT_EQ(ModeOf(dir + "/admin.key"), 0600);
  EXPECT_EQ(ModeOf(dir + "/ca.crt"), 0644);

  const std::string ca = Read(dir + "/ca.crt");
  const std::string server = Read(dir + "/controller.crt");
  const std::string admin = Read(dir + "/admin.crt");
  EXPECT_TRUE(pki::VerifyCertificate(server, ca, clock_.Now()).ok());
  EXPECT_TRUE(pki::VerifyCertificate(admin, ca, clock_.Now()).ok());

  absl::StatusOr<pki::CertificateInfo> server_info =
      pki::ParseCertificate(server);
  ASSERT_TRUE(server_info.ok());
  EXPECT_EQ(server_info->role_name, "fleet-server");
  EXPECT_EQ(server_info->dns_names,
            std::vector<std::string>{"fleet.example.com"});
  EXPECT_EQ(server_info->ip_addresses,
            (std::vector<std::string>{"10.0.0.5", "::1"}));
  absl::StatusOr<pki::CertificateInfo> admin_info =
      pki::ParseCertificate(admin);
  ASSERT_TRUE(admin_info.ok());
  EXPECT_EQ(admin_info->role_name, "fleet-admin");
  EXPECT_EQ(admin_info->common_name, "alice");

  // Keys match their certificates.
  absl::StatusOr<pki::PrivateKey> key =
      pki::PrivateKey::LoadPemFile(dir + "/controller.key");
  ASSERT_TRUE(key.ok());
  EXPECT_TRUE(pki::CheckKeyMatchesCertificate(*key, server).ok());
}

TEST_F(PkiCommandsTest, InitNeverOverwritesAndWritesNothingWhenRefused) {
  const std::string dir = MakeTempDir();
  ASSERT_TRUE(WriteNewFile(dir + "/admin.key", "precious", 0600).ok());
  CommandContext ctx = Context();
  absl::Status status = PkiInit({.out_dir = dir}, ctx);
  EXPECT_EQ(status.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(absl::StrContains(status.message(), "admin.key"));
  EXPECT_FALSE(PathExists(dir + "/ca.key"));
  EXPECT_FALSE(PathExists(dir + "/ca.crt"));
  EXPECT_EQ(Read(dir + "/admin.key"), "precious");
}

TEST_F(PkiCommandsTest, InitRefusesBadHostsAsUsageErrors) {
  CommandContext ctx = Context();
  const std::string dir = MakeTempDir() + "/pki";
  absl::Status none = PkiInit({.out_dir = dir, .hosts = {}}, ctx);
  EXPECT_TRUE(IsUsageError(none)) << none;
  absl::Status bad = PkiInit({.out_dir = dir, .hosts = {"a b"}}, ctx);
  EXPECT_TRUE(IsUsageError(bad)) << bad;
  EXPECT_FALSE(PathExists(dir));
}

TEST_F(PkiCommandsTest, IssueSignsWithTheExistingCa) {
  const std::string dir = MakeTempDir();
  CommandContext ctx = Context(OutputFormat::kJson);
  ASSERT_TRUE(PkiInit({.out_dir = dir + "/pki"}, ctx).ok());
  out_.str("");
  ASSERT_TRUE(PkiIssue({.ca_dir = dir + "/pki",
                        .role = "admin",
                        .name = "bob",
                        .out_dir = dir + "/bob"},
                       ctx)
                  .ok());
  nlohmann::json printed = nlohmann::json::parse(out_.str());
  EXPECT_EQ(printed["certificate"], dir + "/bob/bob.crt");
  EXPECT_EQ(ModeOf(dir + "/bob/bob.key"), 0600);
  const std::string cert = Read(dir + "/bob/bob.crt");
  EXPECT_TRUE(
      pki::VerifyCertificate(cert, Read(dir + "/pki/ca.crt"), clock_.Now())
          .ok());
  EXPECT_EQ(pki::ParseCertificate(cert)->common_name, "bob");
}

TEST_F(PkiCommandsTest, IssueRefusesBadRoleNameHostAndMissingCa) {
  const std::string dir = MakeTempDir();
  CommandContext ctx = Context();
  ASSERT_TRUE(PkiInit({.out_dir = dir + "/pki"}, ctx).ok());
  PkiIssueOptions base{.ca_dir = dir + "/pki",
                       .role = "agent",
                       .name = "agent-1",
                       .out_dir = dir + "/out"};
  PkiIssueOptions bad_role = base;
  bad_role.role = "root";
  EXPECT_TRUE(IsUsageError(PkiIssue(bad_role, ctx)));
  PkiIssueOptions bad_name = base;
  bad_name.name = "../etc/passwd";
  EXPECT_TRUE(IsUsageError(PkiIssue(bad_name, ctx)));
  PkiIssueOptions host_on_agent = base;
  host_on_agent.hosts = {"localhost"};
  EXPECT_TRUE(IsUsageError(PkiIssue(host_on_agent, ctx)));
  PkiIssueOptions server_without_host = base;
  server_without_host.role = "server";
  EXPECT_TRUE(IsUsageError(PkiIssue(server_without_host, ctx)));
  PkiIssueOptions no_ca = base;
  no_ca.ca_dir = dir + "/missing";
  absl::Status missing = PkiIssue(no_ca, ctx);
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(missing.message(), "fleetctl pki init"));
  EXPECT_FALSE(PathExists(dir + "/out"));
}

}  // namespace
}  // namespace fleet::cli
