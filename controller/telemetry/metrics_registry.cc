#include "controller/telemetry/metrics_registry.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"

namespace fleet::controller::telemetry {
namespace {

const char* TypeName(MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

std::string FormatValue(double value) {
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  if (std::isnan(value)) return "NaN";
  if (value == std::floor(value) && std::fabs(value) < 1e15) {
    return absl::StrCat(static_cast<int64_t>(value));
  }
  return absl::StrCat(value);
}

std::string Labels(const std::vector<std::string>& names,
                   const std::vector<std::string>& values,
                   const std::string& extra_name = "",
                   const std::string& extra_value = "") {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) {
    absl::StrAppend(&out, out.empty() ? "" : ",", names[i], "=\"",
                    EscapeLabelValue(values[i]), "\"");
  }
  if (!extra_name.empty()) {
    absl::StrAppend(&out, out.empty() ? "" : ",", extra_name, "=\"",
                    extra_value, "\"");
  }
  return out.empty() ? "" : absl::StrCat("{", out, "}");
}

}  // namespace

std::string EscapeLabelValue(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

MetricFamily::MetricFamily(std::string name, std::string help, MetricType type,
                           std::vector<std::string> label_names,
                           std::vector<double> buckets)
    : name_(std::move(name)),
      help_(std::move(help)),
      type_(type),
      label_names_(std::move(label_names)),
      buckets_(std::move(buckets)) {}

MetricFamily::Series& MetricFamily::SeriesLocked(
    const std::vector<std::string>& label_values) {
  Series& series = series_[label_values];
  if (type_ == MetricType::kHistogram && series.bucket_counts.empty()) {
    series.bucket_counts.assign(buckets_.size(), 0);
  }
  return series;
}

void MetricFamily::Increment(const std::vector<std::string>& label_values,
                             double by) {
  if (label_values.size() != label_names_.size() || !(by >= 0)) return;
  absl::MutexLock lock(&mu_);
  SeriesLocked(label_values).value += by;
}

void MetricFamily::Set(const std::vector<std::string>& label_values,
                       double value) {
  if (label_values.size() != label_names_.size()) return;
  absl::MutexLock lock(&mu_);
  SeriesLocked(label_values).value = value;
}

void MetricFamily::Observe(const std::vector<std::string>& label_values,
                           double value) {
  if (label_values.size() != label_names_.size()) return;
  absl::MutexLock lock(&mu_);
  Series& series = SeriesLocked(label_values);
  series.value += value;
  ++series.count;
  for (size_t i = 0; i < buckets_.size(); ++i) {
    if (value <= buckets_[i]) {
      ++series.bucket_counts[i];
      break;  // cumulated when rendered
    }
  }
}

void MetricFamily::Clear() {
  absl::MutexLock lock(&mu_);
  series_.clear();
}

double MetricFamily::Value(const std::vector<std::string>& label_values) const {
  absl::MutexLock lock(&mu_);
  auto it = series_.find(label_values);
  if (it == series_.end()) return 0;
  return type_ == MetricType::kHistogram ? static_cast<double>(it->second.count)
                                         : it->second.value;
}

void MetricFamily::Render(std::string& out) const {
  absl::StrAppend(&out, "# HELP ", name_, " ", help_, "\n# TYPE ", name_, " ",
                  TypeName(type_), "\n");
  absl::MutexLock lock(&mu_);
  for (const auto& [values, series] : series_) {
    if (type_ != MetricType::kHistogram) {
      absl::StrAppend(&out, name_, Labels(label_names_, values), " ",
                      FormatValue(series.value), "\n");
      continue;
    }
    uint64_t cumulative = 0;
    for (size_t i = 0; i < buckets_.size(); ++i) {
      cumulative += series.bucket_counts[i];
      absl::StrAppend(
          &out, name_, "_bucket",
          Labels(label_names_, values, "le", FormatValue(buckets_[i])), " ",
          cumulative, "\n");
    }
    absl::StrAppend(&out, name_, "_bucket",
                    Labels(label_names_, values, "le", "+Inf"), " ",
                    series.count, "\n");
    absl::StrAppend(&out, name_, "_sum", Labels(label_names_, values), " ",
                    FormatValue(series.value), "\n");
    absl::StrAppend(&out, name_, "_count", Labels(label_names_, values), " ",
                    series.count, "\n");
  }
}

MetricFamily& MetricsRegistry::Add(std::unique_ptr<MetricFamily> family) {
  absl::MutexLock lock(&mu_);
  families_.push_back(std::move(family));
  return *families_.back();
}

MetricFamily& MetricsRegistry::AddCounter(
    std::string name, std::string help, std::vector<std::string> label_names) {
  return Add(std::make_unique<MetricFamily>(
      std::move(name), std::move(help), MetricType::kCounter,
      std::move(label_names), std::vector<double>{}));
}

MetricFamily& MetricsRegistry::AddGauge(std::string name, std::string help,
                                        std::vector<std::string> label_names) {
  return Add(std::make_unique<MetricFamily>(
      std::move(name), std::move(help), MetricType::kGauge,
      std::move(label_names), std::vector<double>{}));
}

MetricFamily& MetricsRegistry::AddHistogram(
    std::string name, std::string help, std::vector<std::string> label_names,
    std::vector<double> buckets) {
  return Add(std::make_unique<MetricFamily>(
      std::move(name), std::move(help), MetricType::kHistogram,
      std::move(label_names), std::move(buckets)));
}

void MetricsRegistry::AddCollector(std::function<void()> collect) {
  absl::MutexLock lock(&mu_);
  collectors_.push_back(std::move(collect));
}

std::string MetricsRegistry::Render() const {
  absl::MutexLock render_lock(&render_mu_);
  std::vector<std::function<void()>> collectors;
  std::vector<const MetricFamily*> families;
  {
    absl::MutexLock lock(&mu_);
    collectors = collectors_;
    for (const auto& family : families_) families.push_back(family.get());
  }
  for (const auto& collect : collectors) collect();
  std::string out;
  for (const MetricFamily* family : families) family->Render(out);
  return out;
}

}  // namespace fleet::controller::telemetry
