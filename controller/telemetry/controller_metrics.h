// The controller's Prometheus metrics (served on /metrics by HttpServer):
//
//   fleet_agents_connected{product,version,platform}   gauge, from fleet.db
//   fleet_agent_streams                                 gauge, open streams
//   fleet_rollout_info{rollout,product,version,state}   gauge, 1 per rollout
//   fleet_rollout_targets{rollout,state}                gauge
//   fleet_rollout_progress_ratio{rollout}               gauge, final/targets
//   fleet_update_events_total{phase,error_class}        counter
//   fleet_update_phase_duration_seconds{phase}          histogram
//   fleet_directives_sent_total{kind}                   counter
//   fleet_telemetry_backlog                             gauge
//   fleet_telemetry_dropped_total{kind}                 counter
//   fleet_sqlite_write_seconds{db}                      histogram
//
// Gauges read from fleet.db are refreshed at each scrape on a read-only
// connection of their own (never the control loop's). Rollouts: the 200 most
// recently updated, so label cardinality stays bounded.
//
// Thread-safety: all methods are thread-safe.
#ifndef FLEET_CONTROLLER_TELEMETRY_CONTROLLER_METRICS_H_
#define FLEET_CONTROLLER_TELEMETRY_CONTROLLER_METRICS_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/sqlite/database.h"
#include "controller/telemetry/metrics_registry.h"
#include "controller/telemetry/telemetry_store.h"

namespace fleet::controller::telemetry {

class ControllerMetrics {
 public:
  // Opens fleet.db read-only for the scrape-time gauges. `open_streams` and
  // `backlog` are called at each scrape (from HTTP threads); they must be
  // thread-safe and outlive this object.
  static absl::StatusOr<std::unique_ptr<ControllerMetrics>> Open(
      const std::string& fleet_db_path, std::function<size_t()> open_streams,
      std::function<size_t()> backlog);

  // Instruments for the telemetry store.
  TelemetryStoreMetrics store_metrics();
  // `kind` is "update" or "rollback".
  void DirectiveSent(const std::string& kind);
  // Observes one control-loop (fleet.db) write transaction.
  void FleetWrite(double seconds);

  // The whole exposition page.
  std::string Render() { return registry_.Render(); }
  MetricsRegistry& registry() { return registry_; }

 private:
  ControllerMetrics(std::unique_ptr<sqlite::Database> fleet_db,
                    std::function<size_t()> open_streams,
                    std::function<size_t()> backlog);
  void Collect();

  MetricsRegistry registry_;
  MetricFamily& agents_connected_;
  MetricFamily& streams_;
  MetricFamily& rollout_info_;
  MetricFamily& rollout_targets_;
  MetricFamily& rollout_progress_;
  MetricFamily& update_events_;
  MetricFamily& phase_duration_;
  MetricFamily& directives_sent_;
  MetricFamily& backlog_;
  MetricFamily& dropped_;
  MetricFamily& write_latency_;
  MetricFamily& scrape_errors_;

  std::function<size_t()> open_streams_;
  std::function<size_t()> backlog_fn_;
  absl::Mutex db_mu_;
  std::unique_ptr<sqlite::Database> fleet_db_ ABSL_GUARDED_BY(db_mu_);
};

}  // namespace fleet::controller::telemetry

#endif  // FLEET_CONTROLLER_TELEMETRY_CONTROLLER_METRICS_H_
