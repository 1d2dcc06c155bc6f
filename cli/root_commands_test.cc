#include "cli/root_commands.h"

#include <stdlib.h>

#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "cli/command_context.h"
#include "cli/errors.h"
#include "cli/keys_commands.h"
#include "common/ed25519.h"
#include "common/files.h"
#include "common/manifest.h"
#include "common/root.h"
#include "common/testing/fake_clock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace fleet::cli {
namespace {

class RootCommandsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "/root_test_XXXXXX";
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    for (const char* name : {"root-a", "root-b", "root-c", "rel-a", "rel-b"}) {
      CommandContext ctx = Context();
      ASSERT_TRUE(KeysGenerate({.out_dir = Dir(name)}, ctx).ok());
    }
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

  // Signs a release manifest with the key `name`.
  v1::SignedManifest Release(const std::string& name) {
    v1::ReleaseManifest manifest;
    manifest.set_product("app");
    manifest.set_version("1.0.0");
    manifest.set_platform("linux/amd64");
    manifest.set_sha256(std::string(32, 'x'));
    manifest.set_size(1);
    manifest.set_created_unix_seconds(absl::ToUnixSeconds(clock_.Now()));
    return *SignManifest(manifest, *Ed25519PrivateKey::LoadPemFile(Key(name)));
  }

  std::string dir_;
  std::ostringstream out_;
  std::ostringstream err_;
  FakeClock clock_;
  Io io_{out_, err_, false, clock_};
};

TEST_F(RootCommandsTest, InitThenSignUntilTheThresholdIsMet) {
  CommandContext ctx = Context();
  const std::string root = dir_ + "/root.json";
  ASSERT_TRUE(RootInit({.root_pubs = {Pub("root-a"), Pub("root-b")},
                        .root_threshold = 2,
                        .release_pubs = {Pub("rel-a")},
                        .sign_keys = {Key("root-a")},
                        .out = root},
                       ctx)
                  .ok());
  EXPECT_TRUE(absl::StrContains(out_.str(), "not ready")) << out_.str();
  EXPECT_EQ(TrustedRoot::FromPinned(*LoadRootFile(root)).status().code(),
            absl::StatusCode::kPermissionDenied);

  out_.str("");
  ASSERT_TRUE(RootSign({.root = root, .sign_keys = {Key("root-b")}}, ctx).ok());
  EXPECT_TRUE(absl::StrContains(out_.str(), "ready: valid as a pinned root"))
      << out_.str();
  absl::StatusOr<TrustedRoot> trusted =
      TrustedRoot::FromPinned(*LoadRootFile(root));
  ASSERT_TRUE(trusted.ok()) << trusted.status();
  EXPECT_EQ(trusted->version(), 1u);
  EXPECT_EQ(trusted->expires(), clock_.Now() + absl::Hours(24 * 365));
  EXPECT_TRUE(trusted->VerifyRelease(Release("rel-a"), clock_.Now()).ok());
}

TEST_F(RootCommandsTest, ReleaseKeyRotationIsAcceptedByAgentsOnTheOldRoot) {
  CommandContext ctx = Context(OutputFormat::kJson);
  const std::string v1_path = dir_ + "/root-v1.json";
  const std::string v2_path = dir_ + "/root-v2.json";
  ASSERT_TRUE(RootInit({.root_pubs = {Pub("root-a")},
                        .release_pubs = {Pub("rel-a")},
                        .sign_keys = {Key("root-a")},
                        .out = v1_path},
                       ctx)
                  .ok());
  out_.str("");
  ASSERT_TRUE(RootRotate({.from = v1_path,
                          .add_release_pubs = {Pub("rel-b")},
                          .remove_release_pubs = {Pub("rel-a")},
                          .sign_keys = {Key("root-a")},
                          .out = v2_path},
                         ctx)
                  .ok());
  nlohmann::json printed = nlohmann::json::parse(out_.str());
  EXPECT_EQ(printed["version"], 2);
  EXPECT_TRUE(absl::StrContains(printed["verdict"].get<std::string>(),
                                "ready: agents on the previous root"))
      << printed.dump();

  absl::StatusOr<TrustedRoot> agent =
      TrustedRoot::FromPinned(*LoadRootFile(v1_path));
  ASSERT_TRUE(agent.ok());
  ASSERT_TRUE(agent->Update(*LoadRootFile(v2_path)).ok());
  EXPECT_TRUE(agent->VerifyRelease(Release("rel-b"), clock_.Now()).ok());
  EXPECT_FALSE(agent->VerifyRelease(Release("rel-a"), clock_.Now()).ok());
}

