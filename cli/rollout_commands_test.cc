#include "cli/rollout_commands.h"

#include <algorithm>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cli/command_context.h"
#include "cli/command_line.h"
#include "cli/errors.h"
#include "cli/testing/fake_admin_service.h"
#include "common/testing/fake_clock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace fleet::cli {
namespace {

using ::fleet::cli::testing::FakeAdminServer;

RolloutCreateOptions WebRollout() {
  RolloutCreateOptions options;
  options.product = "web";
  options.version = "1.2.0";
  return options;
}

TEST(BuildCreateRolloutRequestTest, FillsSelectorAndStages) {
  RolloutCreateOptions options = WebRollout();
  options.platform = "linux/arm64";
  options.selector = {"env=prod", "region=eu-west"};
  options.stages = {"10", "50", "100"};
  options.bake = "10m";
  absl::StatusOr<v1::CreateRolloutRequest> request =
      BuildCreateRolloutRequest(options);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->product(), "web");
  EXPECT_EQ(request->version(), "1.2.0");
  EXPECT_EQ(request->selector().platform(), "linux/arm64");
  EXPECT_EQ(request->selector().labels().size(), 2u);
  EXPECT_EQ(request->selector().labels().at("env"), "prod");
  EXPECT_EQ(request->selector().labels().at("region"), "eu-west");
  ASSERT_EQ(request->stages_size(), 3);
  EXPECT_EQ(request->stages(0).percent(), 10u);
  EXPECT_EQ(request->stages(2).percent(), 100u);
  EXPECT_EQ(request->stages(1).bake_seconds(), 600);
}

TEST(BuildCreateRolloutRequestTest, MaxInFlightIsACountOrAPercent) {
  struct Case {
    const char* flag;
    v1::MaxInFlight::LimitCase kind;
    uint32_t value;
  };
  const Case cases[] = {
      {"5", v1::MaxInFlight::kCount, 5},
      {"20%", v1::MaxInFlight::kPercent, 20},
      {"100%", v1::MaxInFlight::kPercent, 100},
      {"1000", v1::MaxInFlight::kCount, 1000},
  };
  for (const Case& c : cases) {
    RolloutCreateOptions options = WebRollout();
    options.max_in_flight = c.flag;
    absl::StatusOr<v1::CreateRolloutRequest> request =
        BuildCreateRolloutRequest(options);
    ASSERT_TRUE(request.ok()) << c.flag << ": " << request.status();
    EXPECT_EQ(request->max_in_flight().limit_case(), c.kind) << c.flag;
    EXPECT_EQ(c.kind == v1::MaxInFlight::kCount
                  ? request->max_in_flight().count()
                  : request->max_in_flight().percent(),
              c.value)
        << c.flag;
  }
  absl::StatusOr<v1::CreateRolloutRequest> unlimited =
      BuildCreateRolloutRequest(WebRollout());
  ASSERT_TRUE(unlimited.ok());
  EXPECT_FALSE(unlimited->has_max_in_flight());
}

TEST(BuildCreateRolloutRequestTest, FailureGateFlagsFillThePolicy) {
  struct Case {
    const char* rate;
    const char* min_samples;
    const char* on_failure;
    bool blacklist;
    double want_rate;
    uint32_t want_min_samples;
    v1::FailureAction want_action;
  };
  const Case cases[] = {
      {"5%", "3", "pause", false, 0.05, 3, v1::FAILURE_ACTION_PAUSE},
      {"0.05", "", "", false, 0.05, 1, v1::FAILURE_ACTION_PAUSE},
      {"2.5%", "10", "abort", true, 0.025, 10, v1::FAILURE_ACTION_ABORT},
      {"0%", "1", "abort", false, 0, 1, v1::FAILURE_ACTION_ABORT},
      {"100%", "0", "", true, 1, 1, v1::FAILURE_ACTION_PAUSE},
  };
  for (const Case& c : cases) {
    RolloutCreateOptions options = WebRollout();
    options.max_failure_rate = c.rate;
    options.min_samples = c.min_samples;
    options.on_failure = c.on_failure;
    options.blacklist_on_failure = c.blacklist;
    absl::StatusOr<v1::CreateRolloutRequest> request =
        BuildCreateRolloutRequest(options);
    ASSERT_TRUE(request.ok()) << c.rate << ": " << request.status();
    ASSERT_TRUE(request->has_failure_policy()) << c.rate;
    const v1::FailurePolicy& p = request->failure_policy();
    EXPECT_DOUBLE_EQ(p.max_failure_rate(), c.want_rate) << c.rate;
    EXPECT_EQ(p.min_samples(), c.want_min_samples) << c.rate;
    EXPECT_EQ(p.action(), c.want_action) << c.rate;
    EXPECT_EQ(p.blacklist(), c.blacklist) << c.rate;
  }
  absl::StatusOr<v1::CreateRolloutRequest> ungated =
      BuildCreateRolloutRequest(WebRollout());
  ASSERT_TRUE(ungated.ok());
  EXPECT_FALSE(ungated->has_failure_policy());
}

TEST(BuildCreateRolloutRequestTest, DefaultsToEveryAgentInOneStage) {
  absl::StatusOr<v1::CreateRolloutRequest> request =
      BuildCreateRolloutRequest(WebRollout());
  ASSERT_TRUE(request.ok());
  EXPECT_EQ(request->selector().platform(), "");
  EXPECT_TRUE(request->selector().labels().empty());
  EXPECT_EQ(request->stages_size(), 0);  // the controller's one 100% stage
}

