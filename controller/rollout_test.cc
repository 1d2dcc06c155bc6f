#include "controller/rollout.h"

#include <cmath>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/testing/fake_clock.h"
#include "gtest/gtest.h"

namespace fleet::controller {
namespace {

v1::Agent MakeAgent(const std::string& id, const std::string& platform,
                    const std::string& installed_version,
                    std::map<std::string, std::string> labels = {}) {
  v1::Agent a;
  a.set_agent_id(id);
  a.set_platform(platform);
  for (const auto& [k, v] : labels) (*a.mutable_labels())[k] = v;
  v1::InstalledProduct* p = a.add_installed();
  p->set_product("app");
  p->set_version(installed_version);
  return a;
}

v1::Rollout MakeRollout(std::vector<std::pair<uint32_t, int64_t>> stages = {
                            {100, 0}}) {
  v1::Rollout r;
  r.set_rollout_id("ro-1");
  r.set_product("app");
  r.set_version("1.1.0");
  r.set_state(v1::ROLLOUT_STATE_RUNNING);
  for (const auto& [percent, bake] : stages) {
    v1::Stage* s = r.add_stages();
    s->set_percent(percent);
    s->set_bake_seconds(bake);
  }
  return r;
}

v1::RolloutTarget Target(const std::string& id, v1::TargetState state,
                         uint32_t stage = 0) {
  v1::RolloutTarget t;
  t.set_agent_id(id);
  t.set_state(state);
  t.set_stage(stage);
  t.set_directive_id("dir-" + id);
  return t;
}

TEST(RolloutTest, PhaseMapsToTargetStateAsDocumented) {
  struct Case {
    v1::UpdatePhase phase;
    v1::TargetState state;
  };
  const Case cases[] = {
      {v1::UPDATE_PHASE_RECEIVED, v1::TARGET_STATE_DIRECTED},
      {v1::UPDATE_PHASE_DOWNLOADING, v1::TARGET_STATE_DOWNLOADING},
      {v1::UPDATE_PHASE_DOWNLOADED, v1::TARGET_STATE_DOWNLOADING},
      {v1::UPDATE_PHASE_VERIFIED, v1::TARGET_STATE_VERIFIED},
      {v1::UPDATE_PHASE_STAGED, v1::TARGET_STATE_VERIFIED},
      {v1::UPDATE_PHASE_SWAPPED, v1::TARGET_STATE_SWAPPED},
      {v1::UPDATE_PHASE_RESTARTED, v1::TARGET_STATE_RESTARTED},
      {v1::UPDATE_PHASE_HEALTHY, v1::TARGET_STATE_HEALTHY},
      {v1::UPDATE_PHASE_FAILED, v1::TARGET_STATE_FAILED},
      {v1::UPDATE_PHASE_ROLLED_BACK, v1::TARGET_STATE_ROLLED_BACK},
      {v1::UPDATE_PHASE_UNSPECIFIED, v1::TARGET_STATE_UNSPECIFIED},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(TargetStateForPhase(c.phase), c.state)
        << v1::UpdatePhase_Name(c.phase);
  }
}

TEST(RolloutTest, EventsMoveTargetsForwardOnlyAndNeverOutOfFinal) {
  struct Case {
    std::string name;
    v1::TargetState from;
    v1::UpdatePhase phase;
    bool same_directive;
    v1::TargetState want;
  };
  const Case cases[] = {
      {"ack keeps directed", v1::TARGET_STATE_DIRECTED,
       v1::UPDATE_PHASE_RECEIVED, true, v1::TARGET_STATE_DIRECTED},
      {"download starts", v1::TARGET_STATE_DIRECTED,
       v1::UPDATE_PHASE_DOWNLOADING, true, v1::TARGET_STATE_DOWNLOADING},
      {"skips ahead", v1::TARGET_STATE_DIRECTED, v1::UPDATE_PHASE_SWAPPED, true,
       v1::TARGET_STATE_SWAPPED},
      {"late downloading after verified", v1::TARGET_STATE_VERIFIED,
       v1::UPDATE_PHASE_DOWNLOADED, true, v1::TARGET_STATE_VERIFIED},
      {"restarted to healthy", v1::TARGET_STATE_RESTARTED,
       v1::UPDATE_PHASE_HEALTHY, true, v1::TARGET_STATE_HEALTHY},
      {"failure before swap", v1::TARGET_STATE_DOWNLOADING,
       v1::UPDATE_PHASE_FAILED, true, v1::TARGET_STATE_FAILED},
      {"rollback after restart", v1::TARGET_STATE_RESTARTED,
       v1::UPDATE_PHASE_ROLLED_BACK, true, v1::TARGET_STATE_ROLLED_BACK},
      {"healthy is final", v1::TARGET_STATE_HEALTHY,
       v1::UPDATE_PHASE_ROLLED_BACK, true, v1::TARGET_STATE_HEALTHY},
      {"failed is final", v1::TARGET_STATE_FAILED, v1::UPDATE_PHASE_HEALTHY,
       true, v1::TARGET_STATE_FAILED},
      {"other directive ignored", v1::TARGET_STATE_DIRECTED,
       v1::UPDATE_PHASE_HEALTHY, false, v1::TARGET_STATE_DIRECTED},
      {"unknown phase ignored", v1::TARGET_STATE_DIRECTED,
       v1::UPDATE_PHASE_UNSPECIFIED, true, v1::TARGET_STATE_DIRECTED},
  };
  FakeClock clock;
  for (const Case& c : cases) {
    v1::RolloutTarget t = Target("a1", c.from);
    t.set_updated_unix_ms(1);
    v1::UpdateEvent e;
    e.set_directive_id(c.same_directive ? "dir-a1" : "dir-old");
    e.set_phase(c.phase);
    e.set_error("disk full");
    e.set_error_class("disk");
    const bool moved = ApplyEvent(e, clock.Now(), t);
    EXPECT_EQ(t.state(), c.want) << c.name;
    EXPECT_EQ(moved, c.want != c.from) << c.name;
    if (moved) {
      EXPECT_EQ(t.updated_unix_ms(), absl::ToUnixMillis(clock.Now()));
    } else {
      EXPECT_EQ(t.updated_unix_ms(), 1) << c.name;
    }
    const bool failed = c.want == v1::TARGET_STATE_FAILED ||
                        c.want == v1::TARGET_STATE_ROLLED_BACK;
    EXPECT_EQ(t.error(), failed && moved ? "disk: disk full" : "") << c.name;
  }
}

TEST(RolloutTest, TargetSelection) {
  struct Case {
    std::string name;
    v1::Agent agent;
    v1::Selector selector;
    std::optional<v1::TargetState> want;  // nullopt: not a target
  };
  v1::Selector eu;
  (*eu.mutable_labels())["region"] = "eu";
  v1::Selector darwin;
  darwin.set_platform("darwin/arm64");
  v1::Agent no_product = MakeAgent("a", "linux/amd64", "1.0.0");
  no_product.mutable_installed(0)->set_product("other");
  const std::vector<Case> cases = {
      {"runs older version",
       MakeAgent("a", "linux/amd64", "1.0.0"),
       {},
       v1::TARGET_STATE_PENDING},
      {"nothing installed yet",
       MakeAgent("a", "linux/amd64", ""),
       {},
       v1::TARGET_STATE_PENDING},
      {"already on version",
       MakeAgent("a", "linux/amd64", "1.1.0"),
       {},
       v1::TARGET_STATE_HEALTHY},
      {"does not run the product", no_product, {}, std::nullopt},
      {"no release for its platform",
       MakeAgent("a", "linux/arm64", "1.0.0"),
       {},
       std::nullopt},
      {"label matches",
       MakeAgent("a", "linux/amd64", "1.0.0", {{"region", "eu"}}), eu,
       v1::TARGET_STATE_PENDING},
      {"label differs",
       MakeAgent("a", "linux/amd64", "1.0.0", {{"region", "us"}}), eu,
       std::nullopt},
      {"label missing", MakeAgent("a", "linux/amd64", "1.0.0"), eu,
       std::nullopt},
      {"selector platform differs", MakeAgent("a", "linux/amd64", "1.0.0"),
       darwin, std::nullopt},
  };
  FakeClock clock;
  for (const Case& c : cases) {
    v1::Rollout r = MakeRollout();
    *r.mutable_selector() = c.selector;
    std::optional<v1::RolloutTarget> t =
        NewTarget(r, c.agent, {"darwin/arm64", "linux/amd64"}, clock.Now());
    ASSERT_EQ(t.has_value(), c.want.has_value()) << c.name;
    if (t) {
      EXPECT_EQ(t->state(), *c.want) << c.name;
      EXPECT_EQ(t->from_version(), c.agent.installed(0).version()) << c.name;
      EXPECT_EQ(t->agent_id(), "a");
      EXPECT_EQ(t->stage(), 0u);
    }
  }
}

TEST(RolloutTest, StageValidation) {
  struct Case {
    std::string name;
    std::vector<std::pair<uint32_t, int64_t>> stages;
    bool ok;
  };
  const std::vector<Case> cases = {
      {"empty means one stage", {}, true},
      {"single 100", {{100, 0}}, true},
      {"canary then all", {{1, 600}, {10, 600}, {100, 0}}, true},
      {"zero percent", {{0, 0}, {100, 0}}, false},
      {"over 100", {{101, 0}}, false},
      {"not increasing", {{50, 0}, {50, 0}, {100, 0}}, false},
      {"does not reach 100", {{10, 0}, {50, 0}}, false},
      {"negative bake", {{10, -1}, {100, 0}}, false},
  };
  for (const Case& c : cases) {
    absl::StatusOr<Stages> stages =
        NormalizeStages(MakeRollout(c.stages).stages());
    EXPECT_EQ(stages.ok(), c.ok) << c.name << ": " << stages.status();
    if (!c.ok) {
      EXPECT_EQ(stages.status().code(), absl::StatusCode::kInvalidArgument);
    } else if (c.stages.empty()) {
      ASSERT_EQ(stages->size(), 1);
      EXPECT_EQ((*stages)[0].percent(), 100u);
    }
  }
}

TEST(RolloutTest, CohortsAreStableAndRoughlyProportional) {
  v1::Rollout r = MakeRollout({{10, 0}, {50, 0}, {100, 0}});
  int per_stage[3] = {0, 0, 0};
  for (int i = 0; i < 2000; ++i) {
    const std::string id = "agent-" + std::to_string(i);
    uint32_t stage = StageOf("ro-1", id, r.stages());
    ASSERT_LT(stage, 3u);
    EXPECT_EQ(stage, StageOf("ro-1", id, r.stages()));
    ++per_stage[stage];
  }
  EXPECT_NEAR(per_stage[0], 200, 80);
  EXPECT_NEAR(per_stage[1], 800, 120);
  EXPECT_NEAR(per_stage[2], 1000, 120);
}

TEST(RolloutTest, SingleStageCompletesWhenEveryTargetIsFinal) {
  FakeClock clock;
  RolloutRecord record{MakeRollout()};
  std::vector<v1::RolloutTarget> targets = {
      Target("a", v1::TARGET_STATE_HEALTHY),
      Target("b", v1::TARGET_STATE_SWAPPED)};
  EXPECT_FALSE(AdvanceRollout(targets, clock.Now(), record));
  EXPECT_EQ(record.rollout.state(), v1::ROLLOUT_STATE_RUNNING);

  targets[1].set_state(v1::TARGET_STATE_ROLLED_BACK);
  clock.Advance(absl::Seconds(5));
  EXPECT_TRUE(AdvanceRollout(targets, clock.Now(), record));
  EXPECT_EQ(record.rollout.state(), v1::ROLLOUT_STATE_COMPLETED);
  EXPECT_EQ(record.rollout.updated_unix_ms(), absl::ToUnixMillis(clock.Now()));
  EXPECT_NE(record.rollout.state_reason().find("1 healthy"), std::string::npos)
      << record.rollout.state_reason();
  // Completed is terminal.
  EXPECT_FALSE(AdvanceRollout(targets, clock.Now(), record));
}

TEST(RolloutTest, RolloutWithoutTargetsKeepsRunningForLateJoiners) {
  FakeClock clock;
  RolloutRecord record{MakeRollout()};
  EXPECT_FALSE(AdvanceRollout({}, clock.Now(), record));
  EXPECT_EQ(record.rollout.state(), v1::ROLLOUT_STATE_RUNNING);
}

TEST(RolloutTest, NextStageStartsAfterBakeTime) {
  FakeClock clock;
  RolloutRecord record{MakeRollout({{50, 60}, {100, 0}})};
  std::vector<v1::RolloutTarget> targets = {
      Target("a", v1::TARGET_STATE_RESTARTED, 0),
      Target("b", v1::TARGET_STATE_PENDING, 1)};
  EXPECT_FALSE(NeedsDirective(record, targets[1]));
  EXPECT_FALSE(AdvanceRollout(targets, clock.Now(), record));

  targets[0].set_state(v1::TARGET_STATE_HEALTHY);
  EXPECT_TRUE(AdvanceRollout(targets, clock.Now(), record));
  EXPECT_EQ(record.stage_settled_ms, absl::ToUnixMillis(clock.Now()));
  EXPECT_EQ(record.rollout.current_stage(), 0u);

  clock.Advance(absl::Seconds(59));
  EXPECT_FALSE(AdvanceRollout(targets, clock.Now(), record));
  clock.Advance(absl::Seconds(1));
  EXPECT_TRUE(AdvanceRollout(targets, clock.Now(), record));
  EXPECT_EQ(record.rollout.current_stage(), 1u);
  EXPECT_EQ(record.stage_settled_ms, 0);
  EXPECT_TRUE(NeedsDirective(record, targets[1]));
  EXPECT_EQ(record.rollout.state(), v1::ROLLOUT_STATE_RUNNING);

  targets[1].set_state(v1::TARGET_STATE_HEALTHY);
  EXPECT_TRUE(AdvanceRollout(targets, clock.Now(), record));
  EXPECT_EQ(record.rollout.state(), v1::ROLLOUT_STATE_COMPLETED);
}

TEST(RolloutTest, LateJoinerReopensASettledStage) {
  FakeClock clock;
  RolloutRecord record{MakeRollout({{50, 60}, {100, 0}})};
  std::vector<v1::RolloutTarget> targets = {
      Target("a", v1::TARGET_STATE_HEALTHY, 0)};
  EXPECT_TRUE(AdvanceRollout(targets, clock.Now(), record));
  EXPECT_NE(record.stage_settled_ms, 0);
  targets.push_back(Target("late", v1::TARGET_STATE_DIRECTED, 0));
  clock.Advance(absl::Seconds(120));
  EXPECT_TRUE(AdvanceRollout(targets, clock.Now(), record));
  EXPECT_EQ(record.stage_settled_ms, 0);
  EXPECT_EQ(record.rollout.current_stage(), 0u);
}

TEST(RolloutTest, NeedsDirectiveOnlyForPendingTargetsOfRunningRollouts) {
  RolloutRecord record{MakeRollout()};
  EXPECT_TRUE(NeedsDirective(record, Target("a", v1::TARGET_STATE_PENDING)));
  EXPECT_FALSE(NeedsDirective(record, Target("a", v1::TARGET_STATE_DIRECTED)));
  EXPECT_FALSE(NeedsDirective(record, Target("a", v1::TARGET_STATE_HEALTHY)));
  record.rollout.set_state(v1::ROLLOUT_STATE_PAUSED);
  EXPECT_FALSE(NeedsDirective(record, Target("a", v1::TARGET_STATE_PENDING)));
}

TEST(RolloutTest, CountsGroupStates) {
  v1::TargetCounts c = CountTargets(
      std::vector<v1::RolloutTarget>{Target("a", v1::TARGET_STATE_PENDING),
                                     Target("b", v1::TARGET_STATE_DIRECTED),
                                     Target("c", v1::TARGET_STATE_RESTARTED),
                                     Target("d", v1::TARGET_STATE_HEALTHY),
                                     Target("e", v1::TARGET_STATE_FAILED),
                                     Target("f", v1::TARGET_STATE_ROLLED_BACK),
                                     Target("g", v1::TARGET_STATE_SKIPPED)});
  EXPECT_EQ(c.total(), 7u);
  EXPECT_EQ(c.pending(), 1u);
  EXPECT_EQ(c.in_flight(), 2u);
  EXPECT_EQ(c.healthy(), 1u);
  EXPECT_EQ(c.failed(), 2u);
  EXPECT_EQ(c.skipped(), 1u);
}

TEST(RolloutTest, SelectorValidationNamesTheField) {
  v1::Selector s;
  s.set_platform("plan9/mips");
  EXPECT_EQ(ValidateSelector(s).code(), absl::StatusCode::kInvalidArgument);
  s.set_platform("");
  (*s.mutable_labels())["bad key!"] = "v";
  absl::Status status = ValidateSelector(s);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("selector.labels"), std::string::npos);
}

TEST(RolloutTest, OperatorCommandsFollowTheStateTable) {
  struct Case {
    v1::RolloutState from;
    RolloutCommand command;
    // UNSPECIFIED: refused with FAILED_PRECONDITION.
    v1::RolloutState to;
  };
  constexpr auto kRunning = v1::ROLLOUT_STATE_RUNNING;
  constexpr auto kPaused = v1::ROLLOUT_STATE_PAUSED;
  constexpr auto kCompleted = v1::ROLLOUT_STATE_COMPLETED;
  constexpr auto kAborted = v1::ROLLOUT_STATE_ABORTED;
  constexpr auto kRefused = v1::ROLLOUT_STATE_UNSPECIFIED;
  const Case cases[] = {
      {kRunning, RolloutCommand::kPause, kPaused},
      {kRunning, RolloutCommand::kResume, kRefused},
      {kRunning, RolloutCommand::kAbort, kAborted},
      {kPaused, RolloutCommand::kPause, kRefused},
      {kPaused, RolloutCommand::kResume, kRunning},
      {kPaused, RolloutCommand::kAbort, kAborted},
      {kCompleted, RolloutCommand::kPause, kRefused},
      {kCompleted, RolloutCommand::kResume, kRefused},
      {kCompleted, RolloutCommand::kAbort, kRefused},
      {kAborted, RolloutCommand::kPause, kRefused},
      {kAborted, RolloutCommand::kResume, kRefused},
      {kAborted, RolloutCommand::kAbort, kRefused},
  };
  FakeClock clock;
  for (const Case& c : cases) {
    const std::string name =
        RolloutStateName(c.from) + " " + RolloutCommandName(c.command);
    RolloutRecord record;
    record.rollout = MakeRollout();
    record.rollout.set_state(c.from);
    record.rollout.set_state_reason("before");
    record.rollout.set_updated_unix_ms(1);
    absl::Status s =
        ApplyRolloutCommand(c.command, "bad canary", clock.Now(), record);
    if (c.to == kRefused) {
      EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << name;
      EXPECT_NE(s.message().find(RolloutStateName(c.from)), std::string::npos)
          << name << ": " << s.message();
      EXPECT_NE(s.message().find("ro-1"), std::string::npos) << s.message();
      EXPECT_EQ(record.rollout.state(), c.from) << name;
      EXPECT_EQ(record.rollout.state_reason(), "before") << name;
      EXPECT_EQ(record.rollout.updated_unix_ms(), 1) << name;
      continue;
    }
    ASSERT_TRUE(s.ok()) << name << ": " << s;
    EXPECT_EQ(record.rollout.state(), c.to) << name;
    EXPECT_EQ(record.rollout.updated_unix_ms(), absl::ToUnixMillis(clock.Now()))
        << name;
  }
}

TEST(RolloutTest, OperatorReasonIsKeptInTheStateReason) {
  FakeClock clock;
  RolloutRecord record;
  record.rollout = MakeRollout();
  ASSERT_TRUE(ApplyRolloutCommand(RolloutCommand::kPause, "error spike",
                                  clock.Now(), record)
                  .ok());
  EXPECT_EQ(record.rollout.state_reason(), "paused by operator: error spike");
  ASSERT_TRUE(
      ApplyRolloutCommand(RolloutCommand::kResume, "", clock.Now(), record)
          .ok());
  EXPECT_EQ(record.rollout.state_reason(), "resumed by operator");
  ASSERT_TRUE(
      ApplyRolloutCommand(RolloutCommand::kAbort, "", clock.Now(), record)
          .ok());
  EXPECT_EQ(record.rollout.state_reason(), "aborted by operator");
}

TEST(RolloutTest, PausedRolloutNeitherDirectsNorAdvances) {
  FakeClock clock;
  RolloutRecord record;
  record.rollout = MakeRollout();
  record.rollout.set_state(v1::ROLLOUT_STATE_PAUSED);
  const v1::RolloutTarget pending = Target("a", v1::TARGET_STATE_PENDING, 0);
  EXPECT_FALSE(NeedsDirective(record, pending));
  const std::vector<v1::RolloutTarget> all_final = {
      Target("a", v1::TARGET_STATE_HEALTHY, 0)};
  EXPECT_FALSE(AdvanceRollout(all_final, clock.Now(), record));
  EXPECT_EQ(record.rollout.state(), v1::ROLLOUT_STATE_PAUSED);
}

TEST(RolloutTest, SelectorsOverlapUnlessPlatformOrALabelExcludes) {
  auto selector = [](const std::string& platform,
                     std::map<std::string, std::string> labels) {
    v1::Selector s;
    s.set_platform(platform);
    for (const auto& [k, v] : labels) (*s.mutable_labels())[k] = v;
    return s;
  };
  struct Case {
    const char* name;
    v1::Selector a;
    v1::Selector b;
    bool overlap;
  };
  const Case cases[] = {
      {"both empty", selector("", {}), selector("", {}), true},
      {"one platform", selector("linux/amd64", {}), selector("", {}), true},
      {"same platform", selector("linux/amd64", {}),
       selector("linux/amd64", {}), true},
      {"other platform", selector("linux/amd64", {}),
       selector("linux/arm64", {}), false},
      {"same label", selector("", {{"env", "prod"}}),
       selector("", {{"env", "prod"}}), true},
      {"label value differs", selector("", {{"env", "prod"}}),
       selector("", {{"env", "beta"}}), false},
      {"different keys", selector("", {{"env", "prod"}}),
       selector("", {{"region", "eu"}}), true},
      {"labels vs none", selector("", {{"env", "prod"}}), selector("", {}),
       true},
      {"one of two keys differs",
       selector("", {{"env", "prod"}, {"region", "eu"}}),
       selector("", {{"env", "prod"}, {"region", "us"}}), false},
      {"platform overlaps, label excludes",
       selector("linux/amd64", {{"env", "prod"}}),
       selector("", {{"env", "beta"}}), false},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(SelectorsOverlap(c.a, c.b), c.overlap) << c.name;
    EXPECT_EQ(SelectorsOverlap(c.b, c.a), c.overlap) << c.name << " swapped";
  }
}

TEST(RolloutTest, MaxInFlightValidation) {
  v1::MaxInFlight limit;
  EXPECT_TRUE(ValidateMaxInFlight(limit).ok());  // unset: no limit
  limit.set_count(0);
  EXPECT_EQ(ValidateMaxInFlight(limit).code(),
            absl::StatusCode::kInvalidArgument);
  limit.set_count(1);
  EXPECT_TRUE(ValidateMaxInFlight(limit).ok());
  for (uint32_t bad : {0u, 101u}) {
    limit.set_percent(bad);
    absl::Status s = ValidateMaxInFlight(limit);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find("max_in_flight.percent"), std::string::npos);
  }
  limit.set_percent(100);
  EXPECT_TRUE(ValidateMaxInFlight(limit).ok());
}

