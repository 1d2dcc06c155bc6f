// Staged rollouts end to end: a real fleet-controller, 20 real fleet-agent
// processes each managing a real program, and the real fleetctl binary.
// Each case checks what the agents journaled and what runs on them, not
// only what the controller says:
//   - a 4-stage rollout reaches stage k+1 only after every target of stage
//     k is final and the bake time passed (agents' journal timestamps);
//   - `fleetctl rollout pause` stops new directives, `resume` finishes;
//   - a bad release trips the failure gate: paused, blacklisted, and every
//     agent that took it ends on the previous version, running;
//   - a controller SIGKILLed mid-rollout and restarted on the same data dir
//     finishes with every target counted once and no agent updated twice;
//   - `fleetctl rollout abort --rollback` leads every updated agent back.
#include <grpcpp/grpcpp.h>
#include <sys/wait.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/files.h"
#include "common/sha256.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/fleet_harness.h"

namespace fleet::testing {
namespace {

constexpr int kAgents = 20;
constexpr char kOld[] = "1.0.0";
constexpr char kNew[] = "1.1.0";

std::string FileDigestHex(const std::string& path) {
  absl::StatusOr<Digest> digest = Sha256OfFile(path);
  return digest.ok() ? DigestToHex(*digest) : "";
}

bool IsFinal(v1::TargetState state) {
  return state == v1::TARGET_STATE_HEALTHY ||
         state == v1::TARGET_STATE_FAILED ||
         state == v1::TARGET_STATE_ROLLED_BACK ||
         state == v1::TARGET_STATE_SKIPPED;
}

// The exit code of a finished fleetctl, -1 if it did not exit in time.
int ExitCode(Subprocess* process, absl::Duration timeout) {
  std::optional<int> status = process->Wait(timeout);
  if (!status || !WIFEXITED(*status)) return -1;
  return WEXITSTATUS(*status);
}

class RolloutE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fleet_.StartController().ok()) << fleet_.DumpLogs();
    old_ = fleet_.MakeSampleApp(kOld);
    new_ = fleet_.MakeSampleApp(kNew);
    ASSERT_FALSE(old_.empty());
    ASSERT_FALSE(new_.empty());
    ASSERT_EQ(fleet_.PushRelease("app", kOld, old_).exit_code, 0);
    for (int i = 0; i < kAgents; ++i) {
      AgentHandle* agent = fleet_.StartAgent(absl::StrCat("agent-", i));
      ASSERT_TRUE(fleet_.Preinstall(agent, old_).ok());
      ASSERT_TRUE(agent->process->Start().ok());
      agents_[agent->name] = agent;
    }
    for (AgentHandle* agent : fleet_.agents()) {
      ASSERT_TRUE(WaitFor([&] { return agent->Runs(kOld); }, absl::Seconds(60)))
          << agent->name << " never ran " << kOld << "\n"
          << fleet_.DumpLogs();
    }
    // The controller must know every agent runs the old version, or the
    // rollout would start with fewer targets.
    ASSERT_TRUE(WaitFor([&] { return AgentsReporting(kOld) == kAgents; },
                        absl::Seconds(60)))
        << AgentsReporting(kOld) << " of " << kAgents << " agents report "
        << kOld;
  }

  void TearDown() override {
    if (HasFailure()) std::cerr << fleet_.DumpLogs();
  }

  int AgentsReporting(const std::string& version) {
    grpc::ClientContext ctx;
    v1::ListAgentsResponse resp;
    if (!fleet_.admin().ListAgents(&ctx, v1::ListAgentsRequest(), &resp).ok()) {
      return -1;
    }
    int n = 0;
    for (const v1::Agent& a : resp.agents()) {
      for (const v1::InstalledProduct& p : a.installed()) {
        if (a.connected() && p.product() == "app" && p.version() == version) {
          ++n;
        }
      }
    }
    return n;
  }

  // `fleetctl -o json rollout create --product app ARGS...`; the id.
  std::string CreateRollout(std::vector<std::string> args) {
    std::vector<std::string> argv = {"-o",     "json",      "rollout",
                                     "create", "--product", "app"};
    argv.insert(argv.end(), args.begin(), args.end());
    RunResult r = fleet_.Fleetctl(argv);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    nlohmann::json j = nlohmann::json::parse(r.out, nullptr, false);
    if (j.is_discarded() || !j.contains("rollout_id")) return "";
    EXPECT_EQ(j["counts"]["total"], kAgents) << r.out;
    return j["rollout_id"].get<std::string>();
  }

  v1::Rollout GetRollout(const std::string& id) {
    grpc::ClientContext ctx;
    v1::GetRolloutRequest req;
    req.set_rollout_id(id);
    v1::Rollout rollout;
    grpc::Status s = fleet_.admin().GetRollout(&ctx, req, &rollout);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return rollout;
  }

  int CountTargets(const v1::Rollout& r, v1::TargetState state) {
    return static_cast<int>(std::count_if(
        r.targets().begin(), r.targets().end(),
        [&](const v1::RolloutTarget& t) { return t.state() == state; }));
  }

  // Waits until at least `n` targets are HEALTHY; the rollout then.
  v1::Rollout WaitForHealthy(const std::string& id, int n) {
    v1::Rollout r;
    EXPECT_TRUE(WaitFor(
        [&] {
          r = GetRollout(id);
          return CountTargets(r, v1::TARGET_STATE_HEALTHY) >= n;
        },
        absl::Seconds(60)))
        << "fewer than " << n << " healthy targets:\n"
        << r.DebugString();
    return r;
  }

  // The agent's journaled directives of rollout `id`.
  std::vector<JournalUpdate> UpdatesOf(const AgentHandle* agent,
                                       const std::string& id) {
    absl::StatusOr<std::vector<JournalUpdate>> all = agent->JournalUpdates();
    EXPECT_TRUE(all.ok()) << agent->name << ": " << all.status();
    std::vector<JournalUpdate> out;
    if (!all.ok()) return out;
    for (const JournalUpdate& u : *all) {
      if (u.rollout_id == id) out.push_back(u);
    }
    return out;
  }

  // Every target final and HEALTHY, each agent counted once, each agent
  // journaled exactly one directive of the rollout (no agent updated twice)
  // and runs the new version.
  void ExpectCompletedOnce(const std::string& id) {
    absl::StatusOr<v1::Rollout> r =
        fleet_.WaitForRolloutEnd(id, absl::Seconds(120));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->state(), v1::ROLLOUT_STATE_COMPLETED) << r->DebugString();
    EXPECT_EQ(r->counts().total(), static_cast<uint32_t>(kAgents));
    EXPECT_EQ(r->counts().healthy(), static_cast<uint32_t>(kAgents));
    ASSERT_EQ(r->targets_size(), kAgents);
    std::set<std::string> seen;
    for (const v1::RolloutTarget& t : r->targets()) {
      EXPECT_TRUE(seen.insert(t.agent_id()).second)
          << t.agent_id() << " is a target twice";
      EXPECT_EQ(t.state(), v1::TARGET_STATE_HEALTHY) << t.agent_id();
      EXPECT_EQ(t.from_version(), kOld) << t.agent_id();
    }
    const std::string new_digest = FileDigestHex(new_);
    for (AgentHandle* agent : fleet_.agents()) {
      std::vector<JournalUpdate> updates = UpdatesOf(agent, id);
      ASSERT_EQ(updates.size(), 1u)
          << agent->name << " journaled " << updates.size()
          << " directives of the rollout";
      EXPECT_EQ(updates[0].to_version, kNew) << agent->name;
      EXPECT_EQ(updates[0].state, "HEALTHY") << agent->name;
      EXPECT_TRUE(WaitFor([&] { return agent->Runs(kNew); }, absl::Seconds(10)))
          << agent->name << " does not run " << kNew;
      EXPECT_EQ(FileDigestHex(agent->exec_path), new_digest) << agent->name;
    }
  }

  FleetHarness fleet_;
  std::map<std::string, AgentHandle*> agents_;
  std::string old_, new_;
};

