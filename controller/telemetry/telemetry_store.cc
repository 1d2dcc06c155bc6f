#include "controller/telemetry/telemetry_store.h"

#include <algorithm>
#include <map>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "controller/telemetry/metrics_registry.h"

namespace fleet::controller::telemetry {
namespace {

const std::vector<sqlite::Migration>& Migrations() {
  static const auto* const kMigrations = new std::vector<sqlite::Migration>{
      {"update events, heartbeats, agent versions",
       R"sql(
CREATE TABLE update_events(
  agent_id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  rollout_id TEXT NOT NULL,
  product TEXT NOT NULL,
  platform TEXT NOT NULL,
  from_version TEXT NOT NULL,
  to_version TEXT NOT NULL,
  phase TEXT NOT NULL,
  error_class TEXT NOT NULL,
  duration_ms INTEGER NOT NULL,
  bytes INTEGER NOT NULL,
  time_ms INTEGER NOT NULL,
  received_ms INTEGER NOT NULL,
  PRIMARY KEY(agent_id, seq)) WITHOUT ROWID;
CREATE INDEX update_events_by_time ON update_events(time_ms);

CREATE TABLE heartbeats(
  agent_id TEXT NOT NULL,
  platform TEXT NOT NULL,
  time_ms INTEGER NOT NULL,
  uptime_seconds INTEGER NOT NULL,
  program_restarts INTEGER NOT NULL,
  agent_rss_bytes INTEGER NOT NULL,
  program_rss_bytes INTEGER NOT NULL,
  agent_cpu_ms INTEGER NOT NULL,
  program_cpu_ms INTEGER NOT NULL,
  state_dir_free_bytes INTEGER NOT NULL);
CREATE INDEX heartbeats_by_time ON heartbeats(time_ms);

CREATE TABLE agent_versions(
  agent_id TEXT NOT NULL,
  product TEXT NOT NULL,
  since_ms INTEGER NOT NULL,
  version TEXT NOT NULL,
  platform TEXT NOT NULL,
  PRIMARY KEY(agent_id, product, since_ms)) WITHOUT ROWID;
CREATE INDEX agent_versions_by_time ON agent_versions(since_ms);

CREATE TABLE tail(
  name TEXT PRIMARY KEY,
  value INTEGER NOT NULL) WITHOUT ROWID;
)sql"},
      // A trigger keeps the rollup in the transaction of every stored
      // event; an ignored duplicate inserts nothing and so counts nothing.
      {"minute rollups of update events",
       R"sql(
CREATE TABLE update_events_1m(
  minute_ms INTEGER NOT NULL,
  product TEXT NOT NULL,
  platform TEXT NOT NULL,
  phase TEXT NOT NULL,
  error_class TEXT NOT NULL,
  to_version TEXT NOT NULL,
  events INTEGER NOT NULL,
  duration_ms_sum INTEGER NOT NULL,
  PRIMARY KEY(minute_ms, product, platform, phase, error_class, to_version))
  WITHOUT ROWID;
INSERT INTO update_events_1m
  SELECT time_ms - time_ms % 60000, product, platform, phase, error_class,
         to_version, COUNT(*), SUM(duration_ms)
  FROM update_events WHERE true GROUP BY 1, 2, 3, 4, 5, 6;
CREATE TRIGGER update_events_rollup AFTER INSERT ON update_events BEGIN
  INSERT INTO update_events_1m VALUES(
      NEW.time_ms - NEW.time_ms % 60000, NEW.product, NEW.platform,
      NEW.phase, NEW.error_class, NEW.to_version, 1, NEW.duration_ms)
    ON CONFLICT DO UPDATE SET events = events + 1,
      duration_ms_sum = duration_ms_sum + excluded.duration_ms_sum;
END;
)sql"},
  };
  return *kMigrations;
}

// Rows the control loop may still commit with a received_ms below what was
// already copied: its batch stamps received_ms before the commit. Re-reading
// this much each pass is cheap (INSERT OR IGNORE) and closes that gap.
constexpr int64_t kTailOverlapMs = 10'000;
constexpr int kTailPage = 2'000;
// Writer passes (flush_interval apart) a Hello waits for versions the
// control loop resolves from digests.
constexpr int kHelloResolveAttempts = 40;

constexpr char kInsertHeartbeatSql[] =
    "INSERT INTO heartbeats(agent_id, platform, time_ms, uptime_seconds, "
    "program_restarts, agent_rss_bytes, program_rss_bytes, agent_cpu_ms, "
    "program_cpu_ms, state_dir_free_bytes) VALUES(?,?,?,?,?,?,?,?,?,?)";
constexpr char kLatestVersionSql[] =
    "SELECT version FROM agent_versions WHERE agent_id = ? AND product = ? "
    "ORDER BY since_ms DESC LIMIT 1";
constexpr char kInsertVersionSql[] =
    "INSERT OR REPLACE INTO agent_versions(agent_id, product, since_ms, "
    "version, platform) VALUES(?,?,?,?,?)";
constexpr char kReadWatermarkSql[] =
    "SELECT value FROM tail WHERE name = 'events_received_ms'";
constexpr char kWriteWatermarkSql[] =
    "INSERT OR REPLACE INTO tail(name, value) "
    "VALUES('events_received_ms', ?)";
// fleet.db, read only. Keyset pagination over (received_ms, agent_id, seq),
// which events_by_received holds (an index of a WITHOUT ROWID table ends
// with the primary key): each page is one index seek. A separate
// `received_ms >= start` term would make SQLite seek there instead and
// filter every row up to the key, so each page cost the whole window.
constexpr char kTailEventsSql[] =
    "SELECT e.agent_id, e.seq, e.rollout_id, e.product, "
    "COALESCE(a.platform, ''), e.from_version, e.to_version, e.phase, "
    "e.error_class, e.duration_ms, e.bytes, e.time_ms, e.received_ms "
    "FROM events e LEFT JOIN agents a ON a.agent_id = e.agent_id "
    "WHERE (e.received_ms, e.agent_id, e.seq) > (?1, ?2, ?3) "
    "ORDER BY e.received_ms, e.agent_id, e.seq LIMIT ?4";
constexpr char kStoredVersionSql[] =
    "SELECT version FROM agent_products WHERE agent_id = ? AND product = ?";
constexpr char kInsertEventSql[] =
    "INSERT OR IGNORE INTO update_events(agent_id, seq, rollout_id, product, "
    "platform, from_version, to_version, phase, error_class, duration_ms, "
    "bytes, time_ms, received_ms) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)";

int64_t UnixMs(absl::Time t) { return absl::ToUnixMillis(t); }

}  // namespace

std::string PhaseLabel(v1::UpdatePhase phase) {
  std::string name = v1::UpdatePhase_Name(phase);
  constexpr absl::string_view kPrefix = "UPDATE_PHASE_";
  if (absl::string_view(name).substr(0, kPrefix.size()) == kPrefix) {
    name = name.substr(kPrefix.size());
  }
  return absl::AsciiStrToLower(name);
}

absl::StatusOr<absl::Duration> ParseRetention(absl::string_view text) {
  absl::Duration retention;
  int64_t days = 0;
  if (!text.empty() && text.back() == 'd' &&
      absl::SimpleAtoi(text.substr(0, text.size() - 1), &days)) {
    retention = absl::Hours(24) * days;
  } else if (text == "0") {
    retention = absl::ZeroDuration();
  } else if (!absl::ParseDuration(text, &retention)) {
    return absl::InvalidArgumentError(
        absl::StrCat("telemetry retention \"", text,
                     "\" is not a duration; use e.g. 30d, 12h or 0 (keep "
                     "everything)"));
  }
  if (retention < absl::ZeroDuration() || retention > absl::Hours(24 * 3660)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "telemetry retention \"", text, "\" must be between 0 and 3660d"));
  }
  return retention;
}

