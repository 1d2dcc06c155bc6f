#include "common/backoff.h"

#include <algorithm>

namespace fleet {

Backoff::Backoff(absl::Duration base, absl::Duration cap)
    : base_(base), cap_(cap), rng_(std::random_device{}()) {}

absl::Duration Backoff::NextDelay() {
  ++failures_;
  // 2^20 * base is beyond any cap in use; the shift stays defined.
  bound_ = std::min(cap_, base_ * (int64_t{1} << std::min(failures_ - 1, 20)));
  std::uniform_int_distribution<int64_t> jitter(
      0, absl::ToInt64Milliseconds(bound_));
  return absl::Milliseconds(jitter(rng_));
}

void Backoff::Reset() {
  failures_ = 0;
  bound_ = absl::ZeroDuration();
}

}  // namespace fleet
