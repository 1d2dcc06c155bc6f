#include "cli/command_context.h"

#include <sstream>

#include "cli/errors.h"
#include "common/clock.h"
#include "gtest/gtest.h"
#include "proto/fleet/v1/admin.pb.h"
#include "yaml-cpp/yaml.h"

namespace fleet::cli {
namespace {

TEST(ValidateControllerTargetTest, AcceptsHostPortAndGrpcUris) {
  for (const char* target :
       {"127.0.0.1:7443", "controller.example.com:1", "[::1]:7443",
        "dns:///controller:7443", "unix:/run/fleet.sock", "localhost:65535"}) {
    EXPECT_TRUE(ValidateControllerTarget(target).ok()) << target;
  }
}

TEST(ValidateControllerTargetTest, RejectsMalformedAsUsageErrors) {
  for (const char* target : {"controller", ":7443", "host:", "host:0",
                             "host:65536", "host:http", "::1:7443"}) {
    absl::Status s = ValidateControllerTarget(target);
    EXPECT_TRUE(IsUsageError(s)) << target;
    EXPECT_NE(s.message().find("--controller"), std::string::npos) << target;
  }
}

struct Printed {
  std::ostringstream out;
  std::ostringstream err;
  Io io{out, err, false, RealClock::Get()};
};

v1::Agent SampleAgent() {
  v1::Agent agent;
  agent.set_agent_id("web-01");
  (*agent.mutable_labels())["ring"] = "canary";
  agent.set_last_seen_unix_ms(1700000000123);
  agent.set_root_version(7);
  return agent;
}

TEST(CommandContextTest, YamlCarriesTheSameDocumentAsJson) {
  Printed as_yaml;
  GlobalOptions yaml_options;
  yaml_options.output = OutputFormat::kYaml;
  ASSERT_TRUE(
      CommandContext(yaml_options, as_yaml.io).PrintResult(SampleAgent()).ok());
  YAML::Node doc = YAML::Load(as_yaml.out.str());
  EXPECT_EQ(doc["agent_id"].as<std::string>(), "web-01");
  EXPECT_EQ(doc["labels"]["ring"].as<std::string>(), "canary");
  // int64 is a string in proto JSON; YAML keeps it a string (quoted), not
  // a number a reader might round.
  EXPECT_EQ(doc["last_seen_unix_ms"].as<std::string>(), "1700000000123");
  EXPECT_NE(as_yaml.out.str().find("last_seen_unix_ms: \"1700000000123\""),
            std::string::npos)
      << as_yaml.out.str();
  // Defaults are printed, as in JSON.
  EXPECT_TRUE(doc["installed"].IsSequence());

  Printed as_json;
  GlobalOptions json_options;
  json_options.output = OutputFormat::kJson;
  ASSERT_TRUE(
      CommandContext(json_options, as_json.io).PrintResult(SampleAgent()).ok());
  nlohmann::json json = nlohmann::json::parse(as_json.out.str());
  EXPECT_EQ(json["last_seen_unix_ms"], "1700000000123");
  EXPECT_EQ(json.size(), doc.size());
}

TEST(CommandContextTest, StreamItemsAreJsonLinesOrYamlDocuments) {
  Printed json_stream;
  GlobalOptions json_options;
  json_options.output = OutputFormat::kJson;
  CommandContext json_ctx(json_options, json_stream.io);
  ASSERT_TRUE(json_ctx.PrintStreamItem(SampleAgent()).ok());
  ASSERT_TRUE(json_ctx.PrintStreamItem(SampleAgent()).ok());
  std::istringstream lines(json_stream.out.str());
  std::string line;
  int count = 0;
  while (std::getline(lines, line)) {
    EXPECT_EQ(nlohmann::json::parse(line)["agent_id"], "web-01");
    ++count;
  }
  EXPECT_EQ(count, 2);

  Printed yaml_stream;
  GlobalOptions yaml_options;
  yaml_options.output = OutputFormat::kYaml;
  CommandContext yaml_ctx(yaml_options, yaml_stream.io);
  ASSERT_TRUE(yaml_ctx.PrintStreamItem(SampleAgent()).ok());
  ASSERT_TRUE(yaml_ctx.PrintStreamItem(SampleAgent()).ok());
  std::vector<YAML::Node> docs = YAML::LoadAll(yaml_stream.out.str());
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[1]["agent_id"].as<std::string>(), "web-01");
}

TEST(RenderYamlTest, QuotesStringsThatWouldChangeType) {
  nlohmann::json doc = {{"a", "true"}, {"b", "null"}, {"c", "12"},
                        {"d", 12},     {"e", false},  {"f", "plain"}};
  YAML::Node node = YAML::Load(RenderYaml(doc));
  EXPECT_EQ(node["a"].Tag(), "!");  // quoted: a string
  EXPECT_EQ(node["b"].as<std::string>(), "null");
  EXPECT_FALSE(node["b"].IsNull());
  EXPECT_EQ(node["c"].Tag(), "!");
  EXPECT_EQ(node["d"].as<int>(), 12);
  EXPECT_EQ(node["d"].Tag(), "?");  // plain: a number
  EXPECT_FALSE(node["e"].as<bool>());
  EXPECT_EQ(node["f"].as<std::string>(), "plain");
}

TEST(CommandContextTest, PaintAddsColourOnlyWhenEnabled) {
  Printed p;
  GlobalOptions plain;
  EXPECT_EQ(CommandContext(plain, p.io).Paint("ok", Color::kGreen), "ok");
  GlobalOptions colored;
  colored.color = true;
  EXPECT_EQ(CommandContext(colored, p.io).Paint("ok", Color::kGreen),
            "\x1b[32mok\x1b[0m");
}

TEST(WantsColorTest, TerminalOnlyAndNoColorHonoured) {
  EXPECT_TRUE(WantsColor(true, nullptr, "xterm-256color"));
  EXPECT_TRUE(WantsColor(true, "", nullptr));  // empty NO_COLOR: ignored
  EXPECT_FALSE(WantsColor(false, nullptr, "xterm"));
  EXPECT_FALSE(WantsColor(true, "1", "xterm"));
  EXPECT_FALSE(WantsColor(true, nullptr, "dumb"));
}

}  // namespace
}  // namespace fleet::cli
