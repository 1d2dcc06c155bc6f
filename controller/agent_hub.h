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
// FetchArtifact streams a stored blob in 64 KiB chunks read with pread.
#ifndef FLEET_CONTROLLER_AGENT_HUB_H_
#define FLEET_CONTROLLER_AGENT_HUB_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "controller/blob_store.h"
#include "controller/control_loop.h"
#include "controller/identity/authorizer.h"
#include "controller/telemetry/agent_observer.h"
#include "proto/fleet/v1/agent.grpc.pb.h"

namespace fleet::controller {

class AgentStream;

// Bytes of artifact data per ArtifactChunk.
inline constexpr size_t kArtifactChunkSize = 64 * 1024;

// INVALID_ARGUMENT naming the first bad field of a Hello: agent id,
// platform, hostname, agent version, labels, installed products (names,
// versions, digests), directive ids.
absl::Status ValidateHello(const v1::Hello& hello);
// INVALID_ARGUMENT naming the first bad field of an UpdateEvent: seq of 0,
// unknown phase, bad ids, names or versions, oversized error text.
absl::Status ValidateEvent(const v1::UpdateEvent& event);

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

 private:
  friend class AgentStream;
  // Makes `stream` the agent's stream, ending the one it replaces.
  void Register(AgentStream* stream);
  // Forgets `stream` if it is still the agent's registered stream.
  void Unregister(AgentStream* stream);

  ControlLoop& loop_;
  const BlobStore& blobs_;
  std::atomic<uint64_t> next_session_{1};
  std::atomic<bool> closing_{false};
  telemetry::AgentObserver* observer_ = nullptr;
  const Authorizer* authorizer_ = nullptr;

  mutable absl::Mutex mu_;
  // Lock order: mu_ before any stream's own mutex.
  absl::flat_hash_map<std::string, AgentStream*> streams_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fleet::controller

#endif  // FLEET_CONTROLLER_AGENT_HUB_H_