absl::StatusOr<std::unique_ptr<TelemetryStore>> TelemetryStore::Open(
    Options options, const Clock& clock) {
  if (options.path.empty() || options.fleet_db_path.empty()) {
    return absl::InvalidArgumentError(
        "telemetry needs the paths of telemetry.db and fleet.db");
  }
  if (options.retention < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("telemetry retention must be >= 0");
  }
  ASSIGN_OR_RETURN(std::unique_ptr<sqlite::Database> db,
                   sqlite::Database::Open(options.path));
  RETURN_IF_ERROR(db->Migrate(Migrations()));
  ASSIGN_OR_RETURN(std::unique_ptr<sqlite::Database> fleet_db,
                   sqlite::Database::Open(options.fleet_db_path));
  RETURN_IF_ERROR(fleet_db->Execute("PRAGMA query_only=ON"));
  return std::unique_ptr<TelemetryStore>(new TelemetryStore(
      std::move(options), clock, std::move(db), std::move(fleet_db)));
}

TelemetryStore::TelemetryStore(Options options, const Clock& clock,
                               std::unique_ptr<sqlite::Database> db,
                               std::unique_ptr<sqlite::Database> fleet_db)
    : options_(std::move(options)),
      clock_(clock),
      db_(std::move(db)),
      fleet_db_(std::move(fleet_db)) {}

