#include "cli/keys_commands.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "cli/command_context.h"
#include "cli/errors.h"
#include "cli/manifest_file.h"
#include "cli/release_commands.h"
#include "cli/root_commands.h"
#include "common/ed25519.h"
#include "common/manifest.h"
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

// `keys sign` on files made by `release prepare`, with real keys and a real
// 2-of-3 root file (keys root init).
class KeysSignTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeTempDir();
    for (const char* name : {"rel-a", "rel-b", "rel-c", "outsider", "root"}) {
      CommandContext ctx = Context();
      ASSERT_TRUE(KeysGenerate({.out_dir = Dir(name)}, ctx).ok());
    }
    {
      CommandContext ctx = Context();
      ASSERT_TRUE(
          RootInit({.root_pubs = {Pub("root")},
                    .release_pubs = {Pub("rel-a"), Pub("rel-b"), Pub("rel-c")},
                    .release_threshold = 2,
                    .sign_keys = {Key("root")},
                    .out = Root()},
                   ctx)
              .ok());
    }
    std::ofstream(Dir("app")) << "the artifact bytes";
    CommandContext ctx = Context();
    ASSERT_TRUE(ReleasePrepare({.product = "web",
                                .version = "1.2.0",
                                .platform = "linux/amd64",
                                .file = Dir("app"),
                                .expires = "30d",
                                .out = Manifest()},
                               ctx)
                    .ok());
    out_.str("");
  }

  CommandContext Context(OutputFormat format = OutputFormat::kTable) {
    GlobalOptions options;
    options.output = format;
    return CommandContext(options, io_);
  }
  std::string Dir(const std::string& name) { return dir_ + "/" + name; }
  std::string Pub(const std::string& name) {
    return Dir(name) + "/release.pub";
  }
  std::string Key(const std::string& name) {
    return Dir(name) + "/release.key";
  }
  std::string Root() { return Dir("root.json"); }
  std::string Manifest() { return Dir("web.manifest.json"); }

  absl::Status Sign(std::vector<std::string> keys, std::string root = "") {
    out_.str("");
    CommandContext ctx = Context();
    return KeysSign({.key_files = std::move(keys),
                     .manifest = Manifest(),
                     .root = std::move(root)},
                    ctx);
  }

  // Verifies the file's signatures with the keys `names`, threshold n.
  absl::Status VerifyWith(const std::vector<std::string>& names,
                          int threshold) {
    absl::StatusOr<ManifestFile> file = LoadManifestFile(Manifest());
    if (!file.ok()) return file.status();
    TrustedKeys keys;
    for (const std::string& name : names) {
      if (absl::Status s = keys.AddPemFile(Pub(name)); !s.ok()) return s;
    }
    return VerifyManifest(file->signed_manifest, keys, clock_.Now(), threshold)
        .status();
  }

  std::string dir_;
  std::ostringstream out_;
  std::ostringstream err_;
  FakeClock clock_{absl::Now()};
  Io io_{out_, err_, false, clock_};
};

TEST_F(KeysSignTest, TwoSignersInTurnMeetTheRootThreshold) {
  ASSERT_TRUE(Sign({Key("rel-a")}, Root()).ok());
  EXPECT_NE(out_.str().find("signing web 1.2.0 (linux/amd64)"),
            std::string::npos)
      << out_.str();
  EXPECT_NE(out_.str().find("sha256     "), std::string::npos);
  EXPECT_NE(out_.str().find("1 of 2 needed by root v1: needs 1 more"),
            std::string::npos)
      << out_.str();
  EXPECT_EQ(VerifyWith({"rel-a", "rel-b", "rel-c"}, 2).code(),
            absl::StatusCode::kPermissionDenied);

  ASSERT_TRUE(Sign({Key("rel-b")}, Root()).ok());
  EXPECT_NE(out_.str().find("2 of 2 needed by root v1: ready to push"),
            std::string::npos)
      << out_.str();
  EXPECT_TRUE(VerifyWith({"rel-a", "rel-b", "rel-c"}, 2).ok());
  EXPECT_TRUE(VerifyWith({"rel-b"}, 1).ok());
}

TEST_F(KeysSignTest, SigningAgainIsIdempotentAndABrokenSignatureIsReplaced) {
  ASSERT_TRUE(Sign({Key("rel-a")}).ok());
  const std::string once = ReadAll(Manifest());
  ASSERT_TRUE(Sign({Key("rel-a")}).ok());
  EXPECT_NE(out_.str().find("had already signed; kept as is"),
            std::string::npos)
      << out_.str();
  EXPECT_EQ(ReadAll(Manifest()), once);

  // Corrupt the stored signature (a different, valid base64 value).
  ManifestFile file = *LoadManifestFile(Manifest());
  file.signed_manifest.mutable_signatures(0)->set_signature(
      std::string(64, 'x'));
  ASSERT_TRUE(WriteManifestFile(Manifest(), file, /*replace=*/true).ok());
  ASSERT_TRUE(Sign({Key("rel-a")}).ok());
  EXPECT_NE(out_.str().find("replaced a signature"), std::string::npos);
  EXPECT_EQ(ReadAll(Manifest()), once);
  EXPECT_TRUE(VerifyWith({"rel-a"}, 1).ok());
}

