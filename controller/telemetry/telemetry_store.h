// Telemetry storage: DATA_DIR/telemetry.db (SQLite, WAL), a file of its own
// so telemetry writes never contend with the control loop's transactions on
// fleet.db. One writer thread owns every write:
//
//  - heartbeats and Hello observations are queued by stream reactions
//    (RecordHeartbeat / RecordHello never block on disk) and written in
//    batched transactions;
//  - acknowledged UpdateEvents reach `update_events`, keyed by (agent_id,
//    seq), so each event is stored once however often an agent resends it.
//    The control loop hands them over after its commit (RecordEvents), in
//    commit order; they are also copied from fleet.db's `events` table (on a
//    connection of its own) from a watermark: at the first pass (catching up
//    after a crash between the two commits), after RecordEvents dropped a
//    backlog, and on every pass when nothing hands events over (tests,
//    tools). The watermark follows the newest received time written, so a
//    restart re-reads at most what was not yet written (plus an overlap);
//  - HEALTHY events and Hellos feed `agent_versions`, the history of which
//    version each agent ran, from which `agents` is answered at any time;
//  - retention deletes rows older than the retention in bounded batches,
//    one short transaction each.
//
//   TelemetryStore::Options options{.path = dir + "/telemetry.db",
//                                   .fleet_db_path = dir + "/fleet.db"};
//   ASSIGN_OR_RETURN(auto telemetry, TelemetryStore::Open(options, clock));
//   telemetry->Start();
//   telemetry->RecordHeartbeat("a1", heartbeat);
//   telemetry->Stop();   // writes what is queued
#ifndef FLEET_CONTROLLER_TELEMETRY_TELEMETRY_STORE_H_
#define FLEET_CONTROLLER_TELEMETRY_TELEMETRY_STORE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/sqlite/database.h"
#include "proto/fleet/v1/agent.pb.h"

namespace fleet::controller::telemetry {

class MetricFamily;

// Optional instruments the store updates; any may be null.
struct TelemetryStoreMetrics {
  // Counter {phase, error_class}: events newly stored.
  MetricFamily* update_events = nullptr;
  // Histogram {phase} in seconds: UpdateEvent.duration_ms of stored events.
  MetricFamily* phase_duration = nullptr;
  // Histogram {db} in seconds: one batched write transaction.
  MetricFamily* write_latency = nullptr;
  // Counter {kind}: heartbeats / hellos dropped because the backlog was full.
  MetricFamily* dropped = nullptr;
};

// Lower-case phase name used as the `phase` label ("rolled_back").
std::string PhaseLabel(v1::UpdatePhase phase);

// Parses a retention such as "30d", "12h", "90m" (days plus anything
// absl::ParseDuration takes); "0" keeps everything. INVALID_ARGUMENT, with
// an example, for anything else, a negative value or more than 10 years.
absl::StatusOr<absl::Duration> ParseRetention(absl::string_view text);

class TelemetryStore {
 public:
  struct Options {
    std::string path;           // telemetry.db, created if missing
    std::string fleet_db_path;  // the control loop's store (read only here)
    // Rows older than this are deleted; 0 keeps everything.
    absl::Duration retention = absl::Hours(24 * 30);
    // How long queued records may wait before they are written.
    absl::Duration flush_interval = absl::Milliseconds(250);
    // Queued records beyond this are dropped (and counted), so a stalled
    // disk costs telemetry, never the streams' memory.
    size_t max_backlog = 200'000;
    // Rows deleted per retention transaction.
    int retention_batch = 5'000;
    // How often retention runs.
    absl::Duration retention_interval = absl::Minutes(1);
    TelemetryStoreMetrics metrics;
  };

  // Opens (and migrates) telemetry.db and opens fleet.db for reading.
  // INVALID_ARGUMENT for empty paths or a negative retention; the SQLite
  // error otherwise. `clock` must outlive the store.
  static absl::StatusOr<std::unique_ptr<TelemetryStore>> Open(
      Options options, const Clock& clock);
  // Stops the writer (writing what is queued).
  ~TelemetryStore();
  TelemetryStore(const TelemetryStore&) = delete;
  TelemetryStore& operator=(const TelemetryStore&) = delete;

