#include "cli/keys_commands.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "cli/command_context.h"
#include "cli/errors.h"
#include "common/ed25519.h"
#include "common/testing/fake_clock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace fleet::cli {
namespace {

std::string MakeTempDir() {
  std::string pattern = ::testing::TempDir() + "/keys_test_XXXXXX";
  char* dir = mkdtemp(pattern.data());
  EXPECT_NE(dir, nullptr);
  return pattern;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream content;
  content << in.rdbuf();
  return content.str();
}

class KeysGenerateTest : public ::testing::Test {
 protected:
  absl::Status Generate(const std::string& dir,
                        OutputFormat format = OutputFormat::kTable) {
    GlobalOptions options;
    options.output = format;
    CommandContext ctx(options, io_);
    return KeysGenerate({.out_dir = dir}, ctx);
  }

  std::ostringstream out_;
  std::ostringstream err_;
  FakeClock clock_;
  Io io_{out_, err_, false, clock_};
};

TEST_F(KeysGenerateTest, WritesPrivateKey0600AndPublicKeyThatVerifies) {
  const std::string dir = MakeTempDir();
  ASSERT_TRUE(Generate(dir).ok()) << err_.str();

  struct stat st;
  ASSERT_EQ(stat((dir + "/release.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600);
  EXPECT_NE(ReadAll(dir + "/release.key").find("-----BEGIN PRIVATE KEY-----"),
            std::string::npos);

  absl::StatusOr<Ed25519PrivateKey> key =
      Ed25519PrivateKey::LoadPemFile(dir + "/release.key");
  absl::StatusOr<Ed25519PublicKey> pub =
      Ed25519PublicKey::LoadPemFile(dir + "/release.pub");
  ASSERT_TRUE(key.ok()) << key.status();
  ASSERT_TRUE(pub.ok()) << pub.status();
  const std::string signature = key->Sign("release manifest bytes");
  EXPECT_TRUE(pub->Verify("release manifest bytes", signature));
  EXPECT_FALSE(pub->Verify("other bytes", signature));

  // The key id printed is the public key's.
  EXPECT_NE(out_.str().find("key " + pub->KeyId()), std::string::npos)
      << out_.str();
}

TEST_F(KeysGenerateTest, EachRunMakesADifferentKey) {
  const std::string a = MakeTempDir();
  const std::string b = MakeTempDir();
  ASSERT_TRUE(Generate(a).ok());
  ASSERT_TRUE(Generate(b).ok());
  EXPECT_NE(ReadAll(a + "/release.pub"), ReadAll(b + "/release.pub"));
}

TEST_F(KeysGenerateTest, CreatesAMissingDirectory) {
  const std::string dir = MakeTempDir() + "/nested/keys";
  ASSERT_TRUE(Generate(dir).ok()) << err_.str();
  EXPECT_TRUE(Ed25519PublicKey::LoadPemFile(dir + "/release.pub").ok());
}

TEST_F(KeysGenerateTest, RefusesToOverwriteAnExistingPrivateKey) {
  const std::string dir = MakeTempDir();
  { std::ofstream(dir + "/release.key") << "precious"; }

  absl::Status s = Generate(dir);
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(ExitCodeFor(s), kExitFailed);
  EXPECT_NE(s.message().find(dir + "/release.key"), std::string::npos);
  EXPECT_NE(s.message().find("choose another --out or remove it"),
            std::string::npos);
  EXPECT_EQ(ReadAll(dir + "/release.key"), "precious");
  EXPECT_FALSE(std::ifstream(dir + "/release.pub").good());
}

TEST_F(KeysGenerateTest, RefusesWhenOnlyThePublicKeyExistsWritingNothing) {
  const std::string dir = MakeTempDir();
  { std::ofstream(dir + "/release.pub") << "old public key"; }

  absl::Status s = Generate(dir);
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_NE(s.message().find(dir + "/release.pub"), std::string::npos);
  EXPECT_FALSE(std::ifstream(dir + "/release.key").good());
  EXPECT_EQ(ReadAll(dir + "/release.pub"), "old public key");
}

TEST_F(KeysGenerateTest, EmptyOutIsAUsageError) {
  EXPECT_TRUE(IsUsageError(Generate("")));
}

TEST_F(KeysGenerateTest, JsonNamesKeyIdAndBothFiles) {
  const std::string dir = MakeTempDir();
  ASSERT_TRUE(Generate(dir, OutputFormat::kJson).ok());
  nlohmann::json result = nlohmann::json::parse(out_.str());
  absl::StatusOr<Ed25519PublicKey> pub =
      Ed25519PublicKey::LoadPemFile(dir + "/release.pub");
  ASSERT_TRUE(pub.ok());
  EXPECT_EQ(result["key_id"], pub->KeyId());
  EXPECT_EQ(result["private_key"], dir + "/release.key");
  EXPECT_EQ(result["public_key"], dir + "/release.pub");
}

TEST_F(KeysGenerateTest, YamlNamesKeyIdAndBothFiles) {
  const std::string dir = MakeTempDir();
  ASSERT_TRUE(Generate(dir, OutputFormat::kYaml).ok());
  absl::StatusOr<Ed25519PublicKey> pub =
      Ed25519PublicKey::LoadPemFile(dir + "/release.pub");
  ASSERT_TRUE(pub.ok());
  const std::string printed = out_.str();
  EXPECT_NE(printed.front(), '{') << printed;
  EXPECT_NE(printed.find("key_id: " + pub->KeyId() + "\n"), std::string::npos)
      << printed;
  EXPECT_NE(printed.find("public_key: " + dir + "/release.pub"),
            std::string::npos)
      << printed;
}

}  // namespace
}  // namespace fleet::cli
