// Offline release signing end to end (docs/security.md "Signing offline"),
// with the real fleetctl, fleet-controller and fleet-agent binaries and a
// 2-of-3 root made with `fleetctl keys root init`:
//   - `release prepare` writes an unsigned manifest file; `keys sign` by one
//     release key is not enough: the controller refuses the push and the
//     operator reads "2 needed, 1 valid";
//   - a key outside the root can sign the file (the signer has no root at
//     hand) but does not count: still refused; `release verify --root` says
//     which signature is not a release key;
//   - a second release key's signature makes the push succeed, the release
//     is listed with both key ids, and an agent pinned at the same root
//     installs it;
//   - a file whose digest differs from the manifest's is refused before any
//     upload; prepare never overwrites; bad flags exit 2 naming the flag;
//   - `release push --key A --key B` signs 2-of-3 in one step.
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "gtest/gtest.h"
#include "tests/testing/fleet_harness.h"

namespace fleet::testing {
namespace {

class OfflineSigningE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* name : {"root", "rel-a", "rel-b", "rel-c", "outsider"}) {
      RunResult made = Offline({"keys", "generate", "--out", Dir(name)});
      ASSERT_EQ(made.exit_code, 0) << made.err;
    }
    RunResult root =
        Offline({"keys", "root", "init", "--root-pub", Pub("root"),
                 "--release-pub", Pub("rel-a"), "--release-pub", Pub("rel-b"),
                 "--release-pub", Pub("rel-c"), "--release-threshold", "2",
                 "--sign-key", Key("root"), "--out", RootFile()});
    ASSERT_EQ(root.exit_code, 0) << root.err;
    ASSERT_TRUE(fleet_.StartController({"--trust-root", RootFile()}).ok())
        << fleet_.DumpLogs();
  }

  void TearDown() override {
    if (HasFailure()) std::cerr << fleet_.DumpLogs();
  }

  std::string Dir(const std::string& name) {
    return JoinPath(fleet_.dir(), name);
  }
  std::string Pub(const std::string& name) {
    return JoinPath(Dir(name), "release.pub");
  }
  std::string Key(const std::string& name) {
    return JoinPath(Dir(name), "release.key");
  }
  std::string RootFile() { return Dir("root.json"); }

  // fleetctl with no controller at all, as on a signer's machine.
  static RunResult Offline(std::vector<std::string> args) {
    args.insert(args.begin(), Runfile("cli/fleetctl"));
    return ::fleet::testing::Run(args);
  }

  RunResult Sign(const std::string& manifest, const std::string& key) {
    return fleet_.Fleetctl({"keys", "sign", "--key", Key(key), manifest});
  }

  std::string ListReleases() {
    return fleet_.Fleetctl({"release", "list", "--product", "app"}).out;
  }

  FleetHarness fleet_;
};

