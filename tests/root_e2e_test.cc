// Root metadata end to end, with the real fleet-controller, fleet-agent and
// fleetctl binaries (docs/security.md, "Release signing"):
//   - a controller and an agent pinned at root v1; `fleetctl keys root push`
//     of a cross-signed v2 (new root key, new release key) reaches the
//     connected agent, which keeps it in STATE/root.json; a v4 not signed
//     by the current root keys is refused;
//   - an agent pinned at v1 that was offline across two rotations catches
//     up from its Welcome (v2 then v3);
//   - releases then need the rotated release key, at the controller and on
//     the agent, which installs one signed with it;
//   - an agent whose pinned root has expired refuses an update with error
//     class "expired", stays connected, keeps running its program and
//     reports the expiry (ListAgents).
#include <grpcpp/grpcpp.h>

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/ed25519.h"
#include "common/files.h"
#include "common/root.h"
#include "common/testing/test_roots.h"
#include "gtest/gtest.h"
#include "tests/testing/fleet_harness.h"

namespace fleet::testing {
namespace {

Ed25519PrivateKey NewKey() { return *Ed25519PrivateKey::Generate(); }

class RootE2eTest : public ::testing::Test {
 protected:
  void TearDown() override {
    if (HasFailure()) std::cerr << fleet_.DumpLogs();
  }

  std::string WriteRoot(const std::string& name, const v1::SignedRoot& root) {
    const std::string path = JoinPath(fleet_.dir(), name);
    EXPECT_TRUE(WriteRootFile(path, root).ok());
    return path;
  }

  // The root version in an agent's STATE/root.json; 0 if none.
  static uint64_t StoredRootVersion(const AgentHandle* agent) {
    absl::StatusOr<v1::SignedRoot> root =
        LoadRootFile(JoinPath(agent->state_dir, "root.json"));
    if (!root.ok()) return 0;
    absl::StatusOr<v1::RootMetadata> metadata = ParseRootUnverified(*root);
    return metadata.ok() ? metadata->version() : 0;
  }

  std::optional<v1::Agent> GetAgent(const std::string& name) {
    grpc::ClientContext ctx;
    v1::ListAgentsResponse resp;
    if (!fleet_.admin().ListAgents(&ctx, v1::ListAgentsRequest(), &resp).ok()) {
      return std::nullopt;
    }
    for (const v1::Agent& a : resp.agents()) {
      if (a.agent_id() == name) return a;
    }
    return std::nullopt;
  }

  bool Connected(const std::string& name) {
    std::optional<v1::Agent> agent = GetAgent(name);
    return agent && agent->connected();
  }

  AgentHandle* StartAgent(const std::string& name, const std::string& root,
                          const std::string& program) {
    AgentHandle* agent = fleet_.StartAgent(name, "app", {"--trust-root", root});
    EXPECT_TRUE(fleet_.Preinstall(agent, program).ok());
    EXPECT_TRUE(agent->process->Start().ok());
    return agent;
  }

