#include "controller/telemetry/query.h"

#include <cctype>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace fleet::controller::telemetry {
namespace {

constexpr size_t kMaxQueryBytes = 4096;
constexpr size_t kMaxMatchers = 32;
constexpr size_t kMaxGroupLabels = 8;

struct FunctionName {
  const char* name;
  Aggregation aggregation;
};
constexpr FunctionName kFunctions[] = {
    {"count", Aggregation::kCount}, {"rate", Aggregation::kRate},
    {"sum", Aggregation::kSum},     {"avg", Aggregation::kAvg},
    {"min", Aggregation::kMin},     {"max", Aggregation::kMax},
    {"p50", Aggregation::kP50},     {"p90", Aggregation::kP90},
    {"p95", Aggregation::kP95},     {"p99", Aggregation::kP99},
};

std::optional<Aggregation> FunctionFor(absl::string_view name) {
  for (const FunctionName& f : kFunctions) {
    if (name == f.name) return f.aggregation;
  }
  return std::nullopt;
}

bool IsIdentStart(char c) {
  return std::isalpha(static_cast<unsigned char>(c)) || c == '_';
}
bool IsIdentChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
}

// One pass over the text; every method leaves pos_ after what it consumed
// (and after the whitespace that follows), so errors point at the first
// character that did not fit.
class Parser {
 public:
  explicit Parser(absl::string_view text) : text_(text) {}

  absl::StatusOr<Query> Parse() {
    SkipSpace();
    Query query;
    const size_t name_pos = pos_;
    std::string name = Identifier();
    if (name.empty()) return Error("expected a metric or a function name");
    if (Peek() == '(') {
      std::optional<Aggregation> aggregation = FunctionFor(name);
      if (!aggregation) {
        pos_ = name_pos;
        return Error(absl::StrCat(
            "unknown function \"", name,
            "\" (count, rate, sum, avg, min, max, p50, p90, p95, p99)"));
      }
      query.aggregation = *aggregation;
      Advance();
      const size_t metric_pos = pos_;
      query.metric = Identifier();
      if (query.metric.empty()) {
        return Error("expected a metric name inside the function");
      }
      if (FunctionFor(query.metric) && Peek() == '(') {
        pos_ = metric_pos;
        return Error("functions do not nest; expected a metric name");
      }
      absl::Status matchers = Matchers(query);
      if (!matchers.ok()) return matchers;
      const bool needs_field = query.aggregation != Aggregation::kCount &&
                               query.aggregation != Aggregation::kRate;
      if (Peek() == ',') {
        if (!needs_field) {
          return Error(absl::StrCat(AggregationName(query.aggregation),
                                    " takes no field; expected ')'"));
        }
        Advance();
        query.field = Identifier();
        if (query.field.empty()) return Error("expected a field name");
      } else if (needs_field) {
        return Error(absl::StrCat(
            "expected ',' and a numeric field (e.g. duration_ms): ",
            AggregationName(query.aggregation), " needs one"));
      }
      if (Peek() != ')') return Error("expected ')'");
      Advance();
      absl::Status by = By(query);
      if (!by.ok()) return by;
    } else {
      if (FunctionFor(name)) {
        return Error(
            absl::StrCat("expected '(' after the function \"", name, "\""));
      }
      query.metric = std::move(name);
      absl::Status matchers = Matchers(query);
      if (!matchers.ok()) return matchers;
      if (LookingAtWord("by")) {
        return Error("'by' needs an aggregation: write count(...) by (...)");
      }
    }
    if (pos_ != text_.size()) return Error("expected the end of the query");
    return query;
  }

