#include "controller/telemetry/controller_metrics.h"

#include <map>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "proto/fleet/v1/admin.pb.h"

namespace fleet::controller::telemetry {
namespace {

constexpr char kConnectedSql[] =
    "SELECT ap.product, ap.version, a.platform, COUNT(*) FROM agents a "
    "JOIN agent_products ap ON ap.agent_id = a.agent_id "
    "WHERE a.connected = 1 GROUP BY 1, 2, 3";
constexpr char kRolloutsSql[] =
    "SELECT r.rollout_id, r.product, r.version, r.state, t.state, "
    "COUNT(t.agent_id) FROM (SELECT rollout_id, product, version, state FROM "
    "rollouts ORDER BY updated_ms DESC LIMIT 200) r "
    "LEFT JOIN rollout_targets t ON t.rollout_id = r.rollout_id "
    "GROUP BY 1, 2, 3, 4, 5";

// Seconds; phases range from milliseconds (verify) to minutes (download).
const std::vector<double>& DurationBuckets() {
  static const auto* const kBuckets = new std::vector<double>{
      0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,   2.5,
      5,     10,   30,    60,   120, 300,  600, 1800};
  return *kBuckets;
}
const std::vector<double>& WriteBuckets() {
  static const auto* const kBuckets = new std::vector<double>{
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1};
  return *kBuckets;
}

std::string EnumLabel(const std::string& name, absl::string_view prefix) {
  absl::string_view view(name);
  if (view.substr(0, prefix.size()) == prefix)
    view.remove_prefix(prefix.size());
  return absl::AsciiStrToLower(view);
}

bool FinalTarget(int state) {
  return state == v1::TARGET_STATE_HEALTHY ||
         state == v1::TARGET_STATE_FAILED ||
         state == v1::TARGET_STATE_ROLLED_BACK ||
         state == v1::TARGET_STATE_SKIPPED;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ControllerMetrics>> ControllerMetrics::Open(
    const std::string& fleet_db_path, std::function<size_t()> open_streams,
    std::function<size_t()> backlog) {
  ASSIGN_OR_RETURN(std::unique_ptr<sqlite::Database> db,
                   sqlite::Database::Open(fleet_db_path));
  RETURN_IF_ERROR(db->Execute("PRAGMA query_only=ON"));
  return std::unique_ptr<ControllerMetrics>(new ControllerMetrics(
      std::move(db), std::move(open_streams), std::move(backlog)));
}

ControllerMetrics::ControllerMetrics(std::unique_ptr<sqlite::Database> fleet_db,
                                     std::function<size_t()> open_streams,
                                     std::function<size_t()> backlog)
    : agents_connected_(registry_.AddGauge(
          "fleet_agents_connected",
          "Connected agents by installed product, version and platform",
          {"product", "version", "platform"})),
      streams_(registry_.AddGauge("fleet_agent_streams",
                                  "Open agent Connect streams", {})),
      rollout_info_(registry_.AddGauge(
          "fleet_rollout_info", "1 per rollout, labelled with its state",
          {"rollout", "product", "version", "state"})),
      rollout_targets_(registry_.AddGauge("fleet_rollout_targets",
                                          "Rollout targets by target state",
                                          {"rollout", "state"})),
      rollout_progress_(registry_.AddGauge(
          "fleet_rollout_progress_ratio",
          "Share of a rollout's targets in a final state (0..1)", {"rollout"})),
      update_events_(
          registry_.AddCounter("fleet_update_events_total",
                               "Update events stored, by phase and error class",
                               {"phase", "error_class"})),
      phase_duration_(
          registry_.AddHistogram("fleet_update_phase_duration_seconds",
                                 "Time agents spent reaching each update phase",
                                 {"phase"}, DurationBuckets())),
      directives_sent_(registry_.AddCounter(
          "fleet_directives_sent_total",
          "Update directives queued to agent streams", {"kind"})),
      backlog_(registry_.AddGauge(
          "fleet_telemetry_backlog",
          "Heartbeats and hellos waiting for the telemetry writer", {})),
      dropped_(registry_.AddCounter(
          "fleet_telemetry_dropped_total",
          "Telemetry records dropped because the backlog was full", {"kind"})),
      write_latency_(registry_.AddHistogram(
          "fleet_sqlite_write_seconds",
          "Duration of one batched SQLite write transaction", {"db"},
          WriteBuckets())),
      scrape_errors_(registry_.AddCounter(
          "fleet_metrics_scrape_errors_total",
          "Scrapes whose database gauges could not be read", {})),
      open_streams_(std::move(open_streams)),
      backlog_fn_(std::move(backlog)),
      fleet_db_(std::move(fleet_db)) {
  registry_.AddCollector([this] { Collect(); });
}

TelemetryStoreMetrics ControllerMetrics::store_metrics() {
  return {&update_events_, &phase_duration_, &write_latency_, &dropped_};
}

void ControllerMetrics::DirectiveSent(const std::string& kind) {
  directives_sent_.Increment({kind});
}

void ControllerMetrics::FleetWrite(double seconds) {
  write_latency_.Observe({"fleet"}, seconds);
}

void ControllerMetrics::Collect() {
  streams_.Set({}, static_cast<double>(open_streams_()));
  backlog_.Set({}, static_cast<double>(backlog_fn_()));
  absl::MutexLock lock(&db_mu_);
  absl::Status status = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(sqlite::Statement * connected,
                     fleet_db_->Cached(kConnectedSql));
    agents_connected_.Clear();
    while (true) {
      ASSIGN_OR_RETURN(bool row, connected->Step());
      if (!row) break;
      agents_connected_.Set({connected->ColumnText(0), connected->ColumnText(1),
                             connected->ColumnText(2)},
                            static_cast<double>(connected->ColumnInt64(3)));
    }
    connected->Reset();

    ASSIGN_OR_RETURN(sqlite::Statement * rollouts,
                     fleet_db_->Cached(kRolloutsSql));
    rollout_info_.Clear();
    rollout_targets_.Clear();
    rollout_progress_.Clear();
    std::map<std::string, std::pair<int64_t, int64_t>> progress;
    while (true) {
      ASSIGN_OR_RETURN(bool row, rollouts->Step());
      if (!row) break;
      const std::string id = rollouts->ColumnText(0);
      rollout_info_.Set(
          {id, rollouts->ColumnText(1), rollouts->ColumnText(2),
           EnumLabel(v1::RolloutState_Name(static_cast<v1::RolloutState>(
                         rollouts->ColumnInt64(3))),
                     "ROLLOUT_STATE_")},
          1);
      auto& [final_targets, targets] = progress[id];
      if (rollouts->ColumnIsNull(4)) continue;  // no targets yet
      const int state = static_cast<int>(rollouts->ColumnInt64(4));
      const int64_t count = rollouts->ColumnInt64(5);
      rollout_targets_.Set(
          {id,
           EnumLabel(v1::TargetState_Name(static_cast<v1::TargetState>(state)),
                     "TARGET_STATE_")},
          static_cast<double>(count));
      targets += count;
      if (FinalTarget(state)) final_targets += count;
    }
    rollouts->Reset();
    for (const auto& [id, counts] : progress) {
      rollout_progress_.Set(
          {id}, counts.second == 0
                    ? 0.0
                    : static_cast<double>(counts.first) / counts.second);
    }
    return absl::OkStatus();
  }();
  if (!status.ok()) {
    scrape_errors_.Increment({});
    LogWarning("metrics: reading fleet.db failed",
               {{"error", status.ToString()}});
  }
}

}  // namespace fleet::controller::telemetry