TEST(BuildCreateRolloutRequestTest, RejectsBadValuesAsUsageErrors) {
  struct Case {
    const char* flag;
    void (*mutate)(RolloutCreateOptions&);
  };
  const Case cases[] = {
      {"--product", [](RolloutCreateOptions& o) { o.product = "WEB"; }},
      {"--version", [](RolloutCreateOptions& o) { o.version = "latest"; }},
      {"--platform", [](RolloutCreateOptions& o) { o.platform = "linux"; }},
      {"--selector", [](RolloutCreateOptions& o) { o.selector = {"env"}; }},
      {"--selector", [](RolloutCreateOptions& o) { o.selector = {"=prod"}; }},
      {"--selector",
       [](RolloutCreateOptions& o) {
         o.selector = {"env=a", "env=b"};
       }},
      {"--stages",
       [](RolloutCreateOptions& o) {
         o.stages = {"0", "100"};
       }},
      {"--stages",
       [](RolloutCreateOptions& o) {
         o.stages = {"50", "101"};
       }},
      {"--stages",
       [](RolloutCreateOptions& o) {
         o.stages = {"50", "10"};
       }},
      {"--stages", [](RolloutCreateOptions& o) { o.stages = {"ten"}; }},
      {"--max-in-flight",
       [](RolloutCreateOptions& o) { o.max_in_flight = "0"; }},
      {"--max-in-flight",
       [](RolloutCreateOptions& o) { o.max_in_flight = "101%"; }},
      {"--max-in-flight",
       [](RolloutCreateOptions& o) { o.max_in_flight = "five"; }},
      {"--max-in-flight",
       [](RolloutCreateOptions& o) { o.max_in_flight = "%"; }},
      {"--max-failure-rate",
       [](RolloutCreateOptions& o) { o.max_failure_rate = "101%"; }},
      {"--max-failure-rate",
       [](RolloutCreateOptions& o) { o.max_failure_rate = "1.5"; }},
      {"--max-failure-rate",
       [](RolloutCreateOptions& o) { o.max_failure_rate = "-1%"; }},
      {"--max-failure-rate",
       [](RolloutCreateOptions& o) { o.max_failure_rate = "nan"; }},
      {"--max-failure-rate",
       [](RolloutCreateOptions& o) { o.max_failure_rate = "five"; }},
      {"--min-samples",
       [](RolloutCreateOptions& o) {
         o.max_failure_rate = "5%";
         o.min_samples = "-3";
       }},
      {"--on-failure",
       [](RolloutCreateOptions& o) {
         o.max_failure_rate = "5%";
         o.on_failure = "rollback";
       }},
      {"--min-samples", [](RolloutCreateOptions& o) { o.min_samples = "3"; }},
      {"--on-failure", [](RolloutCreateOptions& o) { o.on_failure = "abort"; }},
      {"--blacklist-on-failure",
       [](RolloutCreateOptions& o) { o.blacklist_on_failure = true; }},
      {"--bake", [](RolloutCreateOptions& o) { o.bake = "5m"; }},  // no stages
      {"--bake",
       [](RolloutCreateOptions& o) {
         o.stages = {"100"};
         o.bake = "a while";
       }},
  };
  for (const Case& c : cases) {
    RolloutCreateOptions options = WebRollout();
    c.mutate(options);
    absl::Status s = BuildCreateRolloutRequest(options).status();
    EXPECT_TRUE(IsUsageError(s)) << c.flag << ": " << s;
    EXPECT_NE(s.message().find(c.flag), std::string::npos) << s.message();
  }
}

TEST(StateLabelTest, DropsPrefixLowerCasesAndHyphenates) {
  EXPECT_EQ(RolloutStateLabel(v1::ROLLOUT_STATE_RUNNING), "running");
  EXPECT_EQ(RolloutStateLabel(v1::ROLLOUT_STATE_UNSPECIFIED), "unspecified");
  EXPECT_EQ(TargetStateLabel(v1::TARGET_STATE_ROLLED_BACK), "rolled-back");
  EXPECT_EQ(TargetStateLabel(v1::TARGET_STATE_HEALTHY), "healthy");
}

class RolloutCommandsTest : public ::testing::Test {
 protected:
  CommandContext Context(OutputFormat format = OutputFormat::kTable) {
    GlobalOptions options;
    options.controller = server_.address();
    options.output = format;
    return CommandContext(options, io_);
  }

  int64_t AgoMs(absl::Duration d) {
    return absl::ToUnixMillis(clock_.Now() - d);
  }

  v1::Rollout SampleRollout() {
    v1::Rollout r;
    r.set_rollout_id("ro-3f2a9c0d11b2e4f7");
    r.set_product("web");
    r.set_version("1.2.0");
    r.mutable_selector()->set_platform("linux/amd64");
    (*r.mutable_selector()->mutable_labels())["env"] = "prod";
    r.add_stages()->set_percent(10);
    r.add_stages()->set_percent(100);
    r.set_current_stage(1);
    r.set_state(v1::ROLLOUT_STATE_RUNNING);
    r.set_created_unix_ms(AgoMs(absl::Minutes(3)));
    r.set_updated_unix_ms(AgoMs(absl::Seconds(12)));
    v1::TargetCounts* c = r.mutable_counts();
    c->set_total(3);
    c->set_healthy(1);
    c->set_in_flight(1);
    c->set_failed(1);
    v1::RolloutTarget* t1 = r.add_targets();
    t1->set_agent_id("agent-1");
    t1->set_state(v1::TARGET_STATE_HEALTHY);
    t1->set_from_version("1.1.0");
    t1->set_updated_unix_ms(AgoMs(absl::Seconds(40)));
    v1::RolloutTarget* t2 = r.add_targets();
    t2->set_agent_id("agent-22");
    t2->set_state(v1::TARGET_STATE_ROLLED_BACK);
    t2->set_from_version("1.1.0");
    t2->set_error("health check failed: exited with status 1");
    t2->set_updated_unix_ms(AgoMs(absl::Seconds(12)));
    v1::RolloutTarget* t3 = r.add_targets();
    t3->set_agent_id("agent-3");
    t3->set_state(v1::TARGET_STATE_DOWNLOADING);
    t3->set_updated_unix_ms(AgoMs(absl::Seconds(2)));
    return r;
  }

