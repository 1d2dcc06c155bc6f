#include "controller/telemetry/query_engine.h"

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/sqlite/database.h"
#include "common/testing/fake_clock.h"
#include "controller/telemetry/telemetry_store.h"
#include "controller/testing/temp_dir.h"
#include "gtest/gtest.h"

namespace fleet::controller::telemetry {
namespace {

constexpr int64_t kStart = 1'700'000'000'000;
constexpr int64_t kStep = 60'000;
constexpr int64_t kEnd = kStart + 5 * kStep;

using Points = std::vector<std::pair<int64_t, double>>;
// labels (without __name__) rendered "k=v,k=v" -> points
using Result = std::map<std::string, Points>;

Result Flatten(const v1::QueryTelemetryResponse& response) {
  Result out;
  for (const v1::TelemetrySeries& series : response.series()) {
    std::string key;
    std::map<std::string, std::string> labels(series.labels().begin(),
                                              series.labels().end());
    for (const auto& [k, v] : labels) {
      if (k == "__name__") continue;
      key += (key.empty() ? "" : ",") + k + "=" + v;
    }
    Points& points = out[key];
    for (const v1::TelemetryPoint& p : series.points()) {
      points.emplace_back((p.time_unix_ms() - kStart) / kStep, p.value());
    }
  }
  return out;
}

class QueryEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    TelemetryStore::Options options;
    options.path = dir_.Join("telemetry.db");
    options.fleet_db_path = dir_.Join("fleet.db");
    // Opening creates the schema; rows below are written directly so each
    // test knows exactly what is stored.
    auto store = TelemetryStore::Open(options, clock_);
    ASSERT_TRUE(store.ok()) << store.status();
    auto db = sqlite::Database::Open(options.path);
    ASSERT_TRUE(db.ok());
    db_ = std::move(*db);
    engine_ = std::make_unique<QueryEngine>(options.path);
  }

  void Event(const std::string& agent, const std::string& phase,
             const std::string& version, int64_t duration_ms, int64_t time_ms,
             const std::string& error_class = "") {
    auto insert = db_->Prepare(
        "INSERT INTO update_events VALUES(?,?,'r1','app','linux/amd64','1.0.0',"
        "?,?,?,?,0,?,?)");
    ASSERT_TRUE(insert.ok());
    (*insert)->BindText(1, agent);
    (*insert)->BindInt64(2, ++seq_);
    (*insert)->BindText(3, version);
    (*insert)->BindText(4, phase);
    (*insert)->BindText(5, error_class);
    (*insert)->BindInt64(6, duration_ms);
    (*insert)->BindInt64(7, time_ms);
    (*insert)->BindInt64(8, time_ms);
    ASSERT_TRUE((*insert)->Run().ok());
  }

  void Version(const std::string& agent, const std::string& version,
               int64_t since_ms, const std::string& product = "app") {
    auto insert = db_->Prepare(
        "INSERT INTO agent_versions VALUES(?,?,?,?,'linux/amd64')");
    ASSERT_TRUE(insert.ok());
    (*insert)->BindText(1, agent);
    (*insert)->BindText(2, product);
    (*insert)->BindInt64(3, since_ms);
    (*insert)->BindText(4, version);
    ASSERT_TRUE((*insert)->Run().ok());
  }

