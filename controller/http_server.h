// The controller's plain HTTP endpoint (cpp-httplib): GET /healthz answers
// 200 with {"status":"ok","connected_agents":N}.
//
//   HttpServer http([&] { return hub.ConnectedCount(); });
//   ASSIGN_OR_RETURN(int port, http.Start("127.0.0.1:0"));
//   ...
//   http.Stop();
#ifndef FLEET_CONTROLLER_HTTP_SERVER_H_
#define FLEET_CONTROLLER_HTTP_SERVER_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace httplib {
class Server;
}

namespace fleet::controller {

class HttpServer {
 public:
  // `connected_agents` is called from HTTP worker threads; it must be
  // thread-safe and outlive the server.
  explicit HttpServer(std::function<size_t()> connected_agents);
  // Stops the server if it runs.
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds `address` ("HOST:PORT"; port 0 picks a free one) and serves on a
  // thread of its own. Returns the bound port. INVALID_ARGUMENT for a
  // malformed address, UNAVAILABLE if it cannot be bound. Call once.
  absl::StatusOr<int> Start(const std::string& address);
  // Stops serving and joins the thread. Idempotent.
  void Stop();

 private:
  std::function<size_t()> connected_agents_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
};

// Splits "HOST:PORT" (HOST may be "[v6]"). INVALID_ARGUMENT if malformed or
// the port is not 0..65535.
absl::StatusOr<std::pair<std::string, int>> ParseHostPort(
    const std::string& address);

}  // namespace fleet::controller

#endif  // FLEET_CONTROLLER_HTTP_SERVER_H_
