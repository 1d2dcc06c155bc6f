#include "common/yaml_config.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

namespace fleet {
namespace {

// The shape of fleet-controller's and fleet-agent's flags: a required
// string, a range-checked int, a double, a repeatable option, a flag and a
// positional list.
struct Flags {
  std::string data_dir;
  int heartbeat_seconds = 10;
  double health_seconds = 5;
  std::vector<std::string> trust_keys;
  bool verbose = false;
  std::vector<std::string> program_args;
  std::string log_level = "info";
};

class YamlConfigTest : public ::testing::Test {
 protected:
  YamlConfigTest() {
    app_.add_option("--data-dir", flags_.data_dir, "data")->required();
    app_.add_option("--heartbeat-seconds", flags_.heartbeat_seconds, "beat")
        ->capture_default_str()
        ->check(CLI::Range(1, 3600));
    app_.add_option("--health-seconds", flags_.health_seconds, "health")
        ->capture_default_str();
    app_.add_option("--trust-key", flags_.trust_keys, "keys")
        ->allow_extra_args(false);
    app_.add_flag("--verbose", flags_.verbose, "chatty");
    app_.add_option("--log-level", flags_.log_level, "level")
        ->capture_default_str()
        ->check(CLI::IsMember({"debug", "info"}));
    app_.add_option("program_args", flags_.program_args, "after --");
    AddYamlConfig(app_);
  }

  std::string WriteConfig(const std::string& text) {
    std::string name =
        ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::replace(name.begin(), name.end(), '/', '_');  // parameterized names
    const std::string path =
        std::string(std::getenv("TEST_TMPDIR")) + "/" + name + ".yaml";
    std::ofstream(path) << text;
    return path;
  }

  // Parses args; returns "" on success, else CLI11's error text.
  std::string Parse(std::vector<std::string> args) {
    args.insert(args.begin(), "prog");
    std::vector<const char*> argv;
    for (const std::string& arg : args) argv.push_back(arg.c_str());
    try {
      app_.parse(static_cast<int>(argv.size()), argv.data());
    } catch (const CLI::ParseError& e) {
      return e.what();
    }
    return "";
  }