  FakeAdminServer server_;
  std::ostringstream out_;
  std::ostringstream err_;
  FakeClock clock_;
  Io io_{out_, err_, false, clock_};
};

TEST_F(RolloutCommandsTest, CreatePrintsIdAndTargetCount) {
  server_.service().SetRollout(SampleRollout());
  RolloutCreateOptions options = WebRollout();
  options.selector = {"env=prod"};
  CommandContext ctx = Context();
  ASSERT_TRUE(RolloutCreate(options, ctx).ok()) << err_.str();
  EXPECT_EQ(out_.str(), "rollout ro-3f2a9c0d11b2e4f7 created: 3 targets\n");
  ASSERT_TRUE(server_.service().last_create_rollout().has_value());
  EXPECT_EQ(
      server_.service().last_create_rollout()->selector().labels().at("env"),
      "prod");
}

TEST_F(RolloutCommandsTest, CreateWithOneTargetSaysTarget) {
  v1::Rollout rollout = SampleRollout();
  rollout.mutable_counts()->set_total(1);
  server_.service().SetRollout(rollout);
  CommandContext ctx = Context();
  ASSERT_TRUE(RolloutCreate(WebRollout(), ctx).ok());
  EXPECT_EQ(out_.str(), "rollout ro-3f2a9c0d11b2e4f7 created: 1 target\n");
  EXPECT_EQ(err_.str(), "");
}

TEST_F(RolloutCommandsTest, CreateWithNoTargetsExplainsOnStderr) {
  v1::Rollout rollout = SampleRollout();
  rollout.mutable_counts()->set_total(0);
  server_.service().SetRollout(rollout);
  CommandContext ctx = Context();
  ASSERT_TRUE(RolloutCreate(WebRollout(), ctx).ok());
  EXPECT_EQ(out_.str(), "rollout ro-3f2a9c0d11b2e4f7 created: 0 targets\n");
  EXPECT_NE(err_.str().find("no connected agent runs web"), std::string::npos)
      << err_.str();
}

TEST_F(RolloutCommandsTest, CreateJsonIsTheRollout) {
  server_.service().SetRollout(SampleRollout());
  CommandContext ctx = Context(OutputFormat::kJson);
  ASSERT_TRUE(RolloutCreate(WebRollout(), ctx).ok());
  nlohmann::json json = nlohmann::json::parse(out_.str());
  EXPECT_EQ(json["rollout_id"], "ro-3f2a9c0d11b2e4f7");
  EXPECT_EQ(json["state"], "ROLLOUT_STATE_RUNNING");
  EXPECT_EQ(json["counts"]["total"], 3);
}

TEST_F(RolloutCommandsTest, CreateOfUnknownReleaseSaysToPushItFirst) {
  server_.service().FailWith(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                          "no release of web 1.2.0 exists"));
  CommandContext ctx = Context();
  absl::Status s = RolloutCreate(WebRollout(), ctx);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(),
            "cannot roll out web 1.2.0 (no release of web 1.2.0 exists); push "
            "the release first with `fleetctl release push --product web "
            "--version 1.2.0`, or see `fleetctl release list`");
}

TEST_F(RolloutCommandsTest, CreateForAPlatformWithoutTheReleaseNamesIt) {
  server_.service().FailWith(
      grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                   "no release of web 1.2.0 exists for linux/arm64 (only for "
                   "linux/amd64)"));
  RolloutCreateOptions options = WebRollout();
  options.platform = "linux/arm64";
  CommandContext ctx = Context();
  absl::Status s = RolloutCreate(options, ctx);
  EXPECT_EQ(s.message(),
            "cannot roll out web 1.2.0 to linux/arm64 (no release of web 1.2.0 "
            "exists for linux/arm64 (only for linux/amd64)); push the release "
            "first with `fleetctl release push --product web --version 1.2.0 "
            "--platform linux/arm64`, or see `fleetctl release list`");
}

TEST_F(RolloutCommandsTest, StatusShowsSummaryAndOneRowPerTarget) {
  server_.service().SetRollout(SampleRollout());
  CommandContext ctx = Context();
  ASSERT_TRUE(RolloutStatus("ro-3f2a9c0d11b2e4f7", ctx).ok()) << err_.str();
  EXPECT_EQ(out_.str(),
            "ROLLOUT    ro-3f2a9c0d11b2e4f7\n"
            "RELEASE    web 1.2.0\n"
            "SELECTOR   platform linux/amd64, env=prod\n"
            "STATE      running\n"
            "STAGE      2/2 (100%)\n"
            "TARGETS    3 total: 1 healthy, 1 in flight, 0 pending, 1 failed, "
            "0 skipped\n"
            "CREATED    3m ago\n"
            "UPDATED    12s ago\n"
            "\n"
            "AGENT      STATE         FROM → TO       UPDATED   ERROR\n"
            "agent-1    healthy       1.1.0 → 1.2.0   40s ago\n"
            "agent-22   rolled-back   1.1.0 → 1.2.0   12s ago   health check "
            "failed: exited with status 1\n"
            "agent-3    downloading   - → 1.2.0       2s ago\n");
}

TEST_F(RolloutCommandsTest, StatusOfUnknownRolloutPointsAtRolloutList) {
  server_.service().SetRollout(SampleRollout());
  CommandContext ctx = Context();
  absl::Status s = RolloutStatus("ro-missing", ctx);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ExitCodeFor(s), kExitFailed);
  EXPECT_EQ(s.message(),
            "rollout ro-missing does not exist; see `fleetctl rollout list` "
            "for rollout ids");
}

TEST_F(RolloutCommandsTest, StatusWithMalformedIdIsAUsageError) {
  CommandContext ctx = Context();
  EXPECT_TRUE(IsUsageError(RolloutStatus("../etc/passwd", ctx)));
  EXPECT_EQ(server_.service().calls(), 0);
}

