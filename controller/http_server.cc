#include "controller/http_server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <utility>

#include "absl/strings/ascii.h"
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

absl::StatusOr<v1::QueryTelemetryRequest> QueryRequestFromParams(
    const std::function<std::string(const std::string&)>& param) {
  v1::QueryTelemetryRequest request;
  request.set_query(param("query"));
  if (request.query().empty()) {
    return absl::InvalidArgumentError(
        "parameter \"query\" is missing: add query=count(update_events)");
  }
  int64_t from = 0;
  int64_t to = 0;
  if (!absl::SimpleAtoi(param("from"), &from) || from <= 0) {
    return absl::InvalidArgumentError(
        "parameter \"from\" must be Unix milliseconds (Grafana: ${__from})");
  }
  if (!absl::SimpleAtoi(param("to"), &to) || to <= 0) {
    return absl::InvalidArgumentError(
        "parameter \"to\" must be Unix milliseconds (Grafana: ${__to})");
  }
  const std::string step_text = param("step");
  int64_t step_ms = 0;
  absl::Duration step;
  if (!absl::SimpleAtoi(step_text, &step_ms)) {
    if (!absl::ParseDuration(step_text, &step)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "parameter \"step\" is \"", step_text,
          "\"; use milliseconds or a duration like 30s or 1m (Grafana: "
          "${__interval_ms})"));
    }
    step_ms = absl::ToInt64Milliseconds(step);
  }
  request.set_start_unix_ms(from);
  request.set_end_unix_ms(to);
  request.set_step_ms(step_ms);
  return request;
}

namespace {

int HttpStatusFor(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
      return 400;
    case absl::StatusCode::kResourceExhausted:
      return 422;
    default:
      return 500;
  }
}

nlohmann::json QueryJson(const v1::QueryTelemetryResponse& response,
                         bool series_format) {
  if (series_format) {
    nlohmann::json series = nlohmann::json::array();
    for (const v1::TelemetrySeries& s : response.series()) {
      nlohmann::json labels = nlohmann::json::object();
      for (const auto& [k, v] : s.labels()) labels[k] = v;
      nlohmann::json points = nlohmann::json::array();
      for (const v1::TelemetryPoint& p : s.points()) {
        points.push_back({p.time_unix_ms(), p.value()});
      }
      series.push_back({{"labels", labels}, {"points", points}});
    }
    return {{"series", series}};
  }
  // One row per point: Infinity turns rows into a table and plots "value"
  // over "time", grouped by the label columns.
  nlohmann::json rows = nlohmann::json::array();
  for (const v1::TelemetrySeries& s : response.series()) {
    for (const v1::TelemetryPoint& p : s.points()) {
      nlohmann::json row = {{"time", p.time_unix_ms()}, {"value", p.value()}};
      for (const auto& [k, v] : s.labels()) {
        if (k != "__name__") row[k] = v;
      }
      rows.push_back(std::move(row));
    }
  }
  return rows;
}

}  // namespace

void HttpServer::SetMetrics(std::function<std::string()> render) {
  metrics_ = std::move(render);
}

void HttpServer::SetQuery(QueryFn query) { query_ = std::move(query); }

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
  server_->Get("/metrics",
               [this](const httplib::Request&, httplib::Response& response) {
                 if (!metrics_) {
                   response.status = 404;
                   return;
                 }
                 response.set_content(
                     metrics_(), "text/plain; version=0.0.4; charset=utf-8");
               });
  server_->Get("/api/v1/query", [this](const httplib::Request& request,
                                       httplib::Response& response) {
    if (!query_) {
      response.status = 404;
      return;
    }
    auto param = [&](const std::string& name) {
      return request.has_param(name.c_str())
                 ? request.get_param_value(name.c_str())
                 : std::string();
    };
    const std::string format = param("format");
    absl::StatusOr<v1::QueryTelemetryResponse> result =
        [&]() -> absl::StatusOr<v1::QueryTelemetryResponse> {
      if (!format.empty() && format != "rows" && format != "series") {
        return absl::InvalidArgumentError(
            "parameter \"format\" must be rows or series");
      }
      absl::StatusOr<v1::QueryTelemetryRequest> query =
          QueryRequestFromParams(param);
      if (!query.ok()) return query.status();
      return query_(*query);
    }();
    if (!result.ok()) {
      response.status = HttpStatusFor(result.status());
      nlohmann::json body = {{"error", std::string(result.status().message())}};
      response.set_content(body.dump(), "application/json");
      return;
    }
    response.set_content(QueryJson(*result, format == "series").dump(),
                         "application/json");
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