TelemetryStore::~TelemetryStore() { Stop(); }

void TelemetryStore::Start() {
  thread_ = std::thread([this] { Run(); });
}

void TelemetryStore::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
  absl::Status flushed = Flush();
  if (!flushed.ok()) {
    LogWarning("telemetry: final flush failed",
               {{"error", flushed.ToString()}});
  }
}

void TelemetryStore::RecordHello(const v1::Hello& hello) {
  const int64_t now = UnixMs(clock_.Now());
  absl::MutexLock lock(&mu_);
  platforms_[hello.agent_id()] = hello.platform();
  if (heartbeats_.size() + hellos_.size() >= options_.max_backlog) {
    if (options_.metrics.dropped)
      options_.metrics.dropped->Increment({"hello"});
    return;
  }
  hellos_.push_back({now, hello});
}

void TelemetryStore::RecordHeartbeat(absl::string_view agent_id,
                                     const v1::Heartbeat& heartbeat) {
  const int64_t now = UnixMs(clock_.Now());
  absl::MutexLock lock(&mu_);
  if (heartbeats_.size() + hellos_.size() >= options_.max_backlog) {
    if (options_.metrics.dropped) {
      options_.metrics.dropped->Increment({"heartbeat"});
    }
    return;
  }
  heartbeats_.push_back({std::string(agent_id), now, heartbeat});
}

void TelemetryStore::RecordEvents(absl::string_view agent_id,
                                  int64_t received_ms,
                                  std::vector<v1::UpdateEvent> events) {
  absl::MutexLock lock(&mu_);
  handed_over_ = true;
  // Read back from fleet.db by the next pass (the events are committed
  // there before they are handed over).
  if (catch_up_) return;
  if (queued_events_ + events.size() > options_.max_backlog) {
    events_.clear();
    queued_events_ = 0;
    catch_up_ = true;
    return;
  }
  queued_events_ += events.size();
  events_.push_back({std::string(agent_id), received_ms, std::move(events)});
}

size_t TelemetryStore::Backlog() const {
  absl::MutexLock lock(&mu_);
  return heartbeats_.size() + hellos_.size();
}

void TelemetryStore::Run() {
  while (true) {
    bool stopping = false;
    {
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(&stopping_),
                           options_.flush_interval);
      stopping = stopping_;
    }
    if (stopping) return;  // Stop() flushes on its own thread
    absl::Status flushed = Flush();
    if (!flushed.ok()) {
      LogWarning("telemetry: write failed", {{"error", flushed.ToString()}});
    }
    if (options_.retention > absl::ZeroDuration() &&
        clock_.Now() >= next_retention_) {
      next_retention_ = clock_.Now() + options_.retention_interval;
      absl::StatusOr<int64_t> deleted = ApplyRetention();
      if (!deleted.ok()) {
        LogWarning("telemetry: retention failed",
                   {{"error", deleted.status().ToString()}});
      }
    }
  }
}

absl::Status TelemetryStore::Flush() {
  std::vector<QueuedHeartbeat> heartbeats;
  std::vector<QueuedHello> hellos;
  std::vector<QueuedEvents> events;
  bool copy = true;
  {
    absl::MutexLock lock(&mu_);
    heartbeats.swap(heartbeats_);
    hellos.swap(hellos_);
    events.swap(events_);
    queued_events_ = 0;
    copy = !handed_over_ || catch_up_;
    // Cleared before reading fleet.db: an event committed after that read
    // is handed over and queued (a duplicate of one read is ignored).
    catch_up_ = false;
  }
  absl::Status written = WriteQueued(std::move(heartbeats), std::move(hellos));
  absl::Status copied = copy ? CopyEvents() : absl::OkStatus();
  if (copied.ok()) copied = WriteEvents(std::move(events));
  if (!copied.ok()) {
    // What was not written is read back from fleet.db next time.
    absl::MutexLock lock(&mu_);
    catch_up_ = true;
    events_.clear();
    queued_events_ = 0;
  }
  return written.ok() ? copied : written;
}

