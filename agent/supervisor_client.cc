#include "agent/supervisor_client.h"

#include <sys/socket.h>
#include <unistd.h>

#include <utility>

#include "agent/supervisor_channel.h"
#include "common/log.h"

namespace fleet::agent {

SupervisorClient::SupervisorClient(int fd) : fd_(fd) {
  reader_ = std::thread([this] { ReadLoop(); });
}

SupervisorClient::~SupervisorClient() {
  shutdown(fd_, SHUT_RDWR);
  reader_.join();
  close(fd_);
}

bool SupervisorClient::connected() const {
  absl::MutexLock lock(&mu_);
  return !closed_;
}

void SupervisorClient::ReadLoop() {
  for (;;) {
    internal::SupervisorReply reply;
    absl::StatusOr<bool> got = ReadFrame(fd_, &reply);
    if (!got.ok() || !*got) {
      if (!got.ok()) {
        LogError("supervisor socket broken",
                 {{"error", got.status().ToString()}});
      }
      absl::MutexLock lock(&mu_);
      closed_ = true;
      return;
    }
    absl::MutexLock lock(&mu_);
    auto it = pending_.find(reply.id());
    if (it == pending_.end()) continue;  // its caller gave up
    it->second.done = true;
    it->second.reply = std::move(reply);
  }
}

absl::Status SupervisorClient::Call(internal::SupervisorRequest request,
                                    absl::Duration timeout,
                                    internal::SupervisorReply* reply) const {
  uint64_t id;
  {
    absl::MutexLock lock(&mu_);
    if (closed_) {
      return absl::UnavailableError("the agent supervisor is gone");
    }
    id = next_id_++;
    Pending& p = pending_[id];
    p.wait = request.has_wait_program_up();
  }
  request.set_id(id);
  absl::Status sent;
  {
    absl::MutexLock lock(&write_mu_);
    sent = WriteFrame(fd_, request);
  }
  absl::MutexLock lock(&mu_);
  if (!sent.ok()) {
    pending_.erase(id);
    return sent;
  }
  auto answered = [this, id]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return closed_ || pending_[id].done;
  };
  mu_.AwaitWithTimeout(absl::Condition(&answered), timeout);
  Pending p = std::move(pending_[id]);
  pending_.erase(id);
  if (!p.done) {
    if (closed_) return absl::UnavailableError("the agent supervisor is gone");
    return absl::DeadlineExceededError(
        "the agent supervisor did not answer in time");
  }
  if (reply != nullptr) *reply = p.reply;
  return absl::Status(static_cast<absl::StatusCode>(p.reply.code()),
                      p.reply.message());
}

void SupervisorClient::SetEnv(const std::string& name,
                              const std::string& value) {
  if (name != "FLEET_VERSION") return;
  absl::MutexLock lock(&mu_);
  version_ = value;
}

absl::Status SupervisorClient::Start() {
  internal::SupervisorRequest request;
  {
    absl::MutexLock lock(&mu_);
    request.mutable_start_program()->set_version(version_);
  }
  return Call(std::move(request), absl::Minutes(1));
}

absl::Status SupervisorClient::Stop(absl::Duration grace) {
  internal::SupervisorRequest request;
  request.mutable_stop_program()->set_grace_ms(
      absl::ToInt64Milliseconds(grace));
  return Call(std::move(request), grace + absl::Seconds(30));
}

absl::Status SupervisorClient::WaitStaysUp(absl::Duration window) {
  internal::SupervisorRequest request;
  request.mutable_wait_program_up()->set_window_ms(
      absl::ToInt64Milliseconds(window));
  return Call(std::move(request), window + absl::Seconds(30));
}

void SupervisorClient::CancelWaits() {
  {
    // Locally first, so a shutting-down worker never waits for the
    // supervisor's answer.
    absl::MutexLock lock(&mu_);
    for (auto& [id, p] : pending_) {
      if (p.wait && !p.done) {
        p.done = true;
        p.reply.set_code(static_cast<int32_t>(absl::StatusCode::kCancelled));
        p.reply.set_message("health wait cancelled");
      }
    }
  }
  internal::SupervisorRequest request;
  request.mutable_cancel_waits();
  (void)Call(std::move(request), absl::Seconds(5));
}

absl::Status SupervisorClient::BeginAgentTrial(const std::string& directive_id,
                                               const std::string& sha256_hex) {
  internal::SupervisorRequest request;
  request.mutable_begin_agent_trial()->set_directive_id(directive_id);
  request.mutable_begin_agent_trial()->set_sha256_hex(sha256_hex);
  // Hashing and renaming a binary of some tens of MB.
  return Call(std::move(request), absl::Minutes(1));
}

absl::Status SupervisorClient::CommitAgentTrial(
    const std::string& directive_id) {
  internal::SupervisorRequest request;
  request.mutable_commit_agent_trial()->set_directive_id(directive_id);
  return Call(std::move(request), absl::Minutes(1));
}

ProgramState SupervisorClient::state() const {
  internal::SupervisorRequest request;
  request.mutable_program_status();
  internal::SupervisorReply reply;
  ProgramState s;
  if (!Call(std::move(request), absl::Seconds(5), &reply).ok()) return s;
  const internal::ProgramStatus& p = reply.program();
  s.wanted = p.wanted();
  s.pid = p.pid();
  s.started = absl::FromUnixMillis(p.started_unix_ms());
  s.runs = p.runs();
  s.restarts = p.restarts();
  s.last_exit = p.last_exit();
  s.last_exit_signal = p.last_exit_signal();
  return s;
}

}  // namespace fleet::agent
