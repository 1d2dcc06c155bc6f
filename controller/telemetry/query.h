// The telemetry query language: a parsed query and its recursive-descent
// parser. Grammar (whitespace between tokens is free; docs/telemetry.md has
// the user guide):
//
//   query       := aggregation | selector
//   aggregation := FUNC '(' selector [ ',' FIELD ] ')' [ by ]
//   by          := 'by' '(' LABEL { ',' LABEL } ')'
//   selector    := METRIC [ '{' [ matcher { ',' matcher } ] '}' ]
//   matcher     := LABEL ( '=' | '!=' | '=~' | '!~' ) STRING
//   FUNC        := count | rate | sum | avg | min | max | p50 | p90 | p95 | p99
//   STRING      := '"' chars with \" and \\ escapes '"'
//
//   p95(update_events{phase="healthy", version=~"1\\.2\\..*"}, duration_ms) by
//   (version)
//
// count and rate take no field; every other function needs one. A bare
// selector means count(selector). Which metrics, labels and fields exist is
// checked by the evaluator (query_engine.h), not here.
#ifndef FLEET_CONTROLLER_TELEMETRY_QUERY_H_
#define FLEET_CONTROLLER_TELEMETRY_QUERY_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fleet::controller::telemetry {

enum class MatchOp { kEqual, kNotEqual, kRegex, kNotRegex };

struct LabelMatcher {
  std::string label;
  MatchOp op = MatchOp::kEqual;
  std::string value;
};

enum class Aggregation {
  kCount,
  kRate,  // count per second of the step
  kSum,
  kAvg,
  kMin,
  kMax,
  kP50,
  kP90,
  kP95,
  kP99,
};

// Lower-case name as written in queries ("p95").
const char* AggregationName(Aggregation aggregation);
// 50 for kP50 and so on; 0 for the others.
int Percentile(Aggregation aggregation);

struct Query {
  Aggregation aggregation = Aggregation::kCount;
  std::string metric;
  std::vector<LabelMatcher> matchers;
  std::string field;  // empty for count and rate
  std::vector<std::string> group_by;
};

// Parses `text`. INVALID_ARGUMENT on any error, with a message of the form
// "column 12: expected ')' after the field, found ','" (1-based column of
// the offending character, or one past the end for a premature end).
// Queries longer than 4096 bytes are refused.
absl::StatusOr<Query> ParseQuery(absl::string_view text);

// The query in canonical form (parsing it again yields the same Query).
std::string FormatQuery(const Query& query);

}  // namespace fleet::controller::telemetry

#endif  // FLEET_CONTROLLER_TELEMETRY_QUERY_H_
