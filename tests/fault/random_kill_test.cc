// Randomised kills from outside: for each iteration a fresh agent (its own
// label, its own rollout) starts an update and is killed with SIGKILL after
// a random delay, then restarted. Whatever phase the kill hit, the update
// must end with a complete program, old or new as the outcome says, exactly
// one instance running, one final outcome, every event stored once.
//
// A second test does the same to an agent self-update (the agent's own
// binary as the product).
//
// Reproducible: the seed is printed; FLEET_FAULT_SEED=<seed> replays it.
// FLEET_FAULT_ITERATIONS (default 3) and FLEET_FAULT_SOAK_SECONDS (keep
// going until this much time has passed) make it a soak run; see README.md.
#include <signal.h>
#include <stdlib.h>

#include <iostream>
#include <memory>
#include <random>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/files.h"
#include "common/sha256.h"
#include "gtest/gtest.h"
#include "tests/fault/fault_checks.h"
#include "tests/testing/fleet_harness.h"

namespace fleet::testing {
namespace {

int64_t EnvInt(const char* name, int64_t fallback) {
  const char* value = getenv(name);
  int64_t n = 0;
  if (value == nullptr || !absl::SimpleAtoi(value, &n)) return fallback;
  return n;
}

// The pid in an agent pidfile ("PID START_TICKS", agent/supervisor.h), or 0.
pid_t ReadPidFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return 0;
  int pid = 0;
  const std::string first = text->substr(0, text->find(' '));
  return absl::SimpleAtoi(first, &pid) ? pid : 0;
}

// Which processes of the agent a kill hits: the supervisor (the pid the
// test started; with it go its children), its worker alone (restarted by the
// supervisor, the program keeps running), or both.
enum class Victim { kSupervisor, kWorker, kBoth };
const char* VictimName(Victim v) {
  switch (v) {
    case Victim::kSupervisor:
      return "supervisor";
    case Victim::kWorker:
      return "worker";
    case Victim::kBoth:
      return "supervisor+worker";
  }
  return "?";
}

// FLEET_FAULT_SEED, or a new seed from the clock; printed and recorded in
// test.xml so a failure can be replayed.
uint64_t SeedForThisRun() {
  const uint64_t seed = static_cast<uint64_t>(
      EnvInt("FLEET_FAULT_SEED", absl::ToUnixNanos(absl::Now()) & 0x7fffffff));
  std::cerr << "FLEET_FAULT_SEED=" << seed << " (set it to replay this run)\n";
  ::testing::Test::RecordProperty("FLEET_FAULT_SEED", std::to_string(seed));
  return seed;
}

// The agent's final phase a final target state stands for.
v1::UpdatePhase FinalPhaseOf(v1::TargetState state) {
  switch (state) {
    case v1::TARGET_STATE_HEALTHY:
      return v1::UPDATE_PHASE_HEALTHY;
    case v1::TARGET_STATE_ROLLED_BACK:
      return v1::UPDATE_PHASE_ROLLED_BACK;
    default:
      return v1::UPDATE_PHASE_FAILED;
  }
}

// An update takes about 1.5 s here (download, swap, 1 s health window):
// kills are spread over a little more than that.
constexpr int kMaxKillDelayMs = 2500;

TEST(RandomKillTest, UpdateSurvivesAKillAtARandomMoment) {
  const uint64_t seed = SeedForThisRun();
  const int64_t iterations = EnvInt("FLEET_FAULT_ITERATIONS", 3);
  const absl::Duration soak =
      absl::Seconds(EnvInt("FLEET_FAULT_SOAK_SECONDS", 0));
  std::mt19937_64 rng(seed);

  FleetHarness fleet;
  ASSERT_TRUE(fleet.StartController().ok()) << fleet.DumpLogs();
  const std::string v1 = fleet.MakeSampleApp("1.0.0");
  const std::string v2 = MakePaddedSampleApp(fleet, "1.1.0", 8 << 20);
  ASSERT_FALSE(v1.empty());
  ASSERT_FALSE(v2.empty());
  ASSERT_EQ(fleet.PushRelease("app", "1.0.0", v1).exit_code, 0);
  ASSERT_EQ(fleet.PushRelease("app", "1.1.0", v2).exit_code, 0);
  absl::StatusOr<Digest> v1_digest = Sha256OfFile(v1);
  absl::StatusOr<Digest> v2_digest = Sha256OfFile(v2);
  ASSERT_TRUE(v1_digest.ok() && v2_digest.ok());

  const absl::Time start = absl::Now();
  for (int64_t i = 0; i < iterations || absl::Now() - start < soak; ++i) {
    const int delay_ms =
        std::uniform_int_distribution<int>(0, kMaxKillDelayMs)(rng);
    const Victim victim =
        static_cast<Victim>(std::uniform_int_distribution<int>(0, 2)(rng));
    const std::string name = absl::StrCat("r", i);
    SCOPED_TRACE(absl::StrCat("iteration ", i, ", agent ", name, ", kill ",
                              VictimName(victim), " after ", delay_ms,
                              " ms, FLEET_FAULT_SEED=", seed));
    AgentHandle* agent = fleet.StartAgent(
        name, "app", {"--label", absl::StrCat("iteration=", i)});
    ASSERT_TRUE(fleet.Preinstall(agent, v1).ok());
    ASSERT_TRUE(agent->process->Start().ok());
    ASSERT_TRUE(WaitForAgentReporting(fleet, name, "1.0.0", absl::Seconds(30)))
        << fleet.DumpLogs();

    std::string error;
    const std::string rollout_id =
        CreateRollout(fleet, "1.1.0", absl::StrCat("iteration=", i), &error);
    ASSERT_FALSE(rollout_id.empty()) << error;
    absl::SleepFor(absl::Milliseconds(delay_ms));
    // Single pids, never the process group: the program must go with the
    // supervisor (or be ended by the next one) on the agent's own account.
    const pid_t worker = ReadPidFile(agent->state_dir + "/worker.pid");
    if (victim != Victim::kSupervisor) {
      ASSERT_NE(worker, 0) << "no worker.pid: not a supervisor/worker agent";
      ASSERT_EQ(kill(worker, SIGKILL), 0);
    }
    if (victim != Victim::kWorker) {
      ASSERT_EQ(kill(agent->process->pid(), SIGKILL), 0);
      ASSERT_TRUE(agent->process->Wait(absl::Seconds(10)).has_value());
      ASSERT_TRUE(agent->process->Start().ok());
    }

    absl::StatusOr<v1::RolloutTarget> target =
        WaitForOnlyTargetFinal(fleet, rollout_id, absl::Seconds(90));
    ASSERT_TRUE(target.ok()) << target.status() << fleet.DumpLogs();
    const bool on_new = target->state() == v1::TARGET_STATE_HEALTHY;
    ASSERT_TRUE(on_new || target->state() == v1::TARGET_STATE_ROLLED_BACK ||
                target->state() == v1::TARGET_STATE_FAILED)
        << target->DebugString();
    std::cerr << "iteration " << i << ": killed " << VictimName(victim)
              << " after " << delay_ms << " ms -> "
              << v1::TargetState_Name(target->state()) << "\n";

    EXPECT_EQ(ProgramProblems(*agent, on_new ? "1.1.0" : "1.0.0",
                              DigestToHex(on_new ? *v2_digest : *v1_digest),
                              absl::Seconds(30)),
              "");
    absl::StatusOr<std::vector<StoredEvent>> events =
        ControllerEvents(fleet.controller_data_dir(), name);
    ASSERT_TRUE(events.ok()) << events.status();
    EXPECT_EQ(EventProblems(*events, target->directive_id(),
                            FinalPhaseOf(target->state())),
              "");
    if (HasFailure()) {
      std::cerr << fleet.DumpLogs();
      return;
    }
    agent->process->Kill();  // its program too; the next iteration is alone
  }
}

// The same for the agent's own binary: a fresh controller per iteration
// (the rollout of product fleet-agent targets every agent it knows), one
// self-updating agent, a kill at a random moment of its self-update
// (download, trial, commit or the re-exec after it). Whatever it hit, the
// agent must end on the old or the new binary whole in every role, the
// program untouched and running once, one final outcome, every event once.
// FLEET_FAULT_AGENT_ITERATIONS (default 2) sets how many.
constexpr int kMaxAgentKillDelayMs = 4000;

TEST(RandomKillTest, AgentSelfUpdateSurvivesAKillAtARandomMoment) {
  const uint64_t seed = SeedForThisRun();
  const int64_t iterations = EnvInt("FLEET_FAULT_AGENT_ITERATIONS", 2);
  const absl::Duration soak =
      absl::Seconds(EnvInt("FLEET_FAULT_SOAK_SECONDS", 0));
  std::mt19937_64 rng(seed);

  const absl::Time start = absl::Now();
  for (int64_t i = 0; i < iterations || absl::Now() - start < soak; ++i) {
    const int delay_ms =
        std::uniform_int_distribution<int>(0, kMaxAgentKillDelayMs)(rng);
    const Victim victim =
        static_cast<Victim>(std::uniform_int_distribution<int>(0, 2)(rng));
    SCOPED_TRACE(absl::StrCat("iteration ", i, ", kill ", VictimName(victim),
                              " after ", delay_ms,
                              " ms, FLEET_FAULT_SEED=", seed));
    FleetHarness fleet;
    ASSERT_TRUE(fleet.StartController().ok()) << fleet.DumpLogs();
    const std::string program = fleet.MakeSampleApp("1.0.0");
    ASSERT_FALSE(program.empty());
    ASSERT_EQ(fleet.PushRelease("app", "1.0.0", program).exit_code, 0);
    const std::string new_agent = MakeNewAgentBinary(fleet, "0.2.0");
    ASSERT_FALSE(new_agent.empty());
    ASSERT_EQ(fleet.PushRelease(kAgentProduct, "0.2.0", new_agent).exit_code,
              0);
    std::unique_ptr<AgentHandle> agent = MakeSelfUpdatingAgent(
        fleet, "a1",
        {"--agent-trial-seconds", "30", "--worker-stop-grace-seconds", "5"});
    ASSERT_NE(agent, nullptr);
    absl::StatusOr<Digest> old_digest = Sha256OfFile(AgentBinary(*agent));
    absl::StatusOr<Digest> new_digest = Sha256OfFile(new_agent);
    absl::StatusOr<Digest> program_digest = Sha256OfFile(program);
    ASSERT_TRUE(old_digest.ok() && new_digest.ok() && program_digest.ok());
    ASSERT_TRUE(fleet.Preinstall(agent.get(), program).ok());
    ASSERT_TRUE(agent->process->Start().ok());
    ASSERT_TRUE(WaitForAgentReporting(fleet, "a1", "1.0.0", absl::Seconds(30)))
        << fleet.DumpLogs();

    std::string error;
    const std::string rollout_id =
        CreateProductRollout(fleet, kAgentProduct, "0.2.0", &error);
    ASSERT_FALSE(rollout_id.empty()) << error;
    absl::SleepFor(absl::Milliseconds(delay_ms));
    const pid_t worker = RolePid(*agent, "worker");
    if (victim != Victim::kSupervisor && worker != 0) kill(worker, SIGKILL);
    if (victim != Victim::kWorker) {
      // Killed and started again from AGENT_EXEC, as systemd would: the
      // new binary if it was renamed in.
      agent->process->Kill();
      ASSERT_TRUE(agent->process->Start().ok());
    }

    absl::StatusOr<v1::RolloutTarget> target =
        WaitForOnlyTargetFinal(fleet, rollout_id, absl::Seconds(90));
    ASSERT_TRUE(target.ok())
        << target.status() << fleet.DumpLogs() << agent->process->ReadLog();
    const bool on_new = target->state() == v1::TARGET_STATE_HEALTHY;
    ASSERT_TRUE(on_new || target->state() == v1::TARGET_STATE_ROLLED_BACK ||
                target->state() == v1::TARGET_STATE_FAILED)
        << target->DebugString();
    std::cerr << "agent iteration " << i << ": killed " << VictimName(victim)
              << " after " << delay_ms << " ms -> "
              << v1::TargetState_Name(target->state()) << "\n";

    EXPECT_EQ(
        AgentProblems(*agent, DigestToHex(on_new ? *new_digest : *old_digest),
                      absl::Seconds(30)),
        "");
    EXPECT_EQ(ProgramProblems(*agent, "1.0.0", DigestToHex(*program_digest),
                              absl::Seconds(30)),
              "");
    absl::StatusOr<std::vector<StoredEvent>> events =
        ControllerEvents(fleet.controller_data_dir(), "a1");
    ASSERT_TRUE(events.ok()) << events.status();
    EXPECT_EQ(EventProblems(*events, target->directive_id(),
                            FinalPhaseOf(target->state())),
              "");
    if (HasFailure()) {
      std::cerr << fleet.DumpLogs() << "--- agent a1 ---\n"
                << agent->process->ReadLog();
      return;
    }
  }
}

}  // namespace
}  // namespace fleet::testing