 private:
  char Peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }
  void Advance() {
    ++pos_;
    SkipSpace();
  }
  void SkipSpace() {
    while (pos_ < text_.size() &&
           std::isspace(static_cast<unsigned char>(text_[pos_]))) {
      ++pos_;
    }
  }
  bool LookingAtWord(absl::string_view word) const {
    if (text_.substr(pos_, word.size()) != word) return false;
    const size_t end = pos_ + word.size();
    return end >= text_.size() || !IsIdentChar(text_[end]);
  }

  // Empty (and nothing consumed) if no identifier starts here.
  std::string Identifier() {
    if (pos_ >= text_.size() || !IsIdentStart(text_[pos_])) return "";
    const size_t start = pos_;
    while (pos_ < text_.size() && IsIdentChar(text_[pos_])) ++pos_;
    std::string out(text_.substr(start, pos_ - start));
    SkipSpace();
    return out;
  }

  absl::Status Error(absl::string_view expected) const {
    std::string found = pos_ >= text_.size()
                            ? "the end of the query"
                            : absl::StrCat("'", text_.substr(pos_, 1), "'");
    return absl::InvalidArgumentError(
        absl::StrCat("column ", pos_ + 1, ": ", expected, ", found ", found));
  }

  absl::Status Matchers(Query& query) {
    if (Peek() != '{') return absl::OkStatus();
    Advance();
    if (Peek() == '}') {
      Advance();
      return absl::OkStatus();
    }
    while (true) {
      if (query.matchers.size() == kMaxMatchers) {
        return Error(absl::StrCat("at most ", kMaxMatchers, " matchers"));
      }
      LabelMatcher matcher;
      matcher.label = Identifier();
      if (matcher.label.empty()) return Error("expected a label name");
      if (Peek() == '=') {
        ++pos_;
        matcher.op = MatchOp::kEqual;
        if (Peek() == '~') {
          ++pos_;
          matcher.op = MatchOp::kRegex;
        }
      } else if (Peek() == '!') {
        ++pos_;
        if (Peek() == '=') {
          matcher.op = MatchOp::kNotEqual;
        } else if (Peek() == '~') {
          matcher.op = MatchOp::kNotRegex;
        } else {
          return Error("expected '=' or '~' after '!'");
        }
        ++pos_;
      } else {
        return Error("expected '=', '!=', '=~' or '!~' after the label");
      }
      SkipSpace();
      absl::StatusOr<std::string> value = String();
      if (!value.ok()) return value.status();
      matcher.value = *std::move(value);
      query.matchers.push_back(std::move(matcher));
      if (Peek() == ',') {
        Advance();
        continue;
      }
      if (Peek() == '}') {
        Advance();
        return absl::OkStatus();
      }
      return Error("expected ',' or '}' after the matcher");
    }
  }

  absl::StatusOr<std::string> String() {
    if (Peek() != '"') return Error("expected a double-quoted value");
    ++pos_;
    std::string out;
    while (pos_ < text_.size() && text_[pos_] != '"') {
      char c = text_[pos_];
      if (c == '\\') {
        ++pos_;
        if (pos_ >= text_.size()) break;
        c = text_[pos_];
        if (c != '"' && c != '\\') {
          return Error("expected '\\\"' or '\\\\' (the only escapes)");
        }
      } else if (static_cast<unsigned char>(c) < 0x20) {
        return Error("expected a printable character in the value");
      }
      out.push_back(c);
      ++pos_;
    }
    if (pos_ >= text_.size()) return Error("expected the closing '\"'");
    Advance();
    return out;
  }

  absl::Status By(Query& query) {
    if (pos_ == text_.size()) return absl::OkStatus();
    if (!LookingAtWord("by")) return Error("expected 'by' or the end");
    pos_ += 2;
    SkipSpace();
    if (Peek() != '(') return Error("expected '(' after 'by'");
    Advance();
    while (true) {
      if (query.group_by.size() == kMaxGroupLabels) {
        return Error(
            absl::StrCat("at most ", kMaxGroupLabels, " labels in 'by'"));
      }
      std::string label = Identifier();
      if (label.empty()) return Error("expected a label name");
      query.group_by.push_back(std::move(label));
      if (Peek() == ',') {
        Advance();
        continue;
      }
      if (Peek() == ')') {
        Advance();
        return absl::OkStatus();
      }
      return Error("expected ',' or ')' in the 'by' list");
    }
  }

  absl::string_view text_;
  size_t pos_ = 0;
};

std::string Quote(absl::string_view value) {
  std::string out = "\"";
  for (char c : value) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

const char* OpText(MatchOp op) {
  switch (op) {
    case MatchOp::kEqual:
      return "=";
    case MatchOp::kNotEqual:
      return "!=";
    case MatchOp::kRegex:
      return "=~";
    case MatchOp::kNotRegex:
      return "!~";
  }
  return "=";
}

}  // namespace

const char* AggregationName(Aggregation aggregation) {
  for (const FunctionName& f : kFunctions) {
    if (f.aggregation == aggregation) return f.name;
  }
  return "count";
}

int Percentile(Aggregation aggregation) {
  switch (aggregation) {
    case Aggregation::kP50:
      return 50;
    case Aggregation::kP90:
      return 90;
    case Aggregation::kP95:
      return 95;
    case Aggregation::kP99:
      return 99;
    default:
      return 0;
  }
}

absl::StatusOr<Query> ParseQuery(absl::string_view text) {
  if (text.size() > kMaxQueryBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the query is ", text.size(), " bytes; at most ", kMaxQueryBytes));
  }
  return Parser(text).Parse();
}

std::string FormatQuery(const Query& query) {
  std::string selector = query.metric;
  if (!query.matchers.empty()) {
    std::vector<std::string> parts;
    for (const LabelMatcher& m : query.matchers) {
      parts.push_back(absl::StrCat(m.label, OpText(m.op), Quote(m.value)));
    }
    absl::StrAppend(&selector, "{", absl::StrJoin(parts, ", "), "}");
  }
  std::string out =
      absl::StrCat(AggregationName(query.aggregation), "(", selector);
  if (!query.field.empty()) absl::StrAppend(&out, ", ", query.field);
  out += ")";
  if (!query.group_by.empty()) {
    absl::StrAppend(&out, " by (", absl::StrJoin(query.group_by, ", "), ")");
  }
  return out;
}

}  // namespace fleet::controller::telemetry
