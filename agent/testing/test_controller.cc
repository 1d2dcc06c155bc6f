#include "agent/testing/test_controller.h"

#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"

namespace fleet::agent::testing {

std::unique_ptr<TestController> TestController::Start(int port) {
  std::unique_ptr<TestController> server(new TestController());
  int bound = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat("127.0.0.1:", port),
                           grpc::InsecureServerCredentials(), &bound);
  builder.RegisterService(server.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || bound == 0) return nullptr;
  server->port_ = bound;
  server->address_ = absl::StrCat("127.0.0.1:", bound);
  return server;
}

TestController::~TestController() {
  {
    absl::MutexLock lock(&mu_);
    shutting_down_ = true;
  }
  if (server_ != nullptr) {
    server_->Shutdown(std::chrono::system_clock::now());
    server_->Wait();
  }
}

void TestController::set_auto_ack(bool on) {
  absl::MutexLock lock(&mu_);
  auto_ack_ = on;
}

void TestController::set_heartbeat_interval_seconds(uint32_t s) {
  absl::MutexLock lock(&mu_);
  heartbeat_interval_ = s;
}

void TestController::set_welcome_blacklist(
    std::vector<v1::BlacklistedVersion> entries) {
  absl::MutexLock lock(&mu_);
  welcome_blacklist_ = std::move(entries);
}

void TestController::set_max_events_per_batch(uint32_t n) {
  absl::MutexLock lock(&mu_);
  max_events_per_batch_ = n;
}

int TestController::event_messages() const {
  absl::MutexLock lock(&mu_);
  return event_messages_;
}

void TestController::set_welcome_acked_seq(uint64_t seq) {
  absl::MutexLock lock(&mu_);
  welcome_override_ = true;
  welcome_acked_ = seq;
}

std::vector<v1::Hello> TestController::hellos() const {
  absl::MutexLock lock(&mu_);
  return hellos_;
}

std::vector<v1::UpdateEvent> TestController::events() const {
  absl::MutexLock lock(&mu_);
  return events_;
}

std::map<uint64_t, v1::UpdateEvent> TestController::stored() const {
  absl::MutexLock lock(&mu_);
  return stored_;
}

int TestController::heartbeats() const {
  absl::MutexLock lock(&mu_);
  return heartbeats_;
}

int TestController::streams() const {
  absl::MutexLock lock(&mu_);
  return streams_;
}

bool TestController::Send(v1::ControllerMessage msg) {
  absl::MutexLock lock(&mu_);
  if (current_ == 0) return false;
  outbox_.push_back(std::move(msg));
  return true;
}

void TestController::DropStream() {
  absl::MutexLock lock(&mu_);
  drop_ = true;
}

bool TestController::WaitUntil(
    const std::function<bool(const TestController&)>& done,
    absl::Duration timeout) const {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (done(*this)) return true;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return done(*this);
}

grpc::Status TestController::Connect(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<v1::ControllerMessage, v1::AgentMessage>* stream) {
  v1::AgentMessage first;
  if (!stream->Read(&first) || !first.has_hello()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "want Hello");
  }
  int id;
  v1::ControllerMessage welcome;
  {
    absl::MutexLock lock(&mu_);
    hellos_.push_back(first.hello());
    id = ++streams_;
    current_ = id;
    drop_ = false;
    outbox_.clear();
    welcome.mutable_welcome()->set_agent_id(first.hello().agent_id());
    welcome.mutable_welcome()->set_heartbeat_interval_seconds(
        heartbeat_interval_);
    uint64_t acked = stored_.empty() ? 0 : stored_.rbegin()->first;
    if (welcome_override_) acked = welcome_acked_;
    welcome.mutable_welcome()->set_acked_event_seq(acked);
    welcome.mutable_welcome()->set_max_events_per_batch(max_events_per_batch_);
    for (const v1::BlacklistedVersion& entry : welcome_blacklist_) {
      *welcome.mutable_welcome()->add_blacklist() = entry;
    }
  }
  if (!stream->Write(welcome)) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "write failed");
  }

  bool reader_done = false;  // guarded by mu_
  bool bad_batch = false;    // guarded by mu_
  std::thread reader([&] {
    v1::AgentMessage msg;
    while (stream->Read(&msg)) {
      absl::MutexLock lock(&mu_);
      std::vector<v1::UpdateEvent> received;
      if (msg.has_event()) {
        received.push_back(msg.event());
      } else if (msg.has_events()) {
        if (msg.events().events_size() > max_events_per_batch_) {
          bad_batch = true;
          break;
        }
        received.assign(msg.events().events().begin(),
                        msg.events().events().end());
      }
      if (!received.empty()) {
        ++event_messages_;
        for (const v1::UpdateEvent& event : received) {
          events_.push_back(event);
          stored_.emplace(event.seq(), event);
        }
        if (auto_ack_) {
          v1::ControllerMessage ack;
          ack.mutable_ack()->set_acked_seq(stored_.rbegin()->first);
          if (current_ == id) outbox_.push_back(std::move(ack));
        }
      } else if (msg.has_heartbeat()) {
        ++heartbeats_;
      }
    }
    absl::MutexLock lock(&mu_);
    reader_done = true;
  });

  grpc::Status result = grpc::Status::OK;
  for (;;) {
    std::deque<v1::ControllerMessage> batch;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return !outbox_.empty() || reader_done || drop_ || shutting_down_ ||
               current_ != id;
      };
      mu_.AwaitWithTimeout(absl::Condition(&ready), absl::Milliseconds(100));
      if (drop_ || current_ != id) {
        result = grpc::Status(grpc::StatusCode::ABORTED, "stream dropped");
        break;
      }
      if (reader_done || shutting_down_ || context->IsCancelled()) break;
      batch.swap(outbox_);
    }
    bool ok = true;
    for (const v1::ControllerMessage& msg : batch) {
      if (!(ok = stream->Write(msg))) break;
    }
    if (!ok) break;
  }
  context->TryCancel();
  reader.join();
  absl::MutexLock lock(&mu_);
  if (current_ == id) current_ = 0;
  if (bad_batch) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "event batch larger than the Welcome allowed");
  }
  return result;
}

}  // namespace fleet::agent::testing
