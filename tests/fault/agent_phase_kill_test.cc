// Kills at the phases of an agent self-update (the agent's own binary as
// the product), each by a failpoint (agent/failpoint.h) with a real
// SIGKILL of the role that reaches it; a killed supervisor is started
// again from AGENT_EXEC as systemd would (which is the new binary once it
// was renamed in). Every case must end with AGENT_EXEC and every running
// role holding the old or the new release whole, one supervisor, one
// worker, one program, one final outcome at the controller and every
// event stored once (tests/fault/self_update_case.h).
#include "gtest/gtest.h"
#include "tests/fault/self_update_case.h"

namespace fleet::testing {
namespace {

std::vector<SelfUpdateCase> Cases() {
  return {
      // Before the swap the agent's own binary is a download like any
      // other: the worker killed while downloading (second chunk of the
      // ~6 MB binary), or once DOWNLOADED, VERIFIED or STAGED is journaled,
      // is restarted by the supervisor and resumes; the update commits.
      {.name = "worker_killed_downloading",
       .failpoint = "download.chunk:2",
       .ends_on_new = true,
       .phases = AllSelfUpdatePhases()},
      {.name = "worker_killed_downloaded",
       .failpoint = "journaled.DOWNLOADED",
       .ends_on_new = true,
       .phases = AllSelfUpdatePhases()},
      {.name = "worker_killed_verified",
       .failpoint = "journaled.VERIFIED",
       .ends_on_new = true,
       .phases = AllSelfUpdatePhases()},
      {.name = "worker_killed_staged",
       .failpoint = "journaled.STAGED",
       .ends_on_new = true,
       .phases = AllSelfUpdatePhases()},
      // The supervisor with STATE/agent-trial written, before the rename:
      // the old binary is still in place; the next one only finishes.
      {.name = "supervisor_killed_trial_recorded",
       .failpoint = "agent-trial.recorded",
       .ends_on_new = false,
       .phases = RolledBackBeforeTrialPhases(),
       .supervisor_and_program_kept = false},
      // The supervisor asked to commit, before the commit point: the trial
      // record still stands, so the new binary is put back out.
      {.name = "supervisor_killed_committing",
       .failpoint = "agent-trial.committing",
       .ends_on_new = false,
       .phases = RolledBackInTrialPhases(),
       .supervisor_and_program_kept = false},
      // The old worker, SWAPPED journaled, before it asked for the trial:
      // the restarted worker finds the old binary in place.
      {.name = "old_worker_killed_at_swapping",
       .failpoint = "journaled.SWAPPED",
       .ends_on_new = false,
       .error_contains = "restarted during its self-update",
       .phases = RolledBackBeforeTrialPhases()},
      // The supervisor, right after renaming the new binary in: systemd
      // starts the new binary, which restores the old one and becomes it.
      {.name = "supervisor_killed_after_swap",
       .failpoint = "agent-trial.swapped",
       .ends_on_new = false,
       .error_contains = "restarted during the trial",
       .phases = RolledBackBeforeTrialPhases(),
       .supervisor_and_program_kept = false},
      // Rolling back: a new agent that crashes at start, and the
      // supervisor killed right after it renamed the backup back, before
      // it removed STATE/agent-trial: the next one finds the old binary in
      // place and only finishes the rollback.
      {.name = "supervisor_killed_while_rolling_back",
       .new_agent = NewAgent::kCrashes,
       .failpoint = "agent-trial.restored",
       .ends_on_new = false,
       .error_contains = "restarted during the trial",
       .phases = RolledBackBeforeTrialPhases(),
       .supervisor_and_program_kept = false},
      // The trial worker in its health window (RESTARTED journaled).
      {.name = "trial_worker_killed_in_trial",
       .failpoint = "journaled.RESTARTED",
       .ends_on_new = false,
       .error_contains = "before committing",
       .phases = RolledBackInTrialPhases()},
      // The supervisor right after the commit point (STATE/agent-trial
      // removed) and before its execve: the new binary stays.
      {.name = "supervisor_killed_after_commit",
       .failpoint = "agent-trial.committed",
       .ends_on_new = true,
       .phases = AllSelfUpdatePhases(),
       .supervisor_and_program_kept = false},
      // The committed worker right after journaling HEALTHY: the
      // re-executed supervisor starts a new one; nothing is undone.
      {.name = "worker_killed_after_healthy",
       .failpoint = "journaled.HEALTHY",
       .ends_on_new = true,
       .phases = AllSelfUpdatePhases()},
  };
}

class AgentPhaseKillTest : public ::testing::TestWithParam<SelfUpdateCase> {};

TEST_P(AgentPhaseKillTest, AgentKilledAtPhaseEndsOnOneCompleteAgent) {
  RunSelfUpdateCase(GetParam());
}

INSTANTIATE_TEST_SUITE_P(
    EverySelfUpdatePhase, AgentPhaseKillTest, ::testing::ValuesIn(Cases()),
    [](const ::testing::TestParamInfo<SelfUpdateCase>& info) {
      return std::string(info.param.name);
    });

}  // namespace
}  // namespace fleet::testing
