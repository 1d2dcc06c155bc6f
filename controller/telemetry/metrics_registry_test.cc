#include "controller/telemetry/metrics_registry.h"

#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace fleet::controller::telemetry {
namespace {

TEST(MetricsRegistryTest, RendersCountersGaugesAndHistograms) {
  MetricsRegistry registry;
  MetricFamily& events = registry.AddCounter(
      "fleet_update_events_total", "Update events", {"phase", "error_class"});
  MetricFamily& agents =
      registry.AddGauge("fleet_agents_connected", "Agents", {"version"});
  MetricFamily& durations = registry.AddHistogram(
      "fleet_phase_seconds", "Durations", {"phase"}, {0.1, 1});
  events.Increment({"failed", "disk"});
  events.Increment({"failed", "disk"}, 2);
  events.Increment({"failed", "disk"}, -5);  // counters never go down
  agents.Set({"1.0.0"}, 3);
  agents.Set({"we\"ird\\\n"}, 1);
  durations.Observe({"verified"}, 0.05);
  durations.Observe({"verified"}, 0.5);
  durations.Observe({"verified"}, 7);

  EXPECT_EQ(registry.Render(),
            "# HELP fleet_update_events_total Update events\n"
            "# TYPE fleet_update_events_total counter\n"
            "fleet_update_events_total{phase=\"failed\",error_class=\"disk\"} "
            "3\n"
            "# HELP fleet_agents_connected Agents\n"
            "# TYPE fleet_agents_connected gauge\n"
            "fleet_agents_connected{version=\"1.0.0\"} 3\n"
            "fleet_agents_connected{version=\"we\\\"ird\\\\\\n\"} 1\n"
            "# HELP fleet_phase_seconds Durations\n"
            "# TYPE fleet_phase_seconds histogram\n"
            "fleet_phase_seconds_bucket{phase=\"verified\",le=\"0.1\"} 1\n"
            "fleet_phase_seconds_bucket{phase=\"verified\",le=\"1\"} 2\n"
            "fleet_phase_seconds_bucket{phase=\"verified\",le=\"+Inf\"} 3\n"
            "fleet_phase_seconds_sum{phase=\"verified\"} 7.55\n"
            "fleet_phase_seconds_count{phase=\"verified\"} 3\n");
}

TEST(MetricsRegistryTest, CollectorsRefreshGaugesBeforeEachRender) {
  MetricsRegistry registry;
  MetricFamily& gauge = registry.AddGauge("g", "h", {});
  int calls = 0;
  registry.AddCollector([&] { gauge.Set({}, ++calls); });
  EXPECT_NE(registry.Render().find("\ng 1\n"), std::string::npos);
  EXPECT_NE(registry.Render().find("\ng 2\n"), std::string::npos);
  gauge.Clear();
  EXPECT_EQ(gauge.Value({}), 0);
}

TEST(MetricsRegistryTest, WrongLabelCountIsIgnored) {
  MetricsRegistry registry;
  MetricFamily& counter = registry.AddCounter("c_total", "h", {"a"});
  counter.Increment({});
  counter.Increment({"x", "y"});
  EXPECT_EQ(registry.Render(), "# HELP c_total h\n# TYPE c_total counter\n");
}

TEST(MetricsRegistryTest, ConcurrentIncrementsAllCount) {
  MetricsRegistry registry;
  MetricFamily& counter = registry.AddCounter("c_total", "h", {"k"});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) counter.Increment({"x"});
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(counter.Value({"x"}), 40000);
}

}  // namespace
}  // namespace fleet::controller::telemetry
