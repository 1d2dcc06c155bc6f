// The session against a real gRPC Connect server on 127.0.0.1 and a real
// journal: Hello contents, event delivery and resend, acks, directives,
// heartbeats, reconnects.
#include "agent/session.h"

#include <stdlib.h>

#include <thread>
#include <vector>

#include "agent/testing/test_controller.h"
#include "common/files.h"
#include "common/names.h"
#include "common/sha256.h"
#include "gtest/gtest.h"

namespace fleet::agent {
namespace {

using testing::TestController;

class RecordingHandler : public DirectiveHandler {
 public:
  void Submit(v1::UpdateDirective directive) override {
    absl::MutexLock lock(&mu_);
    directives_.push_back(directive.directive_id());
  }
  void Cancel(const std::string& id, const std::string& reason) override {
    absl::MutexLock lock(&mu_);
    cancels_.push_back(id + ":" + reason);
  }
  void SetBlacklist(std::vector<v1::BlacklistedVersion> entries) override {
    absl::MutexLock lock(&mu_);
    std::vector<std::string> list;
    for (const v1::BlacklistedVersion& e : entries) {
      list.push_back(e.product() + "@" + e.version());
    }
    blacklists_.push_back(std::move(list));
  }
  std::vector<std::vector<std::string>> blacklists() {
    absl::MutexLock lock(&mu_);
    return blacklists_;
  }
  std::vector<std::string> directives() {
    absl::MutexLock lock(&mu_);
    return directives_;
  }
  std::vector<std::string> cancels() {
    absl::MutexLock lock(&mu_);
    return cancels_;
  }

 private:
  absl::Mutex mu_;
  std::vector<std::string> directives_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> cancels_ ABSL_GUARDED_BY(mu_);
  std::vector<std::vector<std::string>> blacklists_ ABSL_GUARDED_BY(mu_);
};

v1::BlacklistedVersion Banned(const std::string& product,
                              const std::string& version) {
  v1::BlacklistedVersion b;
  b.set_product(product);
  b.set_version(version);
  return b;
}

v1::UpdateEvent Event(const std::string& directive, v1::UpdatePhase phase) {
  v1::UpdateEvent e;
  e.set_directive_id(directive);
  e.set_phase(phase);
  return e;
}

class SessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = JoinPath(
        getenv("TEST_TMPDIR"),
        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    ASSERT_TRUE(RemoveTree(dir_).ok());
    ASSERT_TRUE(MakeDirs(dir_ + "/bin").ok());
    exec_ = dir_ + "/bin/app";
    absl::StatusOr<std::unique_ptr<UpdateJournal>> journal =
        UpdateJournal::Open(dir_ + "/journal.db");
    ASSERT_TRUE(journal.ok()) << journal.status();
    journal_ = *std::move(journal);
    controller_ = TestController::Start();
    ASSERT_NE(controller_, nullptr);
    address_ = controller_->address();
  }

  void TearDown() override { StopSession(); }

  void StartSession() {
    channel_ = grpc::CreateCustomChannel(
        address_, grpc::InsecureChannelCredentials(), AgentChannelArguments());
    stub_ = v1::AgentService::NewStub(channel_);
    SessionOptions options;
    options.agent_id = "agent-1";
    options.agent_version = "0.1.0";
    options.product = "app";
    options.exec_path = exec_;
    options.state_dir = dir_;
    options.labels = {{"region", "eu"}};
    options.backoff_base = absl::Milliseconds(50);
    options.backoff_cap = absl::Milliseconds(200);
    session_ = std::make_unique<Session>(
        options, *stub_, *journal_, handler_,
        [](v1::Heartbeat& hb) { hb.set_program_restarts(7); });
    thread_ = std::thread([this] { session_->Run(); });
  }

  void StopSession() {
    if (session_) session_->Shutdown();
    if (thread_.joinable()) thread_.join();
  }

