#include "common/clock.h"

namespace fleet {

RealClock& RealClock::Get() {
  // Never destroyed, so it stays usable from other static destructors.
  static RealClock* const clock = new RealClock();
  return *clock;
}

}  // namespace fleet
