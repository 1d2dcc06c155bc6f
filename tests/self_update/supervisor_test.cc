// The supervisor/worker split with the real fleet-agent binary, a real gRPC
// controller on 127.0.0.1 and a real managed program: who restarts whom
// when a role dies, and that exactly one program instance ever runs.
#include <signal.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "agent/testing/test_controller.h"
#include "common/ed25519.h"
#include "common/files.h"
#include "gtest/gtest.h"
#include "tests/testing/process.h"

namespace fleet {
namespace {

using ::fleet::testing::MakeTempDir;
using ::fleet::testing::ProcessesWhere;
using ::fleet::testing::Runfile;
using ::fleet::testing::Subprocess;
using ::fleet::testing::WaitFor;

// The pid a role's pidfile names, 0 if there is none.
pid_t PidOf(const std::string& state_dir, const std::string& role) {
  absl::StatusOr<std::string> text =
      ReadFile(JoinPath(state_dir, role + ".pid"));
  if (!text.ok()) return 0;
  std::vector<std::string> parts = absl::StrSplit(*text, ' ');
  int pid = 0;
  if (parts.empty() || !absl::SimpleAtoi(parts[0], &pid)) return 0;
  return pid;
}

bool Alive(pid_t pid) {
  if (pid <= 0) return false;
  absl::StatusOr<std::string> stat =
      ReadFile(absl::StrCat("/proc/", pid, "/stat"));
  if (!stat.ok()) return false;
  const size_t close = stat->rfind(')');
  return close != std::string::npos && close + 2 < stat->size() &&
         (*stat)[close + 2] != 'Z';
}

// Live program instances: `sleep MARKER` processes (the agents carry the
// marker on their command lines too, after "--").
std::vector<pid_t> ProcessesWithArg(const std::string& marker) {
  return ProcessesWhere([&](const std::vector<std::string>& argv) {
    return argv.size() >= 2 && Basename(argv[0]) == "sleep" &&
           argv[1] == marker;
  });
}

class SupervisorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeTempDir("supervisor");
    state_dir_ = JoinPath(dir_, "state");
    controller_ = agent::testing::TestController::Start();
    ASSERT_NE(controller_, nullptr);
    absl::StatusOr<Ed25519PrivateKey> key = Ed25519PrivateKey::Generate();
    ASSERT_TRUE(key.ok());
    key_path_ = JoinPath(dir_, "release.pub");
    ASSERT_TRUE(key->PublicKey().WritePemFile(key_path_).ok());
    // The program's own argument makes its instances countable: unique to
    // this test run, so parallel runs do not see each other's programs.
    marker_ = absl::StrCat("100000.", getpid(), rand() % 1000);
    exec_ = JoinPath(dir_, "bin/app");
    ASSERT_TRUE(MakeDirs(Dirname(exec_)).ok());
    ASSERT_TRUE(
        WriteFileAtomically(exec_, "#!/bin/sh\nexec sleep \"$1\"\n", 0755)
            .ok());
  }

  void TearDown() override {
    agent_.reset();  // SIGKILL: the children go with it (PR_SET_PDEATHSIG)
    WaitFor([&] { return ProcessesWithArg(marker_).empty(); },
            absl::Seconds(10));
    for (pid_t pid : ProcessesWithArg(marker_)) kill(pid, SIGKILL);
  }

  std::unique_ptr<Subprocess> StartAgent(
      const std::vector<std::string>& extra_flags = {}) {
    std::vector<std::string> argv = {Runfile("agent/fleet-agent"),
                                     "--controller",
                                     controller_->address(),
                                     "--insecure",
                                     "--state-dir",
                                     state_dir_,
                                     "--trust-key",
                                     key_path_,
                                     "--product",
                                     "app",
                                     "--exec",
                                     exec_,
                                     "--stop-grace-seconds",
                                     "2",
                                     "--worker-stop-grace-seconds",
                                     "5"};
    argv.insert(argv.end(), extra_flags.begin(), extra_flags.end());
    argv.push_back("--");
    argv.push_back(marker_);
    auto agent =
        std::make_unique<Subprocess>(argv, JoinPath(dir_, "agent.log"));
    EXPECT_TRUE(agent->Start().ok());
    return agent;
  }