  std::string dir_, exec_, address_;
  std::unique_ptr<UpdateJournal> journal_;
  std::unique_ptr<TestController> controller_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::AgentService::Stub> stub_;
  RecordingHandler handler_;
  std::unique_ptr<Session> session_;
  std::thread thread_;
};

TEST_F(SessionTest, HelloCarriesIdentityLabelsAndExecutableDigest) {
  ASSERT_TRUE(WriteFileAtomically(exec_, "program v1", 0755).ok());
  UpdateRecord r;
  r.directive_id = "d-9";
  r.product = "app";
  r.state = UpdateState::kDownloading;
  ASSERT_TRUE(journal_->InsertUpdate(r, nullptr).ok());
  StartSession();
  ASSERT_TRUE(controller_->WaitUntil(
      [](const TestController& c) { return !c.hellos().empty(); }));
  const v1::Hello hello = controller_->hellos()[0];
  EXPECT_EQ(hello.agent_id(), "agent-1");
  EXPECT_EQ(hello.agent_version(), "0.1.0");
  EXPECT_EQ(hello.platform(), HostPlatform());
  EXPECT_FALSE(hello.hostname().empty());
  EXPECT_EQ(hello.labels().at("region"), "eu");
  ASSERT_EQ(hello.installed_size(), 1);
  EXPECT_EQ(hello.installed(0).product(), "app");
  // Nothing journaled as installed: the controller resolves by digest.
  EXPECT_EQ(hello.installed(0).version(), "");
  EXPECT_EQ(hello.installed(0).sha256(), DigestToBytes(Sha256Of("program v1")));
  EXPECT_EQ(hello.last_directive_id(), "d-9");
  EXPECT_EQ(hello.active_directive_id(), "d-9");
}

TEST_F(SessionTest, HelloReportsJournaledVersionOnlyIfTheFileMatches) {
  ASSERT_TRUE(WriteFileAtomically(exec_, "program v1", 0755).ok());
  UpdateRecord r;
  r.directive_id = "d-1";
  r.product = "app";
  ASSERT_TRUE(journal_->InsertUpdate(r, nullptr).ok());
  r.state = UpdateState::kHealthy;
  InstalledRecord installed{"app", "1.0.0",
                            DigestToBytes(Sha256Of("program v1")), exec_, 0};
  ASSERT_TRUE(journal_->SaveUpdate(r, nullptr, &installed).ok());
  StartSession();
  ASSERT_TRUE(controller_->WaitUntil(
      [](const TestController& c) { return !c.hellos().empty(); }));
  EXPECT_EQ(controller_->hellos()[0].installed(0).version(), "1.0.0");
  EXPECT_EQ(controller_->hellos()[0].active_directive_id(), "");
  StopSession();

  // Replaced behind fleet's back: the version is no longer known.
  ASSERT_TRUE(WriteFileAtomically(exec_, "hand-copied", 0755).ok());
  EXPECT_EQ(session_->BuildHello().installed(0).version(), "");
}

TEST_F(SessionTest, HelloNamesPreviousVersionsNewestFirst) {
  ASSERT_TRUE(WriteFileAtomically(exec_, "program v3", 0755).ok());
  // History: nothing -> 1.0.0 -> 1.1.0 (-> 1.2.0 rolled back) -> 1.3.0.
  struct Step {
    const char* id;
    const char* from;
    const char* to;
    UpdateState final_state;
  };
  const Step steps[] = {
      {"d-1", "", "1.0.0", UpdateState::kHealthy},
      {"d-2", "1.0.0", "1.1.0", UpdateState::kHealthy},
      {"d-3", "1.1.0", "1.2.0", UpdateState::kRolledBack},
      {"d-4", "1.1.0", "1.3.0", UpdateState::kHealthy},
  };
  for (const Step& step : steps) {
    UpdateRecord r;
    r.directive_id = step.id;
    r.product = "app";
    r.from_version = step.from;
    r.to_version = step.to;
    ASSERT_TRUE(journal_->InsertUpdate(r, nullptr).ok());
    r.state = step.final_state;
    ASSERT_TRUE(journal_->SaveUpdate(r, nullptr, nullptr).ok());
  }
  InstalledRecord installed{"app", "1.3.0",
                            DigestToBytes(Sha256Of("program v3")), exec_, 0};
  UpdateRecord last;
  last.directive_id = "d-4";
  last.state = UpdateState::kHealthy;
  ASSERT_TRUE(journal_->SaveUpdate(last, nullptr, &installed).ok());
  StartSession();
  ASSERT_TRUE(controller_->WaitUntil(
      [](const TestController& c) { return !c.hellos().empty(); }));
  const v1::InstalledProduct product = controller_->hellos()[0].installed(0);
  EXPECT_EQ(product.version(), "1.3.0");
  EXPECT_EQ(std::vector<std::string>(product.previous_versions().begin(),
                                     product.previous_versions().end()),
            (std::vector<std::string>{"1.1.0", "1.0.0"}));
}

TEST_F(SessionTest, HandsWelcomeAndUpdatedBlacklistsToTheHandler) {
  controller_->set_welcome_blacklist({Banned("app", "2.0.0")});
  StartSession();
  ASSERT_TRUE(controller_->WaitUntil([&](const TestController&) {
    return handler_.blacklists().size() == 1;
  }));
  EXPECT_EQ(handler_.blacklists()[0], std::vector<std::string>{"app@2.0.0"});
  v1::ControllerMessage update;
  *update.mutable_blacklist()->add_entries() = Banned("app", "2.0.0");
  *update.mutable_blacklist()->add_entries() = Banned("app", "2.1.0");
  ASSERT_TRUE(controller_->Send(update));
  v1::ControllerMessage cleared;
  cleared.mutable_blacklist();
  ASSERT_TRUE(controller_->Send(cleared));
  ASSERT_TRUE(controller_->WaitUntil([&](const TestController&) {
    return handler_.blacklists().size() == 3;
  }));
  EXPECT_EQ(handler_.blacklists()[1],
            (std::vector<std::string>{"app@2.0.0", "app@2.1.0"}));
  EXPECT_TRUE(handler_.blacklists()[2].empty());
}

TEST_F(SessionTest, SendsEventsInOrderAndDropsAckedOnes) {
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(
        journal_->AppendEvent(Event("d-1", v1::UPDATE_PHASE_RECEIVED)).ok());
  }
  StartSession();
  ASSERT_TRUE(controller_->WaitUntil(
      [](const TestController& c) { return c.stored().size() == 3; }));
  ASSERT_TRUE(
      journal_->AppendEvent(Event("d-1", v1::UPDATE_PHASE_HEALTHY)).ok());
  ASSERT_TRUE(controller_->WaitUntil(
      [](const TestController& c) { return c.stored().size() == 4; }));
  std::vector<v1::UpdateEvent> events = controller_->events();
  ASSERT_EQ(events.size(), 4u);
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].seq(), i + 1);
  }
  EXPECT_EQ(events[3].phase(), v1::UPDATE_PHASE_HEALTHY);
  // This controller's Welcome allows no batches: one message per event.
  EXPECT_EQ(controller_->event_messages(), 4);
  // Acked events leave the journal.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!journal_->PendingEvents(0, 10)->empty() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_TRUE(journal_->PendingEvents(0, 10)->empty());
}

