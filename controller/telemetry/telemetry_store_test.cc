#include "controller/telemetry/telemetry_store.h"

#include <memory>
#include <string>

#include "common/sqlite/database.h"
#include "common/testing/fake_clock.h"
#include "controller/store/store.h"
#include "controller/telemetry/metrics_registry.h"
#include "controller/telemetry/query_engine.h"
#include "controller/testing/temp_dir.h"
#include "gtest/gtest.h"

namespace fleet::controller::telemetry {
namespace {

class TelemetryStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    auto fleet = Store::Open(dir_.Join("fleet.db"));
    ASSERT_TRUE(fleet.ok()) << fleet.status();
    fleet_ = std::move(*fleet);
    v1::Agent agent;
    agent.set_agent_id("a1");
    agent.set_hostname("h1");
    agent.set_platform("linux/amd64");
    agent.set_agent_version("0.1.0");
    ASSERT_TRUE(fleet_->UpsertAgent(agent).ok());
  }

  TelemetryStore::Options Options() {
    TelemetryStore::Options options;
    options.path = dir_.Join("telemetry.db");
    options.fleet_db_path = dir_.Join("fleet.db");
    options.retention = absl::Hours(1);
    options.retention_batch = 2;
    options.metrics.update_events = &events_;
    options.metrics.dropped = &dropped_;
    return options;
  }

  std::unique_ptr<TelemetryStore> OpenTelemetry() {
    auto telemetry = TelemetryStore::Open(Options(), clock_);
    EXPECT_TRUE(telemetry.ok()) << telemetry.status();
    return telemetry.ok() ? std::move(*telemetry) : nullptr;
  }

  void StoreEvent(uint64_t seq, v1::UpdatePhase phase,
                  const std::string& to_version = "1.1.0") {
    v1::UpdateEvent event;
    event.set_seq(seq);
    event.set_directive_id("d1");
    event.set_rollout_id("r1");
    event.set_product("app");
    event.set_from_version("1.0.0");
    event.set_to_version(to_version);
    event.set_phase(phase);
    event.set_duration_ms(static_cast<int64_t>(seq) * 10);
    event.set_time_unix_ms(absl::ToUnixMillis(clock_.Now()));
    ASSERT_TRUE(
        fleet_->InsertEvent("a1", event, absl::ToUnixMillis(clock_.Now()))
            .ok());
  }

  int64_t Count(const std::string& table) {
    auto db = sqlite::Database::Open(dir_.Join("telemetry.db"));
    EXPECT_TRUE(db.ok());
    auto statement = (*db)->Prepare("SELECT COUNT(*) FROM " + table);
    EXPECT_TRUE(statement.ok());
    EXPECT_TRUE(*(*statement)->Step());
    return (*statement)->ColumnInt64(0);
  }

  int64_t Scalar(const std::string& sql) {
    auto db = sqlite::Database::Open(dir_.Join("telemetry.db"));
    EXPECT_TRUE(db.ok());
    auto statement = (*db)->Prepare(sql);
    EXPECT_TRUE(statement.ok()) << statement.status();
    EXPECT_TRUE(*(*statement)->Step());
    return (*statement)->ColumnInt64(0);
  }

