#include "controller/telemetry/query_engine.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/sqlite/database.h"
#include "common/status_macros.h"

namespace fleet::controller::telemetry {
namespace {

struct LabelColumn {
  const char* label;
  const char* column;
};

struct MetricSchema {
  const char* name;
  const char* table;
  const char* time_column;
  std::vector<LabelColumn> labels;
  std::vector<const char*> fields;
};

const std::vector<MetricSchema>& Schemas() {
  static const auto* const kSchemas = new std::vector<MetricSchema>{
      {"update_events",
       "update_events",
       "time_ms",
       {{"agent_id", "agent_id"},
        {"rollout", "rollout_id"},
        {"product", "product"},
        {"platform", "platform"},
        {"phase", "phase"},
        {"error_class", "error_class"},
        {"from_version", "from_version"},
        {"to_version", "to_version"},
        {"version", "to_version"}},
       {"duration_ms", "bytes"}},
      {"heartbeats",
       "heartbeats",
       "time_ms",
       {{"agent_id", "agent_id"}, {"platform", "platform"}},
       {"uptime_seconds", "program_restarts", "agent_rss_bytes",
        "program_rss_bytes", "agent_cpu_ms", "program_cpu_ms",
        "state_dir_free_bytes"}},
      {"agents",
       "agent_versions",
       "since_ms",
       {{"agent_id", "agent_id"},
        {"product", "product"},
        {"version", "version"},
        {"platform", "platform"}},
       {}},
  };
  return *kSchemas;
}

const MetricSchema* FindSchema(const std::string& name) {
  for (const MetricSchema& schema : Schemas()) {
    if (name == schema.name) return &schema;
  }
  return nullptr;
}

const char* ColumnFor(const MetricSchema& schema, const std::string& label) {
  for (const LabelColumn& l : schema.labels) {
    if (label == l.label) return l.column;
  }
  return nullptr;
}

std::string KnownLabels(const MetricSchema& schema) {
  std::vector<std::string> names;
  for (const LabelColumn& l : schema.labels) names.push_back(l.label);
  return absl::StrJoin(names, ", ");
}

// A matcher resolved against the schema: equality ones go into SQL, regex
// ones are checked on each row (whole-value match, like PromQL).
struct ResolvedMatcher {
  int value_index;  // into the row's label values
  MatchOp op;
  std::string value;
  std::optional<std::regex> regex;
};

bool Matches(const ResolvedMatcher& m, const std::string& value) {
  switch (m.op) {
    case MatchOp::kEqual:
      return value == m.value;
    case MatchOp::kNotEqual:
      return value != m.value;
    case MatchOp::kRegex:
      return std::regex_match(value, *m.regex);
    case MatchOp::kNotRegex:
      return !std::regex_match(value, *m.regex);
  }
  return false;
}

double Aggregate(Aggregation aggregation, std::vector<double>& values,
                 int64_t step_ms) {
  const double n = static_cast<double>(values.size());
  switch (aggregation) {
    case Aggregation::kCount:
      return n;
    case Aggregation::kRate:
      return n / (static_cast<double>(step_ms) / 1000.0);
    case Aggregation::kSum: {
      double sum = 0;
      for (double v : values) sum += v;
      return sum;
    }
    case Aggregation::kAvg: {
      double sum = 0;
      for (double v : values) sum += v;
      return sum / n;
    }
    case Aggregation::kMin:
      return *std::min_element(values.begin(), values.end());
    case Aggregation::kMax:
      return *std::max_element(values.begin(), values.end());
    default: {
      // Nearest rank: the ceil(p/100 * n)-th smallest value.
      const int p = Percentile(aggregation);
      size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * n));
      rank = std::clamp<size_t>(rank, 1, values.size());
      std::nth_element(values.begin(), values.begin() + (rank - 1),
                       values.end());
      return values[rank - 1];
    }
  }
}

using GroupKey = std::vector<std::string>;

constexpr int64_t kMinuteMs = 60'000;

// Labels update_events_1m keeps (telemetry_store.cc).
bool InRollup(const std::string& label) {
  return label == "product" || label == "platform" || label == "phase" ||
         label == "error_class" || label == "to_version" || label == "version";
}

