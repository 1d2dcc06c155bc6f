// A stand-in fleet-controller for fleetctl's tests: a real gRPC server on
// 127.0.0.1 serving AdminService from canned answers and recording what it
// was sent, so tests check both fleetctl's output and its requests.
//
//   FakeAdminServer server;
//   server.service().SetReleases(response);
//   RunFleetctl({"fleetctl", "--controller", server.address(),
//                "release", "list"}, io, "");
//   EXPECT_EQ(server.service().calls(), 1);
#ifndef FLEET_CLI_TESTING_FAKE_ADMIN_SERVICE_H_
#define FLEET_CLI_TESTING_FAKE_ADMIN_SERVICE_H_

#include <grpcpp/server.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "proto/fleet/v1/admin.grpc.pb.h"

namespace fleet::cli::testing {

// What one PushRelease stream carried.
struct PushRecord {
  bool manifest_first = false;  // the first message was the manifest
  int manifests = 0;            // manifest messages in the whole stream
  v1::SignedManifest manifest;
  std::string artifact;  // the chunks, concatenated
  std::vector<size_t> chunk_sizes;
};

// One scripted answer of GetRollout: `rollout`, or `status` when not OK.
struct GetRolloutStep {
  v1::Rollout rollout;
  grpc::Status status = grpc::Status::OK;
};

// Thread-safe: RPCs run on gRPC's threads while the test configures and
// inspects.
class FakeAdminService final : public v1::AdminService::Service {
 public:
  // Every later RPC fails with `status` (after reading a push stream fully).
  void FailWith(grpc::Status status);
  // Every later RPC sleeps this long before answering.
  void SetDelay(absl::Duration delay);
  void SetReleases(v1::ListReleasesResponse releases);
  void SetAgents(v1::ListAgentsResponse agents);
  // Answer of CreateRollout, and of GetRollout for its id (NOT_FOUND for
  // any other id). Pause/Resume/AbortRollout of its id answer it in the new
  // state (PAUSED, RUNNING, ABORTED); other ids are NOT_FOUND.
  void SetRollout(v1::Rollout rollout);
  void SetRollouts(v1::ListRolloutsResponse rollouts);
  // Successive GetRollout calls answer steps[0], steps[1], ..., then repeat
  // the last step (a watched rollout that changes over time). A step's
  // rollout id must match the request's, else NOT_FOUND. Replaces
  // SetRollout's answer of GetRollout while set.
  void ScriptGetRollout(std::vector<GetRolloutStep> steps);
  int get_rollout_calls() const;
  // Answer of ListBlacklist; RemoveBlacklist is NOT_FOUND for a version not
  // in it. AddBlacklist answers the request as an entry by "operator" at
  // SetStoredAtMs, with these aborted rollouts.
  void SetBlacklist(v1::ListBlacklistResponse blacklist);
  void SetAbortedRollouts(std::vector<std::string> rollout_ids);
  // created_unix_ms of the Release a push returns.
  void SetStoredAtMs(int64_t unix_ms);

  int calls() const;  // RPCs received, of any method
  std::optional<PushRecord> last_push() const;
  std::optional<v1::ListReleasesRequest> last_list_releases() const;
  std::optional<v1::ListAgentsRequest> last_list_agents() const;
  std::optional<v1::CreateRolloutRequest> last_create_rollout() const;
  std::optional<v1::ListRolloutsRequest> last_list_rollouts() const;
  std::optional<v1::PauseRolloutRequest> last_pause_rollout() const;
  std::optional<v1::ResumeRolloutRequest> last_resume_rollout() const;
  std::optional<v1::AbortRolloutRequest> last_abort_rollout() const;
  std::optional<v1::AddBlacklistRequest> last_add_blacklist() const;
  std::optional<v1::RemoveBlacklistRequest> last_remove_blacklist() const;
  std::optional<v1::ListBlacklistRequest> last_list_blacklist() const;