  FleetHarness fleet_;
};

TEST_F(RootE2eTest, RotationsReachConnectedAndOfflineAgentsInOrder) {
  Ed25519PrivateKey root_a = NewKey(), root_b = NewKey(), release_2 = NewKey();
  const Ed25519PrivateKey& release_1 = fleet_.release_key();
  const std::string v1_path =
      WriteRoot("root-v1.json", MakeTestRoot(1, root_a, release_1, {&root_a}));
  ASSERT_TRUE(fleet_
                  .StartController(
                      {"--trust-root", v1_path, "--heartbeat-seconds", "1"})
                  .ok())
      << fleet_.DumpLogs();
  const std::string old_app = fleet_.MakeSampleApp("1.0.0");
  const std::string new_app = fleet_.MakeSampleApp("1.1.0");
  ASSERT_EQ(fleet_.PushRelease("app", "1.0.0", old_app).exit_code, 0);

  AgentHandle* online = StartAgent("online", v1_path, old_app);
  ASSERT_TRUE(WaitFor([&] { return Connected("online"); }, absl::Seconds(60)));

  // v2: root key a hands over to b (both sign), release key 1 -> 2.
  const std::string v2_path = WriteRoot(
      "root-v2.json", MakeTestRoot(2, root_b, release_2, {&root_a, &root_b}));
  RunResult pushed = fleet_.Fleetctl({"keys", "root", "push", v2_path});
  ASSERT_EQ(pushed.exit_code, 0) << pushed.err;
  EXPECT_TRUE(absl::StrContains(pushed.out, "root v2 accepted")) << pushed.out;
  EXPECT_TRUE(absl::StrContains(pushed.out, "sent to 1")) << pushed.out;
  ASSERT_TRUE(WaitFor([&] { return StoredRootVersion(online) == 2; },
                      absl::Seconds(30)));

  // A v3 signed by the old root key only: v2's key b never approved it.
  const std::string forged_path = WriteRoot(
      "root-v3-forged.json", MakeTestRoot(3, root_a, release_1, {&root_a}));
  RunResult forged = fleet_.Fleetctl({"keys", "root", "push", forged_path});
  EXPECT_NE(forged.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(forged.err, "lacks signatures")) << forged.err;

  const std::string v3_path =
      WriteRoot("root-v3.json", MakeTestRoot(3, root_b, release_2, {&root_b}));
  pushed = fleet_.Fleetctl({"keys", "root", "push", v3_path});
  ASSERT_EQ(pushed.exit_code, 0) << pushed.err;
  ASSERT_TRUE(WaitFor([&] { return StoredRootVersion(online) == 3; },
                      absl::Seconds(30)));
  // Skipping ahead is refused too.
  const std::string v5_path =
      WriteRoot("root-v5.json", MakeTestRoot(5, root_b, release_2, {&root_b}));
  RunResult skipped = fleet_.Fleetctl({"keys", "root", "push", v5_path});
  EXPECT_NE(skipped.exit_code, 0);

  // An agent installed with v1 that was offline across both rotations.
  AgentHandle* late = StartAgent("late", v1_path, old_app);
  ASSERT_TRUE(
      WaitFor([&] { return StoredRootVersion(late) == 3; }, absl::Seconds(60)))
      << "late agent holds root v" << StoredRootVersion(late);
  ASSERT_TRUE(WaitFor(
      [&] {
        std::optional<v1::Agent> agent = GetAgent("late");
        return agent && agent->root_version() == 3;
      },
      absl::Seconds(30)));

  // Release key 1 is no longer trusted by the controller...
  RunResult old_key = fleet_.PushRelease("app", "1.1.0", new_app);
  EXPECT_NE(old_key.exit_code, 0);
  // ...key 2 is, and both agents install what it signed.
  const std::string key2_dir = JoinPath(fleet_.dir(), "release-2");
  ASSERT_TRUE(MakeDirs(key2_dir).ok());
  ASSERT_TRUE(WriteFileAtomically(JoinPath(key2_dir, "release.key"),
                                  release_2.ToPem(), 0600)
                  .ok());
  RunResult new_key = fleet_.Fleetctl(
      {"release", "push", "--product", "app", "--version", "1.1.0", "--file",
       new_app, "--key", JoinPath(key2_dir, "release.key")});
  ASSERT_EQ(new_key.exit_code, 0) << new_key.err;
  RunResult rollout = fleet_.Fleetctl(
      {"rollout", "create", "--product", "app", "--version", "1.1.0"});
  ASSERT_EQ(rollout.exit_code, 0) << rollout.err;
  for (AgentHandle* agent : {online, late}) {
    EXPECT_TRUE(
        WaitFor([&] { return agent->Runs("1.1.0"); }, absl::Seconds(60)))
        << agent->name << " does not run 1.1.0";
  }
}

TEST_F(RootE2eTest, ExpiredRootRefusesInstallsButTheAgentStaysAndReports) {
  // The controller trusts the release key directly (--trust-key), so the
  // release reaches the agent; only the agent's root has expired.
  ASSERT_TRUE(fleet_.StartController({"--heartbeat-seconds", "1"}).ok())
      << fleet_.DumpLogs();
  Ed25519PrivateKey root_a = NewKey();
  const absl::Time expired_at = absl::Now() - absl::Hours(1);
  const std::string expired_path = WriteRoot(
      "root-expired.json",
      MakeTestRoot(1, root_a, fleet_.release_key(), {&root_a}, expired_at));
  const std::string old_app = fleet_.MakeSampleApp("1.0.0");
  const std::string new_app = fleet_.MakeSampleApp("1.1.0");
  ASSERT_EQ(fleet_.PushRelease("app", "1.0.0", old_app).exit_code, 0);
  ASSERT_EQ(fleet_.PushRelease("app", "1.1.0", new_app).exit_code, 0);
  AgentHandle* agent = StartAgent("frozen", expired_path, old_app);
  ASSERT_TRUE(WaitFor([&] { return agent->Runs("1.0.0"); }, absl::Seconds(60)));

  // The controller sees the expired root from the heartbeats.
  ASSERT_TRUE(WaitFor(
      [&] {
        std::optional<v1::Agent> a = GetAgent("frozen");
        return a && a->root_version() == 1;
      },
      absl::Seconds(30)));
  EXPECT_EQ(GetAgent("frozen")->root_expires_unix_seconds(),
            absl::ToUnixSeconds(expired_at));

  RunResult rollout = fleet_.Fleetctl(
      {"rollout", "create", "--product", "app", "--version", "1.1.0"});
  ASSERT_EQ(rollout.exit_code, 0) << rollout.err;
  bool failed = WaitFor(
      [&] {
        absl::StatusOr<std::vector<JournalUpdate>> updates =
            agent->JournalUpdates();
        return updates.ok() && !updates->empty() &&
               updates->back().state == "FAILED";
      },
      absl::Seconds(60));
  ASSERT_TRUE(failed);
  EXPECT_TRUE(absl::StrContains(agent->process->ReadLog(), "\"expired\""))
      << "no update event with error_class expired in the agent's log";
  // Never uninstalls, never loses contact.
  absl::SleepFor(absl::Seconds(3));
  EXPECT_TRUE(agent->Runs("1.0.0"));
  EXPECT_TRUE(agent->process->running());
  EXPECT_TRUE(Connected("frozen"));
  // Warned once, not per heartbeat.
  const std::string log = agent->process->ReadLog();
  size_t warnings = 0;
  for (size_t at = log.find("root of trust expired"); at != std::string::npos;
       at = log.find("root of trust expired", at + 1)) {
    ++warnings;
  }
  EXPECT_GE(warnings, 1u);
  EXPECT_LE(warnings, 2u) << "warned per heartbeat";
}

}  // namespace
}  // namespace fleet::testing
