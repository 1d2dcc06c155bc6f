// Answers telemetry queries (query.h) from telemetry.db: labelled series of
// (bucket start, value) over [start, end) in steps.
//
// Metrics, their labels and numeric fields:
//   update_events  labels agent_id, rollout, product, platform, phase,
//                  error_class, from_version, to_version, version (=
//                  to_version) fields duration_ms, bytes; time = when the agent
//                  saw it
//   heartbeats     labels agent_id, platform
//                  fields uptime_seconds, program_restarts, agent_rss_bytes,
//                  program_rss_bytes, agent_cpu_ms, program_cpu_ms,
//                  state_dir_free_bytes
//   agents         labels agent_id, product, version, platform; count only:
//                  per step, the (agent, product) pairs whose latest known
//                  version at the end of the step matches (a gauge: how many
//                  agents run each version at that time).
//
// Minute rollups (update_events_1m) serve aligned count/rate/sum/avg
// queries of update_events, so long ranges read one row per minute and
// label set instead of every event.
//
// Buckets are [start + i*step, start + (i+1)*step); a bucket without data
// has no point. Percentiles are nearest-rank (the smallest value with at
// least p% of the bucket's values <= it). rate is count per second of step.
//
// Thread-safety: const and thread-safe; every query opens its own read-only
// connection, so a long scan never holds up the writer (WAL) or the control
// loop.
#ifndef FLEET_CONTROLLER_TELEMETRY_QUERY_ENGINE_H_
#define FLEET_CONTROLLER_TELEMETRY_QUERY_ENGINE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "controller/telemetry/query.h"
#include "proto/fleet/v1/admin.pb.h"

namespace fleet::controller::telemetry {

struct QueryLimits {
  // Points one series may have: (end - start) / step, rounded up.
  int64_t max_points = 11'000;
  // Rows one query may read before it is refused (RESOURCE_EXHAUSTED).
  int64_t max_rows = 2'000'000;
  // Smallest step.
  int64_t min_step_ms = 1'000;
  // Answer update_events count/rate/sum/avg(duration_ms) from the minute
  // rollups when start, end and step are whole minutes and every label used
  // is kept there (product, platform, phase, error_class, version); off
  // only to compare with the raw rows in tests.
  bool use_rollups = true;
};

class QueryEngine {
 public:
  explicit QueryEngine(std::string telemetry_db_path, QueryLimits limits = {});

  // Validates the request and runs it. INVALID_ARGUMENT for an empty or
  // malformed query (with the column), an unknown metric, label or field, a
  // function the metric does not support, end <= start, a step below
  // min_step_ms, or more than max_points buckets; RESOURCE_EXHAUSTED if the
  // scan would read more than max_rows rows; the SQLite error otherwise.
  absl::StatusOr<v1::QueryTelemetryResponse> Run(
      const v1::QueryTelemetryRequest& request) const;

  // As Run for an already parsed query (no range checks).
  absl::StatusOr<v1::QueryTelemetryResponse> Evaluate(const Query& query,
                                                      int64_t start_ms,
                                                      int64_t end_ms,
                                                      int64_t step_ms) const;

 private:
  const std::string path_;
  const QueryLimits limits_;
};

}  // namespace fleet::controller::telemetry

#endif  // FLEET_CONTROLLER_TELEMETRY_QUERY_ENGINE_H_
