#include "agent/health.h"

#include <stdlib.h>

#include <atomic>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "httplib.h"

namespace fleet::agent {
namespace {

std::string TempDir() {
  const char* dir = getenv("TEST_TMPDIR");
  return dir != nullptr ? dir : "/tmp";
}

const auto kNever = [] { return false; };

TEST(HealthCheckerTest, CommandExitStatusDecides) {
  HealthCheckOptions ok;
  ok.command = "test \"$FLEET_VERSION\" = 2.0.0";
  ok.env = {{"FLEET_VERSION", "2.0.0"}};
  EXPECT_TRUE(HealthChecker(ok).RunCommandOnce().ok());

  HealthCheckOptions bad;
  bad.command = "exit 3";
  absl::Status status = HealthChecker(bad).RunCommandOnce();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(status.message().find("status 3"), absl::string_view::npos)
      << status;
}

TEST(HealthCheckerTest, CommandThatHangsIsKilledAtTheTimeout) {
  HealthCheckOptions hang;
  hang.command = "sleep 30";
  hang.timeout = absl::Milliseconds(200);
  const absl::Time start = absl::Now();
  absl::Status status = HealthChecker(hang).RunCommandOnce();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(status.message().find("did not finish"), absl::string_view::npos);
  EXPECT_LT(absl::Now() - start, absl::Seconds(20));  // not the full sleep
}

TEST(HealthCheckerTest, CommandIsRetriedUntilItPasses) {
  const std::string flag = absl::StrCat(TempDir(), "/ready-", getpid());
  unlink(flag.c_str());
  HealthCheckOptions options;
  // Fails the first time (and makes itself pass the next).
  options.command =
      absl::StrCat("test -f ", flag, " || { touch ", flag, "; exit 1; }");
  options.retry_interval = absl::Milliseconds(50);
  EXPECT_TRUE(HealthChecker(options)
                  .WaitHealthy(absl::Now() + absl::Seconds(30), kNever)
                  .ok());
}

TEST(HealthCheckerTest, WindowEndsWithTheLastFailure) {
  HealthCheckOptions options;
  options.command = "exit 7";
  options.retry_interval = absl::Milliseconds(50);
  absl::Status status = HealthChecker(options).WaitHealthy(
      absl::Now() + absl::Milliseconds(300), kNever);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(status.message().find("status 7"), absl::string_view::npos);
  EXPECT_EQ(
      HealthChecker(options)
          .WaitHealthy(absl::Now() + absl::Seconds(30), [] { return true; })
          .code(),
      absl::StatusCode::kCancelled);
}

class HttpHealthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_.Get("/healthz", [](const httplib::Request&, httplib::Response& r) {
      r.set_content("ok", "text/plain");
    });
    server_.Get("/sick", [](const httplib::Request&, httplib::Response& r) {
      r.status = 503;
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    ASSERT_GT(port_, 0);
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) absl::SleepFor(absl::Milliseconds(5));
  }
  void TearDown() override {
    server_.stop();
    thread_.join();
  }
  std::string Url(const std::string& path) {
    return absl::StrCat("http://127.0.0.1:", port_, path);
  }
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
};

TEST_F(HttpHealthTest, TwoHundredPassesOthersFailNamingTheStatus) {
  HealthCheckOptions ok;
  ok.url = Url("/healthz");
  EXPECT_TRUE(HealthChecker(ok).GetUrlOnce().ok());

  HealthCheckOptions sick;
  sick.url = Url("/sick");
  absl::Status status = HealthChecker(sick).GetUrlOnce();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(status.message().find("HTTP 503"), absl::string_view::npos)
      << status;
}

TEST_F(HttpHealthTest, NobodyListeningFailsWithinTheWindow) {
  HealthCheckOptions options;
  options.url = Url("/healthz");
  server_.stop();
  thread_.join();
  thread_ = std::thread([] {});
  options.retry_interval = absl::Milliseconds(50);
  options.timeout = absl::Milliseconds(200);
  absl::Status status = HealthChecker(options).WaitHealthy(
      absl::Now() + absl::Milliseconds(400), kNever);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
}

TEST(HealthUrlTest, OnlyPlainHttpUrlsWithAHost) {
  EXPECT_TRUE(ValidateHealthUrl("http://127.0.0.1:8080/healthz").ok());
  EXPECT_TRUE(ValidateHealthUrl("http://localhost").ok());
  for (const char* bad :
       {"https://x/", "127.0.0.1:80/", "http://", "http://:80/", "http://h:0/",
        "http://h:99999/", "http://h:x/"}) {
    absl::Status status = ValidateHealthUrl(bad);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(status.message().find("want http://"), absl::string_view::npos);
  }
}

}  // namespace
}  // namespace fleet::agent
