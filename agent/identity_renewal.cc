#include "agent/identity_renewal.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/backoff.h"
#include "common/log.h"
#include "common/tls.h"

namespace fleet::agent {
namespace {

std::string Rfc3339(absl::Time t) {
  return absl::FormatTime(absl::RFC3339_sec, t, absl::UTCTimeZone());
}

}  // namespace

absl::Time RenewalTime(const AgentIdentity& identity) {
  return identity.not_before +
         (identity.not_after - identity.not_before) * 2 / 3;
}

IdentityRenewer::IdentityRenewer(
    RenewalOptions options, AgentIdentity current,
    std::function<void(const AgentIdentity&)> on_renewed)
    : options_(std::move(options)),
      on_renewed_(std::move(on_renewed)),
      current_(std::move(current)) {}

IdentityRenewer::~IdentityRenewer() { Stop(); }

void IdentityRenewer::Start() {
  thread_ = std::thread([this] { Run(); });
}

void IdentityRenewer::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

AgentIdentity IdentityRenewer::current() const {
  absl::MutexLock lock(&mu_);
  return current_;
}

uint64_t IdentityRenewer::renewals() const {
  absl::MutexLock lock(&mu_);
  return renewals_;
}

bool IdentityRenewer::WaitUntil(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  auto stopping = [this]()
                      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
  mu_.AwaitWithDeadline(absl::Condition(&stopping), deadline);
  return !stopping_;
}

void IdentityRenewer::Run() {
  // Full jitter: agents refused together do not come back together.
  Backoff backoff(options_.backoff_base, options_.backoff_cap);
  while (true) {
    const AgentIdentity identity = current();
    const absl::Time due = RenewalTime(identity);
    if (due > absl::Now()) {
      LogInfo("agent certificate renewal scheduled",
              {{"agent_id", identity.agent_id},
               {"renew_at", Rfc3339(due)},
               {"not_after", Rfc3339(identity.not_after)}});
    }
    if (!WaitUntil(due)) return;

    absl::StatusOr<AgentIdentity> renewed =
        RenewIdentity(options_.controller, identity, options_.call_timeout);
    if (renewed.ok()) {
      {
        absl::MutexLock lock(&mu_);
        current_ = *renewed;
        ++renewals_;
      }
      backoff.Reset();
      LogInfo("agent certificate renewed",
              {{"agent_id", renewed->agent_id},
               {"not_after", Rfc3339(renewed->not_after)}});
      if (on_renewed_) on_renewed_(*renewed);
      continue;
    }
    absl::Duration wait = backoff.NextDelay();
    if (identity.not_after <= absl::Now()) {
      // Nothing but a new enrollment helps now; say so every time.
      LogError(
          "agent certificate expired and cannot be renewed: the controller "
          "refuses it until the agent enrolls again (stop the agent, remove "
          "the identity dir, start it with a new --enroll-token)",
          {{"agent_id", identity.agent_id},
           {"expired_at", Rfc3339(identity.not_after)},
           {"error", renewed.status().ToString()}});
      wait = std::max(wait, options_.backoff_cap / 2);
    } else {
      LogWarning("agent certificate renewal failed; retrying",
                 {{"agent_id", identity.agent_id},
                  {"not_after", Rfc3339(identity.not_after)},
                  {"retry_in", absl::FormatDuration(wait)},
                  {"error", renewed.status().ToString()}});
    }
    if (!WaitUntil(absl::Now() + wait)) return;
  }
}

RenewingAgentStub::RenewingAgentStub(
    std::string target, grpc::ChannelArguments args,
    std::shared_ptr<grpc::ChannelCredentials> credentials)
    : target_(std::move(target)), args_(std::move(args)) {
  Replace(std::move(credentials));
}

void RenewingAgentStub::Replace(
    std::shared_ptr<grpc::ChannelCredentials> credentials) {
  auto stub = v1::AgentService::NewStub(
      grpc::CreateCustomChannel(target_, std::move(credentials), args_));
  absl::MutexLock lock(&mu_);
  stubs_.push_back(std::move(stub));
}

size_t RenewingAgentStub::generation() const {
  absl::MutexLock lock(&mu_);
  return stubs_.size();
}

v1::AgentService::StubInterface& RenewingAgentStub::Current() {
  absl::MutexLock lock(&mu_);
  return *stubs_.back();
}

grpc::ClientReaderWriterInterface<v1::AgentMessage, v1::ControllerMessage>*
RenewingAgentStub::ConnectRaw(grpc::ClientContext* context) {
  return Current().Connect(context).release();
}

grpc::ClientAsyncReaderWriterInterface<v1::AgentMessage, v1::ControllerMessage>*
RenewingAgentStub::AsyncConnectRaw(grpc::ClientContext* context,
                                   grpc::CompletionQueue* cq, void* tag) {
  return Current().AsyncConnect(context, cq, tag).release();
}

grpc::ClientAsyncReaderWriterInterface<v1::AgentMessage, v1::ControllerMessage>*
RenewingAgentStub::PrepareAsyncConnectRaw(grpc::ClientContext* context,
                                          grpc::CompletionQueue* cq) {
  return Current().PrepareAsyncConnect(context, cq).release();
}

grpc::ClientReaderInterface<v1::ArtifactChunk>*
RenewingAgentStub::FetchArtifactRaw(grpc::ClientContext* context,
                                    const v1::FetchArtifactRequest& request) {
  return Current().FetchArtifact(context, request).release();
}

grpc::ClientAsyncReaderInterface<v1::ArtifactChunk>*
RenewingAgentStub::AsyncFetchArtifactRaw(
    grpc::ClientContext* context, const v1::FetchArtifactRequest& request,
    grpc::CompletionQueue* cq, void* tag) {
  return Current().AsyncFetchArtifact(context, request, cq, tag).release();
}

grpc::ClientAsyncReaderInterface<v1::ArtifactChunk>*
RenewingAgentStub::PrepareAsyncFetchArtifactRaw(
    grpc::ClientContext* context, const v1::FetchArtifactRequest& request,
    grpc::CompletionQueue* cq) {
  return Current().PrepareAsyncFetchArtifact(context, request, cq).release();
}

std::unique_ptr<IdentityRenewer> StartIdentityRenewal(
    const std::string& controller, const AgentIdentity& identity,
    RenewingAgentStub& stub) {
  auto renewer = std::make_unique<IdentityRenewer>(
      RenewalOptions{.controller = controller}, identity,
      [&stub](const AgentIdentity& renewed) {
        absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
            MakeChannelCredentials(renewed.files);
        if (!credentials.ok()) {
          // The pair was checked before it was written; the old channel
          // goes on until its certificate expires.
          LogError("cannot use the renewed agent certificate",
                   {{"error", credentials.status().ToString()}});
          return;
        }
        stub.Replace(*std::move(credentials));
      });
  renewer->Start();
  return renewer;
}

}  // namespace fleet::agent
