// A real Prometheus server (Debian's /usr/bin/prometheus) on 127.0.0.1
// scrapes a real fleet-controller with three real agents, and PromQL through
// Prometheus's HTTP API must return the agent count by version the fleet
// actually runs. The controller's own telemetry query (AdminService) must
// agree, and the shipped deploy/prometheus/prometheus.yml must be a config
// Prometheus accepts.
#include <grpcpp/grpcpp.h>
#include <httplib.h>

#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/files.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/fleet_harness.h"
#include "tests/testing/process.h"

namespace fleet::testing {
namespace {

constexpr char kOld[] = "1.0.0";
constexpr char kNew[] = "1.1.0";

// The controller logs {"msg":"listening",...,"http_port":N} once serving.
int HttpPortFromLog(const std::string& log) {
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    nlohmann::json entry = nlohmann::json::parse(line, nullptr, false);
    if (entry.is_object() && entry.contains("http_port")) {
      return entry["http_port"].get<int>();
    }
  }
  return 0;
}

// {version: value} of a PromQL instant query, or empty on any error.
std::map<std::string, double> QueryByVersion(int port,
                                             const std::string& promql) {
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(5, 0);
  auto response = client.Get(
      ("/api/v1/query?query=" + httplib::detail::encode_query_param(promql))
          .c_str());
  std::map<std::string, double> out;
  if (!response || response->status != 200) return out;
  nlohmann::json body = nlohmann::json::parse(response->body, nullptr, false);
  if (!body.is_object() || body.value("status", "") != "success") return out;
  for (const auto& sample : body["data"]["result"]) {
    out[sample["metric"].value("version", "")] =
        std::stod(sample["value"][1].get<std::string>());
  }
  return out;
}

class PrometheusE2eTest : public ::testing::Test {
 protected:
  void TearDown() override {
    if (prometheus_ != nullptr) prometheus_->Stop(absl::Seconds(5));
    if (HasFailure()) {
      std::cerr << fleet_.DumpLogs();
      if (prometheus_ != nullptr) std::cerr << prometheus_->ReadLog();
    }
  }

