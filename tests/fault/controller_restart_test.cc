// The controller is killed and restarted while an agent is in the middle of
// a download: the agent must resume from its partial file, not from byte 0.
// A failpoint freezes the agent (SIGSTOP) after two chunks, so the kill
// lands mid-transfer every time, on any machine speed.
#include <signal.h>

#include <algorithm>
#include <string>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "agent/failpoint.h"
#include "common/files.h"
#include "common/sha256.h"
#include "gtest/gtest.h"
#include "tests/fault/fault_checks.h"
#include "tests/testing/fleet_harness.h"

namespace fleet::testing {
namespace {

constexpr size_t kArtifactSize = 24 << 20;

TEST(ControllerRestartTest, DownloadResumesFromThePartialFile) {
  FleetHarness fleet;
  ASSERT_TRUE(fleet.StartController().ok()) << fleet.DumpLogs();
  const std::string v1 = fleet.MakeSampleApp("1.0.0");
  const std::string v2 = MakePaddedSampleApp(fleet, "1.1.0", kArtifactSize);
  ASSERT_FALSE(v1.empty());
  ASSERT_FALSE(v2.empty());
  ASSERT_EQ(fleet.PushRelease("app", "1.0.0", v1).exit_code, 0);
  ASSERT_EQ(fleet.PushRelease("app", "1.1.0", v2).exit_code, 0);
  absl::StatusOr<uint64_t> size = FileSize(v2);
  ASSERT_TRUE(size.ok());

  const std::string marker = fleet.dir() + "/failpoint-fired";
  AgentHandle* agent =
      fleet.StartAgent("a1", "app", {}, "",
                       {{agent::kFailpointEnv, "download.chunk:2"},
                        {agent::kFailpointActionEnv, "stop"},
                        {agent::kFailpointMarkerEnv, marker}});
  ASSERT_TRUE(fleet.Preinstall(agent, v1).ok());
  ASSERT_TRUE(agent->process->Start().ok());
  ASSERT_TRUE(WaitForAgentReporting(fleet, "a1", "1.0.0", absl::Seconds(30)))
      << fleet.DumpLogs();
  std::string error;
  const std::string rollout_id = CreateRollout(fleet, "1.1.0", "", &error);
  ASSERT_FALSE(rollout_id.empty()) << error;

  // The process that downloads (the worker, under a supervisor) froze
  // itself after its 2nd chunk; the marker names it.
  absl::StatusOr<FiredFailpoint> fired =
      AwaitFailpoint(marker, absl::Seconds(60));
  ASSERT_TRUE(fired.ok()) << fired.status() << fleet.DumpLogs();
  const pid_t frozen = fired->pid;
  ASSERT_TRUE(WaitFor([&] { return IsStopped(frozen); }, absl::Seconds(10)));
  fleet.KillController();
  ASSERT_TRUE(fleet.StartController().ok()) << fleet.DumpLogs();
  ASSERT_EQ(kill(frozen, SIGCONT), 0);

  absl::StatusOr<v1::RolloutTarget> target =
      WaitForOnlyTargetFinal(fleet, rollout_id, absl::Seconds(90));
  ASSERT_TRUE(target.ok()) << target.status() << fleet.DumpLogs();
  EXPECT_EQ(target->state(), v1::TARGET_STATE_HEALTHY) << target->DebugString();
  absl::StatusOr<Digest> want = Sha256OfFile(v2);
  ASSERT_TRUE(want.ok());
  EXPECT_EQ(
      ProgramProblems(*agent, "1.1.0", DigestToHex(*want), absl::Seconds(30)),
      "");

  absl::StatusOr<std::vector<StoredEvent>> events =
      ControllerEvents(fleet.controller_data_dir(), "a1");
  ASSERT_TRUE(events.ok()) << events.status();
  EXPECT_EQ(
      EventProblems(*events, target->directive_id(), v1::UPDATE_PHASE_HEALTHY),
      "");
  // The first DOWNLOADING starts at 0; a later one (the retry after the
  // controller came back) starts from the bytes on disk, and the final
  // transfer fetched only the rest.
  int64_t resumed_at = 0, last_fetch = -1;
  bool first = true;
  for (const StoredEvent& e : *events) {
    if (e.phase == v1::UPDATE_PHASE_DOWNLOADING) {
      if (first) {
        EXPECT_EQ(e.bytes, 0);
      } else {
        resumed_at = std::max(resumed_at, e.bytes);
      }
      first = false;
    }
    if (e.phase == v1::UPDATE_PHASE_DOWNLOADED) last_fetch = e.bytes;
  }
  // At least the two chunks written before the freeze (64 KiB or more each).
  EXPECT_GE(resumed_at, 2 * 64 * 1024) << "no DOWNLOADING event resumed";
  EXPECT_LT(resumed_at, static_cast<int64_t>(*size));
  EXPECT_EQ(last_fetch, static_cast<int64_t>(*size) - resumed_at);
}

// Slow retrieval: the controller freezes (SIGSTOP) mid-download; the
// agent's rate floor (64 KiB/s over 1 s here) cuts the stalled transfer,
// the retry with backoff finds it frozen too and is cut again, and once the
// controller runs again the download resumes from disk and the update
// completes.
TEST(ControllerRestartTest, StalledDownloadIsCutAndRetriedUntilItResumes) {
  FleetHarness fleet;
  ASSERT_TRUE(fleet.StartController().ok()) << fleet.DumpLogs();
  const std::string v1 = fleet.MakeSampleApp("1.0.0");
  const std::string v2 = MakePaddedSampleApp(fleet, "1.1.0", kArtifactSize);
  ASSERT_FALSE(v1.empty());
  ASSERT_FALSE(v2.empty());
  ASSERT_EQ(fleet.PushRelease("app", "1.0.0", v1).exit_code, 0);
  ASSERT_EQ(fleet.PushRelease("app", "1.1.0", v2).exit_code, 0);
  absl::StatusOr<uint64_t> size = FileSize(v2);
  ASSERT_TRUE(size.ok());

  const std::string marker = fleet.dir() + "/failpoint-fired";
  AgentHandle* agent = fleet.StartAgent(
      "a1", "app",
      {"--download-min-rate", "65536", "--download-rate-window-seconds", "1"},
      "",
      {{agent::kFailpointEnv, "download.chunk:2"},
       {agent::kFailpointActionEnv, "stop"},
       {agent::kFailpointMarkerEnv, marker}});
  ASSERT_TRUE(fleet.Preinstall(agent, v1).ok());
  ASSERT_TRUE(agent->process->Start().ok());
  ASSERT_TRUE(WaitForAgentReporting(fleet, "a1", "1.0.0", absl::Seconds(30)))
      << fleet.DumpLogs();
  std::string error;
  const std::string rollout_id = CreateRollout(fleet, "1.1.0", "", &error);
  ASSERT_FALSE(rollout_id.empty()) << error;

  absl::StatusOr<FiredFailpoint> fired =
      AwaitFailpoint(marker, absl::Seconds(60));
  ASSERT_TRUE(fired.ok()) << fired.status() << fleet.DumpLogs();
  ASSERT_TRUE(
      WaitFor([&] { return IsStopped(fired->pid); }, absl::Seconds(10)));
  // Freeze the controller, let the agent run into the stall.
  const pid_t controller = ControllerPid(fleet.controller_data_dir());
  ASSERT_NE(controller, 0);
  ASSERT_EQ(kill(controller, SIGSTOP), 0);
  ASSERT_EQ(kill(fired->pid, SIGCONT), 0);
  const bool cut = WaitFor(
      [&] { return absl::StrContains(agent->process->ReadLog(), "stalled"); },
      absl::Seconds(30));
  absl::SleepFor(absl::Seconds(2));  // a retry or two against the frozen one
  ASSERT_EQ(kill(controller, SIGCONT), 0);
  ASSERT_TRUE(cut) << "the stalled transfer was never cut" << fleet.DumpLogs();

  absl::StatusOr<v1::RolloutTarget> target =
      WaitForOnlyTargetFinal(fleet, rollout_id, absl::Seconds(120));
  ASSERT_TRUE(target.ok()) << target.status() << fleet.DumpLogs();
  EXPECT_EQ(target->state(), v1::TARGET_STATE_HEALTHY) << target->DebugString();
  absl::StatusOr<Digest> want = Sha256OfFile(v2);
  ASSERT_TRUE(want.ok());
  EXPECT_EQ(
      ProgramProblems(*agent, "1.1.0", DigestToHex(*want), absl::Seconds(30)),
      "");
  absl::StatusOr<std::vector<StoredEvent>> events =
      ControllerEvents(fleet.controller_data_dir(), "a1");
  ASSERT_TRUE(events.ok()) << events.status();
  EXPECT_EQ(
      EventProblems(*events, target->directive_id(), v1::UPDATE_PHASE_HEALTHY),
      "");
  int downloading = 0;
  int64_t resumed_at = 0;
  for (const StoredEvent& e : *events) {
    if (e.phase != v1::UPDATE_PHASE_DOWNLOADING) continue;
    ++downloading;
    resumed_at = std::max(resumed_at, e.bytes);
  }
  EXPECT_GE(downloading, 2) << "no retry was reported";
  EXPECT_GT(resumed_at, 0);
  EXPECT_LT(resumed_at, static_cast<int64_t>(*size));
}

}  // namespace
}  // namespace fleet::testing
