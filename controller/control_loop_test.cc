#include "controller/control_loop.h"

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/testing/fake_clock.h"
#include "controller/store/store.h"
#include "controller/testing/temp_dir.h"
#include "gtest/gtest.h"

namespace fleet::controller {
namespace {

// Records what the loop sends, per agent.
class RecordingSender : public AgentSender {
 public:
  struct Sent {
    std::string agent_id;
    uint64_t session;
    v1::ControllerMessage message;
  };

  bool Send(absl::string_view agent_id, uint64_t session,
            v1::ControllerMessage message) override {
    absl::MutexLock lock(&mu_);
    sent_.push_back({std::string(agent_id), session, std::move(message)});
    return true;
  }
  void Close(absl::string_view agent_id, uint64_t session,
             const absl::Status& status) override {
    absl::MutexLock lock(&mu_);
    closed_.push_back(std::string(agent_id));
  }

  std::vector<Sent> Matching(v1::ControllerMessage::BodyCase body) {
    absl::MutexLock lock(&mu_);
    std::vector<Sent> out;
    for (const Sent& s : sent_) {
      if (s.message.body_case() == body) out.push_back(s);
    }
    return out;
  }
  // Waits up to 5 s for at least `n` messages of kind `body`.
  std::vector<Sent> WaitFor(v1::ControllerMessage::BodyCase body, size_t n) {
    const absl::Time deadline = absl::Now() + absl::Seconds(5);
    while (absl::Now() < deadline) {
      std::vector<Sent> found = Matching(body);
      if (found.size() >= n) return found;
      absl::SleepFor(absl::Milliseconds(5));
    }
    return Matching(body);
  }

 private:
  absl::Mutex mu_;
  std::vector<Sent> sent_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> closed_ ABSL_GUARDED_BY(mu_);
};

v1::Hello HelloOf(const std::string& agent_id, const std::string& version) {
  v1::Hello hello;
  hello.set_agent_id(agent_id);
  hello.set_platform("linux/amd64");
  v1::InstalledProduct* p = hello.add_installed();
  p->set_product("app");
  p->set_version(version);
  return hello;
}

v1::Release ReleaseOf(const std::string& version) {
  v1::Release r;
  r.set_product("app");
  r.set_version(version);
  r.set_platform("linux/amd64");
  r.set_sha256(std::string(32, 'x'));
  r.set_size(10);
  r.mutable_signed_manifest()->set_manifest("m-" + version);
  return r;
}

class ControlLoopTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = Store::Open(dir_.Join("fleet.db"));
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    auto reads = Store::Open(dir_.Join("fleet.db"));
    ASSERT_TRUE(reads.ok()) << reads.status();
    reads_ = *std::move(reads);
    ControlLoopOptions options;
    options.tick = absl::Milliseconds(10);
    options.offline_sweep = absl::Milliseconds(10);
    loop_ = std::make_unique<ControlLoop>(*store_, clock_, options);
    loop_->Start(sender_);
  }
  void TearDown() override { loop_->Stop(); }

  // Polls the store until the rollout satisfies `done` (5 s at most).
  RolloutRecord WaitForRollout(const std::string& id,
                               std::function<bool(const RolloutRecord&)> done) {
    RolloutRecord record;
    const absl::Time deadline = absl::Now() + absl::Seconds(5);
    while (absl::Now() < deadline) {
      absl::StatusOr<RolloutRecord> got = reads_->GetRollout(id);
      if (got.ok()) {
        record = *got;
        if (done(record)) break;
      }
      absl::SleepFor(absl::Milliseconds(5));
    }
    return record;
  }

  // Connects `n` agents on 1.0.0 and waits for their Welcomes.
  void ConnectAgents(int n) {
    for (int i = 0; i < n; ++i) {
      loop_->PostHello("agent-" + std::to_string(i), i + 1,
                       HelloOf("agent-" + std::to_string(i), "1.0.0"));
    }
    ASSERT_EQ(sender_.WaitFor(v1::ControllerMessage::kWelcome, n).size(), n);
  }

  // A rollout of 1.1.0 in two stages (50 %, 100 %) without bake time.
  absl::StatusOr<v1::Rollout> CreateTwoStageRollout() {
    v1::CreateRolloutRequest request;
    request.set_product("app");
    request.set_version("1.1.0");
    request.add_stages()->set_percent(50);
    request.add_stages()->set_percent(100);
    return loop_->CreateRollout(request);
  }

  size_t Directives() {
    return sender_.Matching(v1::ControllerMessage::kDirective).size();
  }

  size_t TargetsIn(const std::string& rollout_id, v1::TargetState state) {
    size_t n = 0;
    // Kept in a variable: a range-for over *temporary would dangle.
    absl::StatusOr<std::vector<v1::RolloutTarget>> targets =
        reads_->ListTargets(rollout_id);
    if (!targets.ok()) return 0;
    for (const v1::RolloutTarget& t : *targets) {
      n += t.state() == state ? 1 : 0;
    }
    return n;
  }

  // Waits (5 s at most) until `n` targets of the rollout are in `state`.
  size_t WaitForTargets(const std::string& rollout_id, v1::TargetState state,
                        size_t n) {
    const absl::Time deadline = absl::Now() + absl::Seconds(5);
    while (absl::Now() < deadline && TargetsIn(rollout_id, state) < n) {
      absl::SleepFor(absl::Milliseconds(5));
    }
    return TargetsIn(rollout_id, state);
  }

  void ReportHealthy(const RecordingSender::Sent& directive, uint64_t seq) {
    v1::UpdateEvent event;
    event.set_seq(seq);
    event.set_directive_id(directive.message.directive().directive_id());
    event.set_rollout_id(directive.message.directive().rollout_id());
    event.set_product("app");
    event.set_to_version("1.1.0");
    event.set_phase(v1::UPDATE_PHASE_HEALTHY);
    loop_->PostEvent(directive.agent_id, directive.session, event);
  }

  void ReportFailed(const RecordingSender::Sent& directive, uint64_t seq) {
    v1::UpdateEvent event;
    event.set_seq(seq);
    event.set_directive_id(directive.message.directive().directive_id());
    event.set_rollout_id(directive.message.directive().rollout_id());
    event.set_product("app");
    event.set_to_version("1.1.0");
    event.set_phase(v1::UPDATE_PHASE_FAILED);
    event.set_error("exited with status 1");
    loop_->PostEvent(directive.agent_id, directive.session, event);
  }

  // A one-stage rollout of 1.1.0, at most 3 in flight, with `policy`.
  absl::StatusOr<v1::Rollout> CreateGatedRollout(v1::FailurePolicy policy) {
    v1::CreateRolloutRequest request;
    request.set_product("app");
    request.set_version("1.1.0");
    request.mutable_max_in_flight()->set_count(3);
    *request.mutable_failure_policy() = std::move(policy);
    return loop_->CreateRollout(request);
  }

  testing::TempDir dir_;
  FakeClock clock_;
  RecordingSender sender_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Store> reads_;
  std::unique_ptr<ControlLoop> loop_;
};