  // Waits until the program and the worker run and the worker connected.
  void WaitRunning() {
    ASSERT_TRUE(WaitFor(
        [&] {
          return Alive(PidOf(state_dir_, "program")) &&
                 Alive(PidOf(state_dir_, "worker")) &&
                 ProcessesWithArg(marker_).size() == 1;
        },
        absl::Seconds(20)))
        << agent_->ReadLog();
  }

  std::string dir_, state_dir_, key_path_, exec_, marker_;
  std::unique_ptr<agent::testing::TestController> controller_;
  std::unique_ptr<Subprocess> agent_;
};

TEST_F(SupervisorTest, PidfilesNameTheThreeRoles) {
  agent_ = StartAgent();
  WaitRunning();
  EXPECT_EQ(PidOf(state_dir_, "supervisor"), agent_->pid());
  const pid_t worker = PidOf(state_dir_, "worker");
  absl::StatusOr<std::string> cmdline =
      ReadFile(absl::StrCat("/proc/", worker, "/cmdline"));
  ASSERT_TRUE(cmdline.ok());
  EXPECT_NE(cmdline->find("--internal-role=worker"), std::string::npos);
  EXPECT_EQ(ProcessesWithArg(marker_),
            std::vector<pid_t>{PidOf(state_dir_, "program")});
  ASSERT_TRUE(
      controller_->WaitUntil([](const agent::testing::TestController& c) {
        return c.streams() >= 1;
      }));
}

TEST_F(SupervisorTest, KilledWorkerIsRestartedAndProgramKeepsRunning) {
  agent_ = StartAgent();
  WaitRunning();
  ASSERT_TRUE(
      controller_->WaitUntil([](const agent::testing::TestController& c) {
        return c.streams() >= 1;
      }));
  const pid_t program = PidOf(state_dir_, "program");
  for (int round = 0; round < 2; ++round) {
    const pid_t worker = PidOf(state_dir_, "worker");
    const int streams = controller_->streams();
    ASSERT_EQ(kill(worker, SIGKILL), 0);
    ASSERT_TRUE(WaitFor(
        [&] {
          const pid_t now = PidOf(state_dir_, "worker");
          return now != 0 && now != worker && Alive(now);
        },
        absl::Seconds(20)))
        << agent_->ReadLog();
    // The new worker reconnects to the controller...
    ASSERT_TRUE(controller_->WaitUntil(
        [streams](const agent::testing::TestController& c) {
          return c.streams() > streams;
        },
        absl::Seconds(20)));
    // ...and the program was never restarted.
    EXPECT_EQ(PidOf(state_dir_, "program"), program);
    EXPECT_EQ(ProcessesWithArg(marker_), std::vector<pid_t>{program});
  }
  EXPECT_EQ(PidOf(state_dir_, "supervisor"), agent_->pid());
}

TEST_F(SupervisorTest, KilledSupervisorTakesChildrenAndRestartRunsOneProgram) {
  agent_ = StartAgent();
  WaitRunning();
  const pid_t program = PidOf(state_dir_, "program");
  const pid_t worker = PidOf(state_dir_, "worker");
  agent_->Kill();  // SIGKILL to the supervisor
  // Started again at once, like systemd's Restart=always would.
  agent_ = StartAgent();
  ASSERT_TRUE(WaitFor(
      [&] {
        const pid_t now = PidOf(state_dir_, "program");
        return now != 0 && now != program && Alive(now) && !Alive(program) &&
               !Alive(worker);
      },
      absl::Seconds(20)))
      << agent_->ReadLog();
  WaitRunning();
  // Exactly one program, the new supervisor's child, for a while.
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(ProcessesWithArg(marker_),
              std::vector<pid_t>{PidOf(state_dir_, "program")});
    absl::SleepFor(absl::Milliseconds(100));
  }
}

