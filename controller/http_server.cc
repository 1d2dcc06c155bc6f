#include "controller/http_server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"

namespace fleet::controller {

absl::StatusOr<std::pair<std::string, int>> ParseHostPort(
    const std::string& address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("address \"", address, "\" is not HOST:PORT"));
  }
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  int port = 0;
  if (!absl::SimpleAtoi(address.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("address \"", address, "\" has no valid port (0..65535)"));
  }
  return std::make_pair(host, port);
}

HttpServer::HttpServer(std::function<size_t()> connected_agents)
    : connected_agents_(std::move(connected_agents)),
      server_(std::make_unique<httplib::Server>()) {
  // httplib's default adds SO_REUSEPORT, which would let a second controller
  // silently share the port; SO_REUSEADDR alone still allows a quick restart.
  server_->set_socket_options([](int sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  server_->Get(
      "/healthz", [this](const httplib::Request&, httplib::Response& response) {
        nlohmann::json body = {{"status", "ok"},
                               {"connected_agents", connected_agents_()}};
        response.set_content(body.dump(), "application/json");
      });
}

HttpServer::~HttpServer() { Stop(); }

absl::StatusOr<int> HttpServer::Start(const std::string& address) {
  auto host_port = ParseHostPort(address);
  if (!host_port.ok()) return host_port.status();
  const auto& [host, requested] = *host_port;
  int port = requested;
  if (requested == 0) {
    port = server_->bind_to_any_port(host);
  } else if (!server_->bind_to_port(host, requested)) {
    port = -1;
  }
  if (port <= 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen for HTTP on ", address));
  }
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  // httplib's stop() is a no-op until the listen loop runs; wait for it so
  // an early Stop() cannot leave the thread serving forever.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!server_->is_running() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  return port;
}

void HttpServer::Stop() {
  if (!thread_.joinable()) return;
  server_->stop();
  thread_.join();
}

}  // namespace fleet::controller
