#include "tests/fault/self_update_case.h"

#include <signal.h>

#include <iostream>
#include <map>
#include <memory>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/failpoint.h"
#include "common/files.h"
#include "common/sha256.h"
#include "gtest/gtest.h"
#include "tests/fault/fault_checks.h"
#include "tests/testing/fleet_harness.h"

namespace fleet::testing {

using P = v1::UpdatePhase;

std::vector<P> AllSelfUpdatePhases() {
  return {v1::UPDATE_PHASE_RECEIVED,   v1::UPDATE_PHASE_DOWNLOADING,
          v1::UPDATE_PHASE_DOWNLOADED, v1::UPDATE_PHASE_VERIFIED,
          v1::UPDATE_PHASE_STAGED,     v1::UPDATE_PHASE_SWAPPED,
          v1::UPDATE_PHASE_RESTARTED,  v1::UPDATE_PHASE_HEALTHY};
}

std::vector<P> RolledBackBeforeTrialPhases() {
  return {v1::UPDATE_PHASE_RECEIVED,   v1::UPDATE_PHASE_DOWNLOADING,
          v1::UPDATE_PHASE_DOWNLOADED, v1::UPDATE_PHASE_VERIFIED,
          v1::UPDATE_PHASE_STAGED,     v1::UPDATE_PHASE_ROLLED_BACK};
}

std::vector<P> RolledBackInTrialPhases() {
  return {v1::UPDATE_PHASE_RECEIVED,   v1::UPDATE_PHASE_DOWNLOADING,
          v1::UPDATE_PHASE_DOWNLOADED, v1::UPDATE_PHASE_VERIFIED,
          v1::UPDATE_PHASE_STAGED,     v1::UPDATE_PHASE_SWAPPED,
          v1::UPDATE_PHASE_RESTARTED,  v1::UPDATE_PHASE_ROLLED_BACK};
}

namespace {

std::string HexOf(const std::string& path) {
  absl::StatusOr<Digest> digest = Sha256OfFile(path);
  return digest.ok() ? DigestToHex(*digest) : "";
}

// The bad new agent binaries: signed releases like any other, but no
// fleet-agent inside.
std::string MakeBadAgent(FleetHarness& fleet, NewAgent kind) {
  const std::string out = fleet.dir() + "/programs/fleet-agent-bad";
  const std::string script =
      kind == NewAgent::kCrashes
          ? "#!/bin/sh\necho 'bad agent release: crashing at start' >&2\n"
            "exit 1\n"
          : "#!/bin/sh\necho 'bad agent release: hanging' >&2\n"
            "exec sleep 600\n";
  if (!MakeDirs(fleet.dir() + "/programs").ok() ||
      !WriteFileAtomically(out, script, 0755).ok()) {
    return "";
  }
  return out;
}

}  // namespace

void RunSelfUpdateCase(const SelfUpdateCase& c) {
  FleetHarness fleet;
  std::unique_ptr<AgentHandle> agent;
  absl::Cleanup dump = [&] {
    if (!::testing::Test::HasFailure()) return;
    std::cerr << fleet.DumpLogs();
    if (agent != nullptr) {
      std::cerr << "--- self-updating agent " << agent->name << " ---\n"
                << agent->process->ReadLog();
    }
  };
  ASSERT_TRUE(fleet.StartController().ok()) << fleet.DumpLogs();
  const std::string program = fleet.MakeSampleApp("1.0.0");
  ASSERT_FALSE(program.empty());
  ASSERT_EQ(fleet.PushRelease("app", "1.0.0", program).exit_code, 0);
  const std::string new_agent = c.new_agent == NewAgent::kGood
                                    ? MakeNewAgentBinary(fleet, "0.2.0")
                                    : MakeBadAgent(fleet, c.new_agent);
  ASSERT_FALSE(new_agent.empty());
  RunResult push = fleet.PushRelease(kAgentProduct, "0.2.0", new_agent);
  ASSERT_EQ(push.exit_code, 0) << push.err;

  const std::string marker = fleet.dir() + "/failpoint-fired";
  std::map<std::string, std::string> env;
  if (*c.failpoint != '\0') {
    env = {{agent::kFailpointEnv, c.failpoint},
           {agent::kFailpointMarkerEnv, marker}};
    if (c.stop_then_kill_supervisor) env[agent::kFailpointActionEnv] = "stop";
  }
  // A hanging new agent is given a short window; the others a window a
  // busy machine cannot miss.
  const std::string window = c.new_agent == NewAgent::kHangs ? "3" : "30";
  agent = MakeSelfUpdatingAgent(
      fleet, "a1",
      {"--agent-trial-seconds", window, "--worker-stop-grace-seconds", "5"},
      env);
  ASSERT_NE(agent, nullptr);
  const std::string old_hex = HexOf(AgentBinary(*agent));
  const std::string new_hex = HexOf(new_agent);
  const std::string program_hex = HexOf(program);
  ASSERT_NE(old_hex, new_hex);
  ASSERT_TRUE(fleet.Preinstall(agent.get(), program).ok());
  ASSERT_TRUE(agent->process->Start().ok());
  ASSERT_TRUE(WaitForAgentReporting(fleet, "a1", "1.0.0", absl::Seconds(30)))
      << "agent never reported app 1.0.0";
  ASSERT_TRUE(WaitForProductReported(fleet, "a1", kAgentProduct, "0.1.0",
                                     old_hex, absl::Seconds(30)))
      << "agent never reported its own binary";
  const pid_t supervisor = agent->process->pid();
  ASSERT_TRUE(WaitFor([&] { return RolePid(*agent, "program") != 0; },
                      absl::Seconds(10)));
  const pid_t program_pid = RolePid(*agent, "program");

  std::string error;
  const std::string rollout_id =
      CreateProductRollout(fleet, kAgentProduct, "0.2.0", &error);
  ASSERT_FALSE(rollout_id.empty()) << error;

  if (*c.failpoint != '\0') {
    if (c.stop_then_kill_supervisor) {
      absl::StatusOr<FiredFailpoint> fired =
          AwaitFailpoint(marker, absl::Seconds(60));
      ASSERT_TRUE(fired.ok()) << fired.status();
      ASSERT_TRUE(
          WaitFor([&] { return IsStopped(fired->pid); }, absl::Seconds(10)));
      agent->process->Kill();  // SIGKILL to supervisor and worker
      ASSERT_TRUE(agent->process->Start().ok());  // as systemd would
    } else {
      absl::Status killed = AwaitFailpointKillAndRestart(
          *agent, marker, c.failpoint, absl::Seconds(60));
      ASSERT_TRUE(killed.ok()) << killed;
    }
  }

  absl::StatusOr<v1::RolloutTarget> target =
      WaitForOnlyTargetFinal(fleet, rollout_id, absl::Seconds(90));
  ASSERT_TRUE(target.ok()) << target.status();
  EXPECT_EQ(target->state(), c.ends_on_new ? v1::TARGET_STATE_HEALTHY
                                           : v1::TARGET_STATE_ROLLED_BACK)
      << target->DebugString();

  // The agent binary on disk and in every running role is the old or the
  // new release, whole; the program was never touched.
  EXPECT_EQ(AgentProblems(*agent, c.ends_on_new ? new_hex : old_hex,
                          absl::Seconds(30)),
            "");
  EXPECT_EQ(ProgramProblems(*agent, "1.0.0", program_hex, absl::Seconds(30)),
            "");
  if (c.supervisor_and_program_kept) {
    EXPECT_TRUE(agent->process->running());
    EXPECT_EQ(RolePid(*agent, "supervisor"), supervisor);
    EXPECT_EQ(RolePid(*agent, "program"), program_pid);
  }
  if (c.ends_on_new) {
    EXPECT_TRUE(WaitForProductReported(fleet, "a1", kAgentProduct, "", new_hex,
                                       absl::Seconds(30)))
        << "Hello never reported the new agent binary";
  }

  absl::StatusOr<std::vector<StoredEvent>> events =
      ControllerEvents(fleet.controller_data_dir(), "a1");
  ASSERT_TRUE(events.ok()) << events.status();
  EXPECT_EQ(EventProblems(*events, target->directive_id(),
                          c.ends_on_new ? v1::UPDATE_PHASE_HEALTHY
                                        : v1::UPDATE_PHASE_ROLLED_BACK,
                          c.phases),
            "");
  if (!c.ends_on_new) {
    ASSERT_FALSE(events->empty());
    EXPECT_EQ(events->back().error_class, "agent-trial")
        << events->back().error;
    EXPECT_TRUE(absl::StrContains(events->back().error, c.error_contains))
        << events->back().error;
  }
}

}  // namespace fleet::testing