TEST_F(ControlLoopTest, StagedRolloutDirectsTheNextCohortOnlyAfterBakeTime) {
  ASSERT_TRUE(loop_->AddRelease(ReleaseOf("1.1.0")).ok());
  constexpr int kAgents = 24;
  for (int i = 0; i < kAgents; ++i) {
    loop_->PostHello("agent-" + std::to_string(i), i + 1,
                     HelloOf("agent-" + std::to_string(i), "1.0.0"));
  }
  ASSERT_EQ(sender_.WaitFor(v1::ControllerMessage::kWelcome, kAgents).size(),
            kAgents);

  v1::CreateRolloutRequest request;
  request.set_product("app");
  request.set_version("1.1.0");
  v1::Stage* canary = request.add_stages();
  canary->set_percent(50);
  canary->set_bake_seconds(60);
  request.add_stages()->set_percent(100);
  absl::StatusOr<v1::Rollout> rollout = loop_->CreateRollout(request);
  ASSERT_TRUE(rollout.ok()) << rollout.status();
  EXPECT_EQ(rollout->counts().total(), kAgents);
  // Only the first cohort is directed; with 24 agents both cohorts are
  // non-empty unless the hash is badly skewed.
  const size_t first_cohort = rollout->counts().in_flight();
  ASSERT_GT(first_cohort, 0u);
  ASSERT_LT(first_cohort, kAgents);
  EXPECT_EQ(rollout->counts().pending(), kAgents - first_cohort);

  std::vector<RecordingSender::Sent> directives =
      sender_.WaitFor(v1::ControllerMessage::kDirective, first_cohort);
  ASSERT_EQ(directives.size(), first_cohort);
  for (const auto& d : directives) ReportHealthy(d, 1);
  RolloutRecord settled = WaitForRollout(
      rollout->rollout_id(),
      [](const RolloutRecord& r) { return r.stage_settled_ms != 0; });
  EXPECT_EQ(settled.stage_settled_ms, absl::ToUnixMillis(clock_.Now()));
  EXPECT_EQ(settled.rollout.current_stage(), 0u);

  // Just before the bake time ends nothing moves.
  clock_.Advance(absl::Seconds(59));
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(sender_.Matching(v1::ControllerMessage::kDirective).size(),
            first_cohort);

  clock_.Advance(absl::Seconds(1));
  directives = sender_.WaitFor(v1::ControllerMessage::kDirective, kAgents);
  ASSERT_EQ(directives.size(), kAgents);
  EXPECT_EQ(reads_->GetRollout(rollout->rollout_id())->rollout.current_stage(),
            1u);
  for (size_t i = first_cohort; i < directives.size(); ++i) {
    ReportHealthy(directives[i], 1);
  }
  RolloutRecord done =
      WaitForRollout(rollout->rollout_id(), [](const RolloutRecord& r) {
        return r.rollout.state() == v1::ROLLOUT_STATE_COMPLETED;
      });
  EXPECT_EQ(done.rollout.state(), v1::ROLLOUT_STATE_COMPLETED);
  EXPECT_EQ(reads_->GetAgent("agent-0")->installed(0).version(), "1.1.0");
}

TEST_F(ControlLoopTest, DisconnectOfAReplacedStreamKeepsTheAgentConnected) {
  loop_->PostHello("a1", 1, HelloOf("a1", "1.0.0"));
  loop_->PostHello("a1", 2, HelloOf("a1", "1.0.0"));
  loop_->PostDisconnect("a1", 1);  // the old stream ends after the new Hello
  ASSERT_EQ(sender_.WaitFor(v1::ControllerMessage::kWelcome, 2).size(), 2u);
  // The loop is single-threaded: once this write is committed, so is the
  // disconnect queued before it.
  ASSERT_TRUE(loop_->AddRelease(ReleaseOf("1.0.0")).ok());
  EXPECT_TRUE(reads_->GetAgent("a1")->connected());

  loop_->PostDisconnect("a1", 2);
  ASSERT_TRUE(loop_->AddRelease(ReleaseOf("2.0.0")).ok());
  EXPECT_FALSE(reads_->GetAgent("a1")->connected());
}

TEST_F(ControlLoopTest, EventsAreAckedAfterCommitOncePerBatchAndStream) {
  loop_->PostHello("a1", 7, HelloOf("a1", "1.0.0"));
  for (uint64_t seq = 1; seq <= 3; ++seq) {
    v1::UpdateEvent event;
    event.set_seq(seq);
    event.set_phase(v1::UPDATE_PHASE_DOWNLOADING);
    loop_->PostEvent("a1", 7, event);
  }
  std::vector<RecordingSender::Sent> acks;
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (absl::Now() < deadline) {
    acks = sender_.Matching(v1::ControllerMessage::kAck);
    if (!acks.empty() && acks.back().message.ack().acked_seq() == 3) break;
    absl::SleepFor(absl::Milliseconds(5));
  }
  ASSERT_FALSE(acks.empty());
  EXPECT_EQ(acks.back().message.ack().acked_seq(), 3u);
  EXPECT_EQ(acks.back().session, 7u);
  EXPECT_EQ(reads_->ListEvents("a1")->size(), 3u);
  EXPECT_EQ(*reads_->MaxEventSeq("a1"), 3u);
}

// AgentMessage.events: one work item, each event stored once per
// (agent, seq) however often it is resent, one ack for the batch, and the
// events handed to telemetry only once they are committed.
TEST_F(ControlLoopTest,
       EventBatchIsStoredOnceAckedTogetherAndHandedOnAfterCommit) {
  struct Handed {
    std::string agent_id;
    int64_t received_ms;
    std::vector<uint64_t> seqs;
    uint64_t committed_seq;  // MaxEventSeq on another connection, then
  };
  absl::Mutex mu;
  std::vector<Handed> handed;
  loop_->Stop();
  ControlLoopOptions options;
  options.tick = absl::Milliseconds(10);
  options.on_events_stored = [&](const std::string& agent_id,
                                 int64_t received_ms,
                                 std::vector<v1::UpdateEvent> events) {
    Handed h{agent_id, received_ms, {}, *reads_->MaxEventSeq(agent_id)};
    for (const v1::UpdateEvent& e : events) h.seqs.push_back(e.seq());
    absl::MutexLock lock(&mu);
    handed.push_back(std::move(h));
  };
  loop_ = std::make_unique<ControlLoop>(*store_, clock_, options);
  loop_->Start(sender_);
  loop_->PostHello("a1", 7, HelloOf("a1", "1.0.0"));

  auto batch = [](uint64_t first, uint64_t last) {
    std::vector<v1::UpdateEvent> events;
    for (uint64_t seq = first; seq <= last; ++seq) {
      v1::UpdateEvent event;
      event.set_seq(seq);
      event.set_phase(v1::UPDATE_PHASE_DOWNLOADING);
      event.set_bytes(seq * 100);
      events.push_back(std::move(event));
    }
    return events;
  };
  auto wait_ack = [&](uint64_t seq) {
    const absl::Time deadline = absl::Now() + absl::Seconds(5);
    while (absl::Now() < deadline) {
      std::vector<RecordingSender::Sent> acks =
          sender_.Matching(v1::ControllerMessage::kAck);
      if (!acks.empty() && acks.back().message.ack().acked_seq() == seq) {
        return true;
      }
      absl::SleepFor(absl::Milliseconds(5));
    }
    return false;
  };
  loop_->PostEvents("a1", 7, batch(1, 4));
  ASSERT_TRUE(wait_ack(4));
  // 3 and 4 again (a resend after a reconnect), with 5 and 6.
  loop_->PostEvents("a1", 7, batch(3, 6));
  ASSERT_TRUE(wait_ack(6));

  absl::StatusOr<std::vector<v1::UpdateEvent>> stored =
      reads_->ListEvents("a1");
  ASSERT_TRUE(stored.ok()) << stored.status();
  ASSERT_EQ(stored->size(), 6u);
  for (size_t i = 0; i < stored->size(); ++i) {
    EXPECT_EQ((*stored)[i].seq(), i + 1);
    EXPECT_EQ((*stored)[i].bytes(), (i + 1) * 100);
  }
  // Every ack covers the whole batch: none names a seq inside one.
  for (const RecordingSender::Sent& ack :
       sender_.Matching(v1::ControllerMessage::kAck)) {
    EXPECT_TRUE(ack.message.ack().acked_seq() == 4 ||
                ack.message.ack().acked_seq() == 6)
        << ack.message.ack().acked_seq();
  }
  absl::MutexLock lock(&mu);
  ASSERT_EQ(handed.size(), 2u);
  EXPECT_EQ(handed[0].agent_id, "a1");
  EXPECT_EQ(handed[0].seqs, (std::vector<uint64_t>{1, 2, 3, 4}));
  EXPECT_EQ(handed[1].seqs, (std::vector<uint64_t>{3, 4, 5, 6}));
  // Handed over only after the commit: another connection already sees them.
  EXPECT_EQ(handed[0].committed_seq, 4u);
  EXPECT_EQ(handed[1].committed_seq, 6u);
  EXPECT_EQ(handed[0].received_ms, absl::ToUnixMillis(clock_.Now()));
}

TEST_F(ControlLoopTest, StopCommitsWhatIsQueuedAndRefusesLaterWrites) {
  loop_->PostHello("a1", 1, HelloOf("a1", "1.0.0"));
  loop_->Stop();
  EXPECT_EQ(sender_.Matching(v1::ControllerMessage::kWelcome).size(), 1u);
  EXPECT_TRUE(reads_->GetAgent("a1").ok());
  EXPECT_EQ(loop_->AddRelease(ReleaseOf("1.0.0")).status().code(),
            absl::StatusCode::kUnavailable);
}

