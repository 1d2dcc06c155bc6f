#include "controller/http_server.h"

#include <httplib.h>

#include <atomic>
#include <string>

#include "common/sqlite/database.h"
#include "common/testing/fake_clock.h"
#include "controller/telemetry/query_engine.h"
#include "controller/telemetry/telemetry_store.h"
#include "controller/testing/temp_dir.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace fleet::controller {
namespace {

TEST(HttpServerTest, ParsesHostPort) {
  struct Case {
    std::string address;
    bool ok;
    std::string host;
    int port;
  };
  const Case cases[] = {
      {"127.0.0.1:7480", true, "127.0.0.1", 7480},
      {"0.0.0.0:0", true, "0.0.0.0", 0},
      {"[::1]:80", true, "::1", 80},
      {"localhost", false, "", 0},
      {":80", false, "", 0},
      {"host:", false, "", 0},
      {"host:65536", false, "", 0},
      {"host:-1", false, "", 0},
      {"host:http", false, "", 0},
  };
  for (const Case& c : cases) {
    auto parsed = ParseHostPort(c.address);
    EXPECT_EQ(parsed.ok(), c.ok) << c.address;
    if (c.ok && parsed.ok()) {
      EXPECT_EQ(parsed->first, c.host);
      EXPECT_EQ(parsed->second, c.port);
    } else if (!parsed.ok()) {
      EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    }
  }
}

TEST(HttpServerTest, HealthzReportsConnectedAgents) {
  std::atomic<size_t> agents{3};
  HttpServer server([&] { return agents.load(); });
  absl::StatusOr<int> port = server.Start("127.0.0.1:0");
  ASSERT_TRUE(port.ok()) << port.status();
  httplib::Client client("127.0.0.1", *port);
  auto response = client.Get("/healthz");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
  nlohmann::json body = nlohmann::json::parse(response->body);
  EXPECT_EQ(body["status"], "ok");
  EXPECT_EQ(body["connected_agents"], 3);
  EXPECT_EQ(client.Get("/nope")->status, 404);
  server.Stop();
  EXPECT_FALSE(client.Get("/healthz"));
}

TEST(HttpServerTest, BusyPortIsUnavailable) {
  HttpServer first([] { return size_t{0}; });
  absl::StatusOr<int> port = first.Start("127.0.0.1:0");
  ASSERT_TRUE(port.ok());
  HttpServer second([] { return size_t{0}; });
  EXPECT_EQ(second.Start("127.0.0.1:" + std::to_string(*port)).status().code(),
            absl::StatusCode::kUnavailable);
}

TEST(HttpServerTest, MetricsServesTheExpositionFormat) {
  HttpServer server([] { return size_t{0}; });
  int renders = 0;
  server.SetMetrics([&] {
    ++renders;
    return std::string("# TYPE up gauge\nup 1\n");
  });
  absl::StatusOr<int> port = server.Start("127.0.0.1:0");
  ASSERT_TRUE(port.ok()) << port.status();
  httplib::Client client("127.0.0.1", *port);
  auto response = client.Get("/metrics");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->body, "# TYPE up gauge\nup 1\n");
  EXPECT_EQ(response->get_header_value("Content-Type"),
            "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(renders, 1);
}

TEST(HttpServerTest, QueryEndpointAnswersRowsSeriesAndErrors) {
  testing::TempDir dir;
  FakeClock clock;
  telemetry::TelemetryStore::Options options;
  options.path = dir.Join("telemetry.db");
  options.fleet_db_path = dir.Join("fleet.db");
  ASSERT_TRUE(telemetry::TelemetryStore::Open(options, clock).ok());
  {
    auto db = sqlite::Database::Open(options.path);
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE((*db)
                    ->Execute("INSERT INTO update_events VALUES('a1',1,'r1',"
                              "'app','linux/amd64','1.0.0','1.1.0','healthy',"
                              "'',250,0,120000,120000),('a2',1,'r1','app',"
                              "'linux/amd64','1.0.0','1.1.0','healthy','',750,"
                              "0,130000,130000)")
                    .ok());
  }
  telemetry::QueryEngine engine(options.path);
  HttpServer server([] { return size_t{0}; });
  server.SetQuery([&](const v1::QueryTelemetryRequest& request) {
    return engine.Run(request);
  });
  absl::StatusOr<int> port = server.Start("127.0.0.1:0");
  ASSERT_TRUE(port.ok()) << port.status();
  httplib::Client client("127.0.0.1", *port);

  auto rows = client.Get(
      "/api/v1/query?query=avg(update_events,%20duration_ms)%20by%20(version)"
      "&from=60000&to=180000&step=1m");
  ASSERT_TRUE(rows);
  ASSERT_EQ(rows->status, 200) << rows->body;
  EXPECT_EQ(nlohmann::json::parse(rows->body),
            nlohmann::json::parse(
                R"([{"time":120000,"value":500.0,"version":"1.1.0"}])"));

  auto series = client.Get(
      "/api/v1/query?query=update_events&from=60000&to=180000&step=60000"
      "&format=series");
  ASSERT_TRUE(series);
  ASSERT_EQ(series->status, 200) << series->body;
  EXPECT_EQ(nlohmann::json::parse(series->body),
            nlohmann::json::parse(
                R"({"series":[{"labels":{"__name__":"update_events"},
                                "points":[[120000,2.0]]}]})"));

  struct Case {
    std::string path;
    int status;
    std::string error;
  };
  const Case cases[] = {
      {"/api/v1/query?from=1&to=2&step=1s", 400,
       "parameter \"query\" is missing: add query=count(update_events)"},
      {"/api/v1/query?query=x&to=2&step=1s", 400,
       "parameter \"from\" must be Unix milliseconds (Grafana: ${__from})"},
      {"/api/v1/query?query=x&from=1&to=2&step=soon", 400,
       "parameter \"step\" is \"soon\"; use milliseconds or a duration like "
       "30s or 1m (Grafana: ${__interval_ms})"},
      {"/api/v1/query?query=count(&from=1&to=200000&step=1m", 400,
       "column 7: expected a metric name inside the function, found the end "
       "of the query"},
      {"/api/v1/query?query=x&from=1&to=200000&step=1m&format=csv", 400,
       "parameter \"format\" must be rows or series"},
  };
  for (const Case& c : cases) {
    auto response = client.Get(c.path);
    ASSERT_TRUE(response) << c.path;
    EXPECT_EQ(response->status, c.status) << c.path;
    EXPECT_EQ(nlohmann::json::parse(response->body)["error"], c.error)
        << c.path;
  }
}

TEST(HttpServerTest, UnsetHandlersAreNotFound) {
  HttpServer server([] { return size_t{0}; });
  absl::StatusOr<int> port = server.Start("127.0.0.1:0");
  ASSERT_TRUE(port.ok());
  httplib::Client client("127.0.0.1", *port);
  EXPECT_EQ(client.Get("/metrics")->status, 404);
  EXPECT_EQ(client.Get("/api/v1/query?query=x")->status, 404);
}

}  // namespace
}  // namespace fleet::controller
