#include "agent/failpoint.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

#include "absl/strings/match.h"
#include "common/files.h"
#include "gtest/gtest.h"

namespace fleet::agent {
namespace {

// Runs `reach` in a forked child whose environment holds `spec` (and
// `marker`, if not empty) and returns the child's wait status. The child
// exits 0 if it survives.
int RunChild(const std::string& spec, const std::string& marker,
             void (*reach)()) {
  pid_t pid = fork();
  if (pid == 0) {
    setenv(kFailpointEnv, spec.c_str(), 1);
    if (!marker.empty()) setenv(kFailpointMarkerEnv, marker.c_str(), 1);
    reach();
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return status;
}

bool KilledBySigkill(int status) {
  return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
}

void ReachSwapOnce() { Failpoint("journaled.SWAPPED"); }
void ReachOtherPoints() {
  Failpoint("journaled.STAGED");
  Failpoint("journaled.SWAPPED:1");
}
void ReachStagedThreeTimes() {
  for (int i = 0; i < 3; ++i) Failpoint("journaled.STAGED");
}

TEST(FailpointTest, InertWithoutTheVariable) {
  pid_t pid = fork();
  if (pid == 0) {
    unsetenv(kFailpointEnv);
    Failpoint("journaled.SWAPPED");
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST(FailpointTest, ArmedPointKillsWithSigkill) {
  EXPECT_TRUE(
      KilledBySigkill(RunChild("journaled.SWAPPED", "", ReachSwapOnce)));
}

TEST(FailpointTest, OtherPointsDoNotFire) {
  const int status = RunChild("journaled.SWAPPED", "", ReachOtherPoints);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST(FailpointTest, FiresAtTheNthOccurrenceOnly) {
  EXPECT_TRUE(KilledBySigkill(
      RunChild("journaled.STAGED:3", "", ReachStagedThreeTimes)));
  const int survived =
      RunChild("journaled.STAGED:4", "", ReachStagedThreeTimes);
  EXPECT_TRUE(WIFEXITED(survived) && WEXITSTATUS(survived) == 0);
}

TEST(FailpointTest, StopActionFreezesTheProcessUntilSigcont) {
  pid_t pid = fork();
  if (pid == 0) {
    setenv(kFailpointEnv, "download.chunk:2", 1);
    setenv(kFailpointActionEnv, "stop", 1);
    for (int i = 0; i < 3; ++i) Failpoint("download.chunk");
    _exit(7);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, WUNTRACED), pid);
  ASSERT_TRUE(WIFSTOPPED(status));
  kill(pid, SIGCONT);
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 7);
}

TEST(FailpointTest, MarkerMakesItFireOnceAcrossProcesses) {
  const std::string marker =
      JoinPath(getenv("TEST_TMPDIR"), "failpoint-marker");
  (void)RemoveFile(marker);
  EXPECT_TRUE(
      KilledBySigkill(RunChild("journaled.SWAPPED", marker, ReachSwapOnce)));
  absl::StatusOr<std::string> written = ReadFile(marker);
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_TRUE(absl::StartsWith(*written, "journaled.SWAPPED ")) << *written;
  // A restarted process with the same environment runs on.
  const int again = RunChild("journaled.SWAPPED", marker, ReachSwapOnce);
  EXPECT_TRUE(WIFEXITED(again) && WEXITSTATUS(again) == 0);
}

}  // namespace
}  // namespace fleet::agent