TEST_F(ControlLoopTest, DuplicateReleaseIsAlreadyExistsAndNothingElseBreaks) {
  ASSERT_TRUE(loop_->AddRelease(ReleaseOf("1.0.0")).ok());
  EXPECT_EQ(loop_->AddRelease(ReleaseOf("1.0.0")).status().code(),
            absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(loop_->AddRelease(ReleaseOf("1.0.1")).ok());
  EXPECT_EQ(reads_->ListReleases("app", "")->size(), 2u);
}

TEST_F(ControlLoopTest, PausedRolloutSendsNoNewDirectiveUntilResumed) {
  ASSERT_TRUE(loop_->AddRelease(ReleaseOf("1.1.0")).ok());
  constexpr int kAgents = 24;
  ConnectAgents(kAgents);
  absl::StatusOr<v1::Rollout> rollout = CreateTwoStageRollout();
  ASSERT_TRUE(rollout.ok()) << rollout.status();
  const std::string id = rollout->rollout_id();
  const size_t first_cohort = rollout->counts().in_flight();
  ASSERT_GT(first_cohort, 0u);
  ASSERT_LT(first_cohort, kAgents);
  std::vector<RecordingSender::Sent> directives =
      sender_.WaitFor(v1::ControllerMessage::kDirective, first_cohort);
  ASSERT_EQ(directives.size(), first_cohort);

  absl::StatusOr<v1::Rollout> paused =
      loop_->ChangeRollout(id, RolloutCommand::kPause, "error spike");
  ASSERT_TRUE(paused.ok()) << paused.status();
  EXPECT_EQ(paused->state(), v1::ROLLOUT_STATE_PAUSED);
  EXPECT_EQ(paused->state_reason(), "paused by operator: error spike");
  EXPECT_EQ(paused->counts().in_flight(), first_cohort);
  EXPECT_EQ(reads_->GetRollout(id)->rollout.state(), v1::ROLLOUT_STATE_PAUSED);

  // In-flight updates finish and are counted, but the settled stage does not
  // open the next one while paused.
  for (const auto& d : directives) ReportHealthy(d, 1);
  EXPECT_EQ(WaitForTargets(id, v1::TARGET_STATE_HEALTHY, first_cohort),
            first_cohort);
  clock_.Advance(absl::Minutes(5));
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(Directives(), first_cohort);
  EXPECT_EQ(TargetsIn(id, v1::TARGET_STATE_PENDING), kAgents - first_cohort);
  RolloutRecord still = *reads_->GetRollout(id);
  EXPECT_EQ(still.rollout.state(), v1::ROLLOUT_STATE_PAUSED);
  EXPECT_EQ(still.rollout.current_stage(), 0u);

  EXPECT_EQ(
      loop_->ChangeRollout(id, RolloutCommand::kPause, "").status().code(),
      absl::StatusCode::kFailedPrecondition);
  absl::StatusOr<v1::Rollout> resumed =
      loop_->ChangeRollout(id, RolloutCommand::kResume, "");
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(resumed->state(), v1::ROLLOUT_STATE_RUNNING);
  EXPECT_EQ(resumed->current_stage(), 1u);
  EXPECT_EQ(resumed->counts().in_flight(), kAgents - first_cohort);
  EXPECT_EQ(sender_.WaitFor(v1::ControllerMessage::kDirective, kAgents).size(),
            kAgents);
}

TEST_F(ControlLoopTest, AbortedRolloutIsFinalAndSendsNothingMore) {
  ASSERT_TRUE(loop_->AddRelease(ReleaseOf("1.1.0")).ok());
  constexpr int kAgents = 24;
  ConnectAgents(kAgents);
  absl::StatusOr<v1::Rollout> rollout = CreateTwoStageRollout();
  ASSERT_TRUE(rollout.ok()) << rollout.status();
  const std::string id = rollout->rollout_id();
  const size_t first_cohort = rollout->counts().in_flight();
  std::vector<RecordingSender::Sent> directives =
      sender_.WaitFor(v1::ControllerMessage::kDirective, first_cohort);
  ASSERT_EQ(directives.size(), first_cohort);

  absl::StatusOr<v1::Rollout> aborted =
      loop_->ChangeRollout(id, RolloutCommand::kAbort, "");
  ASSERT_TRUE(aborted.ok()) << aborted.status();
  EXPECT_EQ(aborted->state(), v1::ROLLOUT_STATE_ABORTED);
  EXPECT_EQ(aborted->state_reason(), "aborted by operator");

  for (const auto& d : directives) ReportHealthy(d, 1);
  EXPECT_EQ(WaitForTargets(id, v1::TARGET_STATE_HEALTHY, first_cohort),
            first_cohort);
  // A pending target reconnecting is not directed either.
  loop_->PostHello("agent-0", 100, HelloOf("agent-0", "1.0.0"));
  loop_->PostHello("agent-1", 101, HelloOf("agent-1", "1.0.0"));
  clock_.Advance(absl::Minutes(5));
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(Directives(), first_cohort);
  EXPECT_EQ(TargetsIn(id, v1::TARGET_STATE_PENDING), kAgents - first_cohort);
  EXPECT_EQ(reads_->GetRollout(id)->rollout.state(), v1::ROLLOUT_STATE_ABORTED);

  for (RolloutCommand command :
       {RolloutCommand::kPause, RolloutCommand::kResume,
        RolloutCommand::kAbort}) {
    absl::Status s = loop_->ChangeRollout(id, command, "").status();
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    EXPECT_NE(s.message().find("ABORTED"), std::string::npos) << s;
  }
}

TEST_F(ControlLoopTest, UnknownRolloutIsNotFound) {
  EXPECT_EQ(loop_->ChangeRollout("ro-nope", RolloutCommand::kPause, "")
                .status()
                .code(),
            absl::StatusCode::kNotFound);
}

TEST_F(ControlLoopTest, PausedRolloutStaysPausedAcrossARestart) {
  ASSERT_TRUE(loop_->AddRelease(ReleaseOf("1.1.0")).ok());
  v1::CreateRolloutRequest request;
  request.set_product("app");
  request.set_version("1.1.0");
  absl::StatusOr<v1::Rollout> rollout = loop_->CreateRollout(request);
  ASSERT_TRUE(rollout.ok()) << rollout.status();
  const std::string id = rollout->rollout_id();
  ASSERT_TRUE(loop_->ChangeRollout(id, RolloutCommand::kPause, "").ok());
  loop_->Stop();
  loop_.reset();
  store_.reset();

  // A new controller process: a new connection and loop on the same file.
  auto store = Store::Open(dir_.Join("fleet.db"));
  ASSERT_TRUE(store.ok()) << store.status();
  store_ = *std::move(store);
  ControlLoopOptions options;
  options.tick = absl::Milliseconds(10);
  loop_ = std::make_unique<ControlLoop>(*store_, clock_, options);
  loop_->Start(sender_);

  // An agent appearing while paused joins as PENDING without a directive.
  loop_->PostHello("late", 1, HelloOf("late", "1.0.0"));
  ASSERT_EQ(sender_.WaitFor(v1::ControllerMessage::kWelcome, 1).size(), 1u);
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(Directives(), 0u);
  EXPECT_EQ(reads_->GetRollout(id)->rollout.state(), v1::ROLLOUT_STATE_PAUSED);
  EXPECT_EQ(TargetsIn(id, v1::TARGET_STATE_PENDING), 1u);

  ASSERT_TRUE(loop_->ChangeRollout(id, RolloutCommand::kResume, "").ok());
  std::vector<RecordingSender::Sent> directives =
      sender_.WaitFor(v1::ControllerMessage::kDirective, 1);
  ASSERT_EQ(directives.size(), 1u);
  EXPECT_EQ(directives[0].agent_id, "late");
  EXPECT_EQ(directives[0].message.directive().rollout_id(), id);
}

v1::BlacklistEntry Blacklisted(const std::string& version) {
  v1::BlacklistEntry entry;
  entry.set_product("app");
  entry.set_version(version);
  entry.set_reason("crashes on start");
  entry.set_created_by("operator");
  return entry;
}

TEST_F(ControlLoopTest, BlacklistingAVersionAbortsItsRolloutAndDirectsNoMore) {
  ASSERT_TRUE(loop_->AddRelease(ReleaseOf("1.1.0")).ok());
  constexpr int kAgents = 24;
  ConnectAgents(kAgents);
  absl::StatusOr<v1::Rollout> rollout = CreateTwoStageRollout();
  ASSERT_TRUE(rollout.ok()) << rollout.status();
  const std::string id = rollout->rollout_id();
  const size_t first_cohort = rollout->counts().in_flight();
  std::vector<RecordingSender::Sent> directives =
      sender_.WaitFor(v1::ControllerMessage::kDirective, first_cohort);
  ASSERT_EQ(directives.size(), first_cohort);

  absl::StatusOr<v1::AddBlacklistResponse> added =
      loop_->AddBlacklist(Blacklisted("1.1.0"));
  ASSERT_TRUE(added.ok()) << added.status();
  ASSERT_EQ(added->aborted_rollout_ids_size(), 1);
  EXPECT_EQ(added->aborted_rollout_ids(0), id);
  EXPECT_EQ(added->entry().created_unix_ms(), absl::ToUnixMillis(clock_.Now()));
  RolloutRecord aborted = *reads_->GetRollout(id);
  EXPECT_EQ(aborted.rollout.state(), v1::ROLLOUT_STATE_ABORTED);
  EXPECT_NE(aborted.rollout.state_reason().find("blacklisted"),
            std::string::npos)
      << aborted.rollout.state_reason();
  EXPECT_NE(aborted.rollout.state_reason().find("crashes on start"),
            std::string::npos);

  // The first cohort settles and pending agents reconnect: nothing new.
  for (const auto& d : directives) ReportHealthy(d, 1);
  loop_->PostHello("agent-0", 100, HelloOf("agent-0", "1.0.0"));
  clock_.Advance(absl::Minutes(5));
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(Directives(), first_cohort);

  absl::Status again = loop_->AddBlacklist(Blacklisted("1.1.0")).status();
  EXPECT_EQ(again.code(), absl::StatusCode::kAlreadyExists) << again;
  v1::CreateRolloutRequest request;
  request.set_product("app");
  request.set_version("1.1.0");
  absl::Status refused = loop_->CreateRollout(request).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(refused.message(),
            "version app 1.1.0 is blacklisted: crashes on start");
  EXPECT_EQ(Directives(), first_cohort);

  ASSERT_TRUE(loop_->RemoveBlacklist("app", "1.1.0").ok());
  EXPECT_EQ(loop_->RemoveBlacklist("app", "1.1.0").code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(reads_->GetRollout(id)->rollout.state(),
            v1::ROLLOUT_STATE_ABORTED);  // stays aborted
  EXPECT_TRUE(loop_->CreateRollout(request).ok());
}

TEST_F(ControlLoopTest, FailureGatePausesBlacklistsAndStopsDirectives) {
  ASSERT_TRUE(loop_->AddRelease(ReleaseOf("1.1.0")).ok());
  constexpr int kAgents = 10;
  ConnectAgents(kAgents);
  v1::FailurePolicy policy;
  policy.set_max_failure_rate(0.05);
  policy.set_min_samples(3);
  policy.set_action(v1::FAILURE_ACTION_PAUSE);
  policy.set_blacklist(true);
  absl::StatusOr<v1::Rollout> rollout = CreateGatedRollout(policy);
  ASSERT_TRUE(rollout.ok()) << rollout.status();
  const std::string id = rollout->rollout_id();
  EXPECT_EQ(rollout->failure_policy().min_samples(), 3u);
  std::vector<RecordingSender::Sent> directives =
      sender_.WaitFor(v1::ControllerMessage::kDirective, 3);
  ASSERT_EQ(directives.size(), 3u);

  // Below min samples the gate holds: each failure frees a slot that goes
  // to the next agent.
  ReportFailed(directives[0], 1);
  ReportFailed(directives[1], 1);
  directives = sender_.WaitFor(v1::ControllerMessage::kDirective, 5);
  ASSERT_EQ(directives.size(), 5u);
  EXPECT_EQ(reads_->GetRollout(id)->rollout.state(), v1::ROLLOUT_STATE_RUNNING);

  // The third sample trips it in the event's transaction.
  ReportFailed(directives[2], 1);
  RolloutRecord tripped = WaitForRollout(id, [](const RolloutRecord& r) {
    return r.rollout.state() != v1::ROLLOUT_STATE_RUNNING;
  });
  EXPECT_EQ(tripped.rollout.state(), v1::ROLLOUT_STATE_PAUSED);
  EXPECT_EQ(tripped.rollout.state_reason(),
            "gate: 3 of 3 finished targets failed (100% > 5%)");
  absl::StatusOr<std::optional<v1::BlacklistEntry>> entry =
      reads_->GetBlacklist("app", "1.1.0");
  ASSERT_TRUE(entry.ok()) << entry.status();
  ASSERT_TRUE(entry->has_value());
  EXPECT_EQ((*entry)->created_by(), "gate:" + id);
  EXPECT_EQ((*entry)->reason(),
            "rollout " + id +
                " tripped its failure gate: 3 of 3 finished targets failed");

  // No new directive: in-flight updates finish, agents reconnect, time
  // passes.
  const size_t sent = Directives();
  EXPECT_EQ(sent, 5u);
  ReportHealthy(directives[3], 1);
  ReportHealthy(directives[4], 1);
  EXPECT_EQ(WaitForTargets(id, v1::TARGET_STATE_HEALTHY, 2), 2u);
  loop_->PostHello("agent-9", 100, HelloOf("agent-9", "1.0.0"));
  clock_.Advance(absl::Minutes(5));
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(Directives(), sent);
  EXPECT_EQ(reads_->GetRollout(id)->rollout.state(), v1::ROLLOUT_STATE_PAUSED);

  // A blacklisted version cannot be resumed; once removed, the operator may.
  absl::Status refused =
      loop_->ChangeRollout(id, RolloutCommand::kResume, "").status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition) << refused;
  EXPECT_NE(refused.message().find("blacklisted"), absl::string_view::npos);
  ASSERT_TRUE(loop_->RemoveBlacklist("app", "1.1.0").ok());
  absl::StatusOr<v1::Rollout> resumed =
      loop_->ChangeRollout(id, RolloutCommand::kResume, "");
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(resumed->state(), v1::ROLLOUT_STATE_RUNNING);
  directives = sender_.WaitFor(v1::ControllerMessage::kDirective, sent + 3);
  ASSERT_EQ(directives.size(), sent + 3);

  // The gate evaluates again on the next new sample: 4 of 6 still fail.
  ReportFailed(directives[sent], 1);
  RolloutRecord again = WaitForRollout(id, [](const RolloutRecord& r) {
    return r.rollout.state() != v1::ROLLOUT_STATE_RUNNING;
  });
  EXPECT_EQ(again.rollout.state(), v1::ROLLOUT_STATE_PAUSED);
  EXPECT_EQ(again.rollout.state_reason(),
            "gate: 4 of 6 finished targets failed (66.67% > 5%)");
  EXPECT_TRUE(reads_->GetBlacklist("app", "1.1.0")->has_value());
}

TEST_F(ControlLoopTest, FailureGateAbortsWithoutBlacklisting) {
  ASSERT_TRUE(loop_->AddRelease(ReleaseOf("1.1.0")).ok());
  ConnectAgents(6);
  v1::FailurePolicy policy;
  policy.set_max_failure_rate(0.5);
  policy.set_min_samples(2);
  policy.set_action(v1::FAILURE_ACTION_ABORT);
  absl::StatusOr<v1::Rollout> rollout = CreateGatedRollout(policy);
  ASSERT_TRUE(rollout.ok()) << rollout.status();
  const std::string id = rollout->rollout_id();
  std::vector<RecordingSender::Sent> directives =
      sender_.WaitFor(v1::ControllerMessage::kDirective, 3);
  ASSERT_EQ(directives.size(), 3u);

  // 1 of 2 is exactly the threshold: it passes.
  ReportHealthy(directives[0], 1);
  ReportFailed(directives[1], 1);
  EXPECT_EQ(WaitForTargets(id, v1::TARGET_STATE_FAILED, 1), 1u);
  directives = sender_.WaitFor(v1::ControllerMessage::kDirective, 5);
  ASSERT_EQ(directives.size(), 5u);
  EXPECT_EQ(reads_->GetRollout(id)->rollout.state(), v1::ROLLOUT_STATE_RUNNING);

  ReportFailed(directives[2], 1);
  RolloutRecord aborted = WaitForRollout(id, [](const RolloutRecord& r) {
    return r.rollout.state() != v1::ROLLOUT_STATE_RUNNING;
  });
  EXPECT_EQ(aborted.rollout.state(), v1::ROLLOUT_STATE_ABORTED);
  EXPECT_EQ(aborted.rollout.state_reason(),
            "gate: 2 of 3 finished targets failed (66.67% > 50%)");
  EXPECT_FALSE(reads_->GetBlacklist("app", "1.1.0")->has_value());
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(Directives(), 5u);
}

TEST_F(ControlLoopTest, BlacklistingLeavesOtherVersionsRolloutsAlone) {
  ASSERT_TRUE(loop_->AddRelease(ReleaseOf("1.1.0")).ok());
  v1::CreateRolloutRequest request;
  request.set_product("app");
  request.set_version("1.1.0");
  absl::StatusOr<v1::Rollout> rollout = loop_->CreateRollout(request);
  ASSERT_TRUE(rollout.ok()) << rollout.status();
  absl::StatusOr<v1::AddBlacklistResponse> added =
      loop_->AddBlacklist(Blacklisted("1.2.0"));  // no release needed
  ASSERT_TRUE(added.ok()) << added.status();
  EXPECT_EQ(added->aborted_rollout_ids_size(), 0);
  EXPECT_EQ(reads_->GetRollout(rollout->rollout_id())->rollout.state(),
            v1::ROLLOUT_STATE_RUNNING);
}

TEST_F(ControlLoopTest,
       NeverMoreThanMaxInFlightTargetsBetweenDirectedAndFinal) {
  ASSERT_TRUE(loop_->AddRelease(ReleaseOf("1.1.0")).ok());
  struct Case {
    const char* name;
    v1::MaxInFlight limit;
    size_t agents;
    size_t most;
  };
  v1::MaxInFlight three;
  three.set_count(3);
  v1::MaxInFlight quarter;
  quarter.set_percent(25);  // of 10 targets: 3 (rounded up)
  const Case cases[] = {{"count 3", three, 8, 3}, {"25%", quarter, 10, 3}};
  int next_agent = 0;
  uint64_t session = 1;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    // Each case rolls out to a fresh set of agents, selected by label.
    const std::string group = "g" + std::to_string(next_agent);
    for (size_t i = 0; i < c.agents; ++i) {
      const std::string id = "agent-" + std::to_string(next_agent++);
      v1::Hello hello = HelloOf(id, "1.0.0");
      (*hello.mutable_labels())["group"] = group;
      loop_->PostHello(id, session++, hello);
    }
    const size_t before = Directives();
    v1::CreateRolloutRequest request;
    request.set_product("app");
    request.set_version("1.1.0");
    (*request.mutable_selector()->mutable_labels())["group"] = group;
    *request.mutable_max_in_flight() = c.limit;
    absl::StatusOr<v1::Rollout> rollout = loop_->CreateRollout(request);
    ASSERT_TRUE(rollout.ok()) << rollout.status();
    ASSERT_EQ(rollout->counts().total(), c.agents);
    EXPECT_EQ(rollout->counts().in_flight(), c.most);
    EXPECT_EQ(reads_->GetRollout(rollout->rollout_id())
                  ->rollout.max_in_flight()
                  .DebugString(),
              c.limit.DebugString());

    // Finish one update at a time: each frees exactly one slot.
    size_t finished = 0;
    while (finished < c.agents) {
      std::vector<RecordingSender::Sent> all =
          sender_.WaitFor(v1::ControllerMessage::kDirective,
                          before + std::min(c.agents, finished + c.most));
      ASSERT_EQ(all.size(), before + std::min(c.agents, finished + c.most));
      clock_.Advance(absl::Seconds(1));
      absl::SleepFor(absl::Milliseconds(30));
      // No extra directive while the slots are full.
      ASSERT_EQ(Directives(), before + std::min(c.agents, finished + c.most));
      ASSERT_LE(TargetsIn(rollout->rollout_id(), v1::TARGET_STATE_DIRECTED),
                c.most);
      ReportHealthy(all[before + finished], 1);
      ++finished;
      ASSERT_EQ(WaitForTargets(rollout->rollout_id(), v1::TARGET_STATE_HEALTHY,
                               finished),
                finished);
    }
    RolloutRecord done =
        WaitForRollout(rollout->rollout_id(), [](const RolloutRecord& r) {
          return r.rollout.state() == v1::ROLLOUT_STATE_COMPLETED;
        });
    EXPECT_EQ(done.rollout.state(), v1::ROLLOUT_STATE_COMPLETED);
  }
}

