#include "cli/command_line.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/errors.h"
#include "cli/testing/fake_admin_service.h"
#include "common/ed25519.h"
#include "common/names.h"
#include "common/testing/fake_clock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace fleet::cli {
namespace {

using ::fleet::cli::testing::FakeAdminServer;
using ::fleet::cli::testing::UnusedLocalPort;

std::string MakeTempDir() {
  std::string pattern = ::testing::TempDir() + "/fleetctl_test_XXXXXX";
  EXPECT_NE(mkdtemp(pattern.data()), nullptr);
  return pattern;
}

class FleetctlTest : public ::testing::Test {
 protected:
  // Runs `fleetctl args...` with $FLEET_CONTROLLER = env_controller_.
  int Run(std::vector<std::string> args) {
    out_.str("");
    err_.str("");
    // Plaintext to the fake controller; TLS is tested in
    // tests/mtls_e2e_test.cc and cli/identity_commands_test.cc.
    args.insert(args.begin(), {"fleetctl", "--insecure"});
    return RunFleetctl(args, io_, env_controller_);
  }

  FakeAdminServer server_;
  std::string env_controller_;
  std::ostringstream out_;
  std::ostringstream err_;
  FakeClock clock_;
  Io io_{out_, err_, false, clock_};
};

TEST_F(FleetctlTest, UsageErrorsExit2WithOneFleetctlLineAndAHelpPointer) {
  const std::vector<std::vector<std::string>> cases = {
      {},
      {"deploy"},
      {"release"},
      {"release", "push", "--version", "1.0.0"},  // --product etc. missing
      {"release", "list", "--bogus"},
      {"release", "list", "extra"},
      {"-o", "xml", "release", "list"},
      {"rollout", "status"},  // no id
  };
  for (const auto& args : cases) {
    EXPECT_EQ(Run(args), kExitUsage) << absl::StrJoin(args, " ");
    EXPECT_EQ(err_.str().rfind("fleetctl: ", 0), 0u) << err_.str();
    EXPECT_NE(err_.str().find("--help' for usage"), std::string::npos)
        << err_.str();
    EXPECT_EQ(out_.str(), "");
  }
  EXPECT_EQ(server_.service().calls(), 0);
}

TEST_F(FleetctlTest, UnknownOrMissingCommandListsTheChoices) {
  EXPECT_EQ(Run({"release", "lst"}), kExitUsage);
  EXPECT_EQ(err_.str(),
            "fleetctl: unknown command \"lst\" for \"fleetctl release\"; "
            "expected one of: push, prepare, verify, list\n"
            "Run 'fleetctl release --help' for usage.\n");
  EXPECT_EQ(Run({"rollout"}), kExitUsage);
  EXPECT_EQ(err_.str().rfind("fleetctl: \"fleetctl rollout\" needs a command: "
                             "create, status, pause, resume, abort, list\n",
                             0),
            0u)
      << err_.str();
  EXPECT_EQ(Run({"deploy"}), kExitUsage);
  // Other commands join the list as they are added; these must be named.
  EXPECT_EQ(err_.str().rfind("fleetctl: unknown command \"deploy\" for "
                             "\"fleetctl\"; expected one of: keys, ",
                             0),
            0u)
      << err_.str();
  for (const char* command :
       {" release,", " agents,", " rollout,", " blacklist,", " version,",
        " doctor,", " completion"}) {
    EXPECT_NE(err_.str().find(command), std::string::npos)
        << command << " missing from " << err_.str();
  }
}

TEST_F(FleetctlTest, MissingRequiredFlagIsNamed) {
  env_controller_ = server_.address();
  EXPECT_EQ(Run({"release", "push", "--version", "1.0.0", "--file", "f",
                 "--key", "k"}),
            kExitUsage);
  EXPECT_NE(err_.str().find("--product"), std::string::npos) << err_.str();
  EXPECT_NE(err_.str().find("fleetctl release push --help"), std::string::npos)
      << err_.str();
}

TEST_F(FleetctlTest, InvalidGlobalValuesAreUsageErrors) {
  EXPECT_EQ(Run({"--timeout", "soon", "release", "list"}), kExitUsage);
  EXPECT_NE(err_.str().find("invalid --timeout \"soon\""), std::string::npos);
  EXPECT_EQ(Run({"--timeout", "0s", "release", "list"}), kExitUsage);
  EXPECT_EQ(Run({"--controller", "controller", "release", "list"}), kExitUsage);
  EXPECT_EQ(err_.str(),
            "fleetctl: invalid --controller \"controller\": no port; expected "
            "HOST:PORT, e.g. 127.0.0.1:7443\n");
  EXPECT_EQ(server_.service().calls(), 0);
}

TEST_F(FleetctlTest, HelpDocumentsExitCodesAndExits0) {
  EXPECT_EQ(Run({"--help"}), kExitOk);
  EXPECT_NE(out_.str().find("Exit codes:"), std::string::npos);
  EXPECT_NE(out_.str().find("2  usage error"), std::string::npos);
  EXPECT_NE(out_.str().find("FLEET_CONTROLLER"), std::string::npos);
  EXPECT_EQ(Run({"rollout", "create", "--help"}), kExitOk);
  EXPECT_NE(out_.str().find("--selector"), std::string::npos);
}

TEST_F(FleetctlTest, VersionPrintsAndExits0) {
  EXPECT_EQ(Run({"--version"}), kExitOk);
  EXPECT_EQ(out_.str(), absl::StrCat("fleetctl ", kFleetctlVersion, "\n"));
}

TEST_F(FleetctlTest, UnreachableControllerExits1WithTheFix) {
  const std::string address = absl::StrCat("127.0.0.1:", UnusedLocalPort());
  EXPECT_EQ(Run({"--controller", address, "release", "list"}), kExitFailed);
  EXPECT_EQ(err_.str(),
            absl::StrCat("fleetctl: cannot reach the controller at ", address,
                         " (connection refused); is fleet-controller "
                         "running? set --controller or FLEET_CONTROLLER\n"));
  EXPECT_EQ(out_.str(), "");
}

TEST_F(FleetctlTest, SlowControllerHitsTheTimeout) {
  server_.service().SetDelay(absl::Seconds(2));
  const absl::Time start = absl::Now();
  EXPECT_EQ(Run({"--controller", server_.address(), "--timeout", "200ms",
                 "agents", "list"}),
            kExitFailed);
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(1500));
  EXPECT_NE(err_.str().find("did not answer list agents within 200ms"),
            std::string::npos)
      << err_.str();
}

