// Agent self-update with real binaries, real processes and real
// signatures (docs/ARCHITECTURE.md, "Agent self-update"): a good new agent
// commits (same supervisor pid, program untouched, the new binary running
// in both roles); a new agent that crashes at start or hangs before
// connecting is swapped back and reported; a supervisor SIGKILLed during
// the trial comes back as the old binary. Kills at every phase are in
// tests/fault/agent_phase_kill_test.cc.
#include "gtest/gtest.h"
#include "tests/fault/self_update_case.h"

namespace fleet::testing {
namespace {

std::vector<SelfUpdateCase> Cases() {
  return {
      {.name = "good_new_agent_commits",
       .new_agent = NewAgent::kGood,
       .ends_on_new = true,
       .phases = AllSelfUpdatePhases()},
      {.name = "new_agent_crashing_at_start_is_swapped_back",
       .new_agent = NewAgent::kCrashes,
       .ends_on_new = false,
       .error_contains = "exited",
       .phases = RolledBackBeforeTrialPhases()},
      {.name = "new_agent_hanging_before_connecting_is_swapped_back",
       .new_agent = NewAgent::kHangs,
       .ends_on_new = false,
       .error_contains = "trial window",
       .phases = RolledBackBeforeTrialPhases()},
      // The trial worker is frozen right before it asks to commit; the
      // supervisor and it are SIGKILLed; systemd starts AGENT_EXEC, which
      // is the new binary: it must restore and become the old one.
      {.name = "supervisor_killed_during_trial_restarts_as_old_agent",
       .new_agent = NewAgent::kGood,
       .failpoint = "agent-trial.acked",
       .stop_then_kill_supervisor = true,
       .ends_on_new = false,
       .error_contains = "restarted during the trial",
       .phases = RolledBackInTrialPhases(),
       .supervisor_and_program_kept = false},
  };
}

class AgentSelfUpdateTest : public ::testing::TestWithParam<SelfUpdateCase> {};

TEST_P(AgentSelfUpdateTest, EndsOnOneCompleteAgentReportedOnce) {
  RunSelfUpdateCase(GetParam());
}

INSTANTIATE_TEST_SUITE_P(
    NewAgents, AgentSelfUpdateTest, ::testing::ValuesIn(Cases()),
    [](const ::testing::TestParamInfo<SelfUpdateCase>& info) {
      return std::string(info.param.name);
    });

}  // namespace
}  // namespace fleet::testing
