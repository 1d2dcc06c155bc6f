#include "agent/platform/process.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/files.h"
#include "gtest/gtest.h"

namespace fleet::agent {
namespace {

class ProgramSupervisorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = JoinPath(
        getenv("TEST_TMPDIR"),
        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    ASSERT_TRUE(RemoveTree(dir_).ok());
    ASSERT_TRUE(MakeDirs(dir_).ok());
  }

  std::string Script(const std::string& name, const std::string& body) {
    std::string path = JoinPath(dir_, name);
    EXPECT_TRUE(
        WriteFileAtomically(path, "#!/bin/sh\n" + body + "\n", 0755).ok());
    return path;
  }

  std::string dir_;
};

bool WaitFor(const std::function<bool()>& done,
             absl::Duration timeout = absl::Seconds(10)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (done()) return true;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return done();
}

std::string ReadOrEmpty(const std::string& path) {
  absl::StatusOr<std::string> data = ReadFile(path);
  return data.ok() ? *data : "";
}

TEST_F(ProgramSupervisorTest, StartsProgramWithArgsAndEnvironment) {
  const std::string out = JoinPath(dir_, "out");
  ProgramSpec spec;
  spec.path =
      Script("app", "echo \"$1 $2 $FLEET_VERSION $$\" > " + out + ".tmp; mv " +
                        out + ".tmp " + out + "; exec sleep 30");
  spec.args = {"hello", "world"};
  spec.env = {{"FLEET_VERSION", "1.2.3"}};
  ProgramSupervisor program(spec);
  ASSERT_TRUE(program.Start().ok());
  ASSERT_TRUE(WaitFor([&] { return !ReadOrEmpty(out).empty(); }));

  ProgramState state = program.state();
  EXPECT_EQ(ReadOrEmpty(out),
            absl::StrCat("hello world 1.2.3 ", state.pid, "\n"));
  EXPECT_TRUE(state.wanted);
  EXPECT_EQ(state.runs, 1u);
  EXPECT_EQ(state.restarts, 0u);
  // Its own process group, so a stop reaches its children too.
  EXPECT_EQ(getpgid(state.pid), state.pid);

  ASSERT_TRUE(program.Stop(absl::Seconds(5)).ok());
  EXPECT_EQ(program.state().pid, 0);
  EXPECT_NE(kill(state.pid, 0), 0);
}

TEST_F(ProgramSupervisorTest, RestartsAfterCrashWithGrowingBackoff) {
  const std::string log = JoinPath(dir_, "runs");
  ProgramSpec spec;
  spec.path = Script("crasher", "echo run >> " + log + "; exit 7");
  RestartPolicy policy;
  policy.initial_backoff = absl::Milliseconds(200);
  policy.max_backoff = absl::Milliseconds(800);
  ProgramSupervisor program(spec, policy);

  std::vector<absl::Time> starts;
  uint64_t seen = 0;
  ASSERT_TRUE(program.Start().ok());
  const absl::Time deadline = absl::Now() + absl::Seconds(15);
  while (starts.size() < 5 && absl::Now() < deadline) {
    uint64_t runs = program.state().runs;
    if (runs != seen) {
      seen = runs;
      starts.push_back(absl::Now());
    }
    absl::SleepFor(absl::Milliseconds(5));
  }
  ASSERT_EQ(starts.size(), 5u);
  ProgramState state = program.state();
  EXPECT_GE(state.restarts, 4u);
  EXPECT_EQ(state.last_exit, "exit status 7");
  // 200 ms, 400 ms, 800 ms, then capped at 800 ms (minus polling slack).
  EXPECT_GE(starts[1] - starts[0], absl::Milliseconds(180));
  EXPECT_GE(starts[2] - starts[1], absl::Milliseconds(380));
  EXPECT_GE(starts[3] - starts[2], absl::Milliseconds(780));
  EXPECT_GE(starts[4] - starts[3], absl::Milliseconds(780));
  EXPECT_LT(starts[4] - starts[3], absl::Milliseconds(1500));
  ASSERT_TRUE(program.Stop(absl::Seconds(1)).ok());
  const uint64_t runs_after_stop = program.state().runs;
  absl::SleepFor(absl::Seconds(1));
  EXPECT_EQ(program.state().runs, runs_after_stop) << "restarted after Stop";
  const std::string lines = ReadOrEmpty(log);
  EXPECT_GE(std::count(lines.begin(), lines.end(), '\n'), 5);
}

TEST_F(ProgramSupervisorTest, StopEscalatesToSigkillWhenSigtermIsIgnored) {
  const std::string ready = JoinPath(dir_, "ready");
  ProgramSpec spec;
  spec.path = Script("stubborn", "trap '' TERM; touch " + ready +
                                     "; while :; do sleep 0.05; done");
  ProgramSupervisor program(spec);
  ASSERT_TRUE(program.Start().ok());
  ASSERT_TRUE(WaitFor([&] { return PathExists(ready); }));
  const pid_t pid = program.state().pid;

  const absl::Time start = absl::Now();
  ASSERT_TRUE(program.Stop(absl::Milliseconds(300)).ok());
  const absl::Duration took = absl::Now() - start;
  EXPECT_GE(took, absl::Milliseconds(300));
  EXPECT_LT(took, absl::Seconds(5));
  EXPECT_EQ(program.state().last_exit_signal, SIGKILL);
  EXPECT_NE(kill(pid, 0), 0);
  // Nothing of the group (the loop's sleeps) is left, once init reaped the
  // killed orphans.
  EXPECT_TRUE(WaitFor([&] { return kill(-pid, 0) != 0; }, absl::Seconds(3)));
}

TEST_F(ProgramSupervisorTest, ChildIsStoppableEvenWhenAgentBlocksSigterm) {
  // The agent blocks SIGTERM in every thread to sigwait for it; the child
  // must not inherit that mask.
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGTERM);
  ASSERT_EQ(pthread_sigmask(SIG_BLOCK, &block, &old), 0);
  {
    ProgramSpec spec;
    spec.path = Script("sleeper", "exec sleep 30");
    ProgramSupervisor program(spec);
    ASSERT_TRUE(program.Start().ok());
    const absl::Time start = absl::Now();
    ASSERT_TRUE(program.Stop(absl::Seconds(10)).ok());
    EXPECT_LT(absl::Now() - start, absl::Seconds(5));
    EXPECT_EQ(program.state().last_exit_signal, SIGTERM);
  }
  ASSERT_EQ(pthread_sigmask(SIG_SETMASK, &old, nullptr), 0);
}

