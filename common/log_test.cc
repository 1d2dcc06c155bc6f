#include "common/log.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_split.h"
#include "gtest/gtest.h"

namespace fleet {
namespace {

// Redirects stderr to a temp file for the lifetime of the object.
class StderrCapture {
 public:
  StderrCapture() {
    path_ = testing::TempDir() + "/log_test_XXXXXX";
    fd_ = mkstemp(path_.data());
    EXPECT_GE(fd_, 0);
    fflush(stderr);
    saved_ = dup(STDERR_FILENO);
    dup2(fd_, STDERR_FILENO);
  }
  ~StderrCapture() {
    Restore();
    close(fd_);
    unlink(path_.c_str());
  }

  // Restores stderr and returns the lines written since construction.
  std::vector<std::string> Lines() {
    Restore();
    std::string content;
    char buf[4096];
    lseek(fd_, 0, SEEK_SET);
    ssize_t n;
    while ((n = read(fd_, buf, sizeof(buf))) > 0) content.append(buf, n);
    std::vector<std::string> lines = absl::StrSplit(content, '\n');
    EXPECT_TRUE(lines.empty() || lines.back().empty())
        << "output does not end in a newline";
    if (!lines.empty()) lines.pop_back();
    return lines;
  }

 private:
  void Restore() {
    if (saved_ < 0) return;
    dup2(saved_, STDERR_FILENO);
    close(saved_);
    saved_ = -1;
  }
  std::string path_;
  int fd_ = -1;
  int saved_ = -1;
};

nlohmann::json ParseLine(const std::string& line) {
  nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << "not JSON: " << line;
  return j;
}

TEST(LogTest, WritesOneJsonObjectPerLineWithFields) {
  InitLogging("controller", LogLevel::kInfo);
  StderrCapture capture;
  LogInfo("rollout created", {{"rollout_id", "ro-1"}, {"targets", 42}});
  std::vector<std::string> lines = capture.Lines();
  ASSERT_EQ(lines.size(), 1u);
  nlohmann::json j = ParseLine(lines[0]);
  EXPECT_EQ(j["level"], "info");
  EXPECT_EQ(j["component"], "controller");
  EXPECT_EQ(j["msg"], "rollout created");
  EXPECT_EQ(j["rollout_id"], "ro-1");
  EXPECT_EQ(j["targets"], 42);
  // RFC 3339 UTC with milliseconds, e.g. 2026-11-23T09:00:00.123Z.
  const std::string ts = j["ts"];
  ASSERT_EQ(ts.size(), 24u) << ts;
  EXPECT_EQ(ts[4], '-');
  EXPECT_EQ(ts[10], 'T');
  EXPECT_EQ(ts[19], '.');
  EXPECT_EQ(ts[23], 'Z');
  // The fixed keys come first, for people reading raw logs.
  EXPECT_EQ(lines[0].rfind("{\"ts\":", 0), 0u) << lines[0];
}

TEST(LogTest, LevelsBelowTheMinimumAreDropped) {
  InitLogging("agent", LogLevel::kWarning);
  StderrCapture capture;
  LogDebug("debug");
  LogInfo("info");
  LogWarning("warning");
  LogError("error");
  std::vector<std::string> lines = capture.Lines();
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(ParseLine(lines[0])["level"], "warning");
  EXPECT_EQ(ParseLine(lines[1])["level"], "error");
  InitLogging("fleet", LogLevel::kInfo);
}

TEST(LogTest, InvalidUtf8AndControlCharactersStayValidJson) {
  InitLogging("fleet", LogLevel::kDebug);
  StderrCapture capture;
  LogError("bad \xff\xfe bytes\nsecond line",
           {{"path", std::string("a\0b\xc3", 4)}});
  std::vector<std::string> lines = capture.Lines();
  ASSERT_EQ(lines.size(), 1u);
  nlohmann::json j = ParseLine(lines[0]);
  EXPECT_NE(j["msg"].get<std::string>().find("second line"), std::string::npos);
  InitLogging("fleet", LogLevel::kInfo);
}

TEST(LogTest, CallerFieldsCannotOverrideFixedKeys) {
  InitLogging("fleet", LogLevel::kInfo);
  StderrCapture capture;
  LogInfo("real", {{"level", "error"}, {"msg", "spoofed"}, {"x", true}});
  std::vector<std::string> lines = capture.Lines();
  ASSERT_EQ(lines.size(), 1u);
  nlohmann::json j = ParseLine(lines[0]);
  EXPECT_EQ(j["level"], "info");
  EXPECT_EQ(j["msg"], "real");
  EXPECT_EQ(j["x"], true);
}

TEST(LogTest, LinesFromManyThreadsNeverInterleave) {
  InitLogging("fleet", LogLevel::kInfo);
  StderrCapture capture;
  constexpr int kThreads = 8;
  constexpr int kLinesPerThread = 200;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([t] {
      for (int i = 0; i < kLinesPerThread; ++i) {
        LogInfo("tick",
                {{"thread", t}, {"i", i}, {"pad", std::string(500, 'x')}});
      }
    });
  }
  for (std::thread& t : threads) t.join();
  std::vector<std::string> lines = capture.Lines();
  ASSERT_EQ(lines.size(), static_cast<size_t>(kThreads * kLinesPerThread));
  for (const std::string& line : lines) {
    nlohmann::json j = ParseLine(line);
    EXPECT_EQ(j["pad"].get<std::string>().size(), 500u);
  }
}

TEST(LogTest, ParsesLevelNames) {
  LogLevel level = LogLevel::kInfo;
  EXPECT_TRUE(ParseLogLevel("debug", &level));
  EXPECT_EQ(level, LogLevel::kDebug);
  EXPECT_TRUE(ParseLogLevel("warning", &level));
  EXPECT_EQ(level, LogLevel::kWarning);
  EXPECT_TRUE(ParseLogLevel("error", &level));
  EXPECT_EQ(level, LogLevel::kError);
  EXPECT_TRUE(ParseLogLevel("info", &level));
  EXPECT_EQ(level, LogLevel::kInfo);
  EXPECT_FALSE(ParseLogLevel("verbose", &level));
  EXPECT_FALSE(ParseLogLevel("", &level));
  EXPECT_EQ(level, LogLevel::kInfo);
}

}  // namespace
}  // namespace fleet