// ------------------------------------------------- blacklist reaches agents

v1::BlacklistEntry Entry(const std::string& version) {
  v1::BlacklistEntry e;
  e.set_product("app");
  e.set_version(version);
  e.set_reason("crashes on start");
  e.set_created_by("operator");
  return e;
}

std::vector<std::string> Versions(
    const google::protobuf::RepeatedPtrField<v1::BlacklistedVersion>& list) {
  std::vector<std::string> out;
  for (const v1::BlacklistedVersion& b : list) {
    out.push_back(b.product() + "@" + b.version());
  }
  return out;
}

std::vector<RecordingSender::Sent> To(
    const std::vector<RecordingSender::Sent>& sent,
    const std::string& agent_id) {
  std::vector<RecordingSender::Sent> out;
  for (const RecordingSender::Sent& s : sent) {
    if (s.agent_id == agent_id) out.push_back(s);
  }
  return out;
}

v1::ReleaseManifest ManifestOf(const v1::UpdateDirective& d) {
  // ReleaseOf's manifest bytes are "m-<version>".
  v1::ReleaseManifest m;
  m.set_version(d.manifest().manifest().substr(2));
  return m;
}

TEST_F(ControlLoopTest, WelcomeCarriesTheBlacklistAndChangesReachTheProduct) {
  ASSERT_TRUE(loop_->AddRelease(ReleaseOf("1.0.0")).ok());
  ASSERT_TRUE(loop_->AddBlacklist(Entry("0.9.0")).ok());
  ConnectAgents(2);
  v1::Hello other;
  other.set_agent_id("db-host");
  other.set_platform("linux/amd64");
  other.add_installed()->set_product("db");
  loop_->PostHello("db-host", 50, other);
  std::vector<RecordingSender::Sent> welcomes =
      sender_.WaitFor(v1::ControllerMessage::kWelcome, 3);
  ASSERT_EQ(welcomes.size(), 3u);
  EXPECT_EQ(Versions(To(welcomes, "agent-0")[0].message.welcome().blacklist()),
            std::vector<std::string>{"app@0.9.0"});
  EXPECT_TRUE(To(welcomes, "db-host")[0].message.welcome().blacklist().empty());

  ASSERT_TRUE(loop_->AddBlacklist(Entry("1.1.0")).ok());
  std::vector<RecordingSender::Sent> updates =
      sender_.WaitFor(v1::ControllerMessage::kBlacklist, 2);
  ASSERT_EQ(updates.size(), 2u);
  for (const RecordingSender::Sent& u : updates) {
    EXPECT_NE(u.agent_id, "db-host");
    EXPECT_EQ(Versions(u.message.blacklist().entries()),
              (std::vector<std::string>{"app@1.1.0", "app@0.9.0"}));
  }
  ASSERT_TRUE(loop_->RemoveBlacklist("app", "0.9.0").ok());
  updates = sender_.WaitFor(v1::ControllerMessage::kBlacklist, 4);
  ASSERT_EQ(updates.size(), 4u);
  EXPECT_EQ(Versions(updates[3].message.blacklist().entries()),
            std::vector<std::string>{"app@1.1.0"});
  EXPECT_TRUE(To(updates, "db-host").empty());
}

