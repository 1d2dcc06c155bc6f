#include "controller/http_server.h"

#include <httplib.h>

#include <atomic>
#include <string>

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

}  // namespace
}  // namespace fleet::controller
