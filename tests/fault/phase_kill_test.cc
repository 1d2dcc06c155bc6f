// Deterministic kills: the agent is killed with a real SIGKILL by a
// failpoint (agent/failpoint.h) at one phase of an update, restarted, and
// must end with a complete program (old or new, as the phase dictates),
// exactly one instance running, one final outcome at the controller and
// every event stored once. One case per phase; also a bad release that
// crashes in the health window, with and without a kill while rolling back.
#include <signal.h>
#include <sys/wait.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "agent/failpoint.h"
#include "common/files.h"
#include "common/sha256.h"
#include "gtest/gtest.h"
#include "tests/fault/fault_checks.h"
#include "tests/testing/fleet_harness.h"

namespace fleet::testing {
namespace {

using P = v1::UpdatePhase;
constexpr P kReceived = v1::UPDATE_PHASE_RECEIVED;
constexpr P kDownloading = v1::UPDATE_PHASE_DOWNLOADING;
constexpr P kDownloaded = v1::UPDATE_PHASE_DOWNLOADED;
constexpr P kVerified = v1::UPDATE_PHASE_VERIFIED;
constexpr P kStaged = v1::UPDATE_PHASE_STAGED;
constexpr P kSwapped = v1::UPDATE_PHASE_SWAPPED;
constexpr P kRestarted = v1::UPDATE_PHASE_RESTARTED;
constexpr P kHealthy = v1::UPDATE_PHASE_HEALTHY;
constexpr P kRolledBack = v1::UPDATE_PHASE_ROLLED_BACK;

// The new release is a padded sample program of this size, so a transfer
// takes several chunks (64 KiB to 1 MiB each, as the controller sends).
constexpr size_t kNewReleaseSize = 4 << 20;

struct PhaseCase {
  const char* name;       // the name of the phase
  const char* failpoint;  // FLEET_AGENT_FAILPOINT; "" for no kill
  bool bad_release;       // 1.1.0 crashes at once (fails the health window)
  bool ends_on_new;       // the update commits (else it is rolled back)
  std::vector<P> phases;  // every phase the controller must have stored
};

const std::vector<P> kAllPhases = {kReceived,  kDownloading, kDownloaded,
                                   kVerified,  kStaged,      kSwapped,
                                   kRestarted, kHealthy};

std::vector<PhaseCase> Cases() {
  return {
      {"downloading_start", "journaled.DOWNLOADING", false, true, kAllPhases},
      {"downloading_mid", "download.chunk:2", false, true, kAllPhases},
      {"downloaded", "journaled.DOWNLOADED", false, true, kAllPhases},
      {"verified", "journaled.VERIFIED", false, true, kAllPhases},
      {"staged", "journaled.STAGED", false, true, kAllPhases},
      // SWAPPED is journaled before the rename, its event sent after it: a
      // kill on either side of the rename rolls back without that event.
      {"swapping",
       "journaled.SWAPPED",
       false,
       false,
       {kReceived, kDownloading, kDownloaded, kVerified, kStaged, kRolledBack}},
      {"swapped",
       "swap.renamed",
       false,
       false,
       {kReceived, kDownloading, kDownloaded, kVerified, kStaged, kRolledBack}},
      // The new program is started, the health window open.
      {"restarted_health_window",
       "journaled.RESTARTED",
       false,
       false,
       {kReceived, kDownloading, kDownloaded, kVerified, kStaged, kSwapped,
        kRestarted, kRolledBack}},
      // HEALTHY journaled, the backup not yet removed.
      {"committing", "journaled.HEALTHY", false, true, kAllPhases},
      // The supervisor dies the instant it started the new version (before
      // its pidfile names it): the program dies with it, the worker too;
      // the next supervisor rolls back and starts the old one, once.
      {"supervisor_starting_new_program",
       "supervisor.spawned.program:2",
       false,
       false,
       {kReceived, kDownloading, kDownloaded, kVerified, kStaged, kSwapped,
        kRolledBack}},
      {"bad_release_rolls_back",
       "",
       true,
       false,
       {kReceived, kDownloading, kDownloaded, kVerified, kStaged, kSwapped,
        kRestarted, kRolledBack}},
      {"rolling_back",
       "rollback.restored",
       true,
       false,
       {kReceived, kDownloading, kDownloaded, kVerified, kStaged, kSwapped,
        kRestarted, kRolledBack}},
      {"rolled_back",
       "journaled.ROLLED_BACK",
       true,
       false,
       {kReceived, kDownloading, kDownloaded, kVerified, kStaged, kSwapped,
        kRestarted, kRolledBack}},
  };
}

class PhaseKillTest : public ::testing::TestWithParam<PhaseCase> {
 protected:
  void TearDown() override {
    if (HasFailure()) std::cerr << fleet_.DumpLogs();
  }
  FleetHarness fleet_;
};

TEST_P(PhaseKillTest, AgentKilledAtPhaseEndsCompleteAndReportedOnce) {
  const PhaseCase& c = GetParam();
  ASSERT_TRUE(fleet_.StartController().ok()) << fleet_.DumpLogs();
  const std::string v1 = fleet_.MakeSampleApp("1.0.0");
  const std::string v2 =
      MakePaddedSampleApp(fleet_, "1.1.0", kNewReleaseSize, c.bad_release);
  ASSERT_FALSE(v1.empty());
  ASSERT_FALSE(v2.empty());
  ASSERT_EQ(fleet_.PushRelease("app", "1.0.0", v1).exit_code, 0);
  RunResult push = fleet_.PushRelease("app", "1.1.0", v2);
  ASSERT_EQ(push.exit_code, 0) << push.err;

  const std::string marker = fleet_.dir() + "/failpoint-fired";
  std::map<std::string, std::string> env;
  if (*c.failpoint != '\0') {
    env = {{agent::kFailpointEnv, c.failpoint},
           {agent::kFailpointMarkerEnv, marker}};
  }
  AgentHandle* agent = fleet_.StartAgent("a1", "app", {}, "", env);
  ASSERT_TRUE(fleet_.Preinstall(agent, v1).ok());
  ASSERT_TRUE(agent->process->Start().ok());
  ASSERT_TRUE(WaitForAgentReporting(fleet_, "a1", "1.0.0", absl::Seconds(30)))
      << "agent never reported 1.0.0";

  std::string error;
  const std::string rollout_id = CreateRollout(fleet_, "1.1.0", "", &error);
  ASSERT_FALSE(rollout_id.empty()) << error;

  if (*c.failpoint != '\0') {
    absl::Status killed = AwaitFailpointKillAndRestart(
        *agent, marker, c.failpoint, absl::Seconds(60));
    ASSERT_TRUE(killed.ok()) << killed;
  }

  absl::StatusOr<v1::RolloutTarget> target =
      WaitForOnlyTargetFinal(fleet_, rollout_id, absl::Seconds(90));
  ASSERT_TRUE(target.ok()) << target.status();
  EXPECT_EQ(target->state(), c.ends_on_new ? v1::TARGET_STATE_HEALTHY
                                           : v1::TARGET_STATE_ROLLED_BACK)
      << target->DebugString();

  absl::StatusOr<Digest> want = Sha256OfFile(c.ends_on_new ? v2 : v1);
  ASSERT_TRUE(want.ok());
  EXPECT_EQ(ProgramProblems(*agent, c.ends_on_new ? "1.1.0" : "1.0.0",
                            DigestToHex(*want), absl::Seconds(30)),
            "");

  absl::StatusOr<std::vector<StoredEvent>> events =
      ControllerEvents(fleet_.controller_data_dir(), "a1");
  ASSERT_TRUE(events.ok()) << events.status();
  EXPECT_EQ(EventProblems(*events, target->directive_id(),
                          c.ends_on_new ? kHealthy : kRolledBack, c.phases),
            "");
  if (!c.ends_on_new && *c.failpoint == '\0') {
    // Not killed: the rollback names the health window as the cause.
    ASSERT_FALSE(events->empty());
    EXPECT_EQ(events->back().error_class, "health") << events->back().error;
  }
}

INSTANTIATE_TEST_SUITE_P(EveryPhase, PhaseKillTest,
                         ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<PhaseCase>& info) {
                           return std::string(info.param.name);
                         });

}  // namespace
}  // namespace fleet::testing