TEST_F(ControlLoopTest, BlacklistLeadsAgentsBackOnceToWhatTheyRanBefore) {
  for (const char* v : {"1.0.0", "1.1.0", "1.2.0"}) {
    ASSERT_TRUE(loop_->AddRelease(ReleaseOf(v)).ok());
  }
  // agent-0 ran 1.0.0 before; agent-1 names nothing, so it gets the newest
  // release that is not blacklisted; agent-2 is not on the bad version.
  v1::Hello h0 = HelloOf("agent-0", "1.2.0");
  h0.mutable_installed(0)->add_previous_versions("1.0.0");
  loop_->PostHello("agent-0", 1, h0);
  loop_->PostHello("agent-1", 2, HelloOf("agent-1", "1.2.0"));
  loop_->PostHello("agent-2", 3, HelloOf("agent-2", "1.0.0"));
  ASSERT_EQ(sender_.WaitFor(v1::ControllerMessage::kWelcome, 3).size(), 3u);

  absl::StatusOr<v1::AddBlacklistResponse> added =
      loop_->AddBlacklist(Entry("1.2.0"));
  ASSERT_TRUE(added.ok()) << added.status();
  EXPECT_EQ(added->led_back_agents(), 2u);
  std::vector<RecordingSender::Sent> directives =
      sender_.WaitFor(v1::ControllerMessage::kDirective, 2);
  ASSERT_EQ(directives.size(), 2u);
  struct Want {
    const char* agent;
    const char* to;
  };
  for (const Want& want :
       {Want{"agent-0", "1.0.0"}, Want{"agent-1", "1.1.0"}}) {
    std::vector<RecordingSender::Sent> mine = To(directives, want.agent);
    ASSERT_EQ(mine.size(), 1u) << want.agent;
    const v1::UpdateDirective& d = mine[0].message.directive();
    EXPECT_EQ(d.kind(), v1::DIRECTIVE_KIND_ROLLBACK) << want.agent;
    EXPECT_EQ(d.rollout_id(), "") << "an operator's blacklist";
    EXPECT_EQ(ManifestOf(d).version(), want.to) << want.agent;
  }
  const std::string d0 =
      To(directives, "agent-0")[0].message.directive().directive_id();

  // Reconnecting without having journaled it: the same directive again.
  loop_->PostHello("agent-0", 10, h0);
  directives = sender_.WaitFor(v1::ControllerMessage::kDirective, 3);
  ASSERT_EQ(directives.size(), 3u);
  EXPECT_EQ(directives[2].message.directive().directive_id(), d0);
  EXPECT_EQ(directives[2].session, 10u);
  // Having journaled it: nothing new.
  v1::Hello acked = h0;
  acked.set_last_directive_id(d0);
  loop_->PostHello("agent-0", 11, acked);
  ASSERT_EQ(sender_.WaitFor(v1::ControllerMessage::kWelcome, 5).size(), 5u);

  // Back on 1.0.0: the revert is done and nothing is sent again.
  v1::UpdateEvent healthy;
  healthy.set_seq(1);
  healthy.set_directive_id(d0);
  healthy.set_product("app");
  healthy.set_from_version("1.2.0");
  healthy.set_to_version("1.0.0");
  healthy.set_phase(v1::UPDATE_PHASE_HEALTHY);
  loop_->PostEvent("agent-0", 11, healthy);
  ASSERT_EQ(sender_.WaitFor(v1::ControllerMessage::kAck, 1).size(), 1u);
  std::optional<RevertRecord> revert = *reads_->GetRevert(d0);
  ASSERT_TRUE(revert.has_value());
  EXPECT_EQ(revert->state, v1::TARGET_STATE_HEALTHY);
  EXPECT_EQ(revert->from_version, "1.2.0");
  EXPECT_EQ(reads_->GetAgent("agent-0")->installed(0).version(), "1.0.0");
  loop_->PostHello("agent-0", 12, HelloOf("agent-0", "1.0.0"));
  ASSERT_EQ(sender_.WaitFor(v1::ControllerMessage::kWelcome, 6).size(), 6u);

  // An agent on the bad version that connects later is led back at Hello,
  // and its Welcome already names the bad version.
  loop_->PostHello("agent-3", 13, HelloOf("agent-3", "1.2.0"));
  std::vector<RecordingSender::Sent> welcomes =
      sender_.WaitFor(v1::ControllerMessage::kWelcome, 7);
  EXPECT_EQ(Versions(To(welcomes, "agent-3")[0].message.welcome().blacklist()),
            std::vector<std::string>{"app@1.2.0"});
  directives = sender_.WaitFor(v1::ControllerMessage::kDirective, 4);
  ASSERT_EQ(directives.size(), 4u);
  EXPECT_EQ(directives[3].agent_id, "agent-3");
  EXPECT_EQ(ManifestOf(directives[3].message.directive()).version(), "1.1.0");
  // agent-1 and agent-2 got nothing more.
  EXPECT_EQ(To(directives, "agent-1").size(), 1u);
  EXPECT_TRUE(To(directives, "agent-2").empty());
}