TEST_F(FleetctlTest, ControllerComesFromEnvironmentUnlessTheFlagIsGiven) {
  env_controller_ = server_.address();
  EXPECT_EQ(Run({"rollout", "list"}), kExitOk) << err_.str();
  EXPECT_EQ(server_.service().calls(), 1);

  env_controller_ = absl::StrCat("127.0.0.1:", UnusedLocalPort());
  EXPECT_EQ(Run({"--controller", server_.address(), "rollout", "list"}),
            kExitOk)
      << err_.str();
  EXPECT_EQ(server_.service().calls(), 2);
}

TEST_F(FleetctlTest, GlobalFlagsWorkAfterTheCommand) {
  v1::ListAgentsResponse agents;
  agents.add_agents()->set_agent_id("agent-1");
  server_.service().SetAgents(agents);
  EXPECT_EQ(Run({"agents", "list", "--product", "web", "-o", "json",
                 "--controller", server_.address()}),
            kExitOk)
      << err_.str();
  nlohmann::json json = nlohmann::json::parse(out_.str());
  EXPECT_EQ(json["agents"][0]["agent_id"], "agent-1");
  EXPECT_EQ(server_.service().last_list_agents()->product(), "web");
}

TEST_F(FleetctlTest, KeysGenerateThenRefuseToOverwrite) {
  const std::string dir = MakeTempDir() + "/keys";
  ASSERT_EQ(Run({"keys", "generate", "--out", dir}), kExitOk) << err_.str();
  absl::StatusOr<Ed25519PublicKey> pub =
      Ed25519PublicKey::LoadPemFile(dir + "/release.pub");
  ASSERT_TRUE(pub.ok());
  EXPECT_EQ(out_.str().rfind("key " + pub->KeyId() + "\n", 0), 0u)
      << out_.str();

  EXPECT_EQ(Run({"keys", "generate", "--out", dir}), kExitFailed);
  EXPECT_EQ(err_.str(), absl::StrCat("fleetctl: ", dir,
                                     "/release.key already exists; choose "
                                     "another --out or remove it (fleetctl "
                                     "never overwrites a key)\n"));
}