TEST_F(SupervisorTest, LeftoverProgramOfEarlierSupervisorIsEnded) {
  // A program that escaped its death signal (or one started in the instant
  // before prctl), still named by program.pid.
  ASSERT_TRUE(MakeDirs(state_dir_, 0700).ok());
  Subprocess stray({exec_, marker_}, JoinPath(dir_, "stray.log"));
  ASSERT_TRUE(stray.Start().ok());
  ASSERT_TRUE(WaitFor([&] { return ProcessesWithArg(marker_).size() == 1; },
                      absl::Seconds(5)));
  const pid_t stray_pid = ProcessesWithArg(marker_)[0];
  absl::StatusOr<std::string> stat =
      ReadFile(absl::StrCat("/proc/", stray_pid, "/stat"));
  ASSERT_TRUE(stat.ok());
  std::vector<std::string> fields =
      absl::StrSplit(stat->substr(stat->rfind(')') + 2), ' ');
  ASSERT_GT(fields.size(), 19u);
  ASSERT_TRUE(
      WriteFileAtomically(JoinPath(state_dir_, "program.pid"),
                          absl::StrCat(stray_pid, " ", fields[19], "\n"))
          .ok());
  agent_ = StartAgent();
  WaitRunning();
  EXPECT_FALSE(Alive(stray_pid));
  EXPECT_NE(PidOf(state_dir_, "program"), stray_pid);
}

TEST_F(SupervisorTest, SecondSupervisorOnTheSameStateDirIsRefused) {
  agent_ = StartAgent();
  WaitRunning();
  Subprocess second(
      {Runfile("agent/fleet-agent"), "--controller", controller_->address(),
       "--insecure", "--state-dir", state_dir_, "--trust-key", key_path_,
       "--product", "app", "--exec", exec_, "--", marker_},
      JoinPath(dir_, "second.log"));
  ASSERT_TRUE(second.Start().ok());
  std::optional<int> status = second.Wait(absl::Seconds(20));
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 1);
  EXPECT_NE(second.ReadLog().find("another fleet-agent supervisor"),
            std::string::npos);
  EXPECT_EQ(ProcessesWithArg(marker_).size(), 1u);
}

TEST_F(SupervisorTest, SighupReExecsSupervisorKeepingPidAndProgram) {
  agent_ = StartAgent();
  WaitRunning();
  ASSERT_TRUE(
      controller_->WaitUntil([](const agent::testing::TestController& c) {
        return c.streams() >= 1;
      }));
  const pid_t program = PidOf(state_dir_, "program");
  const pid_t worker = PidOf(state_dir_, "worker");
  const int streams = controller_->streams();
  ASSERT_EQ(kill(agent_->pid(), SIGHUP), 0);
  // The new image took the children over and replaced the worker...
  ASSERT_TRUE(WaitFor(
      [&] {
        const pid_t now = PidOf(state_dir_, "worker");
        return now != 0 && now != worker && Alive(now) &&
               agent_->ReadLog().find("took over its children") !=
                   std::string::npos;
      },
      absl::Seconds(20)))
      << agent_->ReadLog();
  ASSERT_TRUE(controller_->WaitUntil(
      [streams](const agent::testing::TestController& c) {
        return c.streams() > streams;
      },
      absl::Seconds(20)));
  // ...with the same pid, and the program never restarted.
  EXPECT_TRUE(agent_->running());
  EXPECT_EQ(PidOf(state_dir_, "supervisor"), agent_->pid());
  EXPECT_EQ(PidOf(state_dir_, "program"), program);
  EXPECT_EQ(ProcessesWithArg(marker_), std::vector<pid_t>{program});
  // The adopted program is still the supervisor's: a stop ends it, reaped.
  const int status = agent_->Stop(absl::Seconds(20));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_FALSE(Alive(program));
  EXPECT_NE(agent_->ReadLog().find("\"msg\":\"program stopped\""),
            std::string::npos)
      << agent_->ReadLog();
}

