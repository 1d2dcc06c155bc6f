#include "cli/agent_commands.h"

#include <sstream>

#include "cli/command_context.h"
#include "cli/errors.h"
#include "cli/testing/fake_admin_service.h"
#include "common/testing/fake_clock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace fleet::cli {
namespace {

using ::fleet::cli::testing::FakeAdminServer;

class AgentsListTest : public ::testing::Test {
 protected:
  absl::Status List(const AgentsListOptions& list,
                    OutputFormat format = OutputFormat::kTable) {
    GlobalOptions options;
    options.controller = server_.address();
    options.output = format;
    CommandContext ctx(options, io_);
    return AgentsList(list, ctx);
  }

  v1::Agent* AddAgent(v1::ListAgentsResponse& response, const char* id,
                      const char* hostname, absl::Duration seen_ago) {
    v1::Agent* agent = response.add_agents();
    agent->set_agent_id(id);
    agent->set_hostname(hostname);
    agent->set_platform("linux/amd64");
    agent->set_last_seen_unix_ms(absl::ToUnixMillis(clock_.Now() - seen_ago));
    return agent;
  }

  FakeAdminServer server_;
  std::ostringstream out_;
  std::ostringstream err_;
  FakeClock clock_;
  Io io_{out_, err_, false, clock_};
};

TEST_F(AgentsListTest, PrintsProductsConnectionAndLastSeen) {
  v1::ListAgentsResponse response;
  v1::Agent* a = AddAgent(response, "agent-1", "web-01", absl::Seconds(12));
  a->set_connected(true);
  v1::InstalledProduct* web = a->add_installed();
  web->set_product("web");
  web->set_version("1.2.0");
  a->add_installed()->set_product("api");  // version not known yet
  a->set_root_version(3);
  (*a->mutable_labels())["zone"] = "a";
  (*a->mutable_labels())["ring"] = "canary";
  a->set_root_expires_unix_seconds(
      absl::ToUnixSeconds(clock_.Now() - absl::Hours(1)));
  v1::Agent* b =
      AddAgent(response, "agent-22", "db-01.example.com", absl::Minutes(3));
  b->set_root_version(2);
  b->set_root_expires_unix_seconds(
      absl::ToUnixSeconds(clock_.Now() + absl::Hours(1)));
  AddAgent(response, "agent-3", "old", absl::Minutes(4));
  server_.service().SetAgents(response);

  ASSERT_TRUE(List({}).ok()) << err_.str();
  EXPECT_EQ(
      out_.str(),
      "AGENT      HOSTNAME            PLATFORM      PRODUCTS                "
      "CONNECTED   LAST SEEN   ROOT         LABELS\n"
      "agent-1    web-01              linux/amd64   web@1.2.0,api@unknown   "
      "yes         12s ago     v3 EXPIRED   ring=canary,zone=a\n"
      "agent-22   db-01.example.com   linux/amd64   -                       "
      "no          3m ago      v2           -\n"
      "agent-3    old                 linux/amd64   -                       "
      "no          4m ago      -            -\n");
}

TEST_F(AgentsListTest, SendsTheProductFilter) {
  ASSERT_TRUE(List({.product = "web"}).ok());
  ASSERT_TRUE(server_.service().last_list_agents().has_value());
  EXPECT_EQ(server_.service().last_list_agents()->product(), "web");
  EXPECT_EQ(out_.str(), "");
  EXPECT_EQ(err_.str(), "no agents run web\n");
}

TEST_F(AgentsListTest, BadProductIsAUsageErrorBeforeAnyRpc) {
  absl::Status s = List({.product = "../etc"});
  EXPECT_TRUE(IsUsageError(s));
  EXPECT_NE(s.message().find("--product"), std::string::npos);
  EXPECT_EQ(server_.service().calls(), 0);
}

TEST_F(AgentsListTest, JsonIsTheCompleteResponse) {
  v1::ListAgentsResponse response;
  AddAgent(response, "agent-1", "web-01", absl::Seconds(1))
      ->mutable_labels()
      ->insert({"env", "prod"});
  server_.service().SetAgents(response);
  ASSERT_TRUE(List({}, OutputFormat::kJson).ok());
  nlohmann::json json = nlohmann::json::parse(out_.str());
  ASSERT_EQ(json["agents"].size(), 1u);
  EXPECT_EQ(json["agents"][0]["agent_id"], "agent-1");
  EXPECT_EQ(json["agents"][0]["labels"]["env"], "prod");
  EXPECT_EQ(json["agents"][0]["connected"], false);  // defaults included
}

}  // namespace
}  // namespace fleet::cli
