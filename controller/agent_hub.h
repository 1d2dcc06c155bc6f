// AgentService on gRPC's callback API: one reactor per Connect stream (no
// thread per agent) and one per FetchArtifact call.
//
// A Connect stream must open with a valid Hello; the hub then registers it
// as the agent's stream (ending an older one with ABORTED) and hands the
// Hello, and every later message, to the control loop. Reactions validate
// and enqueue only: they never touch the database. The control loop answers
// through the AgentSender side of the hub, which queues messages on the
// stream's reactor (one write in flight, the rest queued).
//
// Roots of trust: with SetRoots, the Welcome an agent gets carries every
// root above the version its Hello names, and BroadcastRoots sends a newly
// pushed root to every welcomed agent that has root metadata.
//
// Rate limit: each stream has a token bucket (SetStreamRateLimit); an agent
// that sends messages faster has its stream ended with RESOURCE_EXHAUSTED
// (it reconnects after its backoff). A batch of events costs one token per
// event.
//
// Event batches: Welcome tells agents kMaxEventsPerBatch; an agent with
// several events queued may send them in one AgentMessage.events, which the
// control loop stores as one work item and acks together.
//
// FetchArtifact streams a stored blob (controller/artifact_stream.h).
#ifndef FLEET_CONTROLLER_AGENT_HUB_H_
#define FLEET_CONTROLLER_AGENT_HUB_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/root.h"
#include "controller/blob_store.h"
#include "controller/control_loop.h"
#include "controller/identity/authorizer.h"
#include "controller/telemetry/agent_observer.h"
#include "proto/fleet/v1/agent.grpc.pb.h"

namespace fleet::controller {

class AgentStream;

// INVALID_ARGUMENT naming the first bad field of a Hello: agent id,
// platform, hostname, agent version, labels, installed products (names,
// versions, digests), directive ids.
absl::Status ValidateHello(const v1::Hello& hello);
// INVALID_ARGUMENT naming the first bad field of an UpdateEvent: seq of 0,
// unknown phase, bad ids, names or versions, oversized error text.
absl::Status ValidateEvent(const v1::UpdateEvent& event);

// The root an agent reported in its latest heartbeat.
struct AgentRootStatus {
  uint64_t version = 0;  // 0: the agent trusts a flat key list
  absl::Time expires = absl::InfinitePast();
  bool expired = false;  // as of the heartbeat, by the controller's clock
};

// Most events an agent may send in one AgentMessage.events; told to agents
// in Welcome.max_events_per_batch. A larger batch ends the stream with
// INVALID_ARGUMENT.
inline constexpr uint32_t kMaxEventsPerBatch = 256;

// Messages per second an agent may send on its stream, and the burst above
// that rate it may send at once. Heartbeats come every few seconds and
// events a dozen per update, so honest agents stay far below.
struct StreamRateLimit {
  double messages_per_second = 50;
  double burst = 200;
};

class AgentHub : public v1::AgentService::CallbackService, public AgentSender {
 public:
  // `loop` and `blobs` must outlive the hub, and the hub must outlive the
  // grpc::Server it is registered with.
  AgentHub(ControlLoop& loop, const BlobStore& blobs);
  ~AgentHub() override;
  AgentHub(const AgentHub&) = delete;
  AgentHub& operator=(const AgentHub&) = delete;

  grpc::ServerBidiReactor<v1::AgentMessage, v1::ControllerMessage>* Connect(
      grpc::CallbackServerContext* context) override;
  grpc::ServerWriteReactor<v1::ArtifactChunk>* FetchArtifact(
      grpc::CallbackServerContext* context,
      const v1::FetchArtifactRequest* request) override;

  // AgentSender. Thread-safe and non-blocking.
  bool Send(absl::string_view agent_id, uint64_t session,
            v1::ControllerMessage message) override;
  void Close(absl::string_view agent_id, uint64_t session,
             const absl::Status& status) override;

  // Ends every registered stream with `status` (at shutdown, before the
  // server stops, so agents see a clean UNAVAILABLE and reconnect later).
  // Streams that send Hello afterwards are ended with UNAVAILABLE too.
  void CloseAll(const absl::Status& status);
  // Streams that have sent a valid Hello and are still open.
  size_t ConnectedCount() const;
  // Told about every valid Hello, Heartbeat and directive sent (telemetry).
  // Call before serving; `observer` must outlive the hub.
  void SetObserver(telemetry::AgentObserver* observer) { observer_ = observer; }
  // Checks every stream's caller: Connect needs the certificate of the
  // agent its Hello names (not revoked), FetchArtifact an agent's or an
  // admin's certificate. Without one (unit tests) nothing is checked.
  // Call before serving; `authorizer` must outlive the hub.
  void SetAuthorizer(const Authorizer* authorizer) { authorizer_ = authorizer; }
  // Ends the agent's open stream with `status` (revocation). True if one
  // was open.
  bool CloseAgent(absl::string_view agent_id, const absl::Status& status);

  // The controller's roots (TrustRoots::chain()): Welcomes then carry the
  // roots an agent is missing. Call before serving; `chain` must outlive
  // the hub. Without it agents are sent no roots.
  void SetRoots(const RootChain* chain) { roots_ = chain; }
  // Sends every welcomed agent that has root metadata the roots above the
  // version it was last sent or reported. Returns how many were sent one.
  // Thread-safe, non-blocking.
  size_t BroadcastRoots();
  // From the connected agent's latest heartbeat; nullopt before one and
  // once it disconnects.
  std::optional<AgentRootStatus> RootStatus(absl::string_view agent_id) const;
  // Root status of every connected agent that reported one.
  std::vector<std::pair<std::string, AgentRootStatus>> RootStatuses() const;
  // Call before serving. A limit with messages_per_second <= 0 disables it.
  void SetStreamRateLimit(StreamRateLimit limit) { rate_limit_ = limit; }

 private:
  friend class AgentStream;
  // Makes `stream` the agent's stream, ending the one it replaces.
  void Register(AgentStream* stream);
  // Forgets `stream` if it is still the agent's registered stream.
  void Unregister(AgentStream* stream);
  // Records the root a heartbeat reports; warns once when it expired.
  void NoteRootStatus(absl::string_view agent_id,
                      const v1::Heartbeat& heartbeat);

  ControlLoop& loop_;
  const BlobStore& blobs_;
  std::atomic<uint64_t> next_session_{1};
  std::atomic<bool> closing_{false};
  telemetry::AgentObserver* observer_ = nullptr;
  const Authorizer* authorizer_ = nullptr;
  const RootChain* roots_ = nullptr;
  StreamRateLimit rate_limit_;

  // Heartbeat reactions write, admin and metrics threads read.
  mutable absl::Mutex root_status_mu_;
  absl::flat_hash_map<std::string, AgentRootStatus> root_status_
      ABSL_GUARDED_BY(root_status_mu_);

  mutable absl::Mutex mu_;
  // Lock order: mu_ before root_status_mu_ and any stream's own mutex.
  absl::flat_hash_map<std::string, AgentStream*> streams_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fleet::controller

#endif  // FLEET_CONTROLLER_AGENT_HUB_H_