TEST_F(SupervisorTest, WorkerConfigurationErrorEndsTheAgentInsteadOfLooping) {
  // Neither --insecure nor --tls-ca: the worker cannot talk to anyone, and
  // restarting it would not change that.
  Subprocess agent(
      {Runfile("agent/fleet-agent"), "--controller", controller_->address(),
       "--state-dir", state_dir_, "--trust-key", key_path_, "--product", "app",
       "--exec", exec_, "--", marker_},
      JoinPath(dir_, "misconfigured.log"));
  ASSERT_TRUE(agent.Start().ok());
  std::optional<int> status = agent.Wait(absl::Seconds(30));
  ASSERT_TRUE(status.has_value()) << agent.ReadLog();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 1) << *status;
  const std::string log = agent.ReadLog();
  EXPECT_NE(log.find("--tls-ca is required"), std::string::npos) << log;
  EXPECT_NE(log.find("cannot start with this configuration"), std::string::npos)
      << log;
  EXPECT_TRUE(ProcessesWithArg(marker_).empty());
}

TEST_F(SupervisorTest, SigtermStopsWorkerThenProgramAndExitsZero) {
  agent_ = StartAgent();
  WaitRunning();
  const pid_t program = PidOf(state_dir_, "program");
  const pid_t worker = PidOf(state_dir_, "worker");
  const int status = agent_->Stop(absl::Seconds(20));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_FALSE(Alive(program));
  EXPECT_FALSE(Alive(worker));
  EXPECT_FALSE(PathExists(JoinPath(state_dir_, "program.pid")));
}

// A damaged STATE/agent-trial (the supervisor was killed mid-trial and the
// record did not survive) must not keep the agent from starting its worker:
// the backup's presence alone says which binary is the old one.
class DamagedTrialRecordTest : public SupervisorTest,
                               public ::testing::WithParamInterface<bool> {};

TEST_P(DamagedTrialRecordTest, OldBinaryIsInPlaceAndTheWorkerStarts) {
  const bool backup_present = GetParam();
  absl::StatusOr<std::string> real = ReadFile(Runfile("agent/fleet-agent"));
  ASSERT_TRUE(real.ok()) << real.status();
  const std::string agent_exec = JoinPath(dir_, "agent-bin/fleet-agent");
  ASSERT_TRUE(MakeDirs(Dirname(agent_exec)).ok());
  ASSERT_TRUE(MakeDirs(state_dir_).ok());
  if (backup_present) {
    // Mid-trial: the new binary renamed in, the old one kept as backup.
    ASSERT_TRUE(
        WriteFileAtomically(agent_exec, *real + "\n# new agent\n", 0755).ok());
    ASSERT_TRUE(
        WriteFileAtomically(agent_exec + ".fleet-backup", *real, 0755).ok());
  } else {
    // Recorded, not yet renamed: the old binary in place, the new staged.
    ASSERT_TRUE(WriteFileAtomically(agent_exec, *real, 0755).ok());
    ASSERT_TRUE(WriteFileAtomically(agent_exec + ".fleet-new",
                                    *real + "\n# new agent\n", 0755)
                    .ok());
  }
  ASSERT_TRUE(WriteFileAtomically(JoinPath(state_dir_, "agent-trial"),
                                  "d-1\nnot a digest\n", 0600)
                  .ok());

  agent_ = StartAgent({"--agent-exec", agent_exec});
  WaitRunning();
  ASSERT_TRUE(controller_->WaitUntil(
      [](const agent::testing::TestController& c) { return c.streams() >= 1; }))
      << agent_->ReadLog();
  absl::StatusOr<std::string> in_place = ReadFile(agent_exec);
  ASSERT_TRUE(in_place.ok());
  EXPECT_TRUE(*in_place == *real) << "the old agent binary is not in place";
  EXPECT_FALSE(PathExists(agent_exec + ".fleet-backup"));
  EXPECT_FALSE(PathExists(agent_exec + ".fleet-new"));
  EXPECT_FALSE(PathExists(JoinPath(state_dir_, "agent-trial")));
  EXPECT_NE(agent_->ReadLog().find("agent trial record unreadable"),
            std::string::npos)
      << agent_->ReadLog();
  EXPECT_EQ(PidOf(state_dir_, "supervisor"), agent_->pid());
}

INSTANTIATE_TEST_SUITE_P(BackupOrNot, DamagedTrialRecordTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "BackupPresent" : "NoBackup";
                         });

}  // namespace
}  // namespace fleet
