#include "controller/telemetry/controller_metrics.h"

#include <memory>
#include <string>

#include "controller/store/store.h"
#include "controller/testing/temp_dir.h"
#include "gtest/gtest.h"

namespace fleet::controller::telemetry {
namespace {

bool Has(const std::string& page, const std::string& line) {
  return page.find("\n" + line + "\n") != std::string::npos;
}

TEST(ControllerMetricsTest, ScrapeReadsFleetStateFromTheStore) {
  testing::TempDir dir;
  auto store = Store::Open(dir.Join("fleet.db"));
  ASSERT_TRUE(store.ok()) << store.status();
  auto add_agent = [&](const std::string& id, const std::string& version,
                       bool connected) {
    v1::Agent agent;
    agent.set_agent_id(id);
    agent.set_hostname(id);
    agent.set_platform("linux/amd64");
    agent.set_agent_version("0.1.0");
    v1::InstalledProduct* product = agent.add_installed();
    product->set_product("app");
    product->set_version(version);
    product->set_sha256(std::string(32, 'x'));
    ASSERT_TRUE((*store)->UpsertAgent(agent).ok());
    ASSERT_TRUE((*store)->SetAgentConnected(id, connected, 1).ok());
  };
  add_agent("a1", "1.0.0", true);
  add_agent("a2", "1.1.0", true);
  add_agent("a3", "1.1.0", true);
  add_agent("a4", "1.1.0", false);  // offline: not counted

  RolloutRecord record;
  record.rollout.set_rollout_id("r1");
  record.rollout.set_product("app");
  record.rollout.set_version("1.1.0");
  record.rollout.set_state(v1::ROLLOUT_STATE_RUNNING);
  record.rollout.add_stages()->set_percent(100);
  ASSERT_TRUE((*store)->InsertRollout(record).ok());
  for (const char* id : {"a2", "a3", "a4"}) {
    v1::RolloutTarget target;
    target.set_agent_id(id);
    target.set_state(std::string(id) == "a4" ? v1::TARGET_STATE_DOWNLOADING
                                             : v1::TARGET_STATE_HEALTHY);
    ASSERT_TRUE((*store)->UpsertTarget("r1", target).ok());
  }

  size_t streams = 3;
  auto metrics = ControllerMetrics::Open(
      dir.Join("fleet.db"), [&] { return streams; }, [] { return size_t{7}; });
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  (*metrics)->DirectiveSent("update");
  (*metrics)->DirectiveSent("update");
  (*metrics)->FleetWrite(0.002);
  const std::string page = (*metrics)->Render();
  EXPECT_TRUE(Has(page,
                  "fleet_agents_connected{product=\"app\",version=\"1.0.0\","
                  "platform=\"linux/amd64\"} 1"))
      << page;
  EXPECT_TRUE(Has(page,
                  "fleet_agents_connected{product=\"app\",version=\"1.1.0\","
                  "platform=\"linux/amd64\"} 2"));
  EXPECT_TRUE(Has(page, "fleet_agent_streams 3"));
  EXPECT_TRUE(Has(page, "fleet_telemetry_backlog 7"));
  EXPECT_TRUE(Has(page,
                  "fleet_rollout_info{rollout=\"r1\",product=\"app\","
                  "version=\"1.1.0\",state=\"running\"} 1"));
  EXPECT_TRUE(
      Has(page, "fleet_rollout_targets{rollout=\"r1\",state=\"healthy\"} 2"));
  EXPECT_TRUE(Has(page,
                  "fleet_rollout_targets{rollout=\"r1\",state=\"downloading\"} "
                  "1"));
  EXPECT_NE(page.find("fleet_rollout_progress_ratio{rollout=\"r1\"} 0.666"),
            std::string::npos);
  EXPECT_TRUE(Has(page, "fleet_directives_sent_total{kind=\"update\"} 2"));
  EXPECT_TRUE(Has(page, "fleet_sqlite_write_seconds_count{db=\"fleet\"} 1"));

  // Gauges follow the store: a1 disconnects, the next scrape drops it.
  ASSERT_TRUE((*store)->SetAgentConnected("a1", false, 2).ok());
  streams = 2;
  const std::string next = (*metrics)->Render();
  EXPECT_EQ(next.find("version=\"1.0.0\""), std::string::npos);
  EXPECT_TRUE(Has(next, "fleet_agent_streams 2"));
}

}  // namespace
}  // namespace fleet::controller::telemetry