TEST_F(ControlLoopTest, GateBlacklistLeadsBackTargetsThatTookTheVersion) {
  ASSERT_TRUE(loop_->AddRelease(ReleaseOf("1.0.0")).ok());
  ASSERT_TRUE(loop_->AddRelease(ReleaseOf("1.1.0")).ok());
  ConnectAgents(3);
  v1::FailurePolicy policy;
  policy.set_max_failure_rate(0.3);
  policy.set_min_samples(3);
  policy.set_action(v1::FAILURE_ACTION_ABORT);
  policy.set_blacklist(true);
  absl::StatusOr<v1::Rollout> rollout = CreateGatedRollout(policy);
  ASSERT_TRUE(rollout.ok()) << rollout.status();
  std::vector<RecordingSender::Sent> directives =
      sender_.WaitFor(v1::ControllerMessage::kDirective, 3);
  ASSERT_EQ(directives.size(), 3u);
  ReportHealthy(directives[0], 1);
  ReportFailed(directives[1], 1);
  ReportFailed(directives[2], 1);
  RolloutRecord aborted = WaitForRollout(rollout->rollout_id(), [](auto& r) {
    return r.rollout.state() == v1::ROLLOUT_STATE_ABORTED;
  });
  ASSERT_EQ(aborted.rollout.state(), v1::ROLLOUT_STATE_ABORTED);
  // The one that took 1.1.0 is sent back, under the gate's rollout id.
  directives = sender_.WaitFor(v1::ControllerMessage::kDirective, 4);
  ASSERT_EQ(directives.size(), 4u);
  const v1::UpdateDirective& back = directives[3].message.directive();
  EXPECT_EQ(directives[3].agent_id, directives[0].agent_id);
  EXPECT_EQ(back.kind(), v1::DIRECTIVE_KIND_ROLLBACK);
  EXPECT_EQ(back.rollout_id(), rollout->rollout_id());
  EXPECT_EQ(ManifestOf(back).version(), "1.0.0");
  std::optional<v1::RolloutTarget> target =
      *reads_->GetTarget(rollout->rollout_id(), directives[0].agent_id);
  ASSERT_TRUE(target.has_value());
  EXPECT_EQ(target->state(), v1::TARGET_STATE_HEALTHY);
  EXPECT_EQ(target->revert_state(), v1::TARGET_STATE_DIRECTED);
  EXPECT_EQ(target->revert_directive_id(), back.directive_id());
  EXPECT_EQ(target->revert_to_version(), "1.0.0");
  ASSERT_EQ(sender_.WaitFor(v1::ControllerMessage::kBlacklist, 3).size(), 3u);
}

TEST_F(ControlLoopTest, UpdateFinishingOnANewlyBlacklistedVersionIsLedBack) {
  ASSERT_TRUE(loop_->AddRelease(ReleaseOf("1.0.0")).ok());
  ASSERT_TRUE(loop_->AddRelease(ReleaseOf("1.1.0")).ok());
  ConnectAgents(1);
  v1::CreateRolloutRequest request;
  request.set_product("app");
  request.set_version("1.1.0");
  ASSERT_TRUE(loop_->CreateRollout(request).ok());
  std::vector<RecordingSender::Sent> directives =
      sender_.WaitFor(v1::ControllerMessage::kDirective, 1);
  ASSERT_EQ(directives.size(), 1u);
  // Blacklisted while the agent is still on 1.0.0: nobody to lead back.
  absl::StatusOr<v1::AddBlacklistResponse> added =
      loop_->AddBlacklist(Entry("1.1.0"));
  ASSERT_TRUE(added.ok()) << added.status();
  EXPECT_EQ(added->led_back_agents(), 0u);
  EXPECT_EQ(added->aborted_rollout_ids_size(), 1);
  // The update was past the point of no return and commits 1.1.0.
  ReportHealthy(directives[0], 1);
  directives = sender_.WaitFor(v1::ControllerMessage::kDirective, 2);
  ASSERT_EQ(directives.size(), 2u);
  EXPECT_EQ(directives[1].message.directive().kind(),
            v1::DIRECTIVE_KIND_ROLLBACK);
  EXPECT_EQ(ManifestOf(directives[1].message.directive()).version(), "1.0.0");
}

// ------------------------------------------------------ abort with rollback

