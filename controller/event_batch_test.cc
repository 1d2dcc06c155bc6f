// Event batches (AgentMessage.events) as agents see them: a real
// ControllerServer on 127.0.0.1 (port 0) with its SQLite files in a temp
// dir, driven over a real gRPC Connect stream.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/ed25519.h"
#include "common/sqlite/database.h"
#include "controller/agent_hub.h"
#include "controller/server.h"
#include "controller/store/store.h"
#include "controller/testing/temp_dir.h"
#include "gtest/gtest.h"
#include "proto/fleet/v1/agent.grpc.pb.h"

namespace fleet::controller {
namespace {

std::chrono::system_clock::time_point Deadline(int seconds) {
  return std::chrono::system_clock::now() + std::chrono::seconds(seconds);
}

// One Connect stream that has said Hello and got its Welcome.
class Agent {
 public:
  Agent(v1::AgentService::Stub& stub, const std::string& agent_id) {
    context_.set_deadline(Deadline(20));
    stream_ = stub.Connect(&context_);
    v1::AgentMessage hello;
    hello.mutable_hello()->set_agent_id(agent_id);
    hello.mutable_hello()->set_agent_version("0.1.0");
    hello.mutable_hello()->set_platform("linux/amd64");
    EXPECT_TRUE(stream_->Write(hello));
    v1::ControllerMessage welcome;
    EXPECT_TRUE(stream_->Read(&welcome) && welcome.has_welcome());
    welcome_ = welcome.welcome();
  }
  ~Agent() {
    if (!finished_) {
      context_.TryCancel();
      stream_->Finish();
    }
  }

  const v1::Welcome& welcome() const { return welcome_; }

  // Events first..last, DOWNLOADING progress, in one AgentMessage.events.
  bool SendBatch(uint64_t first, uint64_t last) {
    v1::AgentMessage message;
    for (uint64_t seq = first; seq <= last; ++seq) {
      v1::UpdateEvent* event = message.mutable_events()->add_events();
      event->set_seq(seq);
      event->set_phase(v1::UPDATE_PHASE_DOWNLOADING);
      event->set_bytes(seq * 1000);
      event->set_time_unix_ms(absl::ToUnixMillis(absl::Now()));
    }
    return stream_->Write(message);
  }
  bool Send(const v1::AgentMessage& message) { return stream_->Write(message); }
  // Reads until an ack; 0 if the stream ended first.
  uint64_t NextAck() {
    v1::ControllerMessage message;
    while (stream_->Read(&message)) {
      if (message.has_ack()) return message.ack().acked_seq();
    }
    return 0;
  }
  grpc::Status Finish() {
    finished_ = true;
    stream_->WritesDone();
    v1::ControllerMessage ignored;
    while (stream_->Read(&ignored)) {
    }
    return stream_->Finish();
  }

 private:
  grpc::ClientContext context_;
  std::unique_ptr<
      grpc::ClientReaderWriter<v1::AgentMessage, v1::ControllerMessage>>
      stream_;
  v1::Welcome welcome_;
  bool finished_ = false;
};

class EventBatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    absl::StatusOr<Ed25519PrivateKey> key = Ed25519PrivateKey::Generate();
    ASSERT_TRUE(key.ok());
    ASSERT_TRUE(key->PublicKey().WritePemFile(dir_.Join("release.pub")).ok());
  }

  void Start(StreamRateLimit limit) {
    ControllerOptions options;
    options.data_dir = dir_.Join("data");
    options.listen_address = "127.0.0.1:0";
    options.trust_key_paths = {dir_.Join("release.pub")};
    options.insecure = true;
    options.agent_rate_limit = limit;
    server_ = std::make_unique<ControllerServer>(options);
    absl::StatusOr<int> port = server_->Start();
    ASSERT_TRUE(port.ok()) << port.status();
    stub_ = v1::AgentService::NewStub(grpc::CreateChannel(
        absl::StrCat("127.0.0.1:", *port), grpc::InsecureChannelCredentials()));
  }

  int64_t Scalar(const std::string& db, const std::string& sql) {
    auto opened = sqlite::Database::Open(dir_.Join("data/" + db));
    EXPECT_TRUE(opened.ok()) << opened.status();
    if (!opened.ok()) return -1;
    auto statement = (*opened)->Prepare(sql);
    EXPECT_TRUE(statement.ok()) << statement.status();
    if (!statement.ok()) return -1;
    EXPECT_TRUE(*(*statement)->Step());
    return (*statement)->ColumnInt64(0);
  }