TEST_F(RolloutE2eTest, FourStagesCompleteInOrderAfterBakeTime) {
  ASSERT_EQ(fleet_.PushRelease("app", kNew, new_).exit_code, 0);
  const std::string id =
      CreateRollout({"--version", kNew, "--stages", "5,25,50,100", "--bake",
                     "1s", "--max-failure-rate", "10%", "--min-samples", "3"});
  ASSERT_FALSE(id.empty());
  // An operator's live view, off a terminal: one line per change, exit 0.
  const std::string watch_log = fleet_.dir() + "/watch.log";
  Subprocess* watch = fleet_.StartFleetctl(
      {"rollout", "status", id, "--watch", "--interval", "200ms"}, watch_log);
  ASSERT_NE(watch, nullptr);

  ExpectCompletedOnce(id);
  EXPECT_EQ(ExitCode(watch, absl::Seconds(15)), 0)
      << ReadFile(watch_log).value_or("");
  const std::string watched = ReadFile(watch_log).value_or("");
  EXPECT_TRUE(absl::StrContains(
      watched, "stage 4/4 (100%) [####################] 100% 20/20 final"))
      << watched;
  EXPECT_TRUE(absl::StrContains(watched, "running, stage 1/4 (5%)") ||
              absl::StrContains(watched, "running, stage 2/4 (25%)"))
      << watched;

  // From the agents' own journals: stage k+1's first directive arrived only
  // after the last target of stages <= k finished, plus the bake time.
  const v1::Rollout r = GetRollout(id);
  std::map<uint32_t, std::pair<int64_t, int64_t>> window;  // first, last
  for (const v1::RolloutTarget& t : r.targets()) {
    std::vector<JournalUpdate> updates = UpdatesOf(agents_[t.agent_id()], id);
    ASSERT_EQ(updates.size(), 1u) << t.agent_id();
    auto [it, inserted] = window.try_emplace(t.stage(), updates[0].created_ms,
                                             updates[0].updated_ms);
    if (!inserted) {
      it->second.first = std::min(it->second.first, updates[0].created_ms);
      it->second.second = std::max(it->second.second, updates[0].updated_ms);
    }
  }
  ASSERT_GE(window.size(), 2u) << "the cohorts put every agent in one stage";
  int64_t last_final = -1;
  for (const auto& [stage, first_last] : window) {
    if (last_final >= 0) {
      EXPECT_GE(first_last.first - last_final, 1000)
          << "stage " << stage + 1 << " got its first directive "
          << first_last.first - last_final
          << " ms after the last target of an earlier stage finished";
    }
    last_final = std::max(last_final, first_last.second);
  }
}