TEST_F(ControlLoopTest, AbortWithRollbackDirectsTargetsBackToFromVersion) {
  ASSERT_TRUE(loop_->AddRelease(ReleaseOf("1.0.0")).ok());
  ASSERT_TRUE(loop_->AddRelease(ReleaseOf("1.1.0")).ok());
  ConnectAgents(4);
  v1::CreateRolloutRequest request;
  request.set_product("app");
  request.set_version("1.1.0");
  absl::StatusOr<v1::Rollout> rollout = loop_->CreateRollout(request);
  ASSERT_TRUE(rollout.ok()) << rollout.status();
  const std::string id = rollout->rollout_id();
  std::vector<RecordingSender::Sent> updates =
      sender_.WaitFor(v1::ControllerMessage::kDirective, 4);
  ASSERT_EQ(updates.size(), 4u);
  std::map<std::string, RecordingSender::Sent> by_agent;
  for (const RecordingSender::Sent& s : updates) by_agent[s.agent_id] = s;
  ReportHealthy(by_agent["agent-0"], 1);
  ReportHealthy(by_agent["agent-1"], 1);
  ReportFailed(by_agent["agent-3"], 1);  // back on 1.0.0 by itself
  ASSERT_EQ(WaitForTargets(id, v1::TARGET_STATE_HEALTHY, 2), 2u);
  ASSERT_EQ(WaitForTargets(id, v1::TARGET_STATE_FAILED, 1), 1u);
  // agent-2 is still in flight.

  absl::StatusOr<v1::Rollout> aborted = loop_->ChangeRollout(
      id, RolloutCommand::kAbort, "bad numbers", /*rollback=*/true);
  ASSERT_TRUE(aborted.ok()) << aborted.status();
  EXPECT_EQ(aborted->state(), v1::ROLLOUT_STATE_ABORTED);
  EXPECT_EQ(aborted->counts().reverting(), 3u);
  EXPECT_EQ(aborted->counts().reverted(), 0u);
  EXPECT_EQ(aborted->counts().healthy(), 2u);

  std::vector<RecordingSender::Sent> all =
      sender_.WaitFor(v1::ControllerMessage::kDirective, 7);
  ASSERT_EQ(all.size(), 7u);
  std::map<std::string, v1::UpdateDirective> back;
  for (size_t i = 4; i < all.size(); ++i) {
    back[all[i].agent_id] = all[i].message.directive();
  }
  ASSERT_EQ(back.size(), 3u);
  EXPECT_EQ(back.count("agent-3"), 0u);
  for (const auto& [agent, d] : back) {
    EXPECT_EQ(d.kind(), v1::DIRECTIVE_KIND_ROLLBACK) << agent;
    EXPECT_EQ(d.rollout_id(), id) << agent;
    EXPECT_EQ(ManifestOf(d).version(), "1.0.0") << agent;
  }
  // The update in flight is canceled first.
  std::vector<RecordingSender::Sent> cancels =
      sender_.WaitFor(v1::ControllerMessage::kCancel, 1);
  ASSERT_EQ(cancels.size(), 1u);
  EXPECT_EQ(cancels[0].agent_id, "agent-2");
  EXPECT_EQ(cancels[0].message.cancel().directive_id(),
            by_agent["agent-2"].message.directive().directive_id());

  // agent-0 is back on 1.0.0; agent-1's rollback fails.
  auto report = [&](const std::string& agent, v1::UpdatePhase phase) {
    v1::UpdateEvent e;
    e.set_seq(2);
    e.set_directive_id(back[agent].directive_id());
    e.set_rollout_id(id);
    e.set_product("app");
    e.set_from_version("1.1.0");
    e.set_to_version("1.0.0");
    e.set_phase(phase);
    e.set_error_class("health");
    e.set_error("exit status 1");
    loop_->PostEvent(agent, by_agent[agent].session, e);
  };
  report("agent-0", v1::UPDATE_PHASE_HEALTHY);
  report("agent-1", v1::UPDATE_PHASE_ROLLED_BACK);
  v1::TargetCounts counts;
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (absl::Now() < deadline) {
    counts = CountTargets(*reads_->ListTargets(id));
    if (counts.reverted() == 1 && counts.revert_failed() == 1) break;
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(counts.reverted(), 1u);
  EXPECT_EQ(counts.revert_failed(), 1u);
  EXPECT_EQ(counts.reverting(), 1u);
  // The rollout's own counts are untouched by the reverts.
  EXPECT_EQ(counts.healthy(), 2u);
  std::optional<v1::RolloutTarget> t1 = *reads_->GetTarget(id, "agent-1");
  EXPECT_EQ(t1->revert_error(), "health: exit status 1");
  EXPECT_EQ(t1->revert_to_version(), "1.0.0");

  // Again on the aborted rollout: accepted, nothing directed twice.
  absl::StatusOr<v1::Rollout> again =
      loop_->ChangeRollout(id, RolloutCommand::kAbort, "", /*rollback=*/true);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->counts().reverted(), 1u);
  EXPECT_EQ(Directives(), 7u);
  // Without rollback an aborted rollout still refuses to change.
  EXPECT_EQ(
      loop_->ChangeRollout(id, RolloutCommand::kAbort, "").status().code(),
      absl::StatusCode::kFailedPrecondition);
}

// ----------------------------------------------------------- offline timeout

TEST_F(ControlLoopTest, OfflineTargetsAreSkippedAndTakenBackWhenTheyReturn) {
  ASSERT_TRUE(loop_->AddRelease(ReleaseOf("1.1.0")).ok());
  ConnectAgents(4);
  v1::CreateRolloutRequest request;
  request.set_product("app");
  request.set_version("1.1.0");
  request.set_offline_timeout_seconds(60);
  absl::StatusOr<v1::Rollout> rollout = loop_->CreateRollout(request);
  ASSERT_TRUE(rollout.ok()) << rollout.status();
  EXPECT_EQ(rollout->offline_timeout_seconds(), 60);
  const std::string id = rollout->rollout_id();
  std::vector<RecordingSender::Sent> directives =
      sender_.WaitFor(v1::ControllerMessage::kDirective, 4);
  ASSERT_EQ(directives.size(), 4u);
  std::map<std::string, RecordingSender::Sent> by_agent;
  for (const RecordingSender::Sent& s : directives) by_agent[s.agent_id] = s;
  ReportHealthy(by_agent["agent-0"], 1);
  loop_->PostDisconnect("agent-1", 2);
  loop_->PostDisconnect("agent-3", 4);
  ASSERT_EQ(WaitForTargets(id, v1::TARGET_STATE_HEALTHY, 1), 1u);
  // Offline time counts from when the disconnect was processed.
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (absl::Now() < deadline && (reads_->GetAgent("agent-1")->connected() ||
                                    reads_->GetAgent("agent-3")->connected())) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  ASSERT_FALSE(reads_->GetAgent("agent-3")->connected());
  ASSERT_FALSE(reads_->GetAgent("agent-1")->connected());

  clock_.Advance(absl::Seconds(59));
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_EQ(TargetsIn(id, v1::TARGET_STATE_SKIPPED), 0u);
  clock_.Advance(absl::Seconds(2));
  // Only the disconnected ones; agent-2 is connected and still updating.
  ASSERT_EQ(WaitForTargets(id, v1::TARGET_STATE_SKIPPED, 2), 2u);
  std::optional<v1::RolloutTarget> skipped = *reads_->GetTarget(id, "agent-1");
  EXPECT_NE(skipped->error().find("offline"), std::string::npos)
      << skipped->error();
  EXPECT_EQ(reads_->GetRollout(id)->rollout.state(), v1::ROLLOUT_STATE_RUNNING);

  // agent-1 comes back without having journaled its directive: taken back
  // and sent the same directive again.
  loop_->PostHello("agent-1", 20, HelloOf("agent-1", "1.0.0"));
  directives = sender_.WaitFor(v1::ControllerMessage::kDirective, 5);
  ASSERT_EQ(directives.size(), 5u);
  EXPECT_EQ(directives[4].agent_id, "agent-1");
  EXPECT_EQ(directives[4].message.directive().directive_id(),
            by_agent["agent-1"].message.directive().directive_id());
  EXPECT_EQ(TargetsIn(id, v1::TARGET_STATE_DIRECTED), 2u);
  by_agent["agent-1"].session = 20;
  ReportHealthy(by_agent["agent-1"], 1);
  ReportHealthy(by_agent["agent-2"], 1);
  RolloutRecord done = WaitForRollout(id, [](const RolloutRecord& r) {
    return r.rollout.state() == v1::ROLLOUT_STATE_COMPLETED;
  });
  ASSERT_EQ(done.rollout.state(), v1::ROLLOUT_STATE_COMPLETED);
  v1::TargetCounts counts = CountTargets(*reads_->ListTargets(id));
  EXPECT_EQ(counts.healthy(), 3u);
  EXPECT_EQ(counts.skipped(), 1u);
  // A skipped agent that returns after the rollout completed stays skipped.
  loop_->PostHello("agent-3", 30, HelloOf("agent-3", "1.0.0"));
  ASSERT_EQ(sender_.WaitFor(v1::ControllerMessage::kWelcome, 6).size(), 6u);
  EXPECT_EQ(TargetsIn(id, v1::TARGET_STATE_SKIPPED), 1u);
  EXPECT_EQ(Directives(), 5u);
}

