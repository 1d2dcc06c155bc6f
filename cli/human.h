// Human-friendly renderings for fleetctl's tables, and the duration syntax
// its flags accept.
//
//   HumanSize(12'900'000)                      -> "12.3 MiB"
//   HumanDuration(absl::Seconds(200))          -> "3m"
//   HumanAgo(absl::FromUnixMillis(ms), now)    -> "12s ago"
//   ParseHumanDuration("90d")                  -> absl::Hours(90 * 24)
#ifndef FLEET_CLI_HUMAN_H_
#define FLEET_CLI_HUMAN_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace fleet::cli {

// Bytes below 1 KiB as "512 B"; larger sizes in binary units with one
// decimal: "1.0 KiB", "12.3 MiB", "1.5 GiB", "2.0 TiB" (TiB is the largest).
std::string HumanSize(uint64_t bytes);

// The largest whole unit, truncated: "45s", "3m", "5h"; from 48 hours on,
// days ("3d"). Negative durations render as "0s".
std::string HumanDuration(absl::Duration d);

// How long before `now` the moment `then` was: "12s ago", "3m ago". Returns
// "just now" under one second (or when `then` is after `now`, as happens
// with clock skew between controller and operator) and "never" for the
// Unix epoch, which the wire uses for "not set".
std::string HumanAgo(absl::Time then, absl::Time now);

// Parses a flag duration: an integer with unit d (days), h, m, s or ms
// ("90d", "30s"), any absl::ParseDuration form ("1h30m", "1.5s"), or a bare
// integer meaning seconds ("30"). INVALID_ARGUMENT for anything else or a
// negative value.
absl::StatusOr<absl::Duration> ParseHumanDuration(absl::string_view text);

}  // namespace fleet::cli

#endif  // FLEET_CLI_HUMAN_H_