TEST_F(ProgramSupervisorTest, WaitStaysUpDetectsExitWithinWindow) {
  ProgramSpec spec;
  spec.path = Script("short", "sleep 0.3; exit 3");
  ProgramSupervisor program(spec);
  ASSERT_TRUE(program.Start().ok());
  absl::Status health = program.WaitStaysUp(absl::Seconds(3));
  EXPECT_EQ(health.code(), absl::StatusCode::kUnavailable) << health;
  EXPECT_NE(health.message().find("exit status 3"), absl::string_view::npos)
      << health;
  ASSERT_TRUE(program.Stop(absl::Seconds(1)).ok());
}

TEST_F(ProgramSupervisorTest, WaitStaysUpPassesForHealthyProgram) {
  ProgramSpec spec;
  spec.path = Script("long", "exec sleep 30");
  ProgramSupervisor program(spec);
  ASSERT_TRUE(program.Start().ok());
  const absl::Time start = absl::Now();
  EXPECT_TRUE(program.WaitStaysUp(absl::Milliseconds(500)).ok());
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(450));
  EXPECT_NE(program.state().pid, 0);
  ASSERT_TRUE(program.Stop(absl::Seconds(5)).ok());
  EXPECT_EQ(program.WaitStaysUp(absl::Seconds(1)).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(ProgramSupervisorTest, StartFailsForMissingExecutable) {
  ProgramSpec spec;
  spec.path = JoinPath(dir_, "does-not-exist");
  ProgramSupervisor program(spec);
  absl::Status started = program.Start();
  EXPECT_EQ(started.code(), absl::StatusCode::kNotFound) << started;
  EXPECT_NE(started.message().find(spec.path), absl::string_view::npos);
  EXPECT_FALSE(program.state().wanted);
  EXPECT_EQ(program.state().pid, 0);
}

TEST_F(ProgramSupervisorTest, DestructorStopsTheProgram) {
  pid_t pid = 0;
  {
    ProgramSpec spec;
    spec.path = Script("sleeper", "exec sleep 30");
    ProgramSupervisor program(spec);
    ASSERT_TRUE(program.Start().ok());
    pid = program.state().pid;
    ASSERT_NE(pid, 0);
  }
  EXPECT_NE(kill(pid, 0), 0);
}

TEST_F(ProgramSupervisorTest, SetSpecTakesEffectOnNextStart) {
  const std::string out = JoinPath(dir_, "out");
  ProgramSpec spec;
  spec.path = Script("app", "echo \"$FLEET_VERSION\" > " + out + ".tmp; mv " +
                                out + ".tmp " + out + "; exec sleep 30");
  ProgramSupervisor program(spec);
  program.SetEnv("FLEET_VERSION", "1.0.0");
  ASSERT_TRUE(program.Start().ok());
  ASSERT_TRUE(WaitFor([&] { return ReadOrEmpty(out) == "1.0.0\n"; }));
  ASSERT_TRUE(program.Stop(absl::Seconds(5)).ok());
  program.SetEnv("FLEET_VERSION", "2.0.0");
  ASSERT_TRUE(program.Start().ok());
  EXPECT_TRUE(WaitFor([&] { return ReadOrEmpty(out) == "2.0.0\n"; }));
  EXPECT_EQ(program.state().runs, 2u);
  EXPECT_EQ(program.state().restarts, 0u);
}

TEST_F(ProgramSupervisorTest, ExecFailureIsReportedAndNothingRuns) {
  ProgramSpec spec;
  // Not executable: exec fails with EACCES in the child.
  spec.path = JoinPath(dir_, "not-executable");
  ASSERT_TRUE(WriteFileAtomically(spec.path, "#!/bin/sh\n", 0644).ok());
  ProgramSupervisor program(spec);
  absl::Status started = program.Start();
  EXPECT_EQ(started.code(), absl::StatusCode::kPermissionDenied) << started;
  EXPECT_EQ(program.state().pid, 0);
  EXPECT_EQ(program.state().runs, 0u);
}

TEST_F(ProgramSupervisorTest, ProgramDiesWithAKilledAgent) {
  const std::string pid_file = JoinPath(dir_, "pid");
  const std::string script =
      Script("app", "echo $$ > " + pid_file + ".tmp; mv " + pid_file + ".tmp " +
                        pid_file + "; exec sleep 30");
  // The "agent": a child process that supervises the program, then is
  // killed with SIGKILL and cannot stop it.
  const pid_t agent = fork();
  ASSERT_GE(agent, 0);
  if (agent == 0) {
    ProgramSupervisor program(ProgramSpec{script, {}, {}});
    if (!program.Start().ok()) _exit(1);
    for (;;) pause();
  }
  ASSERT_TRUE(WaitFor([&] { return !ReadOrEmpty(pid_file).empty(); }));
  const pid_t program_pid = atoi(ReadOrEmpty(pid_file).c_str());
  ASSERT_GT(program_pid, 0);
  EXPECT_EQ(kill(program_pid, 0), 0);
  ASSERT_EQ(kill(agent, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(waitpid(agent, &status, 0), agent);
  // Reaped by init (or the sandbox's), so it disappears entirely.
  EXPECT_TRUE(
      WaitFor([&] { return kill(program_pid, 0) != 0; }, absl::Seconds(5)));
}

TEST(ProcessStatsTest, ReadsOwnResidentSizeAndCpu) {
  absl::StatusOr<uint64_t> rss = ResidentBytes(getpid());
  ASSERT_TRUE(rss.ok()) << rss.status();
  EXPECT_GT(*rss, 100u * 1024);
  absl::StatusOr<uint64_t> cpu = CpuMillis(getpid());
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_EQ(ResidentBytes(999999999).status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace fleet::agent