TEST_F(RolloutCommandsTest, ListPrintsOneRowPerRollout) {
  v1::ListRolloutsResponse response;
  *response.add_rollouts() = SampleRollout();
  v1::Rollout* done = response.add_rollouts();
  done->set_rollout_id("ro-0000000000000001");
  done->set_product("web");
  done->set_version("1.1.0");
  done->set_state(v1::ROLLOUT_STATE_COMPLETED);
  done->mutable_counts()->set_total(12);
  done->mutable_counts()->set_healthy(12);
  done->set_created_unix_ms(AgoMs(absl::Hours(50)));
  server_.service().SetRollouts(response);

  CommandContext ctx = Context();
  ASSERT_TRUE(RolloutList({.product = "web"}, ctx).ok());
  EXPECT_EQ(
      out_.str(),
      "ROLLOUT               PRODUCT   VERSION   STATE       STAGE        "
      "TARGETS   HEALTHY   FAILED   CREATED\n"
      "ro-3f2a9c0d11b2e4f7   web       1.2.0     running     2/2 (100%) "
      "        3         1        1   3m ago\n"
      "ro-0000000000000001   web       1.1.0     completed   1/1        "
      "       12        12        0   2d ago\n");
  EXPECT_EQ(server_.service().last_list_rollouts()->product(), "web");
}

TEST_F(RolloutCommandsTest, PauseSaysWhatStillMovesAndHowToResume) {
  server_.service().SetRollout(SampleRollout());
  CommandContext ctx = Context();
  ASSERT_TRUE(
      RolloutPause({.rollout_id = "ro-3f2a9c0d11b2e4f7", .reason = "errors"},
                   ctx)
          .ok())
      << err_.str();
  EXPECT_EQ(out_.str(),
            "rollout ro-3f2a9c0d11b2e4f7 paused: 1 update in flight will "
            "finish, 0 pending targets wait; continue with `fleetctl rollout "
            "resume ro-3f2a9c0d11b2e4f7`\n");
  ASSERT_TRUE(server_.service().last_pause_rollout().has_value());
  EXPECT_EQ(server_.service().last_pause_rollout()->rollout_id(),
            "ro-3f2a9c0d11b2e4f7");
  EXPECT_EQ(server_.service().last_pause_rollout()->reason(), "errors");
}

TEST_F(RolloutCommandsTest, ResumeShowsTheStageAndWhatMoves) {
  v1::Rollout rollout = SampleRollout();
  rollout.mutable_counts()->set_in_flight(2);
  rollout.mutable_counts()->set_pending(4);
  server_.service().SetRollout(rollout);
  CommandContext ctx = Context();
  ASSERT_TRUE(RolloutResume("ro-3f2a9c0d11b2e4f7", ctx).ok()) << err_.str();
  EXPECT_EQ(out_.str(),
            "rollout ro-3f2a9c0d11b2e4f7 resumed: stage 2/2 (100%), 2 updates "
            "in flight, 4 pending\n");
}

TEST_F(RolloutCommandsTest, AbortSaysPendingTargetsStayAndJsonIsTheRollout) {
  v1::Rollout rollout = SampleRollout();
  rollout.mutable_counts()->set_pending(1);
  server_.service().SetRollout(rollout);
  CommandContext ctx = Context();
  ASSERT_TRUE(RolloutAbort({.rollout_id = "ro-3f2a9c0d11b2e4f7"}, ctx).ok());
  EXPECT_EQ(out_.str(),
            "rollout ro-3f2a9c0d11b2e4f7 aborted: 1 update in flight will "
            "finish, 1 pending target will not be updated\n");
  EXPECT_EQ(server_.service().last_abort_rollout()->reason(), "");

  out_.str("");
  CommandContext json_ctx = Context(OutputFormat::kJson);
  ASSERT_TRUE(
      RolloutAbort({.rollout_id = "ro-3f2a9c0d11b2e4f7"}, json_ctx).ok());
  nlohmann::json json = nlohmann::json::parse(out_.str());
  EXPECT_EQ(json["rollout_id"], "ro-3f2a9c0d11b2e4f7");
  EXPECT_EQ(json["state"], "ROLLOUT_STATE_ABORTED");
}

TEST_F(RolloutCommandsTest, StateChangeErrorsNameTheRolloutAndTheFix) {
  server_.service().SetRollout(SampleRollout());
  CommandContext ctx = Context();
  absl::Status s = RolloutResume("ro-missing", ctx);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s.message(),
            "rollout ro-missing does not exist; see `fleetctl rollout list` "
            "for rollout ids");

  server_.service().FailWith(grpc::Status(
      grpc::StatusCode::FAILED_PRECONDITION,
      "cannot pause rollout ro-3f2a9c0d11b2e4f7: it is COMPLETED; a finished "
      "rollout cannot change"));
  s = RolloutPause({.rollout_id = "ro-3f2a9c0d11b2e4f7"}, ctx);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ExitCodeFor(s), kExitFailed);
  EXPECT_EQ(s.message(),
            "cannot pause rollout ro-3f2a9c0d11b2e4f7 (cannot pause rollout "
            "ro-3f2a9c0d11b2e4f7: it is COMPLETED; a finished rollout cannot "
            "change); see `fleetctl rollout status ro-3f2a9c0d11b2e4f7`");
}

TEST_F(RolloutCommandsTest, StateChangesWithMalformedIdAreUsageErrors) {
  CommandContext ctx = Context();
  EXPECT_TRUE(IsUsageError(RolloutPause({.rollout_id = "a b"}, ctx)));
  EXPECT_TRUE(IsUsageError(RolloutResume("", ctx)));
  EXPECT_TRUE(IsUsageError(RolloutAbort({.rollout_id = "../x"}, ctx)));
  EXPECT_EQ(server_.service().calls(), 0);
}

