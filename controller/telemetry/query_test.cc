#include "controller/telemetry/query.h"

#include <string>

#include "gtest/gtest.h"

namespace fleet::controller::telemetry {
namespace {

TEST(QueryTest, ParsesAggregationWithMatchersFieldAndBy) {
  absl::StatusOr<Query> q = ParseQuery(
      R"( p95( update_events{phase="healthy", version!="1.0.0", rollout=~"r-.*"} , duration_ms ) by (version, platform) )");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->aggregation, Aggregation::kP95);
  EXPECT_EQ(q->metric, "update_events");
  ASSERT_EQ(q->matchers.size(), 3u);
  EXPECT_EQ(q->matchers[0].label, "phase");
  EXPECT_EQ(q->matchers[0].op, MatchOp::kEqual);
  EXPECT_EQ(q->matchers[0].value, "healthy");
  EXPECT_EQ(q->matchers[1].op, MatchOp::kNotEqual);
  EXPECT_EQ(q->matchers[2].op, MatchOp::kRegex);
  EXPECT_EQ(q->matchers[2].value, "r-.*");
  EXPECT_EQ(q->field, "duration_ms");
  EXPECT_EQ(q->group_by, (std::vector<std::string>{"version", "platform"}));
}

TEST(QueryTest, BareSelectorIsCount) {
  absl::StatusOr<Query> q = ParseQuery(R"(agents{product="app"})");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->aggregation, Aggregation::kCount);
  EXPECT_EQ(q->metric, "agents");
  EXPECT_TRUE(q->field.empty());
  ASSERT_TRUE(ParseQuery("heartbeats").ok());
  ASSERT_TRUE(ParseQuery("heartbeats{}").ok());
}

TEST(QueryTest, EscapesInValues) {
  absl::StatusOr<Query> q =
      ParseQuery(R"(count(update_events{error_class!~"a\"b\\c"}))");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->matchers[0].op, MatchOp::kNotRegex);
  EXPECT_EQ(q->matchers[0].value, "a\"b\\c");
}

TEST(QueryTest, FormatRoundTrips) {
  const char* queries[] = {
      R"(count(agents{product="app"}) by (version))",
      R"(rate(update_events{phase="failed", error_class=~"dl|disk"}))",
      R"(max(heartbeats{platform!="linux/arm64"}, agent_rss_bytes) by (agent_id))",
      R"(avg(update_events{x="q\"uote"}, bytes))",
  };
  for (const char* text : queries) {
    absl::StatusOr<Query> q = ParseQuery(text);
    ASSERT_TRUE(q.ok()) << text << ": " << q.status();
    EXPECT_EQ(FormatQuery(*q), text);
    absl::StatusOr<Query> again = ParseQuery(FormatQuery(*q));
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(FormatQuery(*again), FormatQuery(*q));
  }
}

TEST(QueryTest, ErrorsNameColumnAndExpectation) {
  struct Case {
    std::string text;
    std::string message;
  };
  const Case cases[] = {
      {"",
       "column 1: expected a metric or a function name, found the end of "
       "the query"},
      {"p96(update_events)",
       "column 1: unknown function \"p96\" (count, rate, sum, avg, min, max, "
       "p50, p90, p95, p99), found 'p'"},
      {"count(",
       "column 7: expected a metric name inside the function, found "
       "the end of the query"},
      {"avg(update_events)",
       "column 18: expected ',' and a numeric field (e.g. duration_ms): avg "
       "needs one, found ')'"},
      {"count(update_events, duration_ms)",
       "column 20: count takes no field; expected ')', found ','"},
      {"update_events{phase=\"failed\"",
       "column 29: expected ',' or '}' after "
       "the matcher, found the end of the "
       "query"},
      {"update_events{phase:\"x\"}",
       "column 20: expected '=', '!=', '=~' or '!~' after the label, found "
       "':'"},
      {"update_events{phase=failed}",
       "column 21: expected a double-quoted value, found 'f'"},
      {"update_events{phase=\"fai",
       "column 25: expected the closing '\"', "
       "found the end of the query"},
      {"update_events{phase!x\"\"}",
       "column 21: expected '=' or '~' after '!', found 'x'"},
      {"count(update_events) by version",
       "column 25: expected '(' after 'by', found 'v'"},
      {"count(update_events) by (version,)",
       "column 34: expected a label name, found ')'"},
      {"count(update_events) extra",
       "column 22: expected 'by' or the end, found 'e'"},
      {"update_events by (version)",
       "column 15: 'by' needs an aggregation: write count(...) by (...), "
       "found 'b'"},
      {"count update_events",
       "column 7: expected '(' after the function \"count\", found 'u'"},
      {"p95 (count(x))",
       "column 6: functions do not nest; expected a metric "
       "name, found 'c'"},
      {"count(update_events{,})",
       "column 21: expected a label name, found ','"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<Query> q = ParseQuery(c.text);
    ASSERT_FALSE(q.ok()) << c.text;
    EXPECT_EQ(q.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(q.status().message(), c.message) << c.text;
  }
}

TEST(QueryTest, RefusesOversizedQueries) {
  absl::StatusOr<Query> q = ParseQuery(std::string(5000, 'a'));
  ASSERT_FALSE(q.ok());
  EXPECT_EQ(q.status().message(), "the query is 5000 bytes; at most 4096");
}

}  // namespace
}  // namespace fleet::controller::telemetry