TEST_F(RolloutE2eTest, PauseStopsNewDirectivesAndResumeFinishes) {
  ASSERT_EQ(fleet_.PushRelease("app", kNew, new_).exit_code, 0);
  const std::string id =
      CreateRollout({"--version", kNew, "--max-in-flight", "2"});
  ASSERT_FALSE(id.empty());
  WaitForHealthy(id, 2);

  RunResult pause =
      fleet_.Fleetctl({"rollout", "pause", id, "--reason", "e2e hold"});
  ASSERT_EQ(pause.exit_code, 0) << pause.err;
  EXPECT_TRUE(absl::StrContains(pause.out, "paused")) << pause.out;
  // No directive leaves after the pause, so whatever is not PENDING now was
  // directed before it.
  const v1::Rollout at_pause = GetRollout(id);
  EXPECT_EQ(at_pause.state(), v1::ROLLOUT_STATE_PAUSED);
  EXPECT_TRUE(absl::StrContains(at_pause.state_reason(), "e2e hold"))
      << at_pause.state_reason();
  std::set<std::string> directed;
  for (const v1::RolloutTarget& t : at_pause.targets()) {
    if (t.state() != v1::TARGET_STATE_PENDING) directed.insert(t.agent_id());
  }
  ASSERT_LT(directed.size(), static_cast<size_t>(kAgents))
      << "every target was directed before the pause; nothing to hold";

  // Updates in flight finish and are counted...
  v1::Rollout held;
  ASSERT_TRUE(WaitFor(
      [&] {
        held = GetRollout(id);
        for (const v1::RolloutTarget& t : held.targets()) {
          if (directed.count(t.agent_id()) && !IsFinal(t.state())) return false;
        }
        return true;
      },
      absl::Seconds(60)))
      << held.DebugString();
  // ...and for a while longer (several health windows) nobody else starts.
  absl::SleepFor(absl::Seconds(4));
  held = GetRollout(id);
  EXPECT_EQ(held.state(), v1::ROLLOUT_STATE_PAUSED);
  EXPECT_EQ(held.counts().in_flight(), 0u);
  EXPECT_EQ(held.counts().healthy(), directed.size());
  EXPECT_EQ(held.counts().pending(), kAgents - directed.size());
  for (const v1::RolloutTarget& t : held.targets()) {
    if (directed.count(t.agent_id())) continue;
    EXPECT_EQ(t.state(), v1::TARGET_STATE_PENDING) << t.agent_id();
    EXPECT_TRUE(UpdatesOf(agents_[t.agent_id()], id).empty())
        << t.agent_id() << " received a directive while paused";
    EXPECT_TRUE(agents_[t.agent_id()]->Runs(kOld)) << t.agent_id();
  }

  RunResult resume = fleet_.Fleetctl({"rollout", "resume", id});
  ASSERT_EQ(resume.exit_code, 0) << resume.err;
  ExpectCompletedOnce(id);
}

