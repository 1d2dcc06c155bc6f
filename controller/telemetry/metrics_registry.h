// A small metrics registry for /metrics: counter, gauge and histogram
// families with labels, rendered in Prometheus text exposition format 0.0.4.
//
//   MetricsRegistry registry;
//   MetricFamily& sent = registry.AddCounter(
//       "fleet_directives_sent_total", "Update directives sent to agents", {});
//   sent.Increment({});
//   std::string page = registry.Render();
//
// Thread-safety: every method of both classes is thread-safe. Families live
// as long as the registry; references to them stay valid.
#ifndef FLEET_CONTROLLER_TELEMETRY_METRICS_REGISTRY_H_
#define FLEET_CONTROLLER_TELEMETRY_METRICS_REGISTRY_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace fleet::controller::telemetry {

enum class MetricType { kCounter, kGauge, kHistogram };

class MetricFamily {
 public:
  MetricFamily(std::string name, std::string help, MetricType type,
               std::vector<std::string> label_names,
               std::vector<double> buckets);

  // `label_values` must have one value per label name (ignored otherwise:
  // a programming error must not take the controller down). Counters only
  // grow: a negative `by` is ignored.
  void Increment(const std::vector<std::string>& label_values, double by = 1);
  // Gauges.
  void Set(const std::vector<std::string>& label_values, double value);
  // Histograms: counts `value` in every bucket whose upper bound is >= it.
  void Observe(const std::vector<std::string>& label_values, double value);
  // Forgets every labelled series (for gauges recomputed at each scrape).
  void Clear();

  // The current value of a counter or gauge series, 0 if absent; for a
  // histogram, its observation count.
  double Value(const std::vector<std::string>& label_values) const;

  const std::string& name() const { return name_; }
  void Render(std::string& out) const;

 private:
  struct Series {
    double value = 0;  // counter / gauge; histogram sum
    uint64_t count = 0;
    std::vector<uint64_t> bucket_counts;  // not cumulative
  };
  Series& SeriesLocked(const std::vector<std::string>& label_values)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string name_;
  const std::string help_;
  const MetricType type_;
  const std::vector<std::string> label_names_;
  const std::vector<double> buckets_;  // ascending upper bounds

  mutable absl::Mutex mu_;
  std::map<std::vector<std::string>, Series> series_ ABSL_GUARDED_BY(mu_);
};

class MetricsRegistry {
 public:
  MetricsRegistry() = default;
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  // Names must match [a-zA-Z_:][a-zA-Z0-9_:]* and be unique (programming
  // errors; not checked at run time).
  MetricFamily& AddCounter(std::string name, std::string help,
                           std::vector<std::string> label_names);
  MetricFamily& AddGauge(std::string name, std::string help,
                         std::vector<std::string> label_names);
  // `buckets`: ascending upper bounds; +Inf is implied.
  MetricFamily& AddHistogram(std::string name, std::string help,
                             std::vector<std::string> label_names,
                             std::vector<double> buckets);

  // `collect` runs at the start of every Render, e.g. to refresh gauges read
  // from the database. It may block (Render runs on an HTTP worker thread).
  void AddCollector(std::function<void()> collect);

  // Runs the collectors, then renders every family in the order added.
  std::string Render() const;

 private:
  MetricFamily& Add(std::unique_ptr<MetricFamily> family);

  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<MetricFamily>> families_ ABSL_GUARDED_BY(mu_);
  std::vector<std::function<void()>> collectors_ ABSL_GUARDED_BY(mu_);
  // Serializes whole renders so collectors never run concurrently.
  mutable absl::Mutex render_mu_;
};

// Escapes a label value for the text format (\\, \", \n).
std::string EscapeLabelValue(const std::string& value);

}  // namespace fleet::controller::telemetry

#endif  // FLEET_CONTROLLER_TELEMETRY_METRICS_REGISTRY_H_