// Stands for the agents' streams of a controller that dies: holds the loop
// thread in the Send of directive number `hold_at` (its chunk is committed)
// until Crash(), and from then on delivers nothing, as a dead process.
class CrashingSender : public AgentSender {
 public:
  explicit CrashingSender(size_t hold_at) : hold_at_(hold_at) {}

  bool Send(absl::string_view agent_id, uint64_t session,
            v1::ControllerMessage message) override {
    if (message.has_directive()) {
      bool hold = false;
      {
        absl::MutexLock lock(&mu_);
        hold = ++directives_ == hold_at_;
      }
      if (hold) {
        held_.Notify();
        crashed_.WaitForNotification();
      }
    }
    if (crashed_.HasBeenNotified()) return false;
    return delivered_.Send(agent_id, session, std::move(message));
  }
  void Close(absl::string_view agent_id, uint64_t session,
             const absl::Status& status) override {
    if (!crashed_.HasBeenNotified())
      delivered_.Close(agent_id, session, status);
  }
  void WaitUntilHeld() { held_.WaitForNotification(); }
  void Crash() { crashed_.Notify(); }
  RecordingSender& delivered() { return delivered_; }

 private:
  const size_t hold_at_;
  absl::Mutex mu_;
  size_t directives_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Notification held_;
  absl::Notification crashed_;
  RecordingSender delivered_;
};

TEST_F(ControlLoopTest, ChunkedDirectivesSurviveACrashBetweenChunks) {
  // This test runs its own loops with a chunk of 2 directives.
  loop_->Stop();
  loop_.reset();
  ControlLoopOptions options;
  options.tick = absl::Milliseconds(10);
  options.offline_sweep = absl::Milliseconds(10);
  options.directive_chunk = 2;
  constexpr int kAgents = 7;
  auto agent = [](int i) { return "agent-" + std::to_string(i); };

  // First controller: dies after committing the second chunk, before
  // sending any of it.
  CrashingSender dying(/*hold_at=*/3);
  auto loop = std::make_unique<ControlLoop>(*store_, clock_, options);
  loop->Start(dying);
  for (int i = 0; i < kAgents; ++i) {
    loop->PostHello(agent(i), 1, HelloOf(agent(i), "1.0.0"));
  }
  ASSERT_EQ(dying.delivered()
                .WaitFor(v1::ControllerMessage::kWelcome, kAgents)
                .size(),
            kAgents);
  ASSERT_TRUE(loop->AddRelease(ReleaseOf("1.1.0")).ok());
  absl::StatusOr<v1::Rollout> rollout;
  std::thread create([&] {
    v1::CreateRolloutRequest request;
    request.set_product("app");
    request.set_version("1.1.0");
    rollout = loop->CreateRollout(request);
  });
  dying.WaitUntilHeld();
  dying.Crash();
  create.join();
  loop->Stop();
  loop.reset();
  store_.reset();
  ASSERT_TRUE(rollout.ok()) << rollout.status();
  const std::string id = rollout->rollout_id();
  // The creation committed the first chunk: those left before the crash.
  EXPECT_EQ(rollout->counts().total(), kAgents);
  EXPECT_EQ(rollout->counts().in_flight(), 2u);
  std::vector<RecordingSender::Sent> before =
      dying.delivered().Matching(v1::ControllerMessage::kDirective);
  ASSERT_EQ(before.size(), 2u);
  std::map<std::string, std::string> received;  // agent -> directive id
  for (const auto& d : before) {
    received[d.agent_id] = d.message.directive().directive_id();
  }
  // Every directive sent was journaled first; later chunks are journaled
  // (at least the second) or still PENDING, none lost.
  std::map<std::string, std::string> journaled;  // agent -> directive id
  absl::StatusOr<std::vector<v1::RolloutTarget>> targets =
      reads_->ListTargets(id);
  ASSERT_TRUE(targets.ok()) << targets.status();
  for (const v1::RolloutTarget& t : *targets) {
    if (t.state() == v1::TARGET_STATE_DIRECTED) {
      journaled[t.agent_id()] = t.directive_id();
    } else {
      EXPECT_EQ(t.state(), v1::TARGET_STATE_PENDING) << t.agent_id();
    }
  }
  EXPECT_GE(journaled.size(), 4u);
  for (const auto& [agent_id, directive_id] : received) {
    EXPECT_EQ(journaled[agent_id], directive_id) << agent_id;
  }

  // Second controller on the same file. Agents reconnect, naming the
  // directive they got (the agent's last_directive_id).
  auto store = Store::Open(dir_.Join("fleet.db"));
  ASSERT_TRUE(store.ok()) << store.status();
  store_ = *std::move(store);
  loop_ = std::make_unique<ControlLoop>(*store_, clock_, options);
  loop_->Start(sender_);
  for (int i = 0; i < kAgents; ++i) {
    v1::Hello hello = HelloOf(agent(i), "1.0.0");
    auto got = received.find(agent(i));
    if (got != received.end()) hello.set_last_directive_id(got->second);
    loop_->PostHello(agent(i), 2, hello);
  }
  std::vector<RecordingSender::Sent> after =
      sender_.WaitFor(v1::ControllerMessage::kDirective, kAgents - 2);
  ASSERT_EQ(WaitForTargets(id, v1::TARGET_STATE_DIRECTED, kAgents), kAgents);
  absl::SleepFor(absl::Milliseconds(100));  // nothing more may come
  after = sender_.Matching(v1::ControllerMessage::kDirective);
  ASSERT_EQ(after.size(), kAgents - 2u);
  for (const auto& d : after) {
    // Not sent twice: none to an agent that has its directive.
    EXPECT_EQ(received.count(d.agent_id), 0u) << d.agent_id;
    received[d.agent_id] = d.message.directive().directive_id();
  }
  ASSERT_EQ(received.size(), static_cast<size_t>(kAgents));
  targets = reads_->ListTargets(id);
  ASSERT_TRUE(targets.ok()) << targets.status();
  for (const v1::RolloutTarget& t : *targets) {
    // Journaled before the crash but never sent: resent with the same id.
    if (journaled.count(t.agent_id()) != 0) {
      EXPECT_EQ(t.directive_id(), journaled[t.agent_id()]) << t.agent_id();
    }
    EXPECT_EQ(t.directive_id(), received[t.agent_id()]) << t.agent_id();
  }
}

TEST_F(ControlLoopTest, HeartbeatsAreKeptInMemoryAndWrittenEveryFlushInterval) {
  // The fixture's loop uses the default flush interval of 5 s.
  const absl::Time t0 = clock_.Now();
  auto stored = [&] {
    absl::StatusOr<v1::Agent> agent = reads_->GetAgent("a1");
    return agent.ok() ? absl::FromUnixMillis(agent->last_seen_unix_ms())
                      : absl::InfinitePast();
  };
  loop_->PostHello("a1", 1, HelloOf("a1", "1.0.0"));
  ASSERT_EQ(sender_.WaitFor(v1::ControllerMessage::kWelcome, 1).size(), 1u);
  clock_.Advance(absl::Seconds(1));
  loop_->PostHeartbeat("a1", 1);
  // Admin writes are queued behind it: once committed, the heartbeat was
  // handled too.
  ASSERT_TRUE(loop_->AddRelease(ReleaseOf("1.1.0")).ok());
  EXPECT_EQ(stored(), t0);  // not written yet

  clock_.Advance(absl::Seconds(5));
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (absl::Now() < deadline && stored() != t0 + absl::Seconds(1)) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(stored(), t0 + absl::Seconds(1));

  // A heartbeat of an old stream does not count; Stop writes what is held.
  clock_.Advance(absl::Seconds(1));
  loop_->PostHeartbeat("a1", 2);
  loop_->PostHeartbeat("a1", 1);
  ASSERT_TRUE(loop_->AddRelease(ReleaseOf("1.2.0")).ok());
  clock_.Advance(absl::Seconds(1));
  loop_->PostHeartbeat("a1", 2);
  ASSERT_TRUE(loop_->AddRelease(ReleaseOf("1.3.0")).ok());
  EXPECT_EQ(stored(), t0 + absl::Seconds(1));
  loop_->Stop();
  EXPECT_EQ(stored(), t0 + absl::Seconds(7));
}

}  // namespace
}  // namespace fleet::controller