TEST_F(RolloutE2eTest, BadReleaseTripsTheGateAndEveryAgentEndsOnThePrevious) {
  constexpr char kBad[] = "1.2.0";
  const std::string bad = fleet_.MakeCrashWhereMarkedApp(kBad);
  ASSERT_FALSE(bad.empty());
  ASSERT_EQ(fleet_.PushRelease("app", kBad, bad).exit_code, 0);
  const std::string id =
      CreateRollout({"--version", kBad, "--max-in-flight", "2",
                     "--max-failure-rate", "20%", "--min-samples", "4",
                     "--on-failure", "pause", "--blacklist-on-failure"});
  ASSERT_FALSE(id.empty());
  const std::string watch_log = fleet_.dir() + "/watch.log";
  Subprocess* watch = fleet_.StartFleetctl(
      {"rollout", "status", id, "--watch", "--interval", "200ms"}, watch_log);
  ASSERT_NE(watch, nullptr);

  // The first agents take the bad version and report it HEALTHY (it only
  // crashes under conditions they do not have); from now on it crashes on
  // every agent that has not finished it yet.
  v1::Rollout early = WaitForHealthy(id, 2);
  std::set<std::string> healthy_on_bad;
  for (const v1::RolloutTarget& t : early.targets()) {
    if (t.state() == v1::TARGET_STATE_HEALTHY) {
      healthy_on_bad.insert(t.agent_id());
    } else {
      ASSERT_TRUE(agents_[t.agent_id()]->MarkCrash(kBad).ok());
    }
  }

  // The gate trips: paused with a gate reason, the version blacklisted.
  v1::Rollout tripped;
  ASSERT_TRUE(WaitFor(
      [&] {
        tripped = GetRollout(id);
        return tripped.state() != v1::ROLLOUT_STATE_RUNNING;
      },
      absl::Seconds(90)))
      << tripped.DebugString();
  EXPECT_EQ(tripped.state(), v1::ROLLOUT_STATE_PAUSED);
  EXPECT_TRUE(absl::StartsWith(tripped.state_reason(), "gate:"))
      << tripped.state_reason();
  EXPECT_GE(tripped.counts().failed(), 1u);
  EXPECT_EQ(ExitCode(watch, absl::Seconds(15)), 4)
      << ReadFile(watch_log).value_or("");
  {
    grpc::ClientContext ctx;
    v1::ListBlacklistRequest req;
    req.set_product("app");
    v1::ListBlacklistResponse resp;
    ASSERT_TRUE(fleet_.admin().ListBlacklist(&ctx, req, &resp).ok());
    ASSERT_EQ(resp.entries_size(), 1);
    EXPECT_EQ(resp.entries(0).version(), kBad);
    EXPECT_EQ(resp.entries(0).created_by(), "gate:" + id);
  }

  // Agents whose bad version crashed rolled back on their own (health
  // window); the ones that reported it HEALTHY are led back by the
  // controller with a ROLLBACK directive. Either way every agent that took
  // the bad version ends on the previous one, running, with its bytes.
  const std::string old_digest = FileDigestHex(old_);
  int took_bad = 0;
  for (AgentHandle* agent : fleet_.agents()) {
    EXPECT_TRUE(WaitFor(
        [&] {
          return agent->Runs(kOld) &&
                 FileDigestHex(agent->exec_path) == old_digest;
        },
        absl::Seconds(60)))
        << agent->name << " is not back on " << kOld
        << (healthy_on_bad.count(agent->name)
                ? " (it reported the bad version HEALTHY: needs leading back)"
                : "");
    absl::StatusOr<std::vector<JournalUpdate>> updates =
        agent->JournalUpdates();
    ASSERT_TRUE(updates.ok()) << updates.status();
    bool took = false;
    for (const JournalUpdate& u : *updates) took |= u.to_version == kBad;
    took_bad += took;
    if (healthy_on_bad.count(agent->name)) {
      // Its last directive leads it back, and it commits (HEALTHY).
      JournalUpdate last;
      EXPECT_TRUE(WaitFor(
          [&] {
            absl::StatusOr<std::vector<JournalUpdate>> now =
                agent->JournalUpdates();
            if (!now.ok() || now->empty()) return false;
            last = now->back();
            return last.state == "HEALTHY";
          },
          absl::Seconds(30)))
          << agent->name << " last directive " << last.directive_id << " is "
          << last.state;
      EXPECT_EQ(last.kind, v1::DIRECTIVE_KIND_ROLLBACK) << agent->name;
      EXPECT_EQ(last.to_version, kOld) << agent->name;
    }
  }
  EXPECT_GE(took_bad, 3);
}

