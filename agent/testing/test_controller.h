// A real gRPC server on 127.0.0.1 implementing AgentService.Connect the way
// docs/ARCHITECTURE.md describes the controller's side (Hello -> Welcome
// with the highest stored seq, EventAcks after storing), small enough for
// session tests to steer: hold back acks, push messages, drop the stream.
#ifndef FLEET_AGENT_TESTING_TEST_CONTROLLER_H_
#define FLEET_AGENT_TESTING_TEST_CONTROLLER_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "proto/fleet/v1/agent.grpc.pb.h"

namespace fleet::agent::testing {

class TestController final : public v1::AgentService::Service {
 public:
  // Listens on 127.0.0.1:`port` (0: any free port). nullptr on failure.
  static std::unique_ptr<TestController> Start(int port = 0);
  ~TestController() override;

  std::string address() const { return address_; }
  int port() const { return port_; }

  // Whether stored events are acked (default true).
  void set_auto_ack(bool on);
  void set_heartbeat_interval_seconds(uint32_t s);
  // Overrides the Welcome's acked_event_seq (default: highest stored seq).
  void set_welcome_acked_seq(uint64_t seq);
  // The blacklist every later Welcome carries (default: none).
  void set_welcome_blacklist(std::vector<v1::BlacklistedVersion> entries);
  // The Welcome's max_events_per_batch (default 0: one event per message,
  // as an older controller). A batch larger than this, or any batch while
  // it is 0, ends the stream with INVALID_ARGUMENT, as the controller does.
  void set_max_events_per_batch(uint32_t n);

  std::vector<v1::Hello> hellos() const;
  // Every event in arrival order, duplicates included.
  std::vector<v1::UpdateEvent> events() const;
  // Events stored once per seq.
  std::map<uint64_t, v1::UpdateEvent> stored() const;
  int heartbeats() const;
  // AgentMessages that carried events (one per single event or batch).
  int event_messages() const;
  int streams() const;

  // Queues a message for the open stream; false if none is open.
  bool Send(v1::ControllerMessage msg);
  // Ends the open stream with ABORTED.
  void DropStream();

  // Polls `done` under the lock every 10 ms until true or `timeout`.
  bool WaitUntil(const std::function<bool(const TestController&)>& done,
                 absl::Duration timeout = absl::Seconds(10)) const;

  grpc::Status Connect(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::ControllerMessage, v1::AgentMessage>* stream)
      override;

 private:
  TestController() = default;

  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  int port_ = 0;

  mutable absl::Mutex mu_;
  bool auto_ack_ ABSL_GUARDED_BY(mu_) = true;
  uint32_t heartbeat_interval_ ABSL_GUARDED_BY(mu_) = 10;
  bool welcome_override_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t welcome_acked_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<v1::BlacklistedVersion> welcome_blacklist_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::Hello> hellos_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::UpdateEvent> events_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, v1::UpdateEvent> stored_ ABSL_GUARDED_BY(mu_);
  int heartbeats_ ABSL_GUARDED_BY(mu_) = 0;
  uint32_t max_events_per_batch_ ABSL_GUARDED_BY(mu_) = 0;
  int event_messages_ ABSL_GUARDED_BY(mu_) = 0;
  int streams_ ABSL_GUARDED_BY(mu_) = 0;
  int current_ ABSL_GUARDED_BY(mu_) = 0;  // id of the open stream, 0: none
  bool drop_ ABSL_GUARDED_BY(mu_) = false;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<v1::ControllerMessage> outbox_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fleet::agent::testing

#endif  // FLEET_AGENT_TESTING_TEST_CONTROLLER_H_
