#include "cli/human.h"

#include <cstdint>

#include "gtest/gtest.h"

namespace fleet::cli {
namespace {

TEST(HumanSizeTest, RendersBinaryUnitsWithOneDecimal) {
  struct Case {
    uint64_t bytes;
    const char* want;
  };
  const Case cases[] = {
      {0, "0 B"},
      {1, "1 B"},
      {1023, "1023 B"},
      {1024, "1.0 KiB"},
      {1536, "1.5 KiB"},
      {1048575, "1.0 MiB"},  // would be "1024.0 KiB"
      {12'897'485, "12.3 MiB"},
      {200ull << 20, "200.0 MiB"},
      {(3ull << 30) / 2, "1.5 GiB"},
      {2ull << 40, "2.0 TiB"},
      {1ull << 50, "1024.0 TiB"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(HumanSize(c.bytes), c.want) << c.bytes;
  }
}

TEST(HumanDurationTest, UsesTheLargestWholeUnit) {
  struct Case {
    absl::Duration d;
    const char* want;
  };
  const Case cases[] = {
      {absl::ZeroDuration(), "0s"},
      {absl::Seconds(12), "12s"},
      {absl::Milliseconds(59'900), "59s"},
      {absl::Seconds(60), "1m"},
      {absl::Seconds(3 * 60 + 59), "3m"},
      {absl::Hours(1), "1h"},
      {absl::Hours(47), "47h"},
      {absl::Hours(48), "2d"},
      {absl::Hours(24 * 90 + 5), "90d"},
      {absl::Seconds(-5), "0s"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(HumanDuration(c.d), c.want) << c.d;
  }
}

TEST(HumanAgoTest, SaysHowLongAgo) {
  const absl::Time now = absl::FromUnixSeconds(1'800'000'000);
  EXPECT_EQ(HumanAgo(now - absl::Seconds(12), now), "12s ago");
  EXPECT_EQ(HumanAgo(now - absl::Minutes(3), now), "3m ago");
  EXPECT_EQ(HumanAgo(now - absl::Milliseconds(400), now), "just now");
  EXPECT_EQ(HumanAgo(now + absl::Seconds(30), now), "just now");
  EXPECT_EQ(HumanAgo(absl::UnixEpoch(), now), "never");
}

TEST(ParseHumanDurationTest, AcceptsDaysAbseilFormsAndBareSeconds) {
  struct Case {
    const char* text;
    absl::Duration want;
  };
  const Case cases[] = {
      {"90d", absl::Hours(90 * 24)}, {"1d", absl::Hours(24)},
      {"12h", absl::Hours(12)},      {"30m", absl::Minutes(30)},
      {"30s", absl::Seconds(30)},    {"500ms", absl::Milliseconds(500)},
      {"1h30m", absl::Minutes(90)},  {"30", absl::Seconds(30)},
      {"0", absl::ZeroDuration()},
  };
  for (const Case& c : cases) {
    absl::StatusOr<absl::Duration> d = ParseHumanDuration(c.text);
    ASSERT_TRUE(d.ok()) << c.text << ": " << d.status();
    EXPECT_EQ(*d, c.want) << c.text;
  }
}

TEST(ParseHumanDurationTest, RejectsGarbageAndNegatives) {
  for (const char* text :
       {"", "soon", "d", "1.5d", "5x", "-5s", "-1d", "-3", "inf", "10 d"}) {
    absl::StatusOr<absl::Duration> d = ParseHumanDuration(text);
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument) << text;
    if (!d.ok()) {
      EXPECT_NE(d.status().message().find("e.g. 30s"), std::string::npos);
    }
  }
}

}  // namespace
}  // namespace fleet::cli
