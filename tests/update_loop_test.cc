// The whole update loop with real processes on 127.0.0.1: fleetctl pushes
// signed releases to a real fleet-controller, rollouts reach real
// fleet-agents, which swap and restart real programs on disk.
#include <grpcpp/grpcpp.h>

#include "absl/strings/match.h"
#include "common/files.h"
#include "common/sha256.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/fleet_harness.h"

namespace fleet::testing {
namespace {

constexpr int kAgents = 3;

std::string FileDigestHex(const std::string& path) {
  absl::StatusOr<Digest> digest = Sha256OfFile(path);
  return digest.ok() ? DigestToHex(*digest) : "";
}

// Parses the rollout id out of `fleetctl -o json rollout create`.
std::string RolloutIdFromJson(const std::string& out) {
  nlohmann::json j = nlohmann::json::parse(out, nullptr, false);
  if (j.is_discarded() || !j.contains("rollout_id")) return "";
  return j["rollout_id"].get<std::string>();
}

class UpdateLoopTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fleet_.StartController().ok()) << fleet_.DumpLogs();
    v1_ = fleet_.MakeSampleApp("1.0.0");
    v2_ = fleet_.MakeSampleApp("1.1.0");
    ASSERT_FALSE(v1_.empty());
    ASSERT_FALSE(v2_.empty());
  }

  void TearDown() override {
    if (HasFailure()) std::cerr << fleet_.DumpLogs();
  }

  // Starts kAgents agents with v1.0.0 preinstalled and running.
  void StartAgentsOnV1() {
    for (int i = 0; i < kAgents; ++i) {
      AgentHandle* agent = fleet_.StartAgent("agent-" + std::to_string(i));
      ASSERT_TRUE(fleet_.Preinstall(agent, v1_).ok());
      ASSERT_TRUE(agent->process->Start().ok());
    }
    for (AgentHandle* agent : fleet_.agents()) {
      ASSERT_TRUE(
          WaitFor([&] { return agent->Runs("1.0.0"); }, absl::Seconds(30)))
          << agent->name << " never ran 1.0.0";
    }
  }

  // Waits until every agent is connected and reports `version` installed.
  void WaitForAgentsReporting(const std::string& version) {
    ASSERT_TRUE(WaitFor(
        [&] {
          grpc::ClientContext ctx;
          v1::ListAgentsResponse resp;
          if (!fleet_.admin()
                   .ListAgents(&ctx, v1::ListAgentsRequest(), &resp)
                   .ok()) {
            return false;
          }
          int ready = 0;
          for (const v1::Agent& a : resp.agents()) {
            for (const v1::InstalledProduct& p : a.installed()) {
              if (a.connected() && p.product() == "app" &&
                  p.version() == version) {
                ++ready;
              }
            }
          }
          return ready == kAgents;
        },
        absl::Seconds(30)))
        << "agents never all reported " << version;
  }

  std::string CreateRollout(const std::string& version) {
    RunResult r = fleet_.Fleetctl({"-o", "json", "rollout", "create",
                                   "--product", "app", "--version", version});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return RolloutIdFromJson(r.out);
  }

  FleetHarness fleet_;
  std::string v1_, v2_;
};

TEST_F(UpdateLoopTest, RolloutUpdatesEveryAgentToTheNewRunningBinary) {
  ASSERT_EQ(fleet_.PushRelease("app", "1.0.0", v1_).exit_code, 0);
  StartAgentsOnV1();
  // Agents report an unknown version with the executable's digest; the
  // controller recognises it as release 1.0.0.
  WaitForAgentsReporting("1.0.0");

  RunResult push = fleet_.PushRelease("app", "1.1.0", v2_);
  ASSERT_EQ(push.exit_code, 0) << push.err;
  std::string rollout_id = CreateRollout("1.1.0");
  ASSERT_FALSE(rollout_id.empty());

  absl::StatusOr<v1::Rollout> rollout =
      fleet_.WaitForRolloutEnd(rollout_id, absl::Seconds(90));
  ASSERT_TRUE(rollout.ok()) << rollout.status();
  EXPECT_EQ(rollout->state(), v1::ROLLOUT_STATE_COMPLETED);
  EXPECT_EQ(rollout->counts().total(), kAgents);
  EXPECT_EQ(rollout->counts().healthy(), kAgents);
  ASSERT_EQ(rollout->targets_size(), kAgents);
  for (const v1::RolloutTarget& target : rollout->targets()) {
    EXPECT_EQ(target.state(), v1::TARGET_STATE_HEALTHY) << target.agent_id();
    EXPECT_EQ(target.from_version(), "1.0.0");
  }

  const std::string v2_digest = FileDigestHex(v2_);
  for (AgentHandle* agent : fleet_.agents()) {
    EXPECT_TRUE(
        WaitFor([&] { return agent->Runs("1.1.0"); }, absl::Seconds(10)))
        << agent->name << " does not run 1.1.0";
    EXPECT_EQ(FileDigestHex(agent->exec_path), v2_digest) << agent->name;
  }
  WaitForAgentsReporting("1.1.0");

  RunResult status = fleet_.Fleetctl({"rollout", "status", rollout_id});
  EXPECT_EQ(status.exit_code, 0) << status.err;
  EXPECT_TRUE(absl::StrContains(status.out, "COMPLETED") ||
              absl::StrContains(status.out, "completed"))
      << status.out;
}

