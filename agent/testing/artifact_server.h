// A real gRPC server on 127.0.0.1 that implements AgentService.FetchArtifact
// from artifacts held in memory, for agent tests. Knobs make it misbehave
// the ways a network or a compromised controller can: streams cut after N
// bytes, slow chunks, artifacts served under the wrong digest.
//
// Connect is left unimplemented (UNIMPLEMENTED).
#ifndef FLEET_AGENT_TESTING_ARTIFACT_SERVER_H_
#define FLEET_AGENT_TESTING_ARTIFACT_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/sha256.h"
#include "proto/fleet/v1/agent.grpc.pb.h"

namespace fleet::agent::testing {

class ArtifactServer final : public v1::AgentService::Service {
 public:
  // Starts listening on 127.0.0.1 on a free port. nullptr on failure.
  static std::unique_ptr<ArtifactServer> Start();
  ~ArtifactServer() override;

  std::string address() const { return address_; }
  std::shared_ptr<grpc::Channel> NewChannel() const;

  // Serves `bytes` under their own digest, which is returned.
  Digest Add(std::string bytes);
  // Serves `bytes` under `digest`, whatever their real digest is.
  void AddAs(const Digest& digest, std::string bytes);

  // Each stream ends with UNAVAILABLE after sending this many bytes (0: no
  // limit).
  void set_bytes_per_stream(uint64_t n);
  void set_chunk_size(size_t n);
  void set_chunk_delay(absl::Duration d);

  // The offsets of every FetchArtifact request, in arrival order.
  std::vector<uint64_t> requested_offsets() const;

  grpc::Status FetchArtifact(
      grpc::ServerContext* context, const v1::FetchArtifactRequest* request,
      grpc::ServerWriter<v1::ArtifactChunk>* writer) override;

 private:
  ArtifactServer() = default;

  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  mutable absl::Mutex mu_;
  std::map<std::string, std::string> artifacts_ ABSL_GUARDED_BY(mu_);
  uint64_t bytes_per_stream_ ABSL_GUARDED_BY(mu_) = 0;
  size_t chunk_size_ ABSL_GUARDED_BY(mu_) = 64 * 1024;
  absl::Duration chunk_delay_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> offsets_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fleet::agent::testing

#endif  // FLEET_AGENT_TESTING_ARTIFACT_SERVER_H_
