#include "cli/human.h"

#include <algorithm>
#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace fleet::cli {

namespace {

// Digits only: SimpleAtoi alone would also take " 10" and "+10".
bool IsCount(absl::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
    return absl::ascii_isdigit(static_cast<unsigned char>(c));
  });
}

}  // namespace

std::string HumanSize(uint64_t bytes) {
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB"};
  constexpr int kLast = 3;
  double value = static_cast<double>(bytes);
  for (int unit = 0;; ++unit) {
    value /= 1024.0;
    // Move up a unit when one decimal would round to 1024.0 ("1.0 MiB", not
    // "1024.0 KiB").
    if (unit == kLast || std::round(value * 10.0) / 10.0 < 1024.0) {
      return absl::StrFormat("%.1f %s", value, kUnits[unit]);
    }
  }
}

std::string HumanDuration(absl::Duration d) {
  if (d < absl::ZeroDuration()) d = absl::ZeroDuration();
  if (d < absl::Minutes(1)) {
    return absl::StrCat(absl::ToInt64Seconds(d), "s");
  }
  if (d < absl::Hours(1)) return absl::StrCat(absl::ToInt64Minutes(d), "m");
  if (d < absl::Hours(48)) return absl::StrCat(absl::ToInt64Hours(d), "h");
  return absl::StrCat(absl::ToInt64Hours(d) / 24, "d");
}

std::string HumanAgo(absl::Time then, absl::Time now) {
  if (then == absl::UnixEpoch()) return "never";
  absl::Duration d = now - then;
  if (d < absl::Seconds(1)) return "just now";
  return absl::StrCat(HumanDuration(d), " ago");
}

absl::StatusOr<absl::Duration> ParseHumanDuration(absl::string_view text) {
  auto invalid = [&] {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", text, "\" is not a duration; use e.g. 30s, 5m, 12h or 90d"));
  };
  int64_t n = 0;
  absl::Duration d;
  if (IsCount(text)) {
    if (!absl::SimpleAtoi(text, &n)) return invalid();
    d = absl::Seconds(n);
  } else if (text.size() > 1 && text.back() == 'd' &&
             IsCount(text.substr(0, text.size() - 1))) {
    if (!absl::SimpleAtoi(text.substr(0, text.size() - 1), &n) ||
        n > 365 * 1000) {  // keeps n * 24h far from overflow
      return invalid();
    }
    d = absl::Hours(n * 24);
  } else if (!absl::ParseDuration(text, &d) || d == absl::InfiniteDuration()) {
    return invalid();
  }
  if (d < absl::ZeroDuration()) return invalid();
  return d;
}

}  // namespace fleet::cli