TEST_F(OfflineSigningE2eTest, PrepareSignTwicePushAndAnAgentInstallsIt) {
  const std::string old_app = fleet_.MakeSampleApp("1.0.0");
  const std::string new_app = fleet_.MakeSampleApp("1.1.0");
  // One operator holding two release keys pushes in one step.
  RunResult one_step = fleet_.Fleetctl(
      {"release", "push", "--product", "app", "--version", "1.0.0", "--file",
       old_app, "--key", Key("rel-a"), "--key", Key("rel-c")});
  ASSERT_EQ(one_step.exit_code, 0) << one_step.err;

  const std::string manifest = Dir("app-1.1.0.manifest.json");
  RunResult prepared =
      fleet_.Fleetctl({"release", "prepare", "--product", "app", "--version",
                       "1.1.0", "--file", new_app, "--out", manifest});
  ASSERT_EQ(prepared.exit_code, 0) << prepared.err;
  EXPECT_TRUE(absl::StrContains(prepared.out, "(unsigned)")) << prepared.out;

  // Never overwritten; a bad flag is a usage error naming it.
  RunResult again =
      fleet_.Fleetctl({"release", "prepare", "--product", "app", "--version",
                       "1.1.0", "--file", new_app, "--out", manifest});
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(again.err, "already exists")) << again.err;
  RunResult bad_version =
      fleet_.Fleetctl({"release", "prepare", "--product", "app", "--version",
                       "1.1", "--file", new_app, "--out", Dir("x.json")});
  EXPECT_EQ(bad_version.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(bad_version.err, "--version"))
      << bad_version.err;
  RunResult mixed = fleet_.Fleetctl({"release", "push", "--manifest", manifest,
                                     "--file", new_app, "--version", "1.1.0"});
  EXPECT_EQ(mixed.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(mixed.err, "--version")) << mixed.err;

  // One valid signature of two needed: the controller refuses.
  ASSERT_EQ(Sign(manifest, "rel-a").exit_code, 0);
  RunResult one = fleet_.Fleetctl(
      {"release", "push", "--manifest", manifest, "--file", new_app});
  EXPECT_EQ(one.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(one.err, "2 needed, 1 valid")) << one.err;
  EXPECT_TRUE(absl::StrContains(one.err, "fleetctl keys sign")) << one.err;

  // A key outside the root signs (no --root here), and does not count.
  RunResult outsider = Sign(manifest, "outsider");
  ASSERT_EQ(outsider.exit_code, 0) << outsider.err;
  EXPECT_TRUE(absl::StrContains(outsider.out, "now has 2 signature(s)"))
      << outsider.out;
  RunResult still = fleet_.Fleetctl(
      {"release", "push", "--manifest", manifest, "--file", new_app});
  EXPECT_EQ(still.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(still.err, "2 needed, 1 valid")) << still.err;
  RunResult verify = fleet_.Fleetctl(
      {"release", "verify", "--manifest", manifest, "--root", RootFile()});
  EXPECT_EQ(verify.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(verify.out, "not a release key of root v1"))
      << verify.out;
  EXPECT_TRUE(absl::StrContains(verify.err, "2 needed")) << verify.err;
  EXPECT_FALSE(absl::StrContains(ListReleases(), "1.1.0"));

  // The second release key: verified offline, then accepted.
  RunResult second = fleet_.Fleetctl(
      {"keys", "sign", "--key", Key("rel-b"), "--root", RootFile(), manifest});
  ASSERT_EQ(second.exit_code, 0) << second.err;
  EXPECT_TRUE(absl::StrContains(second.out, "ready to push")) << second.out;

  // The wrong artifact is refused before anything is uploaded.
  RunResult wrong = fleet_.Fleetctl(
      {"release", "push", "--manifest", manifest, "--file", old_app});
  EXPECT_EQ(wrong.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(wrong.err, "nothing was uploaded"))
      << wrong.err;

  verify = fleet_.Fleetctl({"release", "verify", "--manifest", manifest,
                            "--root", RootFile(), "--file", new_app});
  EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;
  RunResult pushed = fleet_.Fleetctl(
      {"release", "push", "--manifest", manifest, "--file", new_app});
  ASSERT_EQ(pushed.exit_code, 0) << pushed.err;
  const std::string listed = ListReleases();
  EXPECT_TRUE(absl::StrContains(listed, "1.1.0")) << listed;

  // An agent pinned at the same root installs what two keys signed.
  AgentHandle* agent =
      fleet_.StartAgent("signed", "app", {"--trust-root", RootFile()});
  ASSERT_TRUE(fleet_.Preinstall(agent, old_app).ok());
  ASSERT_TRUE(agent->process->Start().ok());
  ASSERT_TRUE(WaitFor([&] { return agent->Runs("1.0.0"); }, absl::Seconds(60)));
  RunResult rollout = fleet_.Fleetctl(
      {"rollout", "create", "--product", "app", "--version", "1.1.0"});
  ASSERT_EQ(rollout.exit_code, 0) << rollout.err;
  EXPECT_TRUE(WaitFor([&] { return agent->Runs("1.1.0"); }, absl::Seconds(60)))
      << "the agent does not run 1.1.0";
}

}  // namespace
}  // namespace fleet::testing
