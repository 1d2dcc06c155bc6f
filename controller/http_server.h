// The controller's plain HTTP endpoint (cpp-httplib):
//   GET /healthz    200 {"status":"ok","connected_agents":N}
//   GET /metrics    Prometheus text exposition format 0.0.4 (SetMetrics)
//   GET /api/v1/query?query=EXPR&from=MS&to=MS&step=1m|MS[&format=rows|series]
//                   a telemetry query (SetQuery) as JSON, shaped for Grafana's
//                   Infinity data source (docs/telemetry.md):
//                   rows:   [{"time":MS,"value":V,"<label>":"..."}...]
//                   series: {"series":[{"labels":{...},"points":[[MS,V]...]}]}
//                   400 {"error":...} for a bad query or parameter, 422 when
//                   the query is too big, 500 otherwise.
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
#include "proto/fleet/v1/admin.pb.h"

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

  // Handlers are called from HTTP worker threads: thread-safe, and they
  // must outlive the server. Set them before Start(); unset ones answer 404.
  void SetMetrics(std::function<std::string()> render);
  using QueryFn = std::function<absl::StatusOr<v1::QueryTelemetryResponse>(
      const v1::QueryTelemetryRequest&)>;
  void SetQuery(QueryFn query);

  // Binds `address` ("HOST:PORT"; port 0 picks a free one) and serves on a
  // thread of its own. Returns the bound port. INVALID_ARGUMENT for a
  // malformed address, UNAVAILABLE if it cannot be bound. Call once.
  absl::StatusOr<int> Start(const std::string& address);
  // Stops serving and joins the thread. Idempotent.
  void Stop();

 private:
  std::function<size_t()> connected_agents_;
  std::function<std::string()> metrics_;
  QueryFn query_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
};

// Splits "HOST:PORT" (HOST may be "[v6]"). INVALID_ARGUMENT if malformed or
// the port is not 0..65535.
absl::StatusOr<std::pair<std::string, int>> ParseHostPort(
    const std::string& address);

// The QueryTelemetryRequest of /api/v1/query's parameters (query, from, to:
// Unix ms; step: ms or a duration such as "30s", "1m"). INVALID_ARGUMENT
// naming a missing or malformed parameter.
absl::StatusOr<v1::QueryTelemetryRequest> QueryRequestFromParams(
    const std::function<std::string(const std::string&)>& param);

}  // namespace fleet::controller

#endif  // FLEET_CONTROLLER_HTTP_SERVER_H_