  FleetHarness fleet_;
  std::unique_ptr<Subprocess> prometheus_;
};

TEST_F(PrometheusE2eTest, PromQlCountsAgentsByTheVersionTheyRun) {
  ASSERT_TRUE(fleet_.StartController().ok()) << fleet_.DumpLogs();
  const std::string old_app = fleet_.MakeSampleApp(kOld);
  const std::string new_app = fleet_.MakeSampleApp(kNew);
  ASSERT_EQ(fleet_.PushRelease("app", kOld, old_app).exit_code, 0);
  ASSERT_EQ(fleet_.PushRelease("app", kNew, new_app).exit_code, 0);
  // Two agents run the old version, one the new.
  const std::map<std::string, std::string> fleet = {
      {"agent-a", kOld}, {"agent-b", kOld}, {"agent-c", kNew}};
  for (const auto& [name, version] : fleet) {
    AgentHandle* agent = fleet_.StartAgent(name);
    ASSERT_TRUE(
        fleet_.Preinstall(agent, version == kOld ? old_app : new_app).ok());
    ASSERT_TRUE(agent->process->Start().ok());
  }
  for (AgentHandle* agent : fleet_.agents()) {
    ASSERT_TRUE(WaitFor([&] { return agent->Runs(fleet.at(agent->name)); },
                        absl::Seconds(60)))
        << agent->name;
  }

  int http_port = 0;
  ASSERT_TRUE(WaitFor(
      [&] {
        http_port = HttpPortFromLog(
            ReadFile(fleet_.dir() + "/controller.log").value_or(""));
        return http_port != 0;
      },
      absl::Seconds(10)));
  // The controller itself must see the fleet before Prometheus can.
  httplib::Client controller("127.0.0.1", http_port);
  ASSERT_TRUE(WaitFor(
      [&] {
        auto page = controller.Get("/metrics");
        return page && page->status == 200 &&
               page->body.find(
                   "fleet_agents_connected{product=\"app\","
                   "version=\"1.0.0\",platform=") != std::string::npos &&
               page->body.find("version=\"1.1.0\"") != std::string::npos &&
               // The control loop's commits are timed too.
               page->body.find(
                   "fleet_sqlite_write_seconds_count{db=\"fleet\"}") !=
                   std::string::npos;
      },
      absl::Seconds(30)))
      << controller.Get("/metrics")->body;

  // Prometheus with the shipped scrape settings, pointed at this controller
  // and scraping every second so the test does not wait 15 s.
  const std::string prom_dir = fleet_.dir() + "/prometheus";
  ASSERT_TRUE(MakeDirs(prom_dir).ok());
  const std::string config = prom_dir + "/prometheus.yml";
  {
    std::ofstream out(config);
    out << "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        << "scrape_configs:\n  - job_name: fleet-controller\n"
        << "    metrics_path: /metrics\n    static_configs:\n"
        << "      - targets: ['127.0.0.1:" << http_port << "']\n";
  }
  const int prom_port = PickFreePort();
  prometheus_ = std::make_unique<Subprocess>(
      std::vector<std::string>{
          "/usr/bin/prometheus", "--config.file=" + config,
          "--storage.tsdb.path=" + prom_dir + "/data",
          absl::StrCat("--web.listen-address=127.0.0.1:", prom_port),
          "--storage.tsdb.retention.time=1h", "--log.level=warn"},
      prom_dir + "/prometheus.log");
  ASSERT_TRUE(prometheus_->Start().ok());

  const std::string promql =
      "sum by (version) (fleet_agents_connected{job=\"fleet-controller\","
      "product=\"app\"})";
  std::map<std::string, double> by_version;
  const std::map<std::string, double> expected = {{kOld, 2}, {kNew, 1}};
  ASSERT_TRUE(WaitFor(
      [&] {
        by_version = QueryByVersion(prom_port, promql);
        return by_version == expected;
      },
      absl::Seconds(40)))
      << "Prometheus answered " << nlohmann::json(by_version).dump() << "\n"
      << prometheus_->ReadLog();

  // The scrape target is healthy (up == 1) and every metric family parsed.
  EXPECT_EQ(QueryByVersion(prom_port, "up{job=\"fleet-controller\"}"),
            (std::map<std::string, double>{{"", 1}}));

  // The controller's own telemetry answers the same question over time.
  v1::QueryTelemetryRequest request;
  request.set_query("count(agents{product=\"app\"}) by (version)");
  const int64_t now = absl::ToUnixMillis(absl::Now());
  request.set_start_unix_ms(now - 60'000);
  request.set_end_unix_ms(now + 1'000);
  request.set_step_ms(1'000);
  std::map<std::string, double> latest;
  ASSERT_TRUE(WaitFor(
      [&] {
        grpc::ClientContext ctx;
        v1::QueryTelemetryResponse response;
        if (!fleet_.admin().QueryTelemetry(&ctx, request, &response).ok()) {
          return false;
        }
        latest.clear();
        for (const auto& series : response.series()) {
          if (series.points_size() == 0) continue;
          latest[series.labels().at("version")] =
              series.points(series.points_size() - 1).value();
        }
        return latest == expected;
      },
      absl::Seconds(20)))
      << nlohmann::json(latest).dump();

  // A malformed query is refused with its column.
  grpc::ClientContext ctx;
  v1::QueryTelemetryResponse unused;
  request.set_query("count(agents{version=1})");
  grpc::Status bad = fleet_.admin().QueryTelemetry(&ctx, request, &unused);
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(bad.error_message(),
            "column 22: expected a double-quoted value, found '1'");
}

TEST(DeployFilesTest, ShippedPrometheusConfigIsValid) {
  const std::string path = "deploy/prometheus/prometheus.yml";
  ASSERT_TRUE(ReadFile(path).ok()) << "missing " << path;
  RunResult check = fleet::testing::Run(
      {"/usr/bin/promtool", "check", "config", path}, {}, absl::Seconds(30));
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
}

TEST(DeployFilesTest, GrafanaDashboardIsJsonWithTheRequiredPanels) {
  absl::StatusOr<std::string> text =
      ReadFile("deploy/grafana/fleet-dashboard.json");
  ASSERT_TRUE(text.ok()) << text.status();
  nlohmann::json dashboard = nlohmann::json::parse(*text, nullptr, false);
  ASSERT_FALSE(dashboard.is_discarded()) << "not valid JSON";
  ASSERT_TRUE(dashboard["panels"].is_array());
  std::vector<std::string> exprs;
  std::vector<std::string> titles;
  for (const auto& panel : dashboard["panels"]) {
    titles.push_back(panel.value("title", ""));
    for (const auto& target : panel.value("targets", nlohmann::json::array())) {
      // Infinity targets (fleet's own query API) carry a URL, not PromQL.
      if (target.contains("expr")) exprs.push_back(target["expr"]);
    }
  }
  auto any_expr_has = [&](const std::string& needle) {
    for (const std::string& e : exprs) {
      if (e.find(needle) != std::string::npos) return true;
    }
    return false;
  };
  // Versions over time, rollout progress, failure rate, phase duration p95.
  EXPECT_TRUE(any_expr_has("fleet_agents_connected"));
  EXPECT_TRUE(any_expr_has("fleet_rollout_progress_ratio"));
  EXPECT_TRUE(
      any_expr_has("fleet_update_events_total{phase=~\"failed|rolled_back\""));
  EXPECT_TRUE(any_expr_has("histogram_quantile(0.95"));
  // Every PromQL expression must parse: promtool checks them as rules.
  const std::string rules = ::testing::TempDir() + "/dashboard_rules.yml";
  {
    std::ofstream out(rules);
    out << "groups:\n  - name: dashboard\n    rules:\n";
    for (size_t i = 0; i < exprs.size(); ++i) {
      nlohmann::json expr = exprs[i];
      out << "      - record: dashboard:expr" << i
          << "\n        expr: " << expr.dump() << "\n";
    }
  }
  RunResult check = fleet::testing::Run(
      {"/usr/bin/promtool", "check", "rules", rules}, {}, absl::Seconds(30));
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
}

}  // namespace
}  // namespace fleet::testing
