// Exponential backoff with full jitter, for a loop that retries a remote
// call: after the n-th failure in a row it waits a uniformly random time in
// [0, min(cap, base * 2^(n-1))], so clients refused together (a controller
// restart, a refused enrollment wave) do not come back together.
//
//   Backoff backoff(absl::Milliseconds(500), absl::Seconds(30));
//   while (!Call().ok()) Sleep(backoff.NextDelay());
//   backoff.Reset();  // after a success
//
// Not thread-safe: one owner, usually one retry loop's thread.
#ifndef FLEET_COMMON_BACKOFF_H_
#define FLEET_COMMON_BACKOFF_H_

#include <cstdint>
#include <random>

#include "absl/time/time.h"

namespace fleet {

class Backoff {
 public:
  // `base` > 0, `cap` >= `base`.
  Backoff(absl::Duration base, absl::Duration cap);

  // Counts one more failure and returns how long to wait before retrying.
  absl::Duration NextDelay();
  // The upper bound of the last NextDelay() (0 before any failure).
  absl::Duration current_bound() const { return bound_; }
  // Failures counted since construction or the last Reset().
  int failures() const { return failures_; }
  // After a success: the next failure waits at most `base` again.
  void Reset();

 private:
  absl::Duration base_, cap_;
  absl::Duration bound_ = absl::ZeroDuration();
  int failures_ = 0;
  std::mt19937_64 rng_;
};

}  // namespace fleet

#endif  // FLEET_COMMON_BACKOFF_H_