  grpc::Status PushRelease(grpc::ServerContext* context,
                           grpc::ServerReader<v1::PushReleaseRequest>* reader,
                           v1::Release* response) override;
  grpc::Status ListReleases(grpc::ServerContext* context,
                            const v1::ListReleasesRequest* request,
                            v1::ListReleasesResponse* response) override;
  grpc::Status GetRelease(grpc::ServerContext* context,
                          const v1::GetReleaseRequest* request,
                          v1::Release* response) override;
  grpc::Status ListAgents(grpc::ServerContext* context,
                          const v1::ListAgentsRequest* request,
                          v1::ListAgentsResponse* response) override;
  grpc::Status CreateRollout(grpc::ServerContext* context,
                             const v1::CreateRolloutRequest* request,
                             v1::Rollout* response) override;
  grpc::Status GetRollout(grpc::ServerContext* context,
                          const v1::GetRolloutRequest* request,
                          v1::Rollout* response) override;
  grpc::Status ListRollouts(grpc::ServerContext* context,
                            const v1::ListRolloutsRequest* request,
                            v1::ListRolloutsResponse* response) override;
  grpc::Status PauseRollout(grpc::ServerContext* context,
                            const v1::PauseRolloutRequest* request,
                            v1::Rollout* response) override;
  grpc::Status ResumeRollout(grpc::ServerContext* context,
                             const v1::ResumeRolloutRequest* request,
                             v1::Rollout* response) override;
  grpc::Status AbortRollout(grpc::ServerContext* context,
                            const v1::AbortRolloutRequest* request,
                            v1::Rollout* response) override;
  grpc::Status AddBlacklist(grpc::ServerContext* context,
                            const v1::AddBlacklistRequest* request,
                            v1::AddBlacklistResponse* response) override;
  grpc::Status RemoveBlacklist(grpc::ServerContext* context,
                               const v1::RemoveBlacklistRequest* request,
                               v1::RemoveBlacklistResponse* response) override;
  grpc::Status ListBlacklist(grpc::ServerContext* context,
                             const v1::ListBlacklistRequest* request,
                             v1::ListBlacklistResponse* response) override;

 private:
  // Counts the call, sleeps the delay; returns the configured failure.
  grpc::Status Begin();
  // The stored rollout in `state` if `rollout_id` names it, else NOT_FOUND.
  grpc::Status ChangedRollout(const std::string& rollout_id,
                              v1::RolloutState state, v1::Rollout* response)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  int calls_ ABSL_GUARDED_BY(mu_) = 0;
  std::optional<grpc::Status> fail_with_ ABSL_GUARDED_BY(mu_);
  absl::Duration delay_ ABSL_GUARDED_BY(mu_);
  int64_t stored_at_ms_ ABSL_GUARDED_BY(mu_) = 0;
  v1::ListReleasesResponse releases_ ABSL_GUARDED_BY(mu_);
  v1::ListAgentsResponse agents_ ABSL_GUARDED_BY(mu_);
  v1::Rollout rollout_ ABSL_GUARDED_BY(mu_);
  v1::ListRolloutsResponse rollouts_ ABSL_GUARDED_BY(mu_);
  std::vector<GetRolloutStep> get_rollout_script_ ABSL_GUARDED_BY(mu_);
  int get_rollout_calls_ ABSL_GUARDED_BY(mu_) = 0;
  std::optional<PushRecord> last_push_ ABSL_GUARDED_BY(mu_);
  std::optional<v1::ListReleasesRequest> last_list_releases_
      ABSL_GUARDED_BY(mu_);
  std::optional<v1::ListAgentsRequest> last_list_agents_ ABSL_GUARDED_BY(mu_);
  std::optional<v1::CreateRolloutRequest> last_create_rollout_
      ABSL_GUARDED_BY(mu_);
  std::optional<v1::ListRolloutsRequest> last_list_rollouts_
      ABSL_GUARDED_BY(mu_);
  std::optional<v1::PauseRolloutRequest> last_pause_rollout_
      ABSL_GUARDED_BY(mu_);
  std::optional<v1::ResumeRolloutRequest> last_resume_rollout_
      ABSL_GUARDED_BY(mu_);
  std::optional<v1::AbortRolloutRequest> last_abort_rollout_
      ABSL_GUARDED_BY(mu_);
  v1::ListBlacklistResponse blacklist_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> aborted_rollouts_ ABSL_GUARDED_BY(mu_);
  std::optional<v1::AddBlacklistRequest> last_add_blacklist_
      ABSL_GUARDED_BY(mu_);
  std::optional<v1::RemoveBlacklistRequest> last_remove_blacklist_
      ABSL_GUARDED_BY(mu_);
  std::optional<v1::ListBlacklistRequest> last_list_blacklist_
      ABSL_GUARDED_BY(mu_);
};

// Serves a FakeAdminService on 127.0.0.1 at a free port from construction to
// destruction.
class FakeAdminServer {
 public:
  FakeAdminServer();
  ~FakeAdminServer();
  FakeAdminServer(const FakeAdminServer&) = delete;
  FakeAdminServer& operator=(const FakeAdminServer&) = delete;

  std::string address() const;  // "127.0.0.1:PORT"
  FakeAdminService& service() { return service_; }

 private:
  FakeAdminService service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

// A 127.0.0.1 port nothing listens on (bound and released), for
// "controller unreachable" tests.
int UnusedLocalPort();

}  // namespace fleet::cli::testing

#endif  // FLEET_CLI_TESTING_FAKE_ADMIN_SERVICE_H_