absl::Status TelemetryStore::WriteEvents(std::vector<QueuedEvents> queued) {
  if (queued.empty()) return absl::OkStatus();
  std::vector<std::string> platforms(queued.size());
  {
    absl::MutexLock lock(&mu_);
    for (size_t i = 0; i < queued.size(); ++i) {
      auto it = platforms_.find(queued[i].agent_id);
      if (it != platforms_.end()) platforms[i] = it->second;
    }
  }
  std::vector<EventRow> rows;
  int64_t watermark = 0;
  for (size_t i = 0; i < queued.size(); ++i) {
    QueuedEvents& q = queued[i];
    watermark = std::max(watermark, q.received_ms);
    for (v1::UpdateEvent& e : q.events) {
      rows.push_back(
          {q.agent_id, static_cast<int64_t>(e.seq()),
           std::move(*e.mutable_rollout_id()), std::move(*e.mutable_product()),
           platforms[i], std::move(*e.mutable_from_version()),
           std::move(*e.mutable_to_version()), static_cast<int>(e.phase()),
           std::move(*e.mutable_error_class()), e.duration_ms(),
           static_cast<int64_t>(e.bytes()), e.time_unix_ms(), q.received_ms});
    }
  }
  return InsertEventRows(rows, watermark);
}

absl::Status TelemetryStore::WriteQueued(
    std::vector<QueuedHeartbeat> heartbeats, std::vector<QueuedHello> hellos) {
  if (heartbeats.empty() && hellos.empty()) return absl::OkStatus();
  const absl::Time started = absl::Now();
  absl::flat_hash_map<std::string, std::string> platforms;
  {
    absl::MutexLock lock(&mu_);
    platforms = platforms_;
  }
  std::vector<QueuedHello> unresolved;
  sqlite::Transaction txn(*db_);
  RETURN_IF_ERROR(txn.Begin());
  for (QueuedHello& queued : hellos) {
    bool retry = false;
    for (const v1::InstalledProduct& product : queued.hello.installed()) {
      std::string version = product.version();
      if (version.empty()) {
        // The control loop names unknown versions from the digest; use its
        // answer if it has committed one already.
        ASSIGN_OR_RETURN(sqlite::Statement * stored,
                         fleet_db_->Cached(kStoredVersionSql));
        stored->BindText(1, queued.hello.agent_id());
        stored->BindText(2, product.product());
        ASSIGN_OR_RETURN(bool found, stored->Step());
        if (found) version = stored->ColumnText(0);
        stored->Reset();
      }
      if (version.empty()) {
        retry = true;
        continue;
      }
      RETURN_IF_ERROR(NoteVersion(queued.hello.agent_id(), product.product(),
                                  version, queued.hello.platform(),
                                  queued.time_ms));
    }
    // The control loop may not have committed the Hello (and the version it
    // resolved from the digest) yet: look again on the next passes.
    if (retry && ++queued.attempts < kHelloResolveAttempts) {
      unresolved.push_back(std::move(queued));
    }
  }
  ASSIGN_OR_RETURN(sqlite::Statement * insert,
                   db_->Cached(kInsertHeartbeatSql));
  for (const QueuedHeartbeat& queued : heartbeats) {
    const v1::Heartbeat& h = queued.heartbeat;
    auto platform = platforms.find(queued.agent_id);
    insert->BindText(1, queued.agent_id);
    insert->BindText(2, platform == platforms.end() ? "" : platform->second);
    insert->BindInt64(3, queued.time_ms);
    insert->BindInt64(4, h.uptime_seconds());
    insert->BindInt64(5, h.program_restarts());
    insert->BindInt64(6, static_cast<int64_t>(h.agent_rss_bytes()));
    insert->BindInt64(7, static_cast<int64_t>(h.program_rss_bytes()));
    insert->BindInt64(8, static_cast<int64_t>(h.agent_cpu_ms()));
    insert->BindInt64(9, static_cast<int64_t>(h.program_cpu_ms()));
    insert->BindInt64(10, static_cast<int64_t>(h.state_dir_free_bytes()));
    RETURN_IF_ERROR(insert->Run());
  }
  RETURN_IF_ERROR(txn.Commit());
  if (options_.metrics.write_latency) {
    options_.metrics.write_latency->Observe(
        {"telemetry"}, absl::ToDoubleSeconds(absl::Now() - started));
  }
  if (!unresolved.empty()) {
    absl::MutexLock lock(&mu_);
    for (QueuedHello& queued : unresolved) hellos_.push_back(std::move(queued));
  }
  return absl::OkStatus();
}