  v1::QueryTelemetryResponse Query(const std::string& query) {
    v1::QueryTelemetryRequest request;
    request.set_query(query);
    request.set_start_unix_ms(absl::ToUnixMillis(clock_.Now()) - 3'600'000);
    request.set_end_unix_ms(absl::ToUnixMillis(clock_.Now()) + 60'000);
    request.set_step_ms(3'660'000);
    auto response = QueryEngine(dir_.Join("telemetry.db")).Run(request);
    EXPECT_TRUE(response.ok()) << response.status();
    return response.ok() ? *response : v1::QueryTelemetryResponse();
  }

  testing::TempDir dir_;
  FakeClock clock_{absl::FromUnixSeconds(1'800'000'000)};
  std::unique_ptr<Store> fleet_;
  MetricsRegistry registry_;
  MetricFamily& events_ =
      registry_.AddCounter("events_total", "h", {"phase", "error_class"});
  MetricFamily& dropped_ = registry_.AddCounter("dropped_total", "h", {"kind"});
};

v1::UpdateEvent Downloading(uint64_t seq, int64_t time_ms) {
  v1::UpdateEvent event;
  event.set_seq(seq);
  event.set_directive_id("d1");
  event.set_rollout_id("r1");
  event.set_product("app");
  event.set_to_version("1.1.0");
  event.set_phase(v1::UPDATE_PHASE_DOWNLOADING);
  event.set_duration_ms(static_cast<int64_t>(seq));
  event.set_time_unix_ms(time_ms);
  return event;
}

// Events handed over by the control loop are written from memory; fleet.db
// is read only to catch up: at the first pass (what a crash left between
// the two commits) and after a dropped backlog.
TEST_F(TelemetryStoreTest,
       HandedOverEventsAreWrittenOnceAndCaughtUpAfterACrash) {
  const int64_t now = absl::ToUnixMillis(clock_.Now());
  StoreEvent(1, v1::UPDATE_PHASE_RECEIVED);  // committed, never handed over
  {
    TelemetryStore::Options options = Options();
    options.max_backlog = 4;
    auto opened = TelemetryStore::Open(options, clock_);
    ASSERT_TRUE(opened.ok()) << opened.status();
    std::unique_ptr<TelemetryStore> telemetry = std::move(*opened);
    v1::Hello hello;
    hello.set_agent_id("a1");
    hello.set_platform("linux/arm64");
    telemetry->RecordHello(hello);
    // Before the first pass: dropped, and read back from fleet.db.
    StoreEvent(2, v1::UPDATE_PHASE_DOWNLOADING);
    telemetry->RecordEvents("a1", now, {Downloading(2, now)});
    ASSERT_TRUE(telemetry->Flush().ok());
    EXPECT_EQ(Count("update_events"), 2);

    // Seq 3 only handed over (a test device: the loop hands over only what
    // it committed), seq 4 only in fleet.db: the pass writes the first and
    // does not read fleet.db for the second.
    telemetry->RecordEvents("a1", now + 5, {Downloading(3, now)});
    ASSERT_TRUE(fleet_->InsertEvent("a1", Downloading(4, now), now + 6).ok());
    ASSERT_TRUE(telemetry->Flush().ok());
    EXPECT_EQ(Count("update_events"), 3);
    EXPECT_EQ(Scalar("SELECT received_ms FROM update_events WHERE seq = 3"),
              now + 5);
    // Labelled with the platform its agent's Hello named.
    EXPECT_EQ(Scalar("SELECT COUNT(*) FROM update_events WHERE seq = 3 AND "
                     "platform = 'linux/arm64'"),
              1);
    // A resend handed over again is ignored.
    telemetry->RecordEvents("a1", now + 7, {Downloading(3, now)});
    ASSERT_TRUE(telemetry->Flush().ok());
    EXPECT_EQ(Count("update_events"), 3);

    // More than max_backlog queued: dropped, then read from fleet.db.
    std::vector<v1::UpdateEvent> burst;
    for (uint64_t seq = 5; seq <= 9; ++seq) {
      ASSERT_TRUE(
          fleet_->InsertEvent("a1", Downloading(seq, now), now + 8).ok());
      burst.push_back(Downloading(seq, now));
    }
    telemetry->RecordEvents("a1", now + 8, burst);
    ASSERT_TRUE(telemetry->Flush().ok());
    EXPECT_EQ(Count("update_events"), 9);
    // Stopping here is a crash for seq 10: committed, not yet handed over.
    ASSERT_TRUE(fleet_->InsertEvent("a1", Downloading(10, now), now + 9).ok());
  }
  std::unique_ptr<TelemetryStore> telemetry = OpenTelemetry();
  ASSERT_NE(telemetry, nullptr);
  ASSERT_TRUE(telemetry->Flush().ok());  // the catch-up finds seq 10
  EXPECT_EQ(Count("update_events"), 10);
  EXPECT_EQ(Scalar("SELECT COUNT(*) FROM update_events WHERE seq = 10"), 1);
  telemetry->RecordEvents("a1", now + 10, {Downloading(11, now)});
  ASSERT_TRUE(telemetry->Flush().ok());
  EXPECT_EQ(Count("update_events"), 11);
  EXPECT_EQ(Scalar("SELECT COUNT(*) FROM update_events WHERE seq = 11"), 1);
  // The minute rollup counted each event once.
  EXPECT_EQ(Scalar("SELECT SUM(events) FROM update_events_1m"), 11);
}

TEST_F(TelemetryStoreTest, CopiesCommittedEventsOnceAcrossPassesAndRestarts) {
  StoreEvent(1, v1::UPDATE_PHASE_RECEIVED);
  StoreEvent(2, v1::UPDATE_PHASE_DOWNLOADING);
  StoreEvent(3, v1::UPDATE_PHASE_HEALTHY);
  {
    std::unique_ptr<TelemetryStore> telemetry = OpenTelemetry();
    ASSERT_NE(telemetry, nullptr);
    ASSERT_TRUE(telemetry->Flush().ok());
    EXPECT_EQ(Count("update_events"), 3);
    // The next pass re-reads the overlap window: nothing is stored twice.
    StoreEvent(4, v1::UPDATE_PHASE_RECEIVED, "1.2.0");
    ASSERT_TRUE(telemetry->Flush().ok());
    ASSERT_TRUE(telemetry->Flush().ok());
    EXPECT_EQ(Count("update_events"), 4);
    EXPECT_EQ(events_.Value({"healthy", ""}), 1);
    EXPECT_EQ(events_.Value({"received", ""}), 2);
  }
  // A restarted controller copies only what is new.
  std::unique_ptr<TelemetryStore> telemetry = OpenTelemetry();
  ASSERT_NE(telemetry, nullptr);
  ASSERT_TRUE(telemetry->Flush().ok());
  EXPECT_EQ(Count("update_events"), 4);
  EXPECT_EQ(events_.Value({"received", ""}), 2);
  // The minute rollup counted each event once too.
  EXPECT_EQ(Scalar("SELECT SUM(events) FROM update_events_1m"), 4);
  EXPECT_EQ(Scalar("SELECT SUM(duration_ms_sum) FROM update_events_1m"),
            10 + 20 + 30 + 40);

  v1::QueryTelemetryResponse phases =
      Query("count(update_events) by (phase, platform)");
  ASSERT_EQ(phases.series_size(), 3);
  EXPECT_EQ(phases.series(0).labels().at("phase"), "downloading");
  EXPECT_EQ(phases.series(0).labels().at("platform"), "linux/amd64");
  // The HEALTHY event moved a1 to 1.1.0 in the version history.
  v1::QueryTelemetryResponse agents = Query("agents{version=\"1.1.0\"}");
  ASSERT_EQ(agents.series_size(), 1);
  EXPECT_EQ(agents.series(0).points(0).value(), 1);
}

TEST_F(TelemetryStoreTest, HeartbeatsAreLabelledWithTheHelloPlatform) {
  std::unique_ptr<TelemetryStore> telemetry = OpenTelemetry();
  ASSERT_NE(telemetry, nullptr);
  v1::Hello hello;
  hello.set_agent_id("a1");
  hello.set_platform("linux/arm64");
  v1::InstalledProduct* installed = hello.add_installed();
  installed->set_product("app");
  installed->set_version("1.0.0");
  telemetry->RecordHello(hello);
  v1::Heartbeat heartbeat;
  heartbeat.set_agent_rss_bytes(1000);
  telemetry->RecordHeartbeat("a1", heartbeat);
  heartbeat.set_agent_rss_bytes(3000);
  telemetry->RecordHeartbeat("a1", heartbeat);
  EXPECT_EQ(telemetry->Backlog(), 3u);
  ASSERT_TRUE(telemetry->Flush().ok());
  EXPECT_EQ(telemetry->Backlog(), 0u);
  // A reconnect with the same version adds no history row.
  telemetry->RecordHello(hello);
  ASSERT_TRUE(telemetry->Flush().ok());
  EXPECT_EQ(Count("agent_versions"), 1);

  v1::QueryTelemetryResponse rss =
      Query("avg(heartbeats, agent_rss_bytes) by (platform)");
  ASSERT_EQ(rss.series_size(), 1);
  EXPECT_EQ(rss.series(0).labels().at("platform"), "linux/arm64");
  EXPECT_EQ(rss.series(0).points(0).value(), 2000);
}

TEST_F(TelemetryStoreTest, UnknownHelloVersionIsTakenFromTheStoreOnceResolved) {
  std::unique_ptr<TelemetryStore> telemetry = OpenTelemetry();
  ASSERT_NE(telemetry, nullptr);
  v1::Hello hello;
  hello.set_agent_id("a1");
  hello.set_platform("linux/amd64");
  hello.add_installed()->set_product("app");  // version unknown to the agent
  telemetry->RecordHello(hello);
  ASSERT_TRUE(telemetry->Flush().ok());
  EXPECT_EQ(Count("agent_versions"), 0);
  EXPECT_EQ(telemetry->Backlog(), 1u);  // waits for the control loop
  // The control loop resolves the version from the digest and commits it.
  v1::Agent agent;
  agent.set_agent_id("a1");
  agent.set_hostname("h1");
  agent.set_platform("linux/amd64");
  agent.set_agent_version("0.1.0");
  v1::InstalledProduct* installed = agent.add_installed();
  installed->set_product("app");
  installed->set_version("1.0.0");
  installed->set_sha256(std::string(32, 'x'));
  ASSERT_TRUE(fleet_->UpsertAgent(agent).ok());
  ASSERT_TRUE(telemetry->Flush().ok());
  EXPECT_EQ(Count("agent_versions"), 1);
  EXPECT_EQ(telemetry->Backlog(), 0u);
}

TEST_F(TelemetryStoreTest, FullBacklogDropsAndCounts) {
  TelemetryStore::Options options = Options();
  options.max_backlog = 2;
  auto telemetry = TelemetryStore::Open(options, clock_);
  ASSERT_TRUE(telemetry.ok());
  for (int i = 0; i < 5; ++i) (*telemetry)->RecordHeartbeat("a1", {});
  EXPECT_EQ((*telemetry)->Backlog(), 2u);
  EXPECT_EQ(dropped_.Value({"heartbeat"}), 3);
  ASSERT_TRUE((*telemetry)->Flush().ok());
  EXPECT_EQ(Count("heartbeats"), 2);
}

TEST_F(TelemetryStoreTest, RetentionDeletesOldRowsInBatchesKeepingVersions) {
  std::unique_ptr<TelemetryStore> telemetry = OpenTelemetry();
  ASSERT_NE(telemetry, nullptr);
  v1::Hello hello;
  hello.set_agent_id("a1");
  hello.set_platform("linux/amd64");
  hello.add_installed()->set_product("app");
  hello.mutable_installed(0)->set_version("1.0.0");
  telemetry->RecordHello(hello);
  for (int i = 0; i < 5; ++i) telemetry->RecordHeartbeat("a1", {});
  ASSERT_TRUE(telemetry->Flush().ok());
  clock_.Advance(absl::Minutes(10));
  StoreEvent(1, v1::UPDATE_PHASE_HEALTHY);  // a1: 1.0.0 -> 1.1.0
  ASSERT_TRUE(telemetry->Flush().ok());
  EXPECT_EQ(Count("agent_versions"), 2);

  clock_.Advance(absl::Minutes(30));
  ASSERT_EQ(*telemetry->ApplyRetention(), 0);  // nothing is an hour old

  clock_.Advance(absl::Hours(1));
  telemetry->RecordHeartbeat("a1", {});
  ASSERT_TRUE(telemetry->Flush().ok());
  absl::StatusOr<int64_t> deleted = telemetry->ApplyRetention();
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  // 5 heartbeats, 1 event, its minute rollup row, and a1's 1.0.0 row
  // (1.1.0 is still its latest).
  EXPECT_EQ(*deleted, 8);
  EXPECT_EQ(Count("update_events_1m"), 0);
  EXPECT_EQ(Count("heartbeats"), 1);
  EXPECT_EQ(Count("update_events"), 0);
  EXPECT_EQ(Count("agent_versions"), 1);
  v1::QueryTelemetryResponse agents = Query("count(agents) by (version)");
  ASSERT_EQ(agents.series_size(), 1);
  EXPECT_EQ(agents.series(0).labels().at("version"), "1.1.0");
  // The copied event is not copied again once retention removed it.
  ASSERT_TRUE(telemetry->Flush().ok());
  EXPECT_EQ(Count("update_events"), 0);
}

TEST_F(TelemetryStoreTest, WriterThreadWritesWithoutBeingAsked) {
  TelemetryStore::Options options = Options();
  options.flush_interval = absl::Milliseconds(20);
  auto telemetry = TelemetryStore::Open(options, clock_);
  ASSERT_TRUE(telemetry.ok());
  (*telemetry)->Start();
  (*telemetry)->RecordHeartbeat("a1", {});
  StoreEvent(1, v1::UPDATE_PHASE_RECEIVED);
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while ((Count("heartbeats") < 1 || Count("update_events") < 1) &&
         absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(Count("heartbeats"), 1);
  EXPECT_EQ(Count("update_events"), 1);
  (*telemetry)->RecordHeartbeat("a1", {});
  (*telemetry)->Stop();  // writes what is queued
  EXPECT_EQ(Count("heartbeats"), 2);
}

TEST(ParseRetentionTest, DaysDurationsAndZero) {
  EXPECT_EQ(*ParseRetention("30d"), absl::Hours(24 * 30));
  EXPECT_EQ(*ParseRetention("12h"), absl::Hours(12));
  EXPECT_EQ(*ParseRetention("0"), absl::ZeroDuration());
  for (const char* bad : {"", "d", "30 days", "-1d", "5000d", "1w"}) {
    absl::StatusOr<absl::Duration> parsed = ParseRetention(bad);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument)
        << bad;
  }
  EXPECT_EQ(ParseRetention("1w").status().message(),
            "telemetry retention \"1w\" is not a duration; use e.g. 30d, "
            "12h or 0 (keep everything)");
}

}  // namespace
}  // namespace fleet::controller::telemetry