TEST_F(KeysSignTest, AnEditedReviewCopyIsRefusedAndNothingIsSigned) {
  std::string text = ReadAll(Manifest());
  const size_t at = text.find("\"1.2.0\"");
  ASSERT_NE(at, std::string::npos);
  text.replace(at, 7, "\"1.9.0\"");
  std::ofstream(Manifest(), std::ios::trunc) << text;

  absl::Status s = Sign({Key("rel-a")});
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("review field \"version\" says \"1.9.0\" but "
                             "the signed bytes say \"1.2.0\""),
            std::string::npos)
      << s;
  EXPECT_EQ(ReadAll(Manifest()), text);
  EXPECT_EQ(out_.str().find("signing"), std::string::npos);
}

TEST_F(KeysSignTest, AnExpiredManifestIsRefused) {
  const std::string before = ReadAll(Manifest());
  clock_.Advance(absl::Hours(31 * 24));
  absl::Status s = Sign({Key("rel-a")});
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("expired at"), std::string::npos) << s;
  EXPECT_NE(s.message().find("prepare the release again"), std::string::npos);
  EXPECT_EQ(ReadAll(Manifest()), before);
}

TEST_F(KeysSignTest, AKeyTheRootDoesNotTrustIsRefusedOnlyWithRoot) {
  const std::string before = ReadAll(Manifest());
  absl::Status s = Sign({Key("outsider")}, Root());
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << s;
  EXPECT_NE(s.message().find("is not a release key of root v1"),
            std::string::npos)
      << s;
  EXPECT_NE(s.message().find("fleetctl keys release-key add"),
            std::string::npos);
  EXPECT_EQ(ReadAll(Manifest()), before);

  // Without --root the signer cannot know; the signature is added and the
  // controller (or `release verify`) refuses it later.
  ASSERT_TRUE(Sign({Key("outsider")}).ok());
  EXPECT_TRUE(VerifyWith({"outsider"}, 1).ok());
  EXPECT_EQ(VerifyWith({"rel-a", "rel-b", "rel-c"}, 1).code(),
            absl::StatusCode::kPermissionDenied);
}

TEST_F(KeysSignTest, UsageErrors) {
  CommandContext ctx = Context();
  EXPECT_TRUE(IsUsageError(KeysSign({.manifest = Manifest()}, ctx)));
  EXPECT_TRUE(IsUsageError(KeysSign({.key_files = {Key("rel-a")}}, ctx)));
  absl::Status twice = Sign({Key("rel-a"), Key("rel-a")});
  EXPECT_TRUE(IsUsageError(twice)) << twice;
  EXPECT_NE(twice.message().find("same key"), std::string::npos);
  EXPECT_EQ(Sign({Dir("nope.key")}).code(), absl::StatusCode::kNotFound);
  std::ofstream(Dir("garbage.json")) << "{}";
  absl::Status bad_root = Sign({Key("rel-a")}, Dir("garbage.json"));
  EXPECT_TRUE(IsUsageError(bad_root)) << bad_root;
}

// `release verify` on the same files: what an agent pinned at the root would
// decide, offline.
TEST_F(KeysSignTest, VerifyCountsOnlyTheRootsReleaseKeysAndChecksTheFile) {
  auto verify = [&](ReleaseVerifyOptions options) {
    out_.str("");
    options.manifest = Manifest();
    CommandContext ctx = Context();
    return ReleaseVerify(options, ctx);
  };
  ASSERT_TRUE(Sign({Key("rel-a"), Key("outsider")}).ok());
  absl::Status short_of_one = verify({.root = Root()});
  EXPECT_EQ(short_of_one.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(short_of_one.message().find(
                "1 valid signature(s) trusted by root v1, 2 needed"),
            std::string::npos)
      << short_of_one;
  EXPECT_NE(out_.str().find("not a release key of root v1"), std::string::npos)
      << out_.str();
  // The outsider's key alone, as a --trust-key controller would see it.
  EXPECT_TRUE(verify({.trust_keys = {Pub("outsider")}}).ok()) << out_.str();

  ASSERT_TRUE(Sign({Key("rel-b")}).ok());
  ASSERT_TRUE(verify({.root = Root(), .file = Dir("app")}).ok());
  EXPECT_NE(out_.str().find("verified: 2 of 2"), std::string::npos)
      << out_.str();
  std::ofstream(Dir("other")) << "other bytes";
  EXPECT_EQ(verify({.root = Root(), .file = Dir("other")}).code(),
            absl::StatusCode::kFailedPrecondition);

  // A root that expired refuses, as agents refuse new installs.
  {
    CommandContext ctx = Context();
    ASSERT_TRUE(RootInit({.root_pubs = {Pub("root")},
                          .release_pubs = {Pub("rel-a")},
                          .expires = "1h",
                          .sign_keys = {Key("root")},
                          .out = Dir("short-root.json")},
                         ctx)
                    .ok());
  }
  clock_.Advance(absl::Hours(2));
  absl::Status expired = verify({.root = Dir("short-root.json")});
  EXPECT_EQ(expired.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(expired.message().find("expired"), std::string::npos) << expired;

  CommandContext ctx = Context();
  EXPECT_TRUE(IsUsageError(ReleaseVerify({.manifest = Manifest()}, ctx)));
  EXPECT_TRUE(IsUsageError(ReleaseVerify(
      {.manifest = Manifest(), .root = Root(), .trust_keys = {Pub("rel-a")}},
      ctx)));
}

}  // namespace
}  // namespace fleet::cli