TEST_F(RootCommandsTest, RootKeyRotationNeedsTheOldKeysSignatureToo) {
  CommandContext ctx = Context();
  const std::string v1_path = dir_ + "/root-v1.json";
  const std::string v2_path = dir_ + "/root-v2.json";
  ASSERT_TRUE(RootInit({.root_pubs = {Pub("root-a")},
                        .release_pubs = {Pub("rel-a")},
                        .sign_keys = {Key("root-a")},
                        .out = v1_path},
                       ctx)
                  .ok());
  out_.str("");
  ASSERT_TRUE(RootRotate({.from = v1_path,
                          .root_pubs = {Pub("root-c")},
                          .sign_keys = {Key("root-c")},
                          .out = v2_path},
                         ctx)
                  .ok());
  EXPECT_TRUE(absl::StrContains(out_.str(), "not ready")) << out_.str();
  absl::StatusOr<TrustedRoot> agent =
      TrustedRoot::FromPinned(*LoadRootFile(v1_path));
  ASSERT_TRUE(agent.ok());
  EXPECT_EQ(agent->Update(*LoadRootFile(v2_path)).code(),
            absl::StatusCode::kPermissionDenied);

  ASSERT_TRUE(
      RootSign({.root = v2_path, .sign_keys = {Key("root-a")}}, ctx).ok());
  EXPECT_TRUE(agent->Update(*LoadRootFile(v2_path)).ok());
  EXPECT_EQ(agent->version(), 2u);
}

TEST_F(RootCommandsTest, BadFlagsAreUsageErrorsAndNothingIsOverwritten) {
  CommandContext ctx = Context();
  const std::string root = dir_ + "/root.json";
  RootInitOptions base{.root_pubs = {Pub("root-a")},
                       .release_pubs = {Pub("rel-a")},
                       .sign_keys = {Key("root-a")},
                       .out = root};
  RootInitOptions threshold = base;
  threshold.root_threshold = 2;
  EXPECT_TRUE(IsUsageError(RootInit(threshold, ctx)));
  RootInitOptions never = base;
  never.expires = "0";
  EXPECT_TRUE(IsUsageError(RootInit(never, ctx)));
  RootInitOptions private_as_public = base;
  private_as_public.root_pubs = {Key("root-a")};
  EXPECT_TRUE(IsUsageError(RootInit(private_as_public, ctx)));
  RootInitOptions no_release = base;
  no_release.release_pubs.clear();
  EXPECT_TRUE(IsUsageError(RootInit(no_release, ctx)));
  EXPECT_FALSE(PathExists(root));

  ASSERT_TRUE(RootInit(base, ctx).ok());
  const std::string before = *ReadFile(root);
  EXPECT_EQ(RootInit(base, ctx).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(*ReadFile(root), before);

  EXPECT_TRUE(IsUsageError(RootRotate({.from = root,
                                       .remove_release_pubs = {Pub("rel-b")},
                                       .out = dir_ + "/v2.json"},
                                      ctx)));
  EXPECT_TRUE(IsUsageError(RootRotate({.from = root,
                                       .remove_release_pubs = {Pub("rel-a")},
                                       .out = dir_ + "/v2.json"},
                                      ctx)))
      << "a root without release keys is refused";
  EXPECT_FALSE(PathExists(dir_ + "/v2.json"));
  EXPECT_TRUE(IsUsageError(RootShow(dir_ + "/missing.json", ctx)));
}

}  // namespace
}  // namespace fleet::cli
