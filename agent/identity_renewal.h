// Keeps an enrolled agent's certificate from expiring, without restarting
// the agent.
//
// IdentityRenewer runs one thread that renews the certificate
// (RenewIdentity, agent/enrollment.h) once 2/3 of its lifetime (not_before
// to not_after) has passed, and at once if that is already so when it
// starts. While the controller refuses or cannot be reached it retries with
// exponential backoff and full jitter (backoff_base doubling up to
// backoff_cap). Every renewed identity is handed to `on_renewed`.
//
// RenewingAgentStub is the AgentService stub the session and the downloader
// borrow; Replace(credentials) makes every call started afterwards (the
// session's next Connect after its stream ends, the next FetchArtifact) use
// a new channel with the new certificate. Calls already open keep the
// connection they were opened on: a client certificate matters only at the
// TLS handshake, so a renewal does not cut the current stream on purpose;
// the next reconnect, whatever its cause, uses the new certificate.
//
// A certificate that has expired cannot be renewed: the controller's TLS
// handshake refuses it before any RPC. The renewer then logs an error naming
// the fix (enroll again) at every attempt and keeps trying at backoff_cap;
// the agent and its program keep running.
//
//   RenewingAgentStub stub(controller, AgentChannelArguments(), creds);
//   std::unique_ptr<IdentityRenewer> renewer =
//       StartIdentityRenewal(controller, identity, stub);
#ifndef FLEET_AGENT_IDENTITY_RENEWAL_H_
#define FLEET_AGENT_IDENTITY_RENEWAL_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/enrollment.h"
#include "proto/fleet/v1/agent.grpc.pb.h"

namespace fleet::agent {

// When `identity` is due for renewal: 2/3 of the way from not_before to
// not_after.
absl::Time RenewalTime(const AgentIdentity& identity);

struct RenewalOptions {
  std::string controller;  // gRPC target
  absl::Duration backoff_base = absl::Seconds(1);
  absl::Duration backoff_cap = absl::Minutes(10);
  // Short enough that stopping the worker is not held up for long by a
  // call in flight.
  absl::Duration call_timeout = absl::Seconds(10);
};

class IdentityRenewer {
 public:
  // `on_renewed` runs on the renewer's thread after the new pair is on
  // disk; it must not call Stop().
  IdentityRenewer(RenewalOptions options, AgentIdentity current,
                  std::function<void(const AgentIdentity&)> on_renewed);
  ~IdentityRenewer();  // Stop()
  IdentityRenewer(const IdentityRenewer&) = delete;
  IdentityRenewer& operator=(const IdentityRenewer&) = delete;

  // Starts the thread. Call once.
  void Start();
  // Ends the thread, interrupting a wait (a call in flight finishes or
  // times out first). Idempotent.
  void Stop();

  // The identity in use now (the last renewed one).
  AgentIdentity current() const;
  // Renewals that succeeded since Start().
  uint64_t renewals() const;

 private:
  void Run();
  // Waits until `deadline` or Stop(); false when stopped.
  bool WaitUntil(absl::Time deadline);

  const RenewalOptions options_;
  const std::function<void(const AgentIdentity&)> on_renewed_;
  std::thread thread_;

  mutable absl::Mutex mu_;
  AgentIdentity current_ ABSL_GUARDED_BY(mu_);
  uint64_t renewals_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
};

// An AgentService stub whose channel can be replaced while calls are open
// (see above). Thread-safe. Only the synchronous methods are served (the
// agent uses no others); the async ones are forwarded as well.
class RenewingAgentStub final : public v1::AgentService::StubInterface {
 public:
  RenewingAgentStub(std::string target, grpc::ChannelArguments args,
                    std::shared_ptr<grpc::ChannelCredentials> credentials);

  // Calls started from now on use a new channel with `credentials`. The
  // previous channels stay alive for the calls still open on them (gRPC's
  // synchronous streams need their channel until they end); one idle
  // channel per renewal, which happens every few months in production.
  void Replace(std::shared_ptr<grpc::ChannelCredentials> credentials);

  // Channels created so far (1 + renewals applied).
  size_t generation() const;

 private:
  v1::AgentService::StubInterface& Current();

  grpc::ClientReaderWriterInterface<v1::AgentMessage, v1::ControllerMessage>*
  ConnectRaw(grpc::ClientContext* context) override;
  grpc::ClientAsyncReaderWriterInterface<v1::AgentMessage,
                                         v1::ControllerMessage>*
  AsyncConnectRaw(grpc::ClientContext* context, grpc::CompletionQueue* cq,
                  void* tag) override;
  grpc::ClientAsyncReaderWriterInterface<v1::AgentMessage,
                                         v1::ControllerMessage>*
  PrepareAsyncConnectRaw(grpc::ClientContext* context,
                         grpc::CompletionQueue* cq) override;
  grpc::ClientReaderInterface<v1::ArtifactChunk>* FetchArtifactRaw(
      grpc::ClientContext* context,
      const v1::FetchArtifactRequest& request) override;
  grpc::ClientAsyncReaderInterface<v1::ArtifactChunk>* AsyncFetchArtifactRaw(
      grpc::ClientContext* context, const v1::FetchArtifactRequest& request,
      grpc::CompletionQueue* cq, void* tag) override;
  grpc::ClientAsyncReaderInterface<v1::ArtifactChunk>*
  PrepareAsyncFetchArtifactRaw(grpc::ClientContext* context,
                               const v1::FetchArtifactRequest& request,
                               grpc::CompletionQueue* cq) override;

  const std::string target_;
  const grpc::ChannelArguments args_;
  mutable absl::Mutex mu_;
  // Every stub made; the last is current. Never shrinks (see Replace).
  std::vector<std::unique_ptr<v1::AgentService::Stub>> stubs_
      ABSL_GUARDED_BY(mu_);
};

// An IdentityRenewer, started, whose renewals replace `stub`'s credentials
// with the renewed pair. `stub` must outlive it.
std::unique_ptr<IdentityRenewer> StartIdentityRenewal(
    const std::string& controller, const AgentIdentity& identity,
    RenewingAgentStub& stub);

}  // namespace fleet::agent

#endif  // FLEET_AGENT_IDENTITY_RENEWAL_H_