absl::Status TelemetryStore::NoteVersion(absl::string_view agent_id,
                                         absl::string_view product,
                                         absl::string_view version,
                                         absl::string_view platform,
                                         int64_t since_ms) {
  ASSIGN_OR_RETURN(sqlite::Statement * latest, db_->Cached(kLatestVersionSql));
  latest->BindText(1, agent_id);
  latest->BindText(2, product);
  ASSIGN_OR_RETURN(bool found, latest->Step());
  const bool same = found && latest->ColumnText(0) == version;
  latest->Reset();
  if (same) return absl::OkStatus();  // a reconnect, not a change
  ASSIGN_OR_RETURN(sqlite::Statement * insert, db_->Cached(kInsertVersionSql));
  insert->BindText(1, agent_id);
  insert->BindText(2, product);
  insert->BindInt64(3, since_ms);
  insert->BindText(4, version);
  insert->BindText(5, platform);
  return insert->Run();
}

absl::Status TelemetryStore::CopyEvents() {
  int64_t watermark = 0;
  {
    ASSIGN_OR_RETURN(sqlite::Statement * read, db_->Cached(kReadWatermarkSql));
    ASSIGN_OR_RETURN(bool found, read->Step());
    if (found) watermark = read->ColumnInt64(0);
    read->Reset();
  }
  int64_t from = watermark - kTailOverlapMs;
  if (options_.retention > absl::ZeroDuration()) {
    from = std::max(from, UnixMs(clock_.Now() - options_.retention));
  }
  ASSIGN_OR_RETURN(sqlite::Statement * tail, fleet_db_->Cached(kTailEventsSql));
  int64_t key_ms = from - 1;
  std::string key_agent;
  int64_t key_seq = 0;
  int64_t newest = watermark;
  while (true) {
    std::vector<EventRow> rows;
    tail->BindInt64(1, key_ms);
    tail->BindText(2, key_agent);
    tail->BindInt64(3, key_seq);
    tail->BindInt64(4, kTailPage);
    while (true) {
      absl::StatusOr<bool> step = tail->Step();
      if (!step.ok()) {
        tail->Reset();
        return step.status();
      }
      if (!*step) break;
      rows.push_back(
          {tail->ColumnText(0), tail->ColumnInt64(1), tail->ColumnText(2),
           tail->ColumnText(3), tail->ColumnText(4), tail->ColumnText(5),
           tail->ColumnText(6), static_cast<int>(tail->ColumnInt64(7)),
           tail->ColumnText(8), tail->ColumnInt64(9), tail->ColumnInt64(10),
           tail->ColumnInt64(11), tail->ColumnInt64(12)});
    }
    tail->Reset();
    if (rows.empty()) break;
    const EventRow& last = rows.back();
    newest = std::max(newest, last.received_ms);
    RETURN_IF_ERROR(InsertEventRows(rows, newest));
    if (rows.size() < static_cast<size_t>(kTailPage)) break;
    key_ms = last.received_ms;
    key_agent = last.agent_id;
    key_seq = last.seq;
  }
  return absl::OkStatus();
}