  Flags flags_;
  CLI::App app_{"test"};
};

TEST_F(YamlConfigTest, EveryKindOfFlagIsAKey) {
  const std::string path = WriteConfig(
      "# a comment\n"
      "data-dir: /var/lib/fleet\n"
      "heartbeat-seconds: 30\n"
      "health-seconds: 2.5\n"
      "trust-key:\n"
      "  - /etc/fleet/a.pub\n"
      "  - /etc/fleet/b.pub\n"
      "verbose: true\n"
      "program_args: [--port, \"8080\"]\n");
  ASSERT_EQ(Parse({"--config", path}), "");
  EXPECT_EQ(flags_.data_dir, "/var/lib/fleet");
  EXPECT_EQ(flags_.heartbeat_seconds, 30);
  EXPECT_DOUBLE_EQ(flags_.health_seconds, 2.5);
  EXPECT_EQ(flags_.trust_keys,
            (std::vector<std::string>{"/etc/fleet/a.pub", "/etc/fleet/b.pub"}));
  EXPECT_TRUE(flags_.verbose);
  EXPECT_EQ(flags_.program_args, (std::vector<std::string>{"--port", "8080"}));
}

TEST_F(YamlConfigTest, CommandLineOverridesTheFile) {
  const std::string path = WriteConfig(
      "data-dir: /from/file\n"
      "heartbeat-seconds: 30\n"
      "trust-key: [/file.pub]\n");
  ASSERT_EQ(Parse({"--data-dir", "/from/flag", "--config", path, "--trust-key",
                   "/flag.pub"}),
            "");
  EXPECT_EQ(flags_.data_dir, "/from/flag");
  EXPECT_EQ(flags_.heartbeat_seconds, 30);  // only in the file
  EXPECT_EQ(flags_.trust_keys, (std::vector<std::string>{"/flag.pub"}));
}

TEST_F(YamlConfigTest, DefaultsStayWhenTheFileIsSilent) {
  ASSERT_EQ(Parse({"--config", WriteConfig("data-dir: /d\n")}), "");
  EXPECT_EQ(flags_.heartbeat_seconds, 10);
  EXPECT_EQ(flags_.log_level, "info");
}

TEST_F(YamlConfigTest, EmptyFileSetsNothing) {
  ASSERT_EQ(Parse({"--config", WriteConfig("# nothing\n"), "--data-dir", "/d"}),
            "");
  EXPECT_EQ(flags_.data_dir, "/d");
}

TEST_F(YamlConfigTest, RequiredFlagMissingEverywhereIsAnError) {
  EXPECT_NE(Parse({"--config", WriteConfig("verbose: true\n")}), "");
}

// Every rejected file names the file, the line and (where there is one)
// the key, so an operator can fix it without guessing.
struct BadConfigCase {
  std::string name;
  std::string yaml;
  std::string want_line;  // ":N: "
  std::string want_text;
};

class BadConfigTest : public YamlConfigTest,
                      public ::testing::WithParamInterface<BadConfigCase> {};

TEST_P(BadConfigTest, ErrorNamesFileLineAndKey) {
  const BadConfigCase& c = GetParam();
  const std::string path = WriteConfig(c.yaml);
  const std::string error = Parse({"--config", path});
  EXPECT_NE(error.find(path + c.want_line), std::string::npos) << error;
  EXPECT_NE(error.find(c.want_text), std::string::npos) << error;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, BadConfigTest,
    ::testing::Values(
        BadConfigCase{"UnknownKey", "data-dir: /d\n\nheartbeat-secs: 3\n",
                      ":3: ",
                      "unknown key 'heartbeat-secs'; the keys are the long "
                      "flags without \"--\": data-dir, heartbeat-seconds"},
        BadConfigCase{"NotANumber", "data-dir: /d\nheartbeat-seconds: ten\n",
                      ":2: ", "key 'heartbeat-seconds': "},
        BadConfigCase{"OutOfRange", "data-dir: /d\nheartbeat-seconds: 0\n",
                      ":2: ", "not in range"},
        BadConfigCase{"NotAMember", "data-dir: /d\nlog-level: loud\n",
                      ":2: ", "key 'log-level': "},
        BadConfigCase{"BadFlagValue", "verbose: maybe\n",
                      ":1: ", "key 'verbose': "},
        BadConfigCase{"ListForOneValue", "data-dir: [/a, /b]\n",
                      ":1: ", "key 'data-dir' takes one value, not a list"},
        BadConfigCase{"Mapping", "data-dir:\n  path: /a\n",
                      ":1: ", "want a value or a list, not a mapping"},
        BadConfigCase{"NoValue", "data-dir: /d\nlog-level:\n",
                      ":2: ", "key 'log-level' has no value"},
        BadConfigCase{"Repeated", "data-dir: /a\ndata-dir: /b\n",
                      ":2: ", "key 'data-dir' is repeated (first on line 1)"},
        BadConfigCase{"NotYaml", "data-dir: /a\n  - : [\n",
                      ":2: ", "not valid YAML"},
        BadConfigCase{"NotAMapping", "- data-dir\n",
                      ":1: ", "want a mapping of flag names to values"},
        BadConfigCase{"ConfigItselfIsNoKey", "config: /other.yaml\n",
                      ":1: ", "unknown key 'config'"}),
    [](const ::testing::TestParamInfo<BadConfigCase>& info) {
      return info.param.name;
    });

TEST_F(YamlConfigTest, MissingFileIsAnError) {
  const std::string error = Parse({"--config", "/nonexistent/fleet.yaml"});
  EXPECT_NE(error.find("/nonexistent/fleet.yaml"), std::string::npos) << error;
}

TEST_F(YamlConfigTest, PrintedConfigLoadsBackToTheSameValues) {
  ASSERT_EQ(
      Parse({"--data-dir", "/d: with colon", "--heartbeat-seconds", "7",
             "--trust-key", "/a.pub", "--trust-key", "/b.pub", "--verbose"}),
      "");
  const std::string printed = app_.config_to_str(true, true);
  EXPECT_NE(printed.find("# beat\nheartbeat-seconds: 7\n"), std::string::npos)
      << printed;
  EXPECT_NE(printed.find("log-level: info\n"), std::string::npos) << printed;
  EXPECT_NE(printed.find("trust-key:\n  - /a.pub\n  - /b.pub\n"),
            std::string::npos)
      << printed;
  EXPECT_EQ(printed.find("print-config"), std::string::npos) << printed;

  Flags reloaded;
  CLI::App app{"again"};
  app.add_option("--data-dir", reloaded.data_dir)->required();
  app.add_option("--heartbeat-seconds", reloaded.heartbeat_seconds);
  app.add_option("--health-seconds", reloaded.health_seconds);
  app.add_option("--trust-key", reloaded.trust_keys);
  app.add_flag("--verbose", reloaded.verbose);
  app.add_option("--log-level", reloaded.log_level);
  app.add_option("program_args", reloaded.program_args);
  AddYamlConfig(app);
  const std::string path = WriteConfig(printed);
  const char* argv[] = {"again", "--config", path.c_str()};
  ASSERT_NO_THROW(app.parse(3, argv)) << printed;
  EXPECT_EQ(reloaded.data_dir, "/d: with colon");
  EXPECT_EQ(reloaded.heartbeat_seconds, 7);
  EXPECT_EQ(reloaded.trust_keys,
            (std::vector<std::string>{"/a.pub", "/b.pub"}));
  EXPECT_TRUE(reloaded.verbose);
}

TEST_F(YamlConfigTest, ParseCommandLineReportsErrorsAsExitCodes) {
  const std::string path = WriteConfig("nope: 1\n");
  std::vector<const char*> argv = {"prog", "--config", path.c_str()};
  std::optional<int> exit = ParseCommandLine(app_, 3, argv.data());
  ASSERT_TRUE(exit.has_value());
  EXPECT_NE(*exit, 0);
}

TEST_F(YamlConfigTest, ParseCommandLineGoesOnWhenAllIsWell) {
  std::vector<const char*> argv = {"prog", "--data-dir", "/d"};
  EXPECT_FALSE(ParseCommandLine(app_, 3, argv.data()).has_value());
  EXPECT_EQ(flags_.data_dir, "/d");
}

}  // namespace
}  // namespace fleet
