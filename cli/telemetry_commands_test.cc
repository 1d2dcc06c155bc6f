#include "cli/telemetry_commands.h"

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstdio>
#include <memory>
#include <sstream>
#include <string>

#include "cli/command_context.h"
#include "cli/errors.h"
#include "common/sqlite/database.h"
#include "common/testing/fake_clock.h"
#include "controller/telemetry/query_engine.h"
#include "controller/telemetry/telemetry_store.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace fleet::cli {
namespace {

// AdminService whose QueryTelemetry is the controller's real query engine
// over a real telemetry.db (the other RPCs are unimplemented).
class TelemetryAdmin final : public v1::AdminService::Service {
 public:
  explicit TelemetryAdmin(const std::string& path) : engine_(path) {}
  grpc::Status QueryTelemetry(grpc::ServerContext*,
                              const v1::QueryTelemetryRequest* request,
                              v1::QueryTelemetryResponse* response) override {
    ++calls;
    last = *request;
    auto result = engine_.Run(*request);
    if (!result.ok()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          std::string(result.status().message()));
    }
    *response = *result;
    return grpc::Status::OK;
  }
  std::atomic<int> calls{0};
  v1::QueryTelemetryRequest last;

 private:
  controller::telemetry::QueryEngine engine_;
};

class TelemetryCommandsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // A file set of each test's own (the db and its -wal/-shm files).
    const std::string dir = ::testing::TempDir();
    const std::string name =
        ::testing::UnitTest::GetInstance()->current_test_info()->name();
    const std::string path = dir + "/telemetry_" + name + ".db";
    for (const char* suffix : {"", "-wal", "-shm"}) {
      std::remove((path + suffix).c_str());
    }
    controller::telemetry::TelemetryStore::Options options;
    options.path = path;
    options.fleet_db_path = dir + "/fleet_" + name + ".db";
    ASSERT_TRUE(
        controller::telemetry::TelemetryStore::Open(options, clock_).ok());
    auto db = sqlite::Database::Open(path);
    ASSERT_TRUE(db.ok());
    // now = 1800000000000; --since 5m --step 1m: buckets start at now-5m.
    // 1.1.0 healthy: bucket 0 one event, bucket 2 three, bucket 4 two;
    // 1.0.0 failed: bucket 1 one.
    const int64_t start = 1'800'000'000'000 - 300'000;
    int seq = 0;
    auto add = [&](const char* version, const char* phase, int bucket) {
      const int64_t t = start + bucket * 60'000 + 5;
      ASSERT_TRUE((*db)
                      ->Execute(absl::StrCat(
                          "INSERT INTO update_events VALUES('a", ++seq,
                          "',1,'r1','app','linux/amd64','0.9.0','", version,
                          "','", phase, "','',100,0,", t, ",", t, ")"))
                      .ok());
    };
    add("1.1.0", "healthy", 0);
    for (int i = 0; i < 3; ++i) add("1.1.0", "healthy", 2);
    for (int i = 0; i < 2; ++i) add("1.1.0", "healthy", 4);
    add("1.0.0", "failed", 1);

    service_ = std::make_unique<TelemetryAdmin>(path);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    address_ = absl::StrCat("127.0.0.1:", port);
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
  }

  absl::Status Query(TelemetryQueryOptions options,
                     OutputFormat global = OutputFormat::kTable) {
    GlobalOptions g;
    g.controller = address_;
    g.output = global;
    CommandContext ctx(g, io_);
    return TelemetryQuery(options, ctx);
  }

  FakeClock clock_{absl::FromUnixMillis(1'800'000'000'000)};
  std::unique_ptr<TelemetryAdmin> service_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  std::ostringstream out_;
  std::ostringstream err_;
  Io io_{out_, err_, false, clock_};
};

