// `fleetctl telemetry query 'EXPR' --since 1h --step 1m [--until T]
// [-o table|json|csv]`: AdminService.QueryTelemetry (the query language is
// in docs/telemetry.md).
#ifndef FLEET_CLI_TELEMETRY_COMMANDS_H_
#define FLEET_CLI_TELEMETRY_COMMANDS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "cli/command_context.h"
#include "proto/fleet/v1/admin.pb.h"

namespace fleet::cli {

struct TelemetryQueryOptions {
  std::string query;
  // How far back the range starts: a duration before --until ("1h", "7d")
  // or an RFC 3339 time ("2026-11-23T10:00:00Z").
  std::string since = "1h";
  // End of the range: "" for now, a duration before now, or RFC 3339.
  std::string until;
  // Bucket width: "1m", "30s", ...
  std::string step = "1m";
  // "table", "json", "yaml" or "csv"; "" follows the global -o.
  std::string format;
};

// Sends the query for [since, until) in steps and prints:
//  table: one row per series: its labels, points, last, min, max and a
//         sparkline of the whole range (▁..█; a space where a bucket has no
//         data; at most 60 characters, each the max of the buckets it
//         covers);
//  json:  the QueryTelemetryResponse;
//  csv:   time (RFC 3339, UTC),time_unix_ms, one column per label, value.
// UsageError naming the flag for an empty query, a bad --since/--until/
// --step/-o or since >= until. INVALID_ARGUMENT from the controller (a
// malformed query, with its column; too many points) says what to fix;
// other errors via ExplainRpcError.
absl::Status TelemetryQuery(const TelemetryQueryOptions& options,
                            CommandContext& ctx);

// The sparkline of `values` (nullopt-free: NaN marks an empty bucket,
// drawn as a space), scaled from the minimum to the maximum value; all
// equal values draw mid-height. Long inputs are folded to `width` chars.
std::string Sparkline(const std::vector<double>& values, size_t width = 60);

}  // namespace fleet::cli

#endif  // FLEET_CLI_TELEMETRY_COMMANDS_H_