TEST_F(FleetctlTest, PushWithBadVersionExits2BeforeAnyRpc) {
  const std::string dir = MakeTempDir();
  ASSERT_EQ(Run({"keys", "generate", "--out", dir}), kExitOk);
  EXPECT_EQ(Run({"--controller", server_.address(), "release", "push",
                 "--product", "web", "--version", "1.0", "--file",
                 dir + "/release.pub", "--key", dir + "/release.key"}),
            kExitUsage);
  EXPECT_EQ(err_.str().rfind("fleetctl: invalid --version \"1.0\": ", 0), 0u)
      << err_.str();
  EXPECT_EQ(server_.service().calls(), 0);
}

TEST_F(FleetctlTest, PushWithMissingFileExits1NamingThePath) {
  const std::string dir = MakeTempDir();
  ASSERT_EQ(Run({"keys", "generate", "--out", dir}), kExitOk);
  EXPECT_EQ(Run({"--controller", server_.address(), "release", "push",
                 "--product", "web", "--version", "1.0.0", "--file",
                 dir + "/nope", "--key", dir + "/release.key"}),
            kExitFailed);
  EXPECT_EQ(err_.str(), absl::StrCat("fleetctl: release file ", dir,
                                     "/nope does not exist; check --file\n"));
  EXPECT_EQ(server_.service().calls(), 0);
}

TEST_F(FleetctlTest, PushDefaultsToTheHostPlatform) {
  const std::string dir = MakeTempDir();
  ASSERT_EQ(Run({"keys", "generate", "--out", dir}), kExitOk);
  EXPECT_EQ(Run({"--controller", server_.address(), "release", "push",
                 "--product", "web", "--version", "1.0.0", "--file",
                 dir + "/release.pub", "--key", dir + "/release.key"}),
            kExitOk)
      << err_.str();
  v1::ReleaseManifest manifest;
  ASSERT_TRUE(manifest.ParseFromString(
      server_.service().last_push()->manifest.manifest()));
  EXPECT_EQ(manifest.platform(), HostPlatform());
}

TEST_F(FleetctlTest, RolloutPauseResumeAbortReachTheController) {
  v1::Rollout rollout;
  rollout.set_rollout_id("ro-0123456789abcdef");
  server_.service().SetRollout(rollout);
  EXPECT_EQ(
      Run({"--controller", server_.address(), "rollout", "pause",
           "ro-0123456789abcdef", "--reason", "error spike", "-o", "json"}),
      kExitOk)
      << err_.str();
  EXPECT_EQ(nlohmann::json::parse(out_.str())["state"], "ROLLOUT_STATE_PAUSED");
  EXPECT_EQ(server_.service().last_pause_rollout()->reason(), "error spike");

  EXPECT_EQ(Run({"--controller", server_.address(), "rollout", "resume",
                 "ro-0123456789abcdef"}),
            kExitOk)
      << err_.str();
  EXPECT_EQ(server_.service().last_resume_rollout()->rollout_id(),
            "ro-0123456789abcdef");

  EXPECT_EQ(Run({"--controller", server_.address(), "rollout", "abort",
                 "ro-0123456789abcdef", "--reason", "bad build"}),
            kExitOk)
      << err_.str();
  EXPECT_EQ(server_.service().last_abort_rollout()->reason(), "bad build");

  EXPECT_EQ(Run({"--controller", server_.address(), "rollout", "abort",
                 "ro-unknown"}),
            kExitFailed);
  EXPECT_EQ(Run({"--controller", server_.address(), "rollout", "pause"}),
            kExitUsage);
}