TEST_F(RolloutCommandsTest, CreateWhileAnOverlappingRolloutRunsSaysToWait) {
  server_.service().FailWith(grpc::Status(
      grpc::StatusCode::FAILED_PRECONDITION,
      "active rollout ro-0000000000000001 of web 1.1.0 is RUNNING and its "
      "selector overlaps this one; wait for it to complete or abort it "
      "first"));
  CommandContext ctx = Context();
  absl::Status s = RolloutCreate(WebRollout(), ctx);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(),
            "cannot roll out web 1.2.0 (active rollout ro-0000000000000001 of "
            "web 1.1.0 is RUNNING and its selector overlaps this one; wait for "
            "it to complete or abort it first); wait for that rollout to "
            "complete, or end it with `fleetctl rollout abort ID`");
}

TEST_F(RolloutCommandsTest, CreateOfABlacklistedVersionPointsAtTheBlacklist) {
  server_.service().FailWith(
      grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                   "version web 1.2.0 is blacklisted: crashes on start"));
  CommandContext ctx = Context();
  absl::Status s = RolloutCreate(WebRollout(), ctx);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(),
            "cannot roll out web 1.2.0 (version web 1.2.0 is blacklisted: "
            "crashes on start); roll out another version, or see `fleetctl "
            "blacklist list --product web`");
}

TEST_F(RolloutCommandsTest, StatusShowsMaxInFlightWhenSet) {
  v1::Rollout rollout = SampleRollout();
  rollout.mutable_max_in_flight()->set_percent(20);
  server_.service().SetRollout(rollout);
  CommandContext ctx = Context();
  ASSERT_TRUE(RolloutStatus("ro-3f2a9c0d11b2e4f7", ctx).ok()) << err_.str();
  EXPECT_NE(out_.str().find("MAX IN FLIGHT   20%\n"), std::string::npos)
      << out_.str();
}

TEST_F(RolloutCommandsTest, StatusShowsTheGatePolicyAndCurrentFailures) {
  v1::Rollout rollout = SampleRollout();
  rollout.mutable_failure_policy()->set_max_failure_rate(0.05);
  rollout.mutable_failure_policy()->set_min_samples(3);
  rollout.mutable_failure_policy()->set_action(v1::FAILURE_ACTION_ABORT);
  rollout.mutable_failure_policy()->set_blacklist(true);
  rollout.mutable_counts()->set_healthy(3);
  rollout.mutable_counts()->set_failed(1);
  rollout.mutable_counts()->set_skipped(2);
  server_.service().SetRollout(rollout);
  CommandContext ctx = Context();
  ASSERT_TRUE(RolloutStatus("ro-3f2a9c0d11b2e4f7", ctx).ok()) << err_.str();
  EXPECT_NE(out_.str().find("GATE       abort when more than 5% of at "
                            "least 3 finished targets failed, then blacklist "
                            "the version; now 1 of 4 failed (25%)\n"),
            std::string::npos)
      << out_.str();
}

TEST_F(RolloutCommandsTest, StatusWithoutAPolicyShowsNoGate) {
  server_.service().SetRollout(SampleRollout());
  CommandContext ctx = Context();
  ASSERT_TRUE(RolloutStatus("ro-3f2a9c0d11b2e4f7", ctx).ok()) << err_.str();
  EXPECT_EQ(out_.str().find("GATE"), std::string::npos) << out_.str();
}

// A rollout of 4 targets in two stages (1 in the 25% cohort, 3 more at
// 100%) with `healthy` of them HEALTHY, the first ones first, the rest
// PENDING.
v1::Rollout WatchedRollout(int healthy, v1::RolloutState state,
                           const std::string& reason = "") {
  v1::Rollout r;
  r.set_rollout_id("ro-00000000000000aa");
  r.set_product("web");
  r.set_version("1.2.0");
  r.add_stages()->set_percent(25);
  r.add_stages()->set_percent(100);
  r.set_current_stage(healthy >= 1 ? 1 : 0);
  r.set_state(state);
  r.set_state_reason(reason);
  v1::FailurePolicy* policy = r.mutable_failure_policy();
  policy->set_max_failure_rate(0.2);
  policy->set_min_samples(2);
  for (int i = 0; i < 4; ++i) {
    v1::RolloutTarget* t = r.add_targets();
    t->set_agent_id(absl::StrCat("agent-", i));
    t->set_stage(i == 0 ? 0 : 1);
    t->set_state(i < healthy ? v1::TARGET_STATE_HEALTHY
                             : v1::TARGET_STATE_PENDING);
  }
  r.mutable_counts()->set_total(4);
  r.mutable_counts()->set_healthy(healthy);
  r.mutable_counts()->set_pending(4 - healthy);
  return r;
}

std::vector<std::string> Lines(const std::string& text) {
  return absl::StrSplit(text, '\n', absl::SkipEmpty());
}

class RolloutWatchTest : public RolloutCommandsTest {
 protected:
  // Watches with a sleep that moves the fake clock instead of waiting.
  absl::Status Watch(CommandContext& ctx,
                     std::optional<bool> terminal = false) {
    RolloutWatchOptions options;
    options.rollout_id = "ro-00000000000000aa";
    options.terminal = terminal;
    options.sleep = [this](absl::Duration d) {
      sleeps_.push_back(d);
      clock_.Advance(d);
    };
    return RolloutWatch(options, ctx);
  }
  std::vector<absl::Duration> sleeps_;
};

