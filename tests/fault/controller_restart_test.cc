// The controller is killed and restarted while an agent is in the middle of
// a download: the agent must resume from its partial file, not from byte 0.
// A failpoint freezes the agent (SIGSTOP) after two chunks, so the kill
// lands mid-transfer every time, on any machine speed.
#include <signal.h>

#include <algorithm>
#include <string>
#include <vector>

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

// An update of agent "a1" (1.0.0 -> 1.1.0, a kArtifactSize artifact) that
// froze itself (SIGSTOP, by failpoint) after its 2nd downloaded chunk.
struct FrozenDownload {
  AgentHandle* agent = nullptr;
  std::string v2;  // the new release's file
  uint64_t size = 0;
  std::string rollout_id;
  pid_t frozen = 0;  // the process that downloads (the worker)
};

// Starts the controller and the agent (with `agent_flags`), rolls 1.1.0
// out and waits until the download froze. Fatal failures end the test.
void StartFrozenDownload(FleetHarness& fleet,
                         const std::vector<std::string>& agent_flags,
                         FrozenDownload& out) {
  ASSERT_TRUE(fleet.StartController().ok()) << fleet.DumpLogs();
  const std::string v1 = fleet.MakeSampleApp("1.0.0");
  out.v2 = MakePaddedSampleApp(fleet, "1.1.0", kArtifactSize);
  ASSERT_FALSE(v1.empty());
  ASSERT_FALSE(out.v2.empty());
  ASSERT_EQ(fleet.PushRelease("app", "1.0.0", v1).exit_code, 0);
  ASSERT_EQ(fleet.PushRelease("app", "1.1.0", out.v2).exit_code, 0);
  absl::StatusOr<uint64_t> size = FileSize(out.v2);
  ASSERT_TRUE(size.ok());
  out.size = *size;

  const std::string marker = fleet.dir() + "/failpoint-fired";
  out.agent = fleet.StartAgent("a1", "app", agent_flags, "",
                               {{agent::kFailpointEnv, "download.chunk:2"},
                                {agent::kFailpointActionEnv, "stop"},
                                {agent::kFailpointMarkerEnv, marker}});
  ASSERT_TRUE(fleet.Preinstall(out.agent, v1).ok());
  ASSERT_TRUE(out.agent->process->Start().ok());
  ASSERT_TRUE(WaitForAgentReporting(fleet, "a1", "1.0.0", absl::Seconds(30)))
      << fleet.DumpLogs();
  std::string error;
  out.rollout_id = CreateRollout(fleet, "1.1.0", "", &error);
  ASSERT_FALSE(out.rollout_id.empty()) << error;

  // The marker names the process that froze.
  absl::StatusOr<FiredFailpoint> fired =
      AwaitFailpoint(marker, absl::Seconds(60));
  ASSERT_TRUE(fired.ok()) << fired.status() << fleet.DumpLogs();
  out.frozen = fired->pid;
  ASSERT_TRUE(
      WaitFor([&] { return IsStopped(out.frozen); }, absl::Seconds(10)));
}

// Waits for the update to end HEALTHY with 1.1.0's bytes running once and
// a complete, ordered event history; returns the controller's events.
std::vector<StoredEvent> ExpectHealthy(FleetHarness& fleet,
                                       const FrozenDownload& update,
                                       absl::Duration timeout) {
  absl::StatusOr<v1::RolloutTarget> target =
      WaitForOnlyTargetFinal(fleet, update.rollout_id, timeout);
  EXPECT_TRUE(target.ok()) << target.status() << fleet.DumpLogs();
  if (!target.ok()) return {};
  EXPECT_EQ(target->state(), v1::TARGET_STATE_HEALTHY) << target->DebugString();
  absl::StatusOr<Digest> want = Sha256OfFile(update.v2);
  EXPECT_TRUE(want.ok());
  if (!want.ok()) return {};
  EXPECT_EQ(ProgramProblems(*update.agent, "1.1.0", DigestToHex(*want),
                            absl::Seconds(30)),
            "");
  absl::StatusOr<std::vector<StoredEvent>> events =
      ControllerEvents(fleet.controller_data_dir(), "a1");
  EXPECT_TRUE(events.ok()) << events.status();
  if (!events.ok()) return {};
  EXPECT_EQ(
      EventProblems(*events, target->directive_id(), v1::UPDATE_PHASE_HEALTHY),
      "");
  return *std::move(events);
}

TEST(ControllerRestartTest, DownloadResumesFromThePartialFile) {
  FleetHarness fleet;
  FrozenDownload update;
  StartFrozenDownload(fleet, {}, update);
  if (HasFatalFailure()) return;
  fleet.KillController();
  ASSERT_TRUE(fleet.StartController().ok()) << fleet.DumpLogs();
  ASSERT_EQ(kill(update.frozen, SIGCONT), 0);

  const std::vector<StoredEvent> events =
      ExpectHealthy(fleet, update, absl::Seconds(90));
  // The first DOWNLOADING starts at 0; a later one (the retry after the
  // controller came back) starts from the bytes on disk, and the final
  // transfer fetched only the rest.
  int64_t resumed_at = 0, last_fetch = -1;
  bool first = true;
  for (const StoredEvent& e : events) {
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
  EXPECT_LT(resumed_at, static_cast<int64_t>(update.size));
  EXPECT_EQ(last_fetch, static_cast<int64_t>(update.size) - resumed_at);
}

// Slow retrieval: the controller freezes (SIGSTOP) mid-download; the
// agent's rate floor (64 KiB/s over 1 s here) cuts the stalled transfer,
// the retry with backoff finds it frozen too and is cut again, and once the
// controller runs again the download resumes from disk and the update
// completes.
TEST(ControllerRestartTest, StalledDownloadIsCutAndRetriedUntilItResumes) {
  FleetHarness fleet;
  FrozenDownload update;
  StartFrozenDownload(
      fleet,
      {"--download-min-rate", "65536", "--download-rate-window-seconds", "1"},
      update);
  if (HasFatalFailure()) return;
  AgentHandle* agent = update.agent;
  // Freeze the controller, let the agent run into the stall.
  const pid_t controller = ControllerPid(fleet.controller_data_dir());
  ASSERT_NE(controller, 0);
  ASSERT_EQ(kill(controller, SIGSTOP), 0);
  ASSERT_EQ(kill(update.frozen, SIGCONT), 0);
  const bool cut = WaitFor(
      [&] { return absl::StrContains(agent->process->ReadLog(), "stalled"); },
      absl::Seconds(30));
  absl::SleepFor(absl::Seconds(2));  // a retry or two against the frozen one
  ASSERT_EQ(kill(controller, SIGCONT), 0);
  ASSERT_TRUE(cut) << "the stalled transfer was never cut" << fleet.DumpLogs();

  const std::vector<StoredEvent> events =
      ExpectHealthy(fleet, update, absl::Seconds(120));
  int downloading = 0;
  int64_t resumed_at = 0;
  for (const StoredEvent& e : events) {
    if (e.phase != v1::UPDATE_PHASE_DOWNLOADING) continue;
    ++downloading;
    resumed_at = std::max(resumed_at, e.bytes);
  }
  EXPECT_GE(downloading, 2) << "no retry was reported";
  EXPECT_GT(resumed_at, 0);
  EXPECT_LT(resumed_at, static_cast<int64_t>(update.size));
}

}  // namespace
}  // namespace fleet::testing