void AddSeriesLabels(const Query& query, const GroupKey& key,
                     v1::TelemetrySeries& series) {
  (*series.mutable_labels())["__name__"] = query.metric;
  for (size_t i = 0; i < query.group_by.size(); ++i) {
    (*series.mutable_labels())[query.group_by[i]] = key[i];
  }
}

}  // namespace

QueryEngine::QueryEngine(std::string telemetry_db_path, QueryLimits limits)
    : path_(std::move(telemetry_db_path)), limits_(limits) {}

absl::StatusOr<v1::QueryTelemetryResponse> QueryEngine::Run(
    const v1::QueryTelemetryRequest& request) const {
  if (request.query().empty()) {
    return absl::InvalidArgumentError(
        "query is empty; e.g. count(update_events{phase=\"failed\"}) by "
        "(version)");
  }
  if (request.start_unix_ms() <= 0) {
    return absl::InvalidArgumentError("start_unix_ms must be > 0");
  }
  if (request.end_unix_ms() <= request.start_unix_ms()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "end_unix_ms (", request.end_unix_ms(),
        ") must be after start_unix_ms (", request.start_unix_ms(), ")"));
  }
  if (request.step_ms() < limits_.min_step_ms) {
    return absl::InvalidArgumentError(absl::StrCat(
        "step_ms is ", request.step_ms(), "; at least ", limits_.min_step_ms));
  }
  const int64_t range = request.end_unix_ms() - request.start_unix_ms();
  const int64_t points = (range + request.step_ms() - 1) / request.step_ms();
  if (points > limits_.max_points) {
    return absl::InvalidArgumentError(absl::StrCat(
        "range / step gives ", points, " points per series; at most ",
        limits_.max_points, ": use a larger step or a shorter range"));
  }
  ASSIGN_OR_RETURN(Query query, ParseQuery(request.query()));
  return Evaluate(query, request.start_unix_ms(), request.end_unix_ms(),
                  request.step_ms());
}