  // Starts the writer thread. Call once.
  void Start();
  // Writes what is queued, copies new events, stops the thread. Idempotent.
  void Stop();

  // Thread-safe, never blocks on disk. The agent's platform and versions
  // are remembered from its Hello to label its heartbeats.
  void RecordHello(const v1::Hello& hello);
  void RecordHeartbeat(absl::string_view agent_id,
                       const v1::Heartbeat& heartbeat);
  // Events the control loop has committed to fleet.db for `agent_id`, with
  // the received time stored with them, called in commit order. From the
  // first call on, fleet.db is read only to catch up (see above). Beyond
  // max_backlog queued events the queue is dropped and the next pass reads
  // them from fleet.db instead: nothing is lost, it only costs a re-read.
  void RecordEvents(absl::string_view agent_id, int64_t received_ms,
                    std::vector<v1::UpdateEvent> events);
  // Records waiting for the writer.
  size_t Backlog() const;

  // One writer pass now, on the caller's thread: writes the queue, copies
  // new events. For tests and Stop(); do not call while the thread runs.
  absl::Status Flush();
  // Deletes rows older than now - retention, `retention_batch` rows per
  // transaction, until none is left. Returns how many were deleted. Runs on
  // the writer thread every retention_interval; tests call it directly
  // (with the thread stopped).
  absl::StatusOr<int64_t> ApplyRetention();

  const std::string& path() const { return options_.path; }

 private:
  struct QueuedHeartbeat {
    std::string agent_id;
    int64_t time_ms;
    v1::Heartbeat heartbeat;
  };
  struct QueuedEvents {
    std::string agent_id;
    int64_t received_ms;
    std::vector<v1::UpdateEvent> events;
  };
  // One update_events row, from fleet.db or handed over.
  struct EventRow {
    std::string agent_id;
    int64_t seq;
    std::string rollout_id, product, platform, from_version, to_version;
    int phase;
    std::string error_class;
    int64_t duration_ms, bytes, time_ms, received_ms;
  };
  struct QueuedHello {
    int64_t time_ms;
    v1::Hello hello;
    // Writer passes that found a product's version still unresolved.
    int attempts = 0;
  };

  TelemetryStore(Options options, const Clock& clock,
                 std::unique_ptr<sqlite::Database> db,
                 std::unique_ptr<sqlite::Database> fleet_db);
  void Run();
  absl::Status WriteQueued(std::vector<QueuedHeartbeat> heartbeats,
                           std::vector<QueuedHello> hellos);
  absl::Status CopyEvents();
  // Writes handed-over events (RecordEvents).
  absl::Status WriteEvents(std::vector<QueuedEvents> queued);
  // Inserts `rows` in one transaction and moves the watermark to the newest
  // received time among them.
  absl::Status InsertEventRows(const std::vector<EventRow>& rows,
                               int64_t watermark);
  absl::Status NoteVersion(absl::string_view agent_id,
                           absl::string_view product, absl::string_view version,
                           absl::string_view platform, int64_t since_ms);

  const Options options_;
  const Clock& clock_;
  // Writer thread only (or the caller of Flush / ApplyRetention).
  std::unique_ptr<sqlite::Database> db_;
  std::unique_ptr<sqlite::Database> fleet_db_;
  absl::Time next_retention_ = absl::InfinitePast();

  mutable absl::Mutex mu_;
  std::vector<QueuedHeartbeat> heartbeats_ ABSL_GUARDED_BY(mu_);
  std::vector<QueuedHello> hellos_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::string> platforms_ ABSL_GUARDED_BY(mu_);
  std::vector<QueuedEvents> events_ ABSL_GUARDED_BY(mu_);
  size_t queued_events_ ABSL_GUARDED_BY(mu_) = 0;
  // Set by the first RecordEvents: events come from the control loop.
  bool handed_over_ ABSL_GUARDED_BY(mu_) = false;
  // fleet.db must be read from the watermark on the next pass (start, or
  // a dropped backlog); RecordEvents drops events meanwhile.
  bool catch_up_ ABSL_GUARDED_BY(mu_) = true;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace fleet::controller::telemetry

#endif  // FLEET_CONTROLLER_TELEMETRY_TELEMETRY_STORE_H_
