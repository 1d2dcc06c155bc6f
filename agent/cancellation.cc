#include "agent/cancellation.h"

#include <utility>

namespace fleet::agent {

void Cancellation::Cancel(const std::string& reason) {
  absl::MutexLock lock(&mu_);
  if (cancelled_) return;
  cancelled_ = true;
  reason_ = reason;
  for (auto& [id, fn] : callbacks_) fn();
}

bool Cancellation::cancelled() const {
  absl::MutexLock lock(&mu_);
  return cancelled_;
}

std::string Cancellation::reason() const {
  absl::MutexLock lock(&mu_);
  return reason_;
}

bool Cancellation::WaitFor(absl::Duration d) const {
  absl::MutexLock lock(&mu_);
  mu_.AwaitWithTimeout(absl::Condition(&cancelled_), d);
  return cancelled_;
}

uint64_t Cancellation::Add(std::function<void()> fn) {
  absl::MutexLock lock(&mu_);
  if (cancelled_) fn();
  const uint64_t id = next_id_++;
  callbacks_.emplace(id, std::move(fn));
  return id;
}

void Cancellation::Remove(uint64_t id) {
  absl::MutexLock lock(&mu_);
  callbacks_.erase(id);
}

}  // namespace fleet::agent