TEST(StageBreakdownTest, CountsTargetsPerStageByState) {
  v1::Rollout r = WatchedRollout(2, v1::ROLLOUT_STATE_RUNNING);
  r.mutable_targets(2)->set_state(v1::TARGET_STATE_ROLLED_BACK);
  r.mutable_targets(3)->set_state(v1::TARGET_STATE_DOWNLOADING);
  v1::RolloutTarget* skipped = r.add_targets();
  skipped->set_stage(7);  // beyond the last stage: counted in it
  skipped->set_state(v1::TARGET_STATE_SKIPPED);
  std::vector<StageProgress> stages = StageBreakdown(r);
  ASSERT_EQ(stages.size(), 2u);
  EXPECT_EQ(stages[0].percent, 25u);
  EXPECT_EQ(stages[0].total, 1u);
  EXPECT_EQ(stages[0].succeeded, 1u);
  EXPECT_EQ(stages[1].percent, 100u);
  EXPECT_EQ(stages[1].total, 4u);
  EXPECT_EQ(stages[1].succeeded, 1u);
  EXPECT_EQ(stages[1].failed, 1u);
  EXPECT_EQ(stages[1].in_flight, 1u);
  EXPECT_EQ(stages[1].skipped, 1u);
  EXPECT_EQ(stages[1].pending, 0u);

  // No stages on the wire means one stage of 100%.
  v1::Rollout single;
  single.add_targets()->set_state(v1::TARGET_STATE_PENDING);
  stages = StageBreakdown(single);
  ASSERT_EQ(stages.size(), 1u);
  EXPECT_EQ(stages[0].percent, 100u);
  EXPECT_EQ(stages[0].pending, 1u);
}

TEST_F(RolloutWatchTest, PrintsOneLinePerChangeAndEndsZeroWhenCompleted) {
  server_.service().ScriptGetRollout({
      {WatchedRollout(0, v1::ROLLOUT_STATE_RUNNING)},
      {WatchedRollout(0, v1::ROLLOUT_STATE_RUNNING)},  // no change: no line
      {WatchedRollout(1, v1::ROLLOUT_STATE_RUNNING)},
      {WatchedRollout(4, v1::ROLLOUT_STATE_COMPLETED)},
  });
  CommandContext ctx = Context();
  const absl::Time start = clock_.Now();
  absl::Status s = Watch(ctx);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(ExitCodeFor(s), kExitOk);
  EXPECT_EQ(server_.service().get_rollout_calls(), 4);
  EXPECT_EQ(sleeps_, std::vector<absl::Duration>(3, absl::Seconds(1)));
  std::vector<std::string> lines = Lines(out_.str());
  ASSERT_EQ(lines.size(), 3u) << out_.str();
  EXPECT_EQ(lines[0],
            absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", start, absl::UTCTimeZone()) +
                " rollout ro-00000000000000aa running, stage 1/2 (25%) "
                "[--------------------] 0% 0/4 final: 0 succeeded, 0 failed, "
                "0 skipped, 0 in flight, 4 pending | stage 1 (25%): 1 pending "
                "| stage 2 (100%): 3 pending | gate waiting for 2 samples (0 "
                "so far, 0 failed)");
  EXPECT_NE(lines[1].find("stage 2/2 (100%) [#####---------------] 25% 1/4 "
                          "final"),
            std::string::npos)
      << lines[1];
  EXPECT_NE(lines[1].find("| stage 1 (25%): 1 succeeded | stage 2 (100%): 3 "
                          "pending"),
            std::string::npos)
      << lines[1];
  // The line of the third poll carries that poll's time.
  EXPECT_EQ(lines[1].substr(0, 20),
            absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", start + absl::Seconds(2),
                             absl::UTCTimeZone()));
  EXPECT_NE(lines[2].find("completed, stage 2/2 (100%) "
                          "[####################] 100% 4/4 final: 4 "
                          "succeeded"),
            std::string::npos)
      << lines[2];
  EXPECT_NE(lines[2].find("gate ok: 0 of 4 failed (0% <= 20%)"),
            std::string::npos)
      << lines[2];
  EXPECT_EQ(err_.str(), "");
}

TEST_F(RolloutWatchTest, AbortedRolloutEndsWithTheAbortedExitCode) {
  server_.service().ScriptGetRollout({
      {WatchedRollout(1, v1::ROLLOUT_STATE_RUNNING)},
      {WatchedRollout(1, v1::ROLLOUT_STATE_ABORTED, "bad metrics")},
  });
  CommandContext ctx = Context();
  absl::Status s = Watch(ctx);
  EXPECT_EQ(ExitCodeFor(s), kExitRolloutAborted) << s;
  EXPECT_EQ(s.message(),
            "rollout ro-00000000000000aa aborted (bad metrics); see "
            "`fleetctl rollout status ro-00000000000000aa`");
  std::vector<std::string> lines = Lines(out_.str());
  ASSERT_EQ(lines.size(), 2u) << out_.str();
  EXPECT_NE(lines[1].find("aborted (bad metrics)"), std::string::npos);
}

TEST_F(RolloutWatchTest, OperatorPauseKeepsWatchingGatePauseEndsIt) {
  const std::string gate = "gate: 2 of 2 finished targets failed (100% > 20%)";
  v1::Rollout tripped = WatchedRollout(1, v1::ROLLOUT_STATE_PAUSED, gate);
  tripped.mutable_counts()->set_failed(2);
  server_.service().ScriptGetRollout({
      {WatchedRollout(1, v1::ROLLOUT_STATE_PAUSED, "maintenance window")},
      {WatchedRollout(1, v1::ROLLOUT_STATE_RUNNING)},
      {tripped},
      {WatchedRollout(4, v1::ROLLOUT_STATE_COMPLETED)},  // never reached
  });
  CommandContext ctx = Context();
  absl::Status s = Watch(ctx);
  EXPECT_EQ(ExitCodeFor(s), kExitRolloutPausedByGate) << s;
  EXPECT_NE(s.message().find("fleetctl rollout resume ro-00000000000000aa"),
            absl::string_view::npos)
      << s;
  EXPECT_EQ(server_.service().get_rollout_calls(), 3);
  std::vector<std::string> lines = Lines(out_.str());
  ASSERT_EQ(lines.size(), 3u) << out_.str();
  EXPECT_NE(lines[0].find("paused (maintenance window)"), std::string::npos);
  EXPECT_NE(lines[2].find("gate tripped (" + gate + ")"), std::string::npos)
      << lines[2];
}

