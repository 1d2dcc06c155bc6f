#include "common/names.h"

#include <string>

#include "gtest/gtest.h"

namespace fleet {
namespace {

const std::string kNul("a\0b", 3);

TEST(NamesTest, ProductNames) {
  const struct {
    std::string name;
    bool ok;
  } kCases[] = {
      {"fleet-agent", true},
      {"a", true},
      {"0ad", true},
      {"my_app.v2", true},
      {std::string(64, 'a'), true},
      {"", false},
      {std::string(65, 'a'), false},
      {"..", false},
      {"a..b", false},
      {"../etc", false},
      {"a/b", false},
      {"/abs", false},
      {"a\\b", false},
      {"MyApp", false},
      {".hidden", false},
      {"-flag", false},
      {"_x", false},
      {"a b", false},
      {"a\nb", false},
      {kNul, false},
      {"caf\xc3\xa9", false},
  };
  for (const auto& c : kCases) {
    absl::Status s = ValidateProductName(c.name);
    EXPECT_EQ(s.ok(), c.ok) << "\"" << c.name << "\": " << s;
    if (!c.ok) {
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    }
  }
}

TEST(NamesTest, Platforms) {
  const struct {
    std::string platform;
    bool ok;
  } kCases[] = {
      {"linux/amd64", true},    {"linux/arm64", true},
      {"linux/arm", true},      {"linux/386", true},
      {"linux/riscv64", true},  {"darwin/arm64", true},
      {"windows/amd64", true},  {"", false},
      {"linux", false},         {"linux/", false},
      {"/amd64", false},        {"Linux/amd64", false},
      {"linux/x86_64", false},  {"linux/amd64/", false},
      {"linux/amd64/x", false}, {"freebsd/amd64", false},
      {"../amd64", false},
  };
  for (const auto& c : kCases) {
    absl::Status s = ValidatePlatform(c.platform);
    EXPECT_EQ(s.ok(), c.ok) << "\"" << c.platform << "\": " << s;
    if (!c.ok) {
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    }
  }
}

TEST(NamesTest, VersionsAreSemVer) {
  EXPECT_TRUE(ValidateVersion("1.2.3-rc.1+build").ok());
  EXPECT_EQ(ValidateVersion("v1.2.3").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateVersion("../1.0.0").code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(NamesTest, Ids) {
  const struct {
    std::string id;
    bool ok;
  } kCases[] = {
      {"ro-3f2a9c0d11b2e4f7", true},
      {"Agent.01_x", true},
      {std::string(128, 'A'), true},
      {"", false},
      {std::string(129, 'A'), false},
      {"-x", false},
      {".x", false},
      {"a/b", false},
      {"..", false},
      {"a b", false},
      {kNul, false},
  };
  for (const auto& c : kCases) {
    absl::Status s = ValidateId(c.id, "agent id");
    EXPECT_EQ(s.ok(), c.ok) << "\"" << c.id << "\": " << s;
  }
  EXPECT_NE(ValidateId("", "rollout id").message().find("rollout id"),
            absl::string_view::npos);
}

TEST(NamesTest, Labels) {
  const struct {
    std::string key;
    std::string value;
    bool ok;
  } kCases[] = {
      {"region", "eu-west-1", true},
      {"team/owner", "Ops Team #2", true},
      {"a", "", true},
      {std::string(63, 'k'), std::string(128, 'v'), true},
      {"", "x", false},
      {std::string(64, 'k'), "x", false},
      {"Region", "x", false},
      {"/key", "x", false},
      {"key", "a=b", false},
      {"key", "a,b", false},
      {"key", "a\nb", false},
      {"key", kNul, false},
      {"key", "\x7f", false},
      {"key", "caf\xc3\xa9", false},
      {"key", std::string(129, 'v'), false},
  };
  for (const auto& c : kCases) {
    absl::Status s = ValidateLabel(c.key, c.value);
    EXPECT_EQ(s.ok(), c.ok)
        << "\"" << c.key << "\"=\"" << c.value << "\": " << s;
  }
}

TEST(NamesTest, HostPlatformIsAValidPlatform) {
  absl::Status s = ValidatePlatform(HostPlatform());
  EXPECT_TRUE(s.ok()) << s;
#if defined(__linux__) && defined(__x86_64__)
  EXPECT_EQ(HostPlatform(), "linux/amd64");
#endif
}

TEST(NamesTest, ErrorsEscapeControlCharacters) {
  absl::Status s = ValidateProductName(std::string("a\nb"));
  EXPECT_EQ(s.message().find('\n'), absl::string_view::npos) << s;
}

}  // namespace
}  // namespace fleet