absl::StatusOr<v1::QueryTelemetryResponse> QueryEngine::Evaluate(
    const Query& query, int64_t start_ms, int64_t end_ms,
    int64_t step_ms) const {
  const MetricSchema* schema = FindSchema(query.metric);
  if (schema == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown metric \"", query.metric,
                     "\" (update_events, heartbeats, agents)"));
  }
  const bool gauge = std::string(schema->name) == "agents";
  if (gauge && query.aggregation != Aggregation::kCount) {
    return absl::InvalidArgumentError(absl::StrCat(
        "agents is a gauge of agent counts: use count(agents{...}) or "
        "agents{...}, not ",
        AggregationName(query.aggregation)));
  }
  if (!query.field.empty() &&
      std::find_if(schema->fields.begin(), schema->fields.end(),
                   [&](const char* f) { return query.field == f; }) ==
          schema->fields.end()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown field \"", query.field, "\" of ", query.metric, " (",
        schema->fields.empty() ? "it has none"
                               : absl::StrJoin(schema->fields, ", "),
        ")"));
  }

  // Minute rollups answer count, rate and sum/avg of duration_ms over
  // whole minutes without reading the events themselves.
  bool rollup = limits_.use_rollups &&
                std::string(schema->name) == "update_events" &&
                start_ms % kMinuteMs == 0 && end_ms % kMinuteMs == 0 &&
                step_ms % kMinuteMs == 0;
  switch (query.aggregation) {
    case Aggregation::kCount:
    case Aggregation::kRate:
      break;
    case Aggregation::kSum:
    case Aggregation::kAvg:
      rollup = rollup && query.field == "duration_ms";
      break;
    default:
      rollup = false;
  }
  for (const std::string& label : query.group_by) {
    rollup = rollup && InRollup(label);
  }
  for (const LabelMatcher& m : query.matchers) {
    rollup = rollup && InRollup(m.label);
  }
  const char* time_column = rollup ? "minute_ms" : schema->time_column;
  const char* table = rollup ? "update_events_1m" : schema->table;

  // Row layout: label values [group_by..., regex labels...], then the
  // field (or, from rollups, the event count and duration sum). Equality
  // matchers become SQL parameters.
  std::vector<std::string> selected_columns;
  std::vector<std::string> where = {absl::StrCat(time_column, " < ?1")};
  if (!gauge) where.push_back(absl::StrCat(time_column, " >= ?2"));
  std::vector<std::string> params;
  for (const std::string& label : query.group_by) {
    const char* column = ColumnFor(*schema, label);
    if (column == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown label \"", label, "\" in by (...) for ",
                       query.metric, " (", KnownLabels(*schema), ")"));
    }
    selected_columns.push_back(column);
  }
  std::vector<ResolvedMatcher> row_matchers;
  for (const LabelMatcher& m : query.matchers) {
    const char* column = ColumnFor(*schema, m.label);
    if (column == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown label \"", m.label, "\" for ", query.metric,
                       " (", KnownLabels(*schema), ")"));
    }
    // The gauge needs every row (a change away from a value matters), so
    // it filters in C++ like the regex matchers.
    if (!gauge && (m.op == MatchOp::kEqual || m.op == MatchOp::kNotEqual)) {
      params.push_back(m.value);
      where.push_back(absl::StrCat(column,
                                   m.op == MatchOp::kEqual ? " = ?" : " != ?",
                                   params.size() + 2));
      continue;
    }
    ResolvedMatcher resolved{static_cast<int>(selected_columns.size()), m.op,
                             m.value, std::nullopt};
    if (m.op == MatchOp::kRegex || m.op == MatchOp::kNotRegex) {
      try {
        resolved.regex.emplace(m.value, std::regex::ECMAScript);
      } catch (const std::regex_error& e) {
        return absl::InvalidArgumentError(
            absl::StrCat("bad regular expression \"", m.value, "\" for ",
                         m.label, ": ", e.what()));
      }
    }
    selected_columns.push_back(column);
    row_matchers.push_back(std::move(resolved));
  }
  const size_t label_count = selected_columns.size();
  std::string sql = absl::StrCat("SELECT ", time_column);
  for (const std::string& column : selected_columns) {
    absl::StrAppend(&sql, ", ", column);
  }
  if (gauge) absl::StrAppend(&sql, ", agent_id, product");
  if (rollup) {
    absl::StrAppend(&sql, ", events, duration_ms_sum");
  } else if (!query.field.empty()) {
    absl::StrAppend(&sql, ", ", query.field);
  }
  absl::StrAppend(&sql, " FROM ", table, " WHERE ",
                  absl::StrJoin(where, " AND "), " ORDER BY ", time_column,
                  " LIMIT ", limits_.max_rows + 1);

  ASSIGN_OR_RETURN(std::unique_ptr<sqlite::Database> db,
                   sqlite::Database::Open(path_));
  RETURN_IF_ERROR(db->Execute("PRAGMA query_only=ON"));
  ASSIGN_OR_RETURN(std::unique_ptr<sqlite::Statement> statement,
                   db->Prepare(sql));
  statement->BindInt64(1, end_ms);
  if (!gauge) statement->BindInt64(2, start_ms);
  for (size_t i = 0; i < params.size(); ++i) {
    statement->BindText(static_cast<int>(i + 3), params[i]);
  }

  const size_t group_size = query.group_by.size();
  const int64_t buckets = (end_ms - start_ms + step_ms - 1) / step_ms;
  v1::QueryTelemetryResponse response;
  int64_t rows = 0;
  auto too_many = [&] {
    return absl::ResourceExhaustedError(
        absl::StrCat("the query would read more than ", limits_.max_rows,
                     " rows; narrow the range or add label matchers"));
  };

  // Steps to the next row and reads its label columns; false at the end.
  auto next_row =
      [&](std::vector<std::string>& labels) -> absl::StatusOr<bool> {
    ASSIGN_OR_RETURN(bool has_row, statement->Step());
    if (!has_row) return false;
    if (++rows > limits_.max_rows) return too_many();
    labels.resize(label_count);
    for (size_t i = 0; i < label_count; ++i) {
      labels[i] = statement->ColumnText(static_cast<int>(i + 1));
    }
    return true;
  };
  auto matches_all = [&](const std::vector<std::string>& labels) {
    for (const ResolvedMatcher& m : row_matchers) {
      if (!Matches(m, labels[m.value_index])) return false;
    }
    return true;
  };

  if (rollup) {
    // (events, duration sum) per group and bucket.
    std::map<GroupKey, std::map<int64_t, std::pair<double, double>>> cells;
    std::vector<std::string> labels;
    while (true) {
      ASSIGN_OR_RETURN(bool has_row, next_row(labels));
      if (!has_row) break;
      if (!matches_all(labels)) continue;
      const int64_t bucket = (statement->ColumnInt64(0) - start_ms) / step_ms;
      auto& cell =
          cells[GroupKey(labels.begin(), labels.begin() + group_size)][bucket];
      cell.first += static_cast<double>(
          statement->ColumnInt64(static_cast<int>(label_count + 1)));
      cell.second += static_cast<double>(
          statement->ColumnInt64(static_cast<int>(label_count + 2)));
    }
    for (const auto& [key, by_bucket] : cells) {
      v1::TelemetrySeries* series = response.add_series();
      AddSeriesLabels(query, key, *series);
      for (const auto& [bucket, cell] : by_bucket) {
        const auto& [events, duration_sum] = cell;
        double value = events;
        if (query.aggregation == Aggregation::kRate) {
          value = events / (static_cast<double>(step_ms) / 1000.0);
        } else if (query.aggregation == Aggregation::kSum) {
          value = duration_sum;
        } else if (query.aggregation == Aggregation::kAvg) {
          value = duration_sum / events;
        }
        v1::TelemetryPoint* point = series->add_points();
        point->set_time_unix_ms(start_ms + bucket * step_ms);
        point->set_value(value);
      }
    }
    return response;
  }

  if (!gauge) {
    std::map<GroupKey, std::map<int64_t, std::vector<double>>> cells;
    std::vector<std::string> labels;
    while (true) {
      ASSIGN_OR_RETURN(bool has_row, next_row(labels));
      if (!has_row) break;
      if (!matches_all(labels)) continue;
      const int64_t bucket = (statement->ColumnInt64(0) - start_ms) / step_ms;
      const double value = query.field.empty()
                               ? 1.0
                               : static_cast<double>(statement->ColumnInt64(
                                     static_cast<int>(label_count + 1)));
      cells[GroupKey(labels.begin(), labels.begin() + group_size)][bucket]
          .push_back(value);
    }
    for (auto& [key, by_bucket] : cells) {
      v1::TelemetrySeries* series = response.add_series();
      AddSeriesLabels(query, key, *series);
      for (auto& [bucket, values] : by_bucket) {
        v1::TelemetryPoint* point = series->add_points();
        point->set_time_unix_ms(start_ms + bucket * step_ms);
        point->set_value(Aggregate(query.aggregation, values, step_ms));
      }
    }
    return response;
  }

  // agents: replay the version history in time order; at each bucket's end
  // count the (agent, product) pairs by group. Counts change only when an
  // agent's row changes, so each bucket costs the number of groups.
  struct State {
    std::vector<std::string> labels;
    bool counted = false;
  };
  std::map<std::pair<std::string, std::string>, State> states;
  std::map<GroupKey, int64_t> counts;
  std::map<GroupKey, v1::TelemetrySeries> series_by_key;
  int64_t bucket = 0;
  auto emit_until = [&](int64_t time_ms) {
    // Emits every bucket whose end is <= time_ms (a row at time_ms is not
    // yet part of it).
    while (bucket < buckets &&
           std::min(start_ms + (bucket + 1) * step_ms, end_ms) <= time_ms) {
      for (const auto& [key, count] : counts) {
        if (count <= 0) continue;
        v1::TelemetrySeries& series = series_by_key[key];
        if (series.labels().empty()) AddSeriesLabels(query, key, series);
        v1::TelemetryPoint* point = series.add_points();
        point->set_time_unix_ms(start_ms + bucket * step_ms);
        point->set_value(static_cast<double>(count));
      }
      ++bucket;
    }
  };
  while (true) {
    std::vector<std::string> labels;
    ASSIGN_OR_RETURN(bool has_row, next_row(labels));
    if (!has_row) break;
    emit_until(statement->ColumnInt64(0));
    State& state =
        states[{statement->ColumnText(static_cast<int>(label_count + 1)),
                statement->ColumnText(static_cast<int>(label_count + 2))}];
    if (state.counted) {
      --counts[GroupKey(state.labels.begin(),
                        state.labels.begin() + group_size)];
    }
    const bool keep = matches_all(labels);
    state.labels = std::move(labels);
    state.counted = keep;
    if (keep) {
      ++counts[GroupKey(state.labels.begin(),
                        state.labels.begin() + group_size)];
    }
  }
  emit_until(end_ms);
  for (auto& [key, series] : series_by_key) {
    *response.add_series() = std::move(series);
  }
  return response;
}

}  // namespace fleet::controller::telemetry