TEST_F(RolloutWatchTest, JsonIsOneRolloutObjectPerChange) {
  v1::Rollout moved = WatchedRollout(1, v1::ROLLOUT_STATE_RUNNING);
  v1::Rollout target_moved = moved;  // same counts, one target further
  target_moved.mutable_targets(1)->set_state(v1::TARGET_STATE_DOWNLOADING);
  server_.service().ScriptGetRollout({
      {moved},
      {moved},
      {target_moved},
      {WatchedRollout(4, v1::ROLLOUT_STATE_COMPLETED)},
  });
  CommandContext ctx = Context(OutputFormat::kJson);
  ASSERT_TRUE(Watch(ctx).ok());
  std::vector<std::string> lines = Lines(out_.str());
  ASSERT_EQ(lines.size(), 3u) << out_.str();
  std::vector<std::string> states;
  for (const std::string& line : lines) {
    nlohmann::json j = nlohmann::json::parse(line);
    EXPECT_EQ(j["rollout_id"], "ro-00000000000000aa");
    states.push_back(j["state"]);
  }
  EXPECT_EQ(states, (std::vector<std::string>{"ROLLOUT_STATE_RUNNING",
                                              "ROLLOUT_STATE_RUNNING",
                                              "ROLLOUT_STATE_COMPLETED"}));
  EXPECT_EQ(nlohmann::json::parse(lines[1])["targets"][1]["state"],
            "TARGET_STATE_DOWNLOADING");
}

TEST_F(RolloutWatchTest, RidesOutAControllerRestart) {
  const grpc::Status down(grpc::StatusCode::UNAVAILABLE,
                          "failed to connect to all addresses; last error: "
                          "Connection refused");
  server_.service().ScriptGetRollout({
      {WatchedRollout(1, v1::ROLLOUT_STATE_RUNNING)},
      {{}, down},
      {{}, down},
      {WatchedRollout(4, v1::ROLLOUT_STATE_COMPLETED)},
  });
  CommandContext ctx = Context();
  absl::Status s = Watch(ctx);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(Lines(out_.str()).size(), 2u) << out_.str();
  std::vector<std::string> notes = Lines(err_.str());
  ASSERT_EQ(notes.size(), 2u) << err_.str();
  EXPECT_NE(notes[0].find("cannot reach the controller at " +
                          server_.address() + " (connection refused)"),
            std::string::npos)
      << notes[0];
  EXPECT_EQ(notes[1], "fleetctl: controller reachable again");
}

TEST_F(RolloutWatchTest, GivesUpWhenTheControllerStaysAwayLongerThanTimeout) {
  server_.service().FailWith(
      grpc::Status(grpc::StatusCode::UNAVAILABLE, "Connection refused"));
  GlobalOptions options;
  options.controller = server_.address();
  options.timeout = absl::Seconds(5);
  CommandContext ctx(options, io_);
  absl::Status s = Watch(ctx);
  EXPECT_EQ(ExitCodeFor(s), kExitFailed) << s;
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  // Polls at 0..6 s; the one at 6 s is past the 5 s allowance.
  EXPECT_EQ(server_.service().calls(), 7);
  EXPECT_EQ(Lines(err_.str()).size(), 1u) << err_.str();
}

TEST_F(RolloutWatchTest, UnknownRolloutFailsAtOncePointingAtList) {
  server_.service().SetRollout(SampleRollout());  // another id
  CommandContext ctx = Context();
  absl::Status s = Watch(ctx);
  EXPECT_EQ(ExitCodeFor(s), kExitFailed);
  EXPECT_NE(s.message().find("fleetctl rollout list"), absl::string_view::npos)
      << s;
  EXPECT_TRUE(sleeps_.empty());
}

TEST_F(RolloutWatchTest, BadIntervalOrIdIsAUsageError) {
  CommandContext ctx = Context();
  for (const char* interval : {"0", "50ms", "soon", "-1s"}) {
    RolloutWatchOptions options;
    options.rollout_id = "ro-00000000000000aa";
    options.interval = interval;
    absl::Status s = RolloutWatch(options, ctx);
    EXPECT_EQ(ExitCodeFor(s), kExitUsage) << interval;
    EXPECT_NE(s.message().find("--interval"), absl::string_view::npos) << s;
  }
  RolloutWatchOptions bad_id;
  bad_id.rollout_id = "../x";
  EXPECT_EQ(ExitCodeFor(RolloutWatch(bad_id, ctx)), kExitUsage);
  EXPECT_EQ(server_.service().calls(), 0);
}

TEST_F(RolloutWatchTest, TerminalRedrawsOneFrameInPlace) {
  server_.service().ScriptGetRollout({
      {WatchedRollout(1, v1::ROLLOUT_STATE_RUNNING)},
      {WatchedRollout(4, v1::ROLLOUT_STATE_COMPLETED)},
  });
  CommandContext ctx = Context();
  ASSERT_TRUE(Watch(ctx, /*terminal=*/true).ok());
  const std::string out = out_.str();
  const size_t redraw = out.find("\x1b[");
  ASSERT_NE(redraw, std::string::npos) << out;
  const std::string first = out.substr(0, redraw);
  // Cursor up over every line of the first frame, then clear below.
  const int first_lines = std::count(first.begin(), first.end(), '\n');
  const std::string up_and_clear =
      absl::StrCat("\x1b[", first_lines, "A\x1b[J");
  EXPECT_EQ(out.substr(redraw, up_and_clear.size()), up_and_clear);
  EXPECT_NE(first.find("rollout ro-00000000000000aa: web 1.2.0, running, "
                       "stage 2/2 (100%)\n"),
            std::string::npos)
      << first;
  EXPECT_NE(first.find("[#####---------------] 25%  1 of 4 targets final"),
            std::string::npos)
      << first;
  EXPECT_NE(first.find("STAGE"), std::string::npos) << first;
  EXPECT_NE(first.find("2 (100%) <"), std::string::npos) << first;
  EXPECT_NE(first.find("gate: waiting for 2 samples (1 so far, 0 failed)"),
            std::string::npos)
      << first;
  EXPECT_NE(out.find("completed"), std::string::npos);
}