TEST_F(RolloutE2eTest, ControllerKilledMidRolloutFinishesCountingEachOnce) {
  ASSERT_EQ(fleet_.PushRelease("app", kNew, new_).exit_code, 0);
  const std::string id =
      CreateRollout({"--version", kNew, "--max-in-flight", "3"});
  ASSERT_FALSE(id.empty());
  const std::string watch_log = fleet_.dir() + "/watch.log";
  Subprocess* watch = fleet_.StartFleetctl(
      {"rollout", "status", id, "--watch", "--interval", "200ms"}, watch_log);
  ASSERT_NE(watch, nullptr);

  const v1::Rollout before = WaitForHealthy(id, 3);
  ASSERT_GT(CountTargets(before, v1::TARGET_STATE_PENDING), 0)
      << before.DebugString();
  fleet_.KillController();
  absl::SleepFor(absl::Milliseconds(500));
  ASSERT_TRUE(fleet_.StartController().ok()) << fleet_.DumpLogs();

  ExpectCompletedOnce(id);
  // The watch rode out the restart.
  EXPECT_EQ(ExitCode(watch, absl::Seconds(15)), 0)
      << ReadFile(watch_log).value_or("");
}

TEST_F(RolloutE2eTest, AbortWithRollbackLeadsUpdatedAgentsBack) {
  ASSERT_EQ(fleet_.PushRelease("app", kNew, new_).exit_code, 0);
  const std::string id =
      CreateRollout({"--version", kNew, "--max-in-flight", "2"});
  ASSERT_FALSE(id.empty());
  WaitForHealthy(id, 3);
  const std::string watch_log = fleet_.dir() + "/watch.log";
  Subprocess* watch = fleet_.StartFleetctl(
      {"rollout", "status", id, "--watch", "--interval", "200ms"}, watch_log);
  ASSERT_NE(watch, nullptr);

  RunResult abort = fleet_.Fleetctl(
      {"rollout", "abort", id, "--rollback", "--reason", "e2e revert"});
  ASSERT_EQ(abort.exit_code, 0) << abort.err;
  EXPECT_TRUE(absl::StrContains(abort.out, "rolled back")) << abort.out;
  // The watch follows the reverts and ends, aborted, once none is left.
  EXPECT_EQ(ExitCode(watch, absl::Seconds(90)), 3)
      << ReadFile(watch_log).value_or("");

  const std::string old_digest = FileDigestHex(old_);
  int took_new = 0;
  for (AgentHandle* agent : fleet_.agents()) {
    EXPECT_TRUE(WaitFor(
        [&] {
          return agent->Runs(kOld) &&
                 FileDigestHex(agent->exec_path) == old_digest;
        },
        absl::Seconds(60)))
        << agent->name << " is not back on " << kOld;
    absl::StatusOr<std::vector<JournalUpdate>> updates =
        agent->JournalUpdates();
    ASSERT_TRUE(updates.ok()) << updates.status();
    bool installed_new = false;
    for (const JournalUpdate& u : *updates) {
      installed_new |= u.to_version == kNew && u.state == "HEALTHY";
    }
    if (!installed_new) continue;
    ++took_new;
    ASSERT_FALSE(updates->empty());
    const JournalUpdate& last = updates->back();
    EXPECT_EQ(last.kind, v1::DIRECTIVE_KIND_ROLLBACK) << agent->name;
    EXPECT_EQ(last.to_version, kOld) << agent->name;
    EXPECT_EQ(last.state, "HEALTHY") << agent->name;
  }
  EXPECT_GE(took_new, 3);

  const v1::Rollout r = GetRollout(id);
  EXPECT_EQ(r.state(), v1::ROLLOUT_STATE_ABORTED);
  EXPECT_EQ(r.counts().reverting(), 0u);
  EXPECT_GE(r.counts().reverted(), static_cast<uint32_t>(took_new));
  EXPECT_EQ(r.counts().revert_failed(), 0u) << r.DebugString();
}

}  // namespace
}  // namespace fleet::testing