TEST_F(FleetctlTest, RolloutCreateSendsTheFailureGate) {
  v1::Rollout rollout;
  rollout.set_rollout_id("ro-0123456789abcdef");
  server_.service().SetRollout(rollout);
  EXPECT_EQ(Run({"--controller", server_.address(), "rollout", "create",
                 "--product", "web", "--version", "1.2.0", "--max-failure-rate",
                 "5%", "--min-samples", "3", "--on-failure", "abort",
                 "--blacklist-on-failure"}),
            kExitOk)
      << err_.str();
  std::optional<v1::CreateRolloutRequest> sent =
      server_.service().last_create_rollout();
  ASSERT_TRUE(sent.has_value());
  EXPECT_DOUBLE_EQ(sent->failure_policy().max_failure_rate(), 0.05);
  EXPECT_EQ(sent->failure_policy().min_samples(), 3u);
  EXPECT_EQ(sent->failure_policy().action(), v1::FAILURE_ACTION_ABORT);
  EXPECT_TRUE(sent->failure_policy().blacklist());

  EXPECT_EQ(
      Run({"--controller", server_.address(), "rollout", "create", "--product",
           "web", "--version", "1.2.0", "--on-failure", "pause"}),
      kExitUsage);
  EXPECT_NE(err_.str().find("--on-failure needs --max-failure-rate"),
            std::string::npos)
      << err_.str();
}

TEST_F(FleetctlTest, BlacklistCommandsReachTheController) {
  EXPECT_EQ(
      Run({"--controller", server_.address(), "blacklist", "add", "--product",
           "web", "--version", "1.2.0", "--reason", "crashes", "-o", "json"}),
      kExitOk)
      << err_.str();
  EXPECT_EQ(nlohmann::json::parse(out_.str())["entry"]["reason"], "crashes");
  EXPECT_EQ(Run({"--controller", server_.address(), "blacklist", "add",
                 "--product", "web", "--version", "1.2.0"}),
            kExitUsage);  // --reason is required
  EXPECT_EQ(Run({"--controller", server_.address(), "blacklist", "list",
                 "--product", "web"}),
            kExitOk);
  EXPECT_EQ(server_.service().last_list_blacklist()->product(), "web");
  EXPECT_EQ(Run({"--controller", server_.address(), "blacklist", "remove",
                 "--product", "web", "--version", "1.2.0"}),
            kExitFailed);  // not in the fake's list: NOT_FOUND
  EXPECT_EQ(server_.service().last_remove_blacklist()->version(), "1.2.0");
}

TEST_F(FleetctlTest, RolloutCreatePassesMaxInFlight) {
  v1::Rollout rollout;
  rollout.set_rollout_id("ro-0123456789abcdef");
  server_.service().SetRollout(rollout);
  EXPECT_EQ(
      Run({"--controller", server_.address(), "rollout", "create", "--product",
           "web", "--version", "1.2.0", "--max-in-flight", "20%"}),
      kExitOk)
      << err_.str();
  ASSERT_TRUE(server_.service().last_create_rollout().has_value());
  EXPECT_EQ(server_.service().last_create_rollout()->max_in_flight().percent(),
            20u);
  EXPECT_EQ(
      Run({"--controller", server_.address(), "rollout", "create", "--product",
           "web", "--version", "1.2.0", "--max-in-flight", "0"}),
      kExitUsage);
}

}  // namespace
}  // namespace fleet::cli