absl::Status TelemetryStore::InsertEventRows(const std::vector<EventRow>& rows,
                                             int64_t watermark) {
  if (rows.empty()) return absl::OkStatus();
  const absl::Time started = absl::Now();
  sqlite::Transaction txn(*db_);
  RETURN_IF_ERROR(txn.Begin());
  ASSIGN_OR_RETURN(sqlite::Statement * insert, db_->Cached(kInsertEventSql));
  // Metrics are updated once per (phase, error class) of the transaction,
  // not per row: a labelled Increment builds and looks up its label set.
  struct Stored {
    int64_t events = 0;
    std::vector<double> durations_s;
  };
  std::map<std::pair<int, std::string>, Stored> stored;
  // One label string per phase, not one allocation per row.
  std::map<int, std::string> phases;
  for (const EventRow& row : rows) {
    auto [label, added] = phases.try_emplace(row.phase);
    if (added) {
      label->second = PhaseLabel(static_cast<v1::UpdatePhase>(row.phase));
    }
    const std::string& phase = label->second;
    // An event without an agent timestamp is placed when it arrived.
    const int64_t time_ms = row.time_ms > 0 ? row.time_ms : row.received_ms;
    insert->BindText(1, row.agent_id);
    insert->BindInt64(2, row.seq);
    insert->BindText(3, row.rollout_id);
    insert->BindText(4, row.product);
    insert->BindText(5, row.platform);
    insert->BindText(6, row.from_version);
    insert->BindText(7, row.to_version);
    insert->BindText(8, phase);
    insert->BindText(9, row.error_class);
    insert->BindInt64(10, row.duration_ms);
    insert->BindInt64(11, row.bytes);
    insert->BindInt64(12, time_ms);
    insert->BindInt64(13, row.received_ms);
    RETURN_IF_ERROR(insert->Run());
    if (db_->Changes() == 0) continue;  // stored by an earlier pass
    Stored& counted = stored[{row.phase, row.error_class}];
    ++counted.events;
    if (options_.metrics.phase_duration) {
      counted.durations_s.push_back(row.duration_ms / 1000.0);
    }
    if (row.phase == v1::UPDATE_PHASE_HEALTHY && !row.to_version.empty()) {
      RETURN_IF_ERROR(NoteVersion(row.agent_id, row.product, row.to_version,
                                  row.platform, time_ms));
    }
  }
  // Never backwards: a catch-up re-reads from below the watermark.
  ASSIGN_OR_RETURN(sqlite::Statement * read, db_->Cached(kReadWatermarkSql));
  ASSIGN_OR_RETURN(bool found, read->Step());
  if (found) watermark = std::max(watermark, read->ColumnInt64(0));
  read->Reset();
  ASSIGN_OR_RETURN(sqlite::Statement * mark, db_->Cached(kWriteWatermarkSql));
  mark->BindInt64(1, watermark);
  RETURN_IF_ERROR(mark->Run());
  RETURN_IF_ERROR(txn.Commit());
  if (options_.metrics.write_latency) {
    options_.metrics.write_latency->Observe(
        {"telemetry"}, absl::ToDoubleSeconds(absl::Now() - started));
  }
  for (const auto& [key, counted] : stored) {
    const std::string& phase = phases[key.first];
    if (options_.metrics.update_events) {
      options_.metrics.update_events->Increment({phase, key.second},
                                                counted.events);
    }
    if (options_.metrics.phase_duration) {
      const std::vector<std::string> labels = {phase};
      for (double seconds : counted.durations_s) {
        options_.metrics.phase_duration->Observe(labels, seconds);
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> TelemetryStore::ApplyRetention() {
  if (options_.retention <= absl::ZeroDuration()) return 0;
  const int64_t cutoff = UnixMs(clock_.Now() - options_.retention);
  // Each statement deletes at most one batch, in its own transaction, so a
  // large backlog of old rows never holds the write lock for long.
  const std::string batch = absl::StrCat(options_.retention_batch);
  const std::string statements[] = {
      absl::StrCat("DELETE FROM heartbeats WHERE rowid IN (SELECT rowid FROM "
                   "heartbeats WHERE time_ms < ?1 LIMIT ",
                   batch, ")"),
      absl::StrCat("DELETE FROM update_events WHERE (agent_id, seq) IN "
                   "(SELECT agent_id, seq FROM update_events WHERE time_ms < "
                   "?1 LIMIT ",
                   batch, ")"),
      absl::StrCat(
          "DELETE FROM update_events_1m WHERE (minute_ms, product, platform, "
          "phase, error_class, to_version) IN (SELECT minute_ms, product, "
          "platform, phase, error_class, to_version FROM update_events_1m "
          "WHERE minute_ms < ?1 LIMIT ",
          batch, ")"),
      // Old version rows go too, except each agent's last one before the
      // cutoff: it says what the agent ran when the kept window starts.
      absl::StrCat(
          "DELETE FROM agent_versions WHERE (agent_id, product, since_ms) IN "
          "(SELECT v.agent_id, v.product, v.since_ms FROM agent_versions v "
          "WHERE v.since_ms < ?1 AND EXISTS (SELECT 1 FROM agent_versions n "
          "WHERE n.agent_id = v.agent_id AND n.product = v.product AND "
          "n.since_ms > v.since_ms AND n.since_ms <= ?1) LIMIT ",
          batch, ")"),
  };
  int64_t deleted = 0;
  for (const std::string& sql : statements) {
    ASSIGN_OR_RETURN(std::unique_ptr<sqlite::Statement> statement,
                     db_->Prepare(sql));
    while (true) {
      sqlite::Transaction txn(*db_);
      RETURN_IF_ERROR(txn.Begin());
      statement->BindInt64(1, cutoff);
      RETURN_IF_ERROR(statement->Run());
      const int changed = db_->Changes();
      RETURN_IF_ERROR(txn.Commit());
      deleted += changed;
      if (changed < options_.retention_batch) break;
    }
  }
  return deleted;
}

}  // namespace fleet::controller::telemetry