TEST(RolloutTest, DirectiveBudgetIsTheLimitLessTargetsInFlight) {
  auto count = [](uint32_t n) {
    v1::MaxInFlight m;
    m.set_count(n);
    return m;
  };
  auto percent = [](uint32_t p) {
    v1::MaxInFlight m;
    m.set_percent(p);
    return m;
  };
  struct Case {
    const char* name;
    v1::MaxInFlight limit;
    uint32_t total;
    uint32_t in_flight;
    uint32_t budget;
  };
  const Case cases[] = {
      {"unlimited", v1::MaxInFlight(), 50, 49, UINT32_MAX},
      {"count, none in flight", count(5), 50, 0, 5},
      {"count, some in flight", count(5), 50, 3, 2},
      {"count reached", count(5), 50, 5, 0},
      {"count exceeded (limit lowered)", count(5), 50, 7, 0},
      {"20% of 50", percent(20), 50, 0, 10},
      {"20% of 12 rounds up", percent(20), 12, 1, 2},
      {"1% of 10 is at least 1", percent(1), 10, 0, 1},
      {"1% of 10, one in flight", percent(1), 10, 1, 0},
      {"100%", percent(100), 7, 2, 5},
      {"no targets yet", percent(50), 0, 0, 1},
  };
  for (const Case& c : cases) {
    v1::TargetCounts counts;
    counts.set_total(c.total);
    counts.set_in_flight(c.in_flight);
    EXPECT_EQ(DirectiveBudget(c.limit, counts), c.budget) << c.name;
  }
}