  // The fixture's events: five one-minute buckets, bucket 1 and 3 empty.
  void AddEvents() {
    Event("a0", "healthy", "1.1.0", 9999, kStart - 1);  // before the range
    Event("a1", "healthy", "1.1.0", 100, kStart + 1'000);
    Event("a2", "healthy", "1.1.0", 300, kStart + 2'000);
    Event("a3", "failed", "1.1.0", 50, kStart + 3'000, "disk");
    Event("a4", "healthy", "1.2.0", 1000, kStart + 2 * kStep);
    Event("a5", "healthy", "1.2.0", 200, kStart + 2 * kStep + 10);
    Event("a6", "healthy", "1.2.0", 400, kStart + 2 * kStep + 20);
    Event("a7", "healthy", "1.2.0", 800, kStart + 3 * kStep - 1);
    Event("a8", "healthy", "1.1.0", 700, kStart + 5 * kStep - 1);
    Event("a9", "healthy", "1.1.0", 9999, kEnd);  // the end is exclusive
  }

  Result Run(const std::string& query) {
    v1::QueryTelemetryRequest request;
    request.set_query(query);
    request.set_start_unix_ms(kStart);
    request.set_end_unix_ms(kEnd);
    request.set_step_ms(kStep);
    absl::StatusOr<v1::QueryTelemetryResponse> response = engine_->Run(request);
    EXPECT_TRUE(response.ok()) << query << ": " << response.status();
    if (!response.ok()) return {};
    for (const auto& series : response->series()) {
      EXPECT_EQ(series.labels().at("__name__"),
                query.find("agents") != std::string::npos ? "agents"
                                                          : "update_events");
    }
    return Flatten(*response);
  }

  testing::TempDir dir_;
  FakeClock clock_;
  std::unique_ptr<sqlite::Database> db_;
  std::unique_ptr<QueryEngine> engine_;
  int64_t seq_ = 0;
};

TEST_F(QueryEngineTest, CountByVersionOmitsEmptyBuckets) {
  AddEvents();
  EXPECT_EQ(Run(R"(count(update_events{phase="healthy"}) by (version))"),
            (Result{{"version=1.1.0", {{0, 2}, {4, 1}}},
                    {"version=1.2.0", {{2, 4}}}}));
  EXPECT_EQ(Run("update_events"), (Result{{"", {{0, 3}, {2, 4}, {4, 1}}}}));
}

TEST_F(QueryEngineTest, PercentilesAreNearestRank) {
  AddEvents();
  // Bucket 0 healthy: {100, 300}; bucket 2: {200, 400, 800, 1000}; 4: {700}.
  EXPECT_EQ(Run(R"(p50(update_events{phase="healthy"}, duration_ms))"),
            (Result{{"", {{0, 100}, {2, 400}, {4, 700}}}}));
  EXPECT_EQ(Run(R"(p90(update_events{phase="healthy"}, duration_ms))"),
            (Result{{"", {{0, 300}, {2, 1000}, {4, 700}}}}));
  EXPECT_EQ(Run(R"(p99(update_events{phase="healthy"}, duration_ms))"),
            (Result{{"", {{0, 300}, {2, 1000}, {4, 700}}}}));
}

TEST_F(QueryEngineTest, SumAvgMinMaxAndRate) {
  AddEvents();
  EXPECT_EQ(Run(R"(sum(update_events{version="1.2.0"}, duration_ms))"),
            (Result{{"", {{2, 2400}}}}));
  EXPECT_EQ(Run(R"(avg(update_events{version="1.2.0"}, duration_ms))"),
            (Result{{"", {{2, 600}}}}));
  EXPECT_EQ(Run(R"(min(update_events, duration_ms) by (phase))"),
            (Result{{"phase=failed", {{0, 50}}},
                    {"phase=healthy", {{0, 100}, {2, 200}, {4, 700}}}}));
  EXPECT_EQ(Run(R"(max(update_events{phase!="failed"}, duration_ms))"),
            (Result{{"", {{0, 300}, {2, 1000}, {4, 700}}}}));
  // Three events in a 60 s bucket.
  EXPECT_EQ(Run(R"(rate(update_events{version="1.1.0"}))"),
            (Result{{"", {{0, 0.05}, {4, 1.0 / 60}}}}));
}

TEST_F(QueryEngineTest, RegexMatchersMatchWholeValues) {
  AddEvents();
  EXPECT_EQ(Run(R"(count(update_events{version=~"1\\.2.*"}))"),
            (Result{{"", {{2, 4}}}}));
  EXPECT_EQ(Run(R"(count(update_events{version=~"1\\.2"}))"), Result{});
  EXPECT_EQ(Run(R"(count(update_events{error_class!~"d.*"}) by (phase))"),
            (Result{{"phase=healthy", {{0, 2}, {2, 4}, {4, 1}}}}));
}

TEST_F(QueryEngineTest, AgentsIsTheVersionGaugeAtEachStepEnd) {
  Version("a1", "1.0.0", kStart - 10'000);
  Version("a2", "1.0.0", kStart + 30'000);
  Version("a1", "1.1.0", kStart + kStep);  // belongs to bucket 1
  Version("a3", "1.1.0", kStart + 150'000);
  Version("a2", "1.1.0", kStart + 200'000);
  Version("a9", "7.0.0", kStart + 10'000, "other");
  EXPECT_EQ(Run(R"(count(agents{product="app"}) by (version))"),
            (Result{{"version=1.0.0", {{0, 2}, {1, 1}, {2, 1}}},
                    {"version=1.1.0", {{1, 1}, {2, 2}, {3, 3}, {4, 3}}}}));
  EXPECT_EQ(Run(R"(agents{version="1.0.0"})"),
            (Result{{"", {{0, 2}, {1, 1}, {2, 1}}}}));
  EXPECT_EQ(Run(R"(agents{product!="app"})"),
            (Result{{"", {{0, 1}, {1, 1}, {2, 1}, {3, 1}, {4, 1}}}}));
}

TEST_F(QueryEngineTest, MinuteRollupsAnswerAlignedQueriesLikeTheRawRows) {
  // kStart is not on a minute; these queries are.
  const int64_t start = kStart - kStart % 60'000;
  const int64_t end = start + 10 * 60'000;
  AddEvents();  // inside [start, end), at various offsets within minutes
  Event("b1", "failed", "1.2.0", 70, start + 7 * 60'000 + 59'999, "disk");
  QueryLimits raw_limits;
  raw_limits.use_rollups = false;
  QueryEngine raw(dir_.Join("telemetry.db"), raw_limits);
  const char* queries[] = {
      "count(update_events) by (version)",
      R"(rate(update_events{phase!="failed"}) by (platform))",
      R"(sum(update_events{version=~"1\\.1.*"}, duration_ms) by (phase))",
      "avg(update_events, duration_ms) by (error_class, product)",
  };
  for (const char* query : queries) {
    for (int64_t step : {60'000, 180'000, 600'000}) {
      absl::StatusOr<Query> parsed = ParseQuery(query);
      ASSERT_TRUE(parsed.ok()) << query << ": " << parsed.status();
      auto from_rollups = engine_->Evaluate(*parsed, start, end, step);
      auto from_rows = raw.Evaluate(*parsed, start, end, step);
      ASSERT_TRUE(from_rollups.ok()) << from_rollups.status();
      ASSERT_TRUE(from_rows.ok()) << from_rows.status();
      EXPECT_GT(from_rows->series_size(), 0) << query;
      EXPECT_EQ(from_rollups->DebugString(), from_rows->DebugString())
          << query << " step " << step;
    }
  }
  // The rollups really are what answers: without the raw rows, they still
  // do, while percentiles (never from rollups) find nothing.
  ASSERT_TRUE(db_->Execute("DELETE FROM update_events").ok());
  absl::StatusOr<Query> count = ParseQuery("count(update_events)");
  auto counted = engine_->Evaluate(*count, start, end, 600'000);
  ASSERT_TRUE(counted.ok());
  ASSERT_EQ(counted->series_size(), 1);
  // a0..a9 (all inside this wider range) and b1.
  EXPECT_EQ(counted->series(0).points(0).value(), 11);
  absl::StatusOr<Query> p95 = ParseQuery("p95(update_events, duration_ms)");
  EXPECT_EQ(engine_->Evaluate(*p95, start, end, 600'000)->series_size(), 0);
}

TEST_F(QueryEngineTest, RejectsBadRequestsPrecisely) {
  struct Case {
    std::string query;
    int64_t start, end, step;
    absl::StatusCode code;
    std::string message;
  };
  const Case cases[] = {
      {"", kStart, kEnd, kStep, absl::StatusCode::kInvalidArgument,
       "query is empty; e.g. count(update_events{phase=\"failed\"}) by "
       "(version)"},
      {"update_events", kEnd, kStart, kStep, absl::StatusCode::kInvalidArgument,
       "end_unix_ms (1700000000000) must be after start_unix_ms "
       "(1700000300000)"},
      {"update_events", kStart, kEnd, 10, absl::StatusCode::kInvalidArgument,
       "step_ms is 10; at least 1000"},
      {"update_events", kStart, kStart + 11'001'000, 1000,
       absl::StatusCode::kInvalidArgument,
       "range / step gives 11001 points per series; at most 11000: use a "
       "larger step or a shorter range"},
      {"count(nope)", kStart, kEnd, kStep, absl::StatusCode::kInvalidArgument,
       "unknown metric \"nope\" (update_events, heartbeats, agents)"},
      {"count(update_events) by (colour)", kStart, kEnd, kStep,
       absl::StatusCode::kInvalidArgument,
       "unknown label \"colour\" in by (...) for update_events (agent_id, "
       "rollout, product, platform, phase, error_class, from_version, "
       "to_version, version)"},
      {"avg(heartbeats, duration_ms)", kStart, kEnd, kStep,
       absl::StatusCode::kInvalidArgument,
       "unknown field \"duration_ms\" of heartbeats (uptime_seconds, "
       "program_restarts, agent_rss_bytes, program_rss_bytes, agent_cpu_ms, "
       "program_cpu_ms, state_dir_free_bytes)"},
      {"max(agents, x)", kStart, kEnd, kStep,
       absl::StatusCode::kInvalidArgument,
       "agents is a gauge of agent counts: use count(agents{...}) or "
       "agents{...}, not max"},
      {"update_events{version=~\"(\"}", kStart, kEnd, kStep,
       absl::StatusCode::kInvalidArgument, ""},
      {"count(update_events{", kStart, kEnd, kStep,
       absl::StatusCode::kInvalidArgument,
       "column 21: expected a label name, found the end of the query"},
  };
  for (const Case& c : cases) {
    v1::QueryTelemetryRequest request;
    request.set_query(c.query);
    request.set_start_unix_ms(c.start);
    request.set_end_unix_ms(c.end);
    request.set_step_ms(c.step);
    absl::StatusOr<v1::QueryTelemetryResponse> response = engine_->Run(request);
    ASSERT_FALSE(response.ok()) << c.query;
    EXPECT_EQ(response.status().code(), c.code) << c.query;
    if (!c.message.empty()) {
      EXPECT_EQ(response.status().message(), c.message);
    }
  }
}

TEST_F(QueryEngineTest, BigScansAreRefused) {
  AddEvents();
  QueryLimits limits;
  limits.max_rows = 3;
  QueryEngine small(dir_.Join("telemetry.db"), limits);
  v1::QueryTelemetryRequest request;
  request.set_query("update_events");
  request.set_start_unix_ms(kStart);
  request.set_end_unix_ms(kEnd);
  request.set_step_ms(kStep);
  absl::StatusOr<v1::QueryTelemetryResponse> response = small.Run(request);
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), absl::StatusCode::kResourceExhausted);
  request.set_query(R"(update_events{version="1.2.0"})");  // 4 rows match
  EXPECT_EQ(small.Run(request).status().code(),
            absl::StatusCode::kResourceExhausted);
  request.set_query(R"(update_events{phase="failed"})");
  EXPECT_TRUE(small.Run(request).ok());
}

}  // namespace
}  // namespace fleet::controller::telemetry