TEST_F(SessionTest, ResendsUnackedEventsInOrderAfterReconnect) {
  controller_->set_auto_ack(false);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(
        journal_->AppendEvent(Event("d-1", v1::UPDATE_PHASE_RECEIVED)).ok());
  }
  StartSession();
  ASSERT_TRUE(controller_->WaitUntil(
      [](const TestController& c) { return c.events().size() == 3; }));
  // The controller says it stored only seq 1, then the stream breaks.
  controller_->set_welcome_acked_seq(1);
  controller_->DropStream();
  ASSERT_TRUE(controller_->WaitUntil(
      [](const TestController& c) { return c.events().size() == 5; }));
  std::vector<v1::UpdateEvent> events = controller_->events();
  EXPECT_EQ(events[3].seq(), 2u);
  EXPECT_EQ(events[4].seq(), 3u);
  EXPECT_EQ(controller_->streams(), 2);
  // The Welcome's ack dropped seq 1 from the journal.
  std::vector<v1::UpdateEvent> pending = *journal_->PendingEvents(0, 10);
  ASSERT_EQ(pending.size(), 2u);
  EXPECT_EQ(pending[0].seq(), 2u);
}

TEST_F(SessionTest, SendsABacklogInBatchesNoLargerThanTheWelcomeAllows) {
  controller_->set_max_events_per_batch(4);
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(
        journal_->AppendEvent(Event("d-1", v1::UPDATE_PHASE_RECEIVED)).ok());
  }
  StartSession();
  ASSERT_TRUE(controller_->WaitUntil(
      [](const TestController& c) { return c.stored().size() == 10; }));
  std::vector<v1::UpdateEvent> events = controller_->events();
  ASSERT_EQ(events.size(), 10u);
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].seq(), i + 1);
  }
  // 4 + 4 + 2; a larger batch would have ended the stream.
  EXPECT_EQ(controller_->event_messages(), 3);
  EXPECT_EQ(controller_->streams(), 1);
  // A single new event still goes alone.
  ASSERT_TRUE(
      journal_->AppendEvent(Event("d-1", v1::UPDATE_PHASE_HEALTHY)).ok());
  ASSERT_TRUE(controller_->WaitUntil(
      [](const TestController& c) { return c.stored().size() == 11; }));
  EXPECT_EQ(controller_->event_messages(), 4);
}

