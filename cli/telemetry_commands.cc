#include "cli/telemetry_commands.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "cli/errors.h"
#include "cli/human.h"
#include "cli/table.h"
#include "common/status_macros.h"

namespace fleet::cli {
namespace {

constexpr const char* kBlocks[] = {"▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"};

// A time flag: RFC 3339, or a duration before `base`.
absl::StatusOr<absl::Time> ParseTimeFlag(const std::string& flag,
                                         const std::string& text,
                                         absl::Time base) {
  absl::Time t;
  std::string error;
  if (absl::ParseTime(absl::RFC3339_full, text, &t, &error)) return t;
  absl::StatusOr<absl::Duration> ago = ParseHumanDuration(text);
  if (ago.ok() && *ago >= absl::ZeroDuration()) return base - *ago;
  return InvalidFlag(flag, text,
                     "expected a duration such as 1h or 7d, or an RFC 3339 "
                     "time such as 2026-11-23T10:00:00Z");
}

std::string SeriesName(const v1::TelemetrySeries& series) {
  std::map<std::string, std::string> labels(series.labels().begin(),
                                            series.labels().end());
  std::vector<std::string> parts;
  for (const auto& [k, v] : labels) {
    if (k != "__name__") parts.push_back(absl::StrCat(k, "=", v));
  }
  if (parts.empty()) {
    auto name = labels.find("__name__");
    return name == labels.end() ? "(all)" : name->second;
  }
  return absl::StrJoin(parts, ",");
}

std::string FormatValue(double v) {
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    return absl::StrCat(static_cast<int64_t>(v));
  }
  return absl::StrFormat("%.4g", v);
}

std::string CsvField(const std::string& text) {
  if (text.find_first_of(",\"\n") == std::string::npos) return text;
  std::string out = "\"";
  for (char c : text) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

}  // namespace

std::string Sparkline(const std::vector<double>& values, size_t width) {
  if (values.empty() || width == 0) return "";
  // Fold into at most `width` cells, each the max of its buckets.
  const size_t cells = std::min(width, values.size());
  std::vector<double> folded(cells, std::numeric_limits<double>::quiet_NaN());
  for (size_t i = 0; i < values.size(); ++i) {
    if (std::isnan(values[i])) continue;
    double& cell = folded[i * cells / values.size()];
    cell = std::isnan(cell) ? values[i] : std::max(cell, values[i]);
  }
  double lo = std::numeric_limits<double>::infinity();
  double hi = -lo;
  for (double v : folded) {
    if (std::isnan(v)) continue;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  std::string out;
  for (double v : folded) {
    if (std::isnan(v)) {
      out += ' ';
      continue;
    }
    int level =
        hi > lo ? static_cast<int>(std::lround((v - lo) / (hi - lo) * 7)) : 3;
    out += kBlocks[std::clamp(level, 0, 7)];
  }
  return out;
}

absl::Status TelemetryQuery(const TelemetryQueryOptions& options,
                            CommandContext& ctx) {
  if (options.query.empty()) {
    return UsageError(
        "no query given: fleetctl telemetry query "
        "'count(update_events{phase=\"failed\"}) by (version)' (see "
        "docs/telemetry.md)");
  }
  std::string format = options.format;
  if (format.empty()) {
    format = ctx.output() == OutputFormat::kJson   ? "json"
             : ctx.output() == OutputFormat::kYaml ? "yaml"
                                                   : "table";
  }
  if (format != "table" && format != "json" && format != "yaml" &&
      format != "csv") {
    return InvalidFlag("-o", format, "expected table, json, yaml or csv");
  }
  const absl::Time now = ctx.Now();
  absl::Time until = now;
  if (!options.until.empty()) {
    ASSIGN_OR_RETURN(until, ParseTimeFlag("--until", options.until, now));
  }
  ASSIGN_OR_RETURN(absl::Time since,
                   ParseTimeFlag("--since", options.since, until));
  if (since >= until) {
    return InvalidFlag("--since", options.since,
                       "the range must start before --until");
  }
  absl::StatusOr<absl::Duration> step = ParseHumanDuration(options.step);
  if (!step.ok() || *step < absl::Seconds(1)) {
    return InvalidFlag("--step", options.step,
                       "expected a duration of at least 1s, such as 1m");
  }

  v1::QueryTelemetryRequest request;
  request.set_query(options.query);
  request.set_start_unix_ms(absl::ToUnixMillis(since));
  request.set_end_unix_ms(absl::ToUnixMillis(until));
  request.set_step_ms(absl::ToInt64Milliseconds(*step));
  v1::QueryTelemetryResponse response;
  grpc::ClientContext rpc;
  ctx.SetDeadline(rpc);
  grpc::Status status = ctx.admin().QueryTelemetry(&rpc, request, &response);
  if (!status.ok()) {
    return ExplainRpcError(
        status,
        ctx.Call(
            "query telemetry",
            {{grpc::StatusCode::INVALID_ARGUMENT,
              absl::StrCat("the query was refused: ", status.error_message()),
              "fix the query (language: docs/telemetry.md) or use a "
              "larger --step / shorter --since",
              /*with_detail=*/false},
             {grpc::StatusCode::RESOURCE_EXHAUSTED,
              "the query would read too many rows",
              "narrow --since or add label matchers"}}));
  }

  if (format == "json" || format == "yaml") {
    GlobalOptions as_asked = ctx.options();
    as_asked.output =
        format == "json" ? OutputFormat::kJson : OutputFormat::kYaml;
    return CommandContext(as_asked, ctx.io()).PrintResult(response);
  }
  if (format == "csv") {
    std::set<std::string> keys;
    for (const auto& s : response.series()) {
      for (const auto& [k, v] : s.labels()) {
        if (k != "__name__") keys.insert(k);
      }
    }
    std::vector<std::string> header = {"time", "time_unix_ms"};
    header.insert(header.end(), keys.begin(), keys.end());
    header.push_back("value");
    ctx.out() << absl::StrJoin(header, ",") << '\n';
    for (const auto& s : response.series()) {
      for (const auto& p : s.points()) {
        std::vector<std::string> row = {
            absl::FormatTime("%Y-%m-%dT%H:%M:%SZ",
                             absl::FromUnixMillis(p.time_unix_ms()),
                             absl::UTCTimeZone()),
            absl::StrCat(p.time_unix_ms())};
        for (const std::string& k : keys) {
          auto it = s.labels().find(k);
          row.push_back(CsvField(it == s.labels().end() ? "" : it->second));
        }
        row.push_back(FormatValue(p.value()));
        ctx.out() << absl::StrJoin(row, ",") << '\n';
      }
    }
    return absl::OkStatus();
  }

  if (response.series_size() == 0) {
    ctx.err() << "no data for " << options.query << " in the last "
              << HumanDuration(until - since) << '\n';
    return absl::OkStatus();
  }
  const int64_t buckets = (request.end_unix_ms() - request.start_unix_ms() +
                           request.step_ms() - 1) /
                          request.step_ms();
  Table table({{"SERIES"},
               {"POINTS", Table::Align::kRight},
               {"LAST", Table::Align::kRight},
               {"MIN", Table::Align::kRight},
               {"MAX", Table::Align::kRight},
               {"TREND"}});
  for (const auto& s : response.series()) {
    std::vector<double> values(static_cast<size_t>(buckets),
                               std::numeric_limits<double>::quiet_NaN());
    double lo = std::numeric_limits<double>::infinity();
    double hi = -lo;
    for (const auto& p : s.points()) {
      const int64_t i =
          (p.time_unix_ms() - request.start_unix_ms()) / request.step_ms();
      if (i >= 0 && i < buckets) values[static_cast<size_t>(i)] = p.value();
      lo = std::min(lo, p.value());
      hi = std::max(hi, p.value());
    }
    const bool any = s.points_size() > 0;
    table.AddRow(
        {SeriesName(s), absl::StrCat(s.points_size()),
         any ? FormatValue(s.points(s.points_size() - 1).value()) : "-",
         any ? FormatValue(lo) : "-", any ? FormatValue(hi) : "-",
         Sparkline(values)});
  }
  table.Print(ctx.out());
  return absl::OkStatus();
}

}  // namespace fleet::cli