TEST_F(TelemetryCommandsTest, TableHasOneRowPerSeriesWithSparkline) {
  ASSERT_TRUE(Query({.query = "count(update_events) by (version)",
                     .since = "5m",
                     .step = "1m"})
                  .ok())
      << err_.str();
  EXPECT_EQ(service_->last.start_unix_ms(), 1'800'000'000'000 - 300'000);
  EXPECT_EQ(service_->last.end_unix_ms(), 1'800'000'000'000);
  EXPECT_EQ(service_->last.step_ms(), 60'000);
  const std::string out = out_.str();
  std::istringstream lines(out);
  std::string header, first, second;
  std::getline(lines, header);
  std::getline(lines, first);
  std::getline(lines, second);
  EXPECT_NE(header.find("SERIES"), std::string::npos) << out;
  EXPECT_NE(header.find("TREND"), std::string::npos);
  // Columns are padded; compare with runs of spaces folded to one.
  auto fold = [](const std::string& line) {
    std::string out;
    for (char c : line) {
      if (c == ' ' && !out.empty() && out.back() == ' ') continue;
      out += c;
    }
    return out;
  };
  // version=1.0.0: one point (1) in bucket 1 of 5.
  EXPECT_EQ(fold(first), "version=1.0.0 1 1 1 1 ▄ ") << out;
  // version=1.1.0: 1, -, 3, -, 2 -> points 3, last 2, min 1, max 3.
  EXPECT_EQ(fold(second), "version=1.1.0 3 2 1 3 ▁ █ ▅") << out;
}

TEST_F(TelemetryCommandsTest, CsvHasOneLinePerPoint) {
  ASSERT_TRUE(Query({.query = "update_events{phase=\"healthy\"}",
                     .since = "5m",
                     .step = "1m",
                     .format = "csv"})
                  .ok())
      << err_.str();
  EXPECT_EQ(out_.str(),
            "time,time_unix_ms,value\n"
            "2027-01-15T07:55:00Z,1799999700000,1\n"
            "2027-01-15T07:57:00Z,1799999820000,3\n"
            "2027-01-15T07:59:00Z,1799999940000,2\n");
}

TEST_F(TelemetryCommandsTest, JsonIsTheResponse) {
  ASSERT_TRUE(Query({.query = "count(update_events) by (phase)",
                     .since = "5m",
                     .step = "5m"},
                    OutputFormat::kJson)
                  .ok());
  nlohmann::json json = nlohmann::json::parse(out_.str());
  ASSERT_EQ(json["series"].size(), 2u);
  EXPECT_EQ(json["series"][0]["labels"]["phase"], "failed");
  EXPECT_EQ(json["series"][1]["points"][0]["value"], 6.0);
}

TEST_F(TelemetryCommandsTest, RefusedQueryNamesTheColumn) {
  absl::Status s = Query({.query = "count(update_events{phase=failed})"});
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("column 27: expected a double-quoted value"),
            std::string::npos)
      << s.message();
  EXPECT_NE(s.message().find("docs/telemetry.md"), std::string::npos);
  EXPECT_EQ(ExitCodeFor(s), kExitFailed);
}

TEST_F(TelemetryCommandsTest, BadFlagsAreUsageErrorsBeforeAnyRpc) {
  struct Case {
    TelemetryQueryOptions options;
    const char* flag;
  };
  const Case cases[] = {
      {{.query = ""}, "no query given"},
      {{.query = "agents", .since = "yesterday"}, "--since"},
      {{.query = "agents", .until = "soon"}, "--until"},
      {{.query = "agents", .since = "2027-01-15T09:00:00Z", .until = "1h"},
       "--since"},
      {{.query = "agents", .step = "0s"}, "--step"},
      {{.query = "agents", .format = "xml"}, "-o"},
  };
  for (const Case& c : cases) {
    absl::Status s = Query(c.options);
    EXPECT_TRUE(IsUsageError(s)) << c.flag << ": " << s;
    EXPECT_NE(s.message().find(c.flag), std::string::npos) << s.message();
  }
  EXPECT_EQ(service_->calls, 0);
}

TEST_F(TelemetryCommandsTest, EmptyResultSaysSoOnStderr) {
  ASSERT_TRUE(Query({.query = "heartbeats", .since = "5m"}).ok());
  EXPECT_EQ(out_.str(), "");
  EXPECT_NE(err_.str().find("no data for heartbeats"), std::string::npos);
}

TEST(SparklineTest, ScalesGapsAndFolds) {
  const double gap = std::numeric_limits<double>::quiet_NaN();
  EXPECT_EQ(Sparkline({0, 1, 2, 3, 4, 5, 6, 7}), "▁▂▃▄▅▆▇█");
  EXPECT_EQ(Sparkline({5, gap, 5}), "▄ ▄");
  EXPECT_EQ(Sparkline({}), "");
  // 8 buckets into 4 cells: each cell the max of two.
  EXPECT_EQ(Sparkline({0, 7, 0, 0, 3, 1, gap, gap}, 4), "█▁▄ ");
}

}  // namespace
}  // namespace fleet::cli