  testing::TempDir dir_;
  std::unique_ptr<ControllerServer> server_;
  std::unique_ptr<v1::AgentService::Stub> stub_;
};

TEST_F(EventBatchTest, BatchesAreStoredOnceInBothDatabasesAndAckedWhole) {
  Start(StreamRateLimit{});
  {
    Agent agent(*stub_, "a1");
    EXPECT_EQ(agent.welcome().max_events_per_batch(), kMaxEventsPerBatch);
    ASSERT_TRUE(agent.SendBatch(1, 100));
    EXPECT_EQ(agent.NextAck(), 100u);
    // 91..100 again (a resend after a reconnect) with 101..120.
    ASSERT_TRUE(agent.SendBatch(91, 120));
    EXPECT_EQ(agent.NextAck(), 120u);
    // One event per message still works, after batches.
    v1::AgentMessage single;
    single.mutable_event()->set_seq(121);
    single.mutable_event()->set_phase(v1::UPDATE_PHASE_DOWNLOADED);
    ASSERT_TRUE(agent.Send(single));
    EXPECT_EQ(agent.NextAck(), 121u);
    EXPECT_TRUE(agent.Finish().ok());
  }
  server_->Shutdown();  // telemetry writes what the loop handed over
  EXPECT_EQ(Scalar("fleet.db", "SELECT COUNT(*) FROM events"), 121);
  EXPECT_EQ(Scalar("fleet.db",
                   "SELECT SUM(bytes) FROM events WHERE seq <= "
                   "120"),
            1000 * 120 * 121 / 2);
  EXPECT_EQ(Scalar("telemetry.db", "SELECT COUNT(*) FROM update_events"), 121);
  EXPECT_EQ(Scalar("telemetry.db",
                   "SELECT COUNT(DISTINCT seq) FROM update_events WHERE "
                   "agent_id = 'a1'"),
            121);
  EXPECT_EQ(Scalar("telemetry.db", "SELECT SUM(events) FROM update_events_1m"),
            121);
}

TEST_F(EventBatchTest, BadBatchesEndTheStreamWithInvalidArgument) {
  Start(StreamRateLimit{});
  {
    Agent agent(*stub_, "a1");
    ASSERT_TRUE(agent.SendBatch(1, kMaxEventsPerBatch + 1));
    grpc::Status status = agent.Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(status.error_message().find("max_events_per_batch"),
              std::string::npos)
        << status.error_message();
  }
  {
    Agent agent(*stub_, "a2");
    v1::AgentMessage empty;
    empty.mutable_events();
    ASSERT_TRUE(agent.Send(empty));
    EXPECT_EQ(agent.Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    // One bad event refuses the whole batch: nothing of it is stored.
    Agent agent(*stub_, "a3");
    v1::AgentMessage message;
    message.mutable_events()->add_events()->set_seq(1);
    message.mutable_events()->mutable_events(0)->set_phase(
        v1::UPDATE_PHASE_RECEIVED);
    message.mutable_events()->add_events()->set_phase(
        v1::UPDATE_PHASE_RECEIVED);  // seq 0
    ASSERT_TRUE(agent.Send(message));
    grpc::Status status = agent.Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(status.error_message().find("event.seq"), std::string::npos)
        << status.error_message();
  }
  server_->Shutdown();
  EXPECT_EQ(Scalar("fleet.db", "SELECT COUNT(*) FROM events"), 0);
}

TEST_F(EventBatchTest, EachEventOfABatchCostsARateLimitToken) {
  // 1 message/s with a burst of 10: Hello takes one token and a batch of 10
  // the rest and more, so the next message is refused although it is only
  // the third.
  Start(StreamRateLimit{.messages_per_second = 1, .burst = 10});
  Agent agent(*stub_, "a1");
  ASSERT_TRUE(agent.SendBatch(1, 10));
  EXPECT_EQ(agent.NextAck(), 10u);
  agent.SendBatch(11, 11);
  grpc::Status status = agent.Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << status.error_message();
}

}  // namespace
}  // namespace fleet::controller