TEST_F(UpdateLoopTest, FreshAgentInstallsTheReleaseFromNothing) {
  ASSERT_EQ(fleet_.PushRelease("app", "1.0.0", v1_).exit_code, 0);
  AgentHandle* agent = fleet_.StartAgent("fresh");
  ASSERT_TRUE(agent->process->Start().ok());
  // The agent manages `app` but nothing is installed yet: a rollout still
  // targets it, and it joins when it connects.
  std::string rollout_id = CreateRollout("1.0.0");
  ASSERT_FALSE(rollout_id.empty());
  absl::StatusOr<v1::Rollout> rollout =
      fleet_.WaitForRolloutEnd(rollout_id, absl::Seconds(60));
  ASSERT_TRUE(rollout.ok()) << rollout.status();
  EXPECT_EQ(rollout->counts().healthy(), 1);
  EXPECT_TRUE(WaitFor([&] { return agent->Runs("1.0.0"); }, absl::Seconds(10)));
}

TEST_F(UpdateLoopTest, TamperedArtifactIsRefusedAndOldProgramKeepsRunning) {
  ASSERT_EQ(fleet_.PushRelease("app", "1.0.0", v1_).exit_code, 0);
  StartAgentsOnV1();
  WaitForAgentsReporting("1.0.0");
  ASSERT_EQ(fleet_.PushRelease("app", "1.1.0", v2_).exit_code, 0);

  // Corrupt the stored blob behind the controller's back: the bytes agents
  // download no longer match the signed digest.
  const std::string hex = FileDigestHex(v2_);
  const std::string blob = fleet_.controller_data_dir() + "/blobs/sha256/" +
                           hex.substr(0, 2) + "/" + hex;
  ASSERT_TRUE(PathExists(blob)) << blob;
  absl::StatusOr<std::string> bytes = ReadFile(blob);
  ASSERT_TRUE(bytes.ok());
  std::string tampered = *bytes;
  tampered[tampered.size() / 2] ^= 0x01;
  ASSERT_TRUE(WriteFileAtomically(blob, tampered).ok());

  std::string rollout_id = CreateRollout("1.1.0");
  absl::StatusOr<v1::Rollout> rollout =
      fleet_.WaitForRolloutEnd(rollout_id, absl::Seconds(60));
  ASSERT_TRUE(rollout.ok()) << rollout.status();
  EXPECT_EQ(rollout->counts().failed(), kAgents);
  for (const v1::RolloutTarget& target : rollout->targets()) {
    EXPECT_EQ(target.state(), v1::TARGET_STATE_FAILED);
    EXPECT_FALSE(target.error().empty());
  }
  const std::string v1_digest = FileDigestHex(v1_);
  for (AgentHandle* agent : fleet_.agents()) {
    EXPECT_EQ(FileDigestHex(agent->exec_path), v1_digest) << agent->name;
    EXPECT_TRUE(agent->Runs("1.0.0")) << agent->name;
  }
}

TEST_F(UpdateLoopTest, AgentPinnedToAnotherKeyRefusesTheRelease) {
  ASSERT_EQ(fleet_.PushRelease("app", "1.0.0", v1_).exit_code, 0);
  // An agent that trusts a different key: the controller's releases are
  // "wrongly signed" from its point of view.
  absl::StatusOr<Ed25519PrivateKey> other = Ed25519PrivateKey::Generate();
  ASSERT_TRUE(other.ok());
  const std::string other_pub = fleet_.dir() + "/other.pub";
  ASSERT_TRUE(other->PublicKey().WritePemFile(other_pub).ok());
  AgentHandle* agent = fleet_.StartAgent("pinned", "app", {}, other_pub);
  ASSERT_TRUE(fleet_.Preinstall(agent, v1_).ok());
  ASSERT_TRUE(agent->process->Start().ok());
  ASSERT_TRUE(WaitFor([&] { return agent->Runs("1.0.0"); }, absl::Seconds(30)));
  ASSERT_EQ(fleet_.PushRelease("app", "1.1.0", v2_).exit_code, 0);

  std::string rollout_id = CreateRollout("1.1.0");
  absl::StatusOr<v1::Rollout> rollout =
      fleet_.WaitForRolloutEnd(rollout_id, absl::Seconds(60));
  ASSERT_TRUE(rollout.ok()) << rollout.status();
  ASSERT_EQ(rollout->targets_size(), 1);
  EXPECT_EQ(rollout->targets(0).state(), v1::TARGET_STATE_FAILED);
  EXPECT_EQ(FileDigestHex(agent->exec_path), FileDigestHex(v1_));
  EXPECT_TRUE(agent->Runs("1.0.0"));
}

TEST_F(UpdateLoopTest, ProgramThatCrashesInHealthWindowIsRolledBack) {
  ASSERT_EQ(fleet_.PushRelease("app", "1.0.0", v1_).exit_code, 0);
  StartAgentsOnV1();
  WaitForAgentsReporting("1.0.0");
  std::string bad = fleet_.MakeSampleApp("1.2.0", /*crash=*/true);
  ASSERT_EQ(fleet_.PushRelease("app", "1.2.0", bad).exit_code, 0);

  std::string rollout_id = CreateRollout("1.2.0");
  absl::StatusOr<v1::Rollout> rollout =
      fleet_.WaitForRolloutEnd(rollout_id, absl::Seconds(90));
  ASSERT_TRUE(rollout.ok()) << rollout.status();
  for (const v1::RolloutTarget& target : rollout->targets()) {
    EXPECT_EQ(target.state(), v1::TARGET_STATE_ROLLED_BACK)
        << target.agent_id();
  }
  const std::string v1_digest = FileDigestHex(v1_);
  for (AgentHandle* agent : fleet_.agents()) {
    EXPECT_EQ(FileDigestHex(agent->exec_path), v1_digest) << agent->name;
    EXPECT_TRUE(
        WaitFor([&] { return agent->Runs("1.0.0"); }, absl::Seconds(15)))
        << agent->name;
  }
}

}  // namespace
}  // namespace fleet::testing