TEST_F(RolloutCommandsTest, AbortWithRollbackAsksForItAndSaysSo) {
  server_.service().SetRollout(SampleRollout());
  CommandContext ctx = Context();
  ASSERT_TRUE(
      RolloutAbort({.rollout_id = "ro-3f2a9c0d11b2e4f7", .rollback = true}, ctx)
          .ok());
  ASSERT_TRUE(server_.service().last_abort_rollout().has_value());
  EXPECT_TRUE(server_.service().last_abort_rollout()->rollback());
  EXPECT_NE(out_.str().find("being rolled back"), std::string::npos)
      << out_.str();

  out_.str("");
  ASSERT_TRUE(RolloutAbort({.rollout_id = "ro-3f2a9c0d11b2e4f7"}, ctx).ok());
  EXPECT_FALSE(server_.service().last_abort_rollout()->rollback());
  EXPECT_EQ(out_.str().find("rolled back"), std::string::npos) << out_.str();
}

TEST_F(RolloutWatchTest, FleetctlWatchExitCodeSaysHowTheRolloutEnded) {
  server_.service().ScriptGetRollout({
      {WatchedRollout(1, v1::ROLLOUT_STATE_RUNNING)},
      {WatchedRollout(1, v1::ROLLOUT_STATE_ABORTED, "operator")},
  });
  const std::vector<std::string> watch = {
      "fleetctl",   "--insecure", "--controller",        server_.address(),
      "rollout",    "status",     "ro-00000000000000aa", "--watch",
      "--interval", "100ms"};
  EXPECT_EQ(RunFleetctl(watch, io_, ""), kExitRolloutAborted) << err_.str();
  EXPECT_EQ(Lines(out_.str()).size(), 2u) << out_.str();
  EXPECT_NE(err_.str().find("fleetctl: rollout ro-00000000000000aa aborted"),
            std::string::npos)
      << err_.str();

  // Abort --rollback reaches the request.
  server_.service().SetRollout(SampleRollout());
  EXPECT_EQ(
      RunFleetctl({"fleetctl", "--insecure", "--controller", server_.address(),
                   "rollout", "abort", "ro-3f2a9c0d11b2e4f7", "--rollback"},
                  io_, ""),
      kExitOk)
      << err_.str();
  EXPECT_TRUE(server_.service().last_abort_rollout()->rollback());
  // --interval alone is a usage error.
  EXPECT_EQ(RunFleetctl({"fleetctl", "--insecure", "--controller",
                         server_.address(), "rollout", "status",
                         "ro-3f2a9c0d11b2e4f7", "--interval", "1s"},
                        io_, ""),
            kExitUsage);
}

TEST_F(RolloutWatchTest, AbortWithRollbackIsWatchedUntilTargetsAreBack) {
  v1::Rollout reverting =
      WatchedRollout(2, v1::ROLLOUT_STATE_ABORTED, "aborted by operator");
  reverting.mutable_counts()->set_reverting(2);
  v1::Rollout back = reverting;
  back.mutable_counts()->set_reverting(0);
  back.mutable_counts()->set_reverted(1);
  back.mutable_counts()->set_revert_failed(1);
  server_.service().ScriptGetRollout({{reverting}, {reverting}, {back}});
  CommandContext ctx = Context();
  absl::Status s = Watch(ctx);
  EXPECT_EQ(ExitCodeFor(s), kExitRolloutAborted) << s;
  EXPECT_EQ(server_.service().get_rollout_calls(), 3);
  std::vector<std::string> lines = Lines(out_.str());
  ASSERT_EQ(lines.size(), 2u) << out_.str();
  EXPECT_NE(lines[0].find("| rollback: 2 reverting, 0 reverted, 0 revert "
                          "failed | gate"),
            std::string::npos)
      << lines[0];
  EXPECT_NE(lines[1].find("| rollback: 0 reverting, 1 reverted, 1 revert "
                          "failed | gate"),
            std::string::npos)
      << lines[1];
}

TEST_F(RolloutCommandsTest, StatusShowsTargetsDirectedBack) {
  v1::Rollout r = SampleRollout();
  r.set_state(v1::ROLLOUT_STATE_ABORTED);
  r.mutable_counts()->set_reverting(1);
  r.mutable_counts()->set_reverted(1);
  r.mutable_targets(0)->set_revert_state(v1::TARGET_STATE_HEALTHY);
  r.mutable_targets(0)->set_revert_to_version("1.1.0");
  r.mutable_targets(2)->set_revert_state(v1::TARGET_STATE_DOWNLOADING);
  r.mutable_targets(2)->set_revert_to_version("1.1.0");
  server_.service().SetRollout(r);
  CommandContext ctx = Context();
  ASSERT_TRUE(RolloutStatus("ro-3f2a9c0d11b2e4f7", ctx).ok()) << err_.str();
  const std::string out = out_.str();
  EXPECT_NE(out.find("ROLLBACK   1 reverting, 1 reverted, 0 revert failed\n"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("AGENT      STATE         FROM → TO       REVERT         "
                     "       UPDATED   ERROR\n"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("agent-1    healthy       1.1.0 → 1.2.0   → 1.1.0 "
                     "healthy       40s ago\n"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("agent-3    downloading   - → 1.2.0       → 1.1.0 "
                     "downloading   2s ago\n"),
            std::string::npos)
      << out;
}

}  // namespace
}  // namespace fleet::cli