TEST_F(SessionTest, HandsDirectivesAndCancelsToTheHandler) {
  StartSession();
  ASSERT_TRUE(controller_->WaitUntil(
      [](const TestController& c) { return c.streams() == 1; }));
  ASSERT_TRUE(session_->connected() ||
              controller_->WaitUntil([&](const TestController&) {
                return session_->connected();
              }));
  v1::ControllerMessage directive;
  directive.mutable_directive()->set_directive_id("d-7");
  ASSERT_TRUE(controller_->Send(directive));
  v1::ControllerMessage cancel;
  cancel.mutable_cancel()->set_directive_id("d-7");
  cancel.mutable_cancel()->set_reason("aborted");
  ASSERT_TRUE(controller_->Send(cancel));
  ASSERT_TRUE(controller_->WaitUntil(
      [&](const TestController&) { return handler_.cancels().size() == 1; }));
  EXPECT_EQ(handler_.directives(), std::vector<std::string>{"d-7"});
  EXPECT_EQ(handler_.cancels(), std::vector<std::string>{"d-7:aborted"});
}

TEST_F(SessionTest, SendsHeartbeatsAtTheWelcomeInterval) {
  controller_->set_heartbeat_interval_seconds(1);
  StartSession();
  const absl::Time start = absl::Now();
  ASSERT_TRUE(controller_->WaitUntil(
      [](const TestController& c) { return c.heartbeats() >= 2; }));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(1500));
  v1::Heartbeat hb = session_->BuildHeartbeat();
  EXPECT_EQ(hb.program_restarts(), 7u);
  EXPECT_GT(hb.agent_rss_bytes(), 0u);
  EXPECT_GT(hb.state_dir_free_bytes(), 0u);
}

TEST_F(SessionTest, SkipsSeqsTheControllerAlreadyHas) {
  controller_->set_welcome_acked_seq(40);
  StartSession();
  ASSERT_TRUE(controller_->WaitUntil(
      [](const TestController& c) { return c.streams() == 1; }));
  ASSERT_TRUE(controller_->WaitUntil(
      [&](const TestController&) { return session_->connected(); }));
  ASSERT_TRUE(
      journal_->AppendEvent(Event("d-1", v1::UPDATE_PHASE_RECEIVED)).ok());
  ASSERT_TRUE(controller_->WaitUntil(
      [](const TestController& c) { return !c.events().empty(); }));
  EXPECT_EQ(controller_->events()[0].seq(), 41u);
}

TEST_F(SessionTest, ReconnectsWhenTheControllerComesBack) {
  ASSERT_TRUE(
      journal_->AppendEvent(Event("d-1", v1::UPDATE_PHASE_RECEIVED)).ok());
  const int port = controller_->port();
  controller_.reset();
  StartSession();
  absl::SleepFor(absl::Milliseconds(500));
  EXPECT_FALSE(session_->connected());
  controller_ = TestController::Start(port);
  ASSERT_NE(controller_, nullptr);
  ASSERT_TRUE(controller_->WaitUntil(
      [](const TestController& c) { return c.stored().size() == 1; },
      absl::Seconds(20)));
  EXPECT_GE(session_->welcomes(), 1u);
}

TEST_F(SessionTest, ShutdownEndsRunPromptly) {
  StartSession();
  ASSERT_TRUE(controller_->WaitUntil(
      [&](const TestController&) { return session_->connected(); }));
  const absl::Time start = absl::Now();
  StopSession();
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
}

}  // namespace
}  // namespace fleet::agent
