// Time as a seam: production code asks a Clock, tests pass a FakeClock
// (common/testing/fake_clock.h) and move time by hand.
#ifndef FLEET_COMMON_CLOCK_H_
#define FLEET_COMMON_CLOCK_H_

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace fleet {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
};

// absl::Now(). Thread-safe.
class RealClock : public Clock {
 public:
  absl::Time Now() const override { return absl::Now(); }
  static RealClock& Get();
};

}  // namespace fleet

#endif  // FLEET_COMMON_CLOCK_H_
