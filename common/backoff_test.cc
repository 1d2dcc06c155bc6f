#include "common/backoff.h"

#include "gtest/gtest.h"

namespace fleet {
namespace {

TEST(BackoffTest, BoundDoublesFromBaseToCapAndDelaysStayWithinIt) {
  Backoff backoff(absl::Milliseconds(100), absl::Milliseconds(700));
  const int64_t want_ms[] = {100, 200, 400, 700, 700, 700};
  for (int64_t want : want_ms) {
    const absl::Duration delay = backoff.NextDelay();
    EXPECT_EQ(backoff.current_bound(), absl::Milliseconds(want));
    EXPECT_GE(delay, absl::ZeroDuration());
    EXPECT_LE(delay, backoff.current_bound());
  }
  EXPECT_EQ(backoff.failures(), 6);
}

TEST(BackoffTest, ResetStartsOverAtBase) {
  Backoff backoff(absl::Seconds(1), absl::Minutes(1));
  for (int i = 0; i < 5; ++i) backoff.NextDelay();
  EXPECT_EQ(backoff.current_bound(), absl::Seconds(16));
  backoff.Reset();
  EXPECT_EQ(backoff.failures(), 0);
  EXPECT_LE(backoff.NextDelay(), absl::Seconds(1));
  EXPECT_EQ(backoff.current_bound(), absl::Seconds(1));
}

TEST(BackoffTest, ManyFailuresStayAtTheCap) {
  Backoff backoff(absl::Milliseconds(1), absl::Seconds(30));
  for (int i = 0; i < 100; ++i)
    EXPECT_LE(backoff.NextDelay(), absl::Seconds(30));
  EXPECT_EQ(backoff.current_bound(), absl::Seconds(30));
}

TEST(BackoffTest, DelaysAreSpreadNotAllAtTheBound) {
  // Full jitter: 200 draws under a 10 s bound are not all the same.
  Backoff backoff(absl::Seconds(10), absl::Seconds(10));
  absl::Duration lowest = absl::InfiniteDuration(), highest;
  for (int i = 0; i < 200; ++i) {
    const absl::Duration d = backoff.NextDelay();
    lowest = std::min(lowest, d);
    highest = std::max(highest, d);
  }
  EXPECT_LT(lowest, absl::Seconds(5));
  EXPECT_GT(highest, absl::Seconds(5));
}

}  // namespace
}  // namespace fleet