v1::FailurePolicy Policy(double rate, uint32_t min_samples,
                         v1::FailureAction action = v1::FAILURE_ACTION_PAUSE,
                         bool blacklist = false) {
  v1::FailurePolicy p;
  p.set_max_failure_rate(rate);
  p.set_min_samples(min_samples);
  p.set_action(action);
  p.set_blacklist(blacklist);
  return p;
}

TEST(RolloutTest, FailurePolicyValidation) {
  EXPECT_TRUE(ValidateFailurePolicy(v1::FailurePolicy()).ok());
  EXPECT_TRUE(ValidateFailurePolicy(Policy(0, 3)).ok());
  EXPECT_TRUE(ValidateFailurePolicy(Policy(0.05, 3)).ok());
  EXPECT_TRUE(ValidateFailurePolicy(Policy(1, 0)).ok());
  for (double bad : {-0.01, 1.01, 5.0, std::nan("")}) {
    absl::Status s = ValidateFailurePolicy(Policy(bad, 3));
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find("failure_policy.max_failure_rate"),
              absl::string_view::npos)
        << s;
  }
  v1::FailurePolicy unknown = Policy(0.1, 1);
  unknown.set_action(static_cast<v1::FailureAction>(7));
  EXPECT_EQ(ValidateFailurePolicy(unknown).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(RolloutTest, FailureGateTripsAboveTheRateOnceThereAreEnoughSamples) {
  struct Case {
    const char* name;
    v1::FailurePolicy policy;
    uint32_t healthy;
    uint32_t failed;
    uint32_t skipped;
    uint32_t armed_samples;
    const char* reason;  // nullptr: no trip
  };
  const Case cases[] = {
      {"no policy never trips", v1::FailurePolicy(), 0, 9, 0, 0, nullptr},
      {"below min samples", Policy(0.05, 5), 0, 4, 0, 0, nullptr},
      {"skipped targets are no samples", Policy(0.05, 5), 0, 4, 10, 0, nullptr},
      {"min samples reached", Policy(0.05, 5), 1, 4, 0, 0,
       "gate: 4 of 5 finished targets failed (80% > 5%)"},
      {"exactly at the threshold", Policy(0.05, 3), 19, 1, 0, 0, nullptr},
      {"just above the threshold", Policy(0.05, 3), 18, 1, 0, 0,
       "gate: 1 of 19 finished targets failed (5.263% > 5%)"},
      {"one third at 1/3 does not trip", Policy(1.0 / 3, 3), 2, 1, 0, 0,
       nullptr},
      {"rate 0 trips on the first failure", Policy(0, 2), 1, 1, 0, 0,
       "gate: 1 of 2 finished targets failed (50% > 0%)"},
      {"rate 0, no failures", Policy(0, 2), 5, 0, 0, 0, nullptr},
      {"rate 1 never trips", Policy(1, 1), 0, 8, 0, 0, nullptr},
      {"the issue's example", Policy(0.05, 3), 2, 3, 0, 0,
       "gate: 3 of 5 finished targets failed (60% > 5%)"},
      {"no new sample since resume", Policy(0.05, 3), 2, 3, 0, 5, nullptr},
      {"a new sample since resume", Policy(0.05, 3), 3, 3, 0, 5,
       "gate: 3 of 6 finished targets failed (50% > 5%)"},
      {"new sample but the rate recovered", Policy(0.5, 3), 4, 3, 0, 6,
       nullptr},
  };
  for (const Case& c : cases) {
    v1::TargetCounts counts;
    counts.set_healthy(c.healthy);
    counts.set_failed(c.failed);
    counts.set_skipped(c.skipped);
    counts.set_total(c.healthy + c.failed + c.skipped + 2);
    counts.set_pending(2);
    std::optional<GateTrip> trip =
        EvaluateGate(c.policy, counts, c.armed_samples);
    if (c.reason == nullptr) {
      EXPECT_FALSE(trip.has_value()) << c.name << ": " << trip->reason;
      continue;
    }
    ASSERT_TRUE(trip.has_value()) << c.name;
    EXPECT_EQ(trip->reason, c.reason) << c.name;
    EXPECT_EQ(trip->failed, c.failed) << c.name;
    EXPECT_EQ(trip->samples, c.healthy + c.failed) << c.name;
  }
}

TEST(RolloutTest, GateTripPausesOrAbortsAndNamesTheRolloutInTheBlacklist) {
  struct Case {
    v1::FailureAction action;
    v1::RolloutState state;
  };
  const Case cases[] = {
      {v1::FAILURE_ACTION_UNSPECIFIED, v1::ROLLOUT_STATE_PAUSED},
      {v1::FAILURE_ACTION_PAUSE, v1::ROLLOUT_STATE_PAUSED},
      {v1::FAILURE_ACTION_ABORT, v1::ROLLOUT_STATE_ABORTED},
  };
  FakeClock clock;
  for (const Case& c : cases) {
    RolloutRecord record;
    record.rollout = MakeRollout();
    const v1::FailurePolicy policy = Policy(0.05, 3, c.action, true);
    v1::TargetCounts counts;
    counts.set_healthy(2);
    counts.set_failed(3);
    std::optional<GateTrip> trip = EvaluateGate(policy, counts, 0);
    ASSERT_TRUE(trip.has_value());
    ApplyGateTrip(*trip, policy, clock.Now(), record);
    EXPECT_EQ(record.rollout.state(), c.state) << c.action;
    EXPECT_EQ(record.rollout.state_reason(),
              "gate: 3 of 5 finished targets failed (60% > 5%)");
    EXPECT_EQ(record.rollout.updated_unix_ms(),
              absl::ToUnixMillis(clock.Now()));
    EXPECT_EQ(record.gate_armed_samples, 5u);
    EXPECT_FALSE(NeedsDirective(record, Target("a", v1::TARGET_STATE_PENDING)));

    v1::BlacklistEntry entry = GateBlacklistEntry(*trip, record.rollout);
    EXPECT_EQ(entry.product(), "app");
    EXPECT_EQ(entry.version(), "1.1.0");
    EXPECT_EQ(entry.created_by(), "gate:ro-1");
    EXPECT_EQ(entry.reason(),
              "rollout ro-1 tripped its failure gate: 3 of 5 finished "
              "targets failed");
  }
}

// ---------------------------------------------------------- offline timeout

TEST(OfflineTimeoutTest, SkipsOnlyUnfinishedTargetsOfStartedStagesPastTimeout) {
  const absl::Time now = absl::FromUnixSeconds(1'800'000'000);
  v1::Rollout rollout;
  rollout.set_state(v1::ROLLOUT_STATE_RUNNING);
  rollout.set_current_stage(1);
  rollout.set_offline_timeout_seconds(600);
  struct Case {
    const char* name;
    v1::RolloutState rollout_state;
    v1::TargetState state;
    uint32_t stage;
    absl::Duration offline_for;
    bool skipped;
  };
  const Case cases[] = {
      {"pending past timeout", v1::ROLLOUT_STATE_RUNNING,
       v1::TARGET_STATE_PENDING, 0, absl::Minutes(10), true},
      {"in flight past timeout", v1::ROLLOUT_STATE_RUNNING,
       v1::TARGET_STATE_DOWNLOADING, 1, absl::Minutes(11), true},
      {"just under the timeout", v1::ROLLOUT_STATE_RUNNING,
       v1::TARGET_STATE_PENDING, 0, absl::Minutes(10) - absl::Seconds(1),
       false},
      {"later stage does not block yet", v1::ROLLOUT_STATE_RUNNING,
       v1::TARGET_STATE_PENDING, 2, absl::Hours(5), false},
      {"final target stays", v1::ROLLOUT_STATE_RUNNING, v1::TARGET_STATE_FAILED,
       0, absl::Hours(5), false},
      {"paused rollout skips nothing", v1::ROLLOUT_STATE_PAUSED,
       v1::TARGET_STATE_PENDING, 0, absl::Hours(5), false},
  };
  for (const Case& c : cases) {
    rollout.set_state(c.rollout_state);
    v1::RolloutTarget target;
    target.set_state(c.state);
    target.set_stage(c.stage);
    target.set_directive_id("dir-1");
    const bool changed =
        SkipIfOffline(rollout, now - c.offline_for, now, target);
    EXPECT_EQ(changed, c.skipped) << c.name;
    EXPECT_EQ(target.state() == v1::TARGET_STATE_SKIPPED, c.skipped) << c.name;
    if (c.skipped) {
      EXPECT_NE(target.error().find("offline since"), std::string::npos)
          << target.error();
      EXPECT_EQ(target.directive_id(), "dir-1") << c.name;
      EXPECT_EQ(target.updated_unix_ms(), absl::ToUnixMillis(now));
    }
  }
  // Skipped targets are no gate sample but are counted.
  v1::RolloutTarget skipped;
  skipped.set_state(v1::TARGET_STATE_SKIPPED);
  v1::TargetCounts counts = CountTargets({skipped});
  EXPECT_EQ(counts.skipped(), 1u);
  v1::FailurePolicy policy;
  policy.set_max_failure_rate(0.01);
  policy.set_min_samples(1);
  EXPECT_FALSE(EvaluateGate(policy, counts, 0).has_value());
}

TEST(OfflineTimeoutTest, ReturningAgentIsTakenBackWhileTheRolloutIsActive) {
  const absl::Time now = absl::FromUnixSeconds(1'800'000'000);
  v1::Rollout rollout;
  rollout.set_version("1.1.0");
  struct Case {
    const char* name;
    v1::RolloutState rollout_state;
    const char* directive_id;
    const char* installed;
    v1::TargetState want;  // UNSPECIFIED: not taken back
  };
  const Case cases[] = {
      {"never directed", v1::ROLLOUT_STATE_RUNNING, "", "1.0.0",
       v1::TARGET_STATE_PENDING},
      {"directed before", v1::ROLLOUT_STATE_PAUSED, "dir-1", "1.0.0",
       v1::TARGET_STATE_DIRECTED},
      {"updated while away", v1::ROLLOUT_STATE_RUNNING, "dir-1", "1.1.0",
       v1::TARGET_STATE_HEALTHY},
      {"completed rollout", v1::ROLLOUT_STATE_COMPLETED, "", "1.0.0",
       v1::TARGET_STATE_UNSPECIFIED},
      {"aborted rollout", v1::ROLLOUT_STATE_ABORTED, "dir-1", "1.0.0",
       v1::TARGET_STATE_UNSPECIFIED},
  };
  for (const Case& c : cases) {
    rollout.set_state(c.rollout_state);
    v1::RolloutTarget target;
    target.set_state(v1::TARGET_STATE_SKIPPED);
    target.set_error("skipped: agent offline");
    target.set_directive_id(c.directive_id);
    target.set_from_version("0.9.0");
    const bool changed = RetakeSkippedTarget(rollout, c.installed, now, target);
    EXPECT_EQ(changed, c.want != v1::TARGET_STATE_UNSPECIFIED) << c.name;
    if (!changed) {
      EXPECT_EQ(target.state(), v1::TARGET_STATE_SKIPPED) << c.name;
      continue;
    }
    EXPECT_EQ(target.state(), c.want) << c.name;
    EXPECT_EQ(target.error(), "") << c.name;
    EXPECT_EQ(target.from_version(),
              c.want == v1::TARGET_STATE_PENDING ? c.installed : "0.9.0")
        << c.name;
  }
  EXPECT_TRUE(ValidateOfflineTimeout(0).ok());
  EXPECT_TRUE(ValidateOfflineTimeout(30 * 24 * 3600).ok());
  EXPECT_EQ(ValidateOfflineTimeout(-1).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateOfflineTimeout(30 * 24 * 3600 + 1).code(),
            absl::StatusCode::kInvalidArgument);
}

// ------------------------------------------------------------- going back

TEST(RevertTest, AbortWithRollbackRevertsTargetsThatLeftTheirVersion) {
  v1::Rollout rollout;
  rollout.set_version("1.1.0");
  struct Case {
    v1::TargetState state;
    const char* from;
    const char* directive_id;
    v1::TargetState revert_state;
    bool reverted;
  };
  const Case cases[] = {
      {v1::TARGET_STATE_PENDING, "1.0.0", "", v1::TARGET_STATE_UNSPECIFIED,
       false},
      {v1::TARGET_STATE_DIRECTED, "1.0.0", "d", v1::TARGET_STATE_UNSPECIFIED,
       true},
      {v1::TARGET_STATE_RESTARTED, "1.0.0", "d", v1::TARGET_STATE_UNSPECIFIED,
       true},
      {v1::TARGET_STATE_HEALTHY, "1.0.0", "d", v1::TARGET_STATE_UNSPECIFIED,
       true},
      {v1::TARGET_STATE_HEALTHY, "1.1.0", "", v1::TARGET_STATE_UNSPECIFIED,
       false},  // was on the version before the rollout
      {v1::TARGET_STATE_FAILED, "1.0.0", "d", v1::TARGET_STATE_UNSPECIFIED,
       false},
      {v1::TARGET_STATE_ROLLED_BACK, "1.0.0", "d", v1::TARGET_STATE_UNSPECIFIED,
       false},
      {v1::TARGET_STATE_SKIPPED, "1.0.0", "d", v1::TARGET_STATE_UNSPECIFIED,
       true},
      {v1::TARGET_STATE_SKIPPED, "1.0.0", "", v1::TARGET_STATE_UNSPECIFIED,
       false},
      {v1::TARGET_STATE_HEALTHY, "1.0.0", "d", v1::TARGET_STATE_DIRECTED,
       false},  // already directed back
  };
  for (const Case& c : cases) {
    v1::RolloutTarget t;
    t.set_state(c.state);
    t.set_from_version(c.from);
    t.set_directive_id(c.directive_id);
    t.set_revert_state(c.revert_state);
    EXPECT_EQ(NeedsRevert(rollout, t), c.reverted)
        << TargetStateName(c.state) << " from " << c.from;
  }
}

TEST(RevertTest, RevertEventsMoveTheRevertAndCountSeparately) {
  const absl::Time now = absl::FromUnixSeconds(1'800'000'000);
  RevertRecord revert;
  revert.directive_id = "dir-back";
  revert.to_version = "1.0.0";
  v1::UpdateEvent event;
  event.set_directive_id("dir-other");
  event.set_phase(v1::UPDATE_PHASE_HEALTHY);
  EXPECT_FALSE(ApplyRevertEvent(event, now, revert));
  event.set_directive_id("dir-back");
  event.set_phase(v1::UPDATE_PHASE_ROLLED_BACK);
  event.set_error_class("health");
  event.set_error("exit status 1");
  ASSERT_TRUE(ApplyRevertEvent(event, now, revert));
  EXPECT_EQ(revert.state, v1::TARGET_STATE_ROLLED_BACK);
  EXPECT_EQ(revert.error, "health: exit status 1");
  EXPECT_EQ(revert.updated_ms, absl::ToUnixMillis(now));
  event.set_phase(v1::UPDATE_PHASE_HEALTHY);
  EXPECT_FALSE(ApplyRevertEvent(event, now, revert)) << "final stays final";

  std::vector<v1::RolloutTarget> targets(4);
  for (v1::RolloutTarget& t : targets) t.set_state(v1::TARGET_STATE_HEALTHY);
  SetRevertProgress(revert, targets[0]);
  EXPECT_EQ(targets[0].revert_directive_id(), "dir-back");
  EXPECT_EQ(targets[0].revert_to_version(), "1.0.0");
  targets[1].set_revert_state(v1::TARGET_STATE_HEALTHY);
  targets[2].set_revert_state(v1::TARGET_STATE_DOWNLOADING);
  v1::TargetCounts counts = CountTargets(targets);
  EXPECT_EQ(counts.healthy(), 4u);
  EXPECT_EQ(counts.revert_failed(), 1u);
  EXPECT_EQ(counts.reverted(), 1u);
  EXPECT_EQ(counts.reverting(), 1u);
}

TEST(RevertTest, LeadBackPrefersWhatTheAgentRanBefore) {
  struct Case {
    const char* name;
    std::vector<std::string> previous;
    std::vector<std::string> released;  // newest first
    std::vector<std::string> blacklisted;
    std::optional<std::string> want;
  };
  const Case cases[] = {
      {"newest previous",
       {"1.1.0", "1.0.0"},
       {"2.0.0", "1.1.0", "1.0.0"},
       {"2.0.0"},
       "1.1.0"},
      {"previous blacklisted too",
       {"1.1.0", "1.0.0"},
       {"2.0.0", "1.1.0", "1.0.0"},
       {"2.0.0", "1.1.0"},
       "1.0.0"},
      {"previous without a release",
       {"0.9.0"},
       {"2.0.0", "1.1.0"},
       {"2.0.0"},
       "1.1.0"},
      {"no history: newest good release",
       {},
       {"2.1.0", "2.0.0", "1.0.0"},
       {"2.0.0"},
       "2.1.0"},
      {"nothing good",
       {"1.0.0"},
       {"2.0.0", "1.0.0"},
       {"2.0.0", "1.0.0"},
       std::nullopt},
  };
  for (const Case& c : cases) {
    v1::InstalledProduct installed;
    installed.set_product("app");
    installed.set_version("2.0.0");
    for (const std::string& v : c.previous) installed.add_previous_versions(v);
    EXPECT_EQ(LeadBackVersion(installed, c.released, c.blacklisted), c.want)
        << c.name;
  }
  v1::BlacklistEntry entry;
  entry.set_created_by("gate:ro-7");
  EXPECT_EQ(BlacklistRolloutId(entry), "ro-7");
  entry.set_created_by("operator");
  EXPECT_EQ(BlacklistRolloutId(entry), "");
}

TEST(RevertTest, RevertDirectiveIsARollbackUnlessItGoesUp) {
  v1::Release release;
  release.mutable_signed_manifest()->set_manifest("m");
  RevertRecord revert;
  revert.directive_id = "dir-1";
  revert.rollout_id = "ro-1";
  revert.from_version = "2.0.0";
  revert.to_version = "1.0.0";
  v1::UpdateDirective down = MakeRevertDirective(revert, release);
  EXPECT_EQ(down.kind(), v1::DIRECTIVE_KIND_ROLLBACK);
  EXPECT_EQ(down.directive_id(), "dir-1");
  EXPECT_EQ(down.rollout_id(), "ro-1");
  EXPECT_EQ(down.manifest().manifest(), "m");
  revert.to_version = "2.1.0";
  EXPECT_EQ(MakeRevertDirective(revert, release).kind(),
            v1::DIRECTIVE_KIND_UPDATE);
}

}  // namespace
}  // namespace fleet::controller
