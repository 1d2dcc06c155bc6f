// A load tool: N simulated fleet agents in one process, each on its own gRPC
// channel (its own TCP connection: local subchannel pool) and its own
// AgentService.Connect stream, all driven by gRPC's callback client API (no
// thread per agent; one timer thread for heartbeats, phase delays and
// reconnects).
//
// Each agent speaks the real protocol: Hello (unique id, platform, labels,
// installed product), Welcome, Heartbeat every Welcome interval, and on an
// UpdateDirective either
//   - no-download mode: reports RECEIVED .. HEALTHY with a configurable delay
//     between phases, failing a configurable share at DOWNLOADING, or
//   - download mode: checks the manifest's signature against the trust keys,
//     fetches the artifact with FetchArtifact, hashing it while it streams,
//     checks size and sha256, then reports the phases through HEALTHY.
// Events carry seq (1, 2, ...), stay queued until an EventAck covers them
// and are resent after a reconnect; a stream that ends is reopened with
// exponential backoff and full jitter, as fleet-agent does.
//
//   SimulatorOptions options;
//   options.controller = "127.0.0.1:7000";
//   AgentSimulator sim(options);
//   sim.AddAgents(1000, /*per_second=*/500);
//   ... sim.Stats() ... sim.WriteReceipts(path) ...
//   sim.Shutdown();
//
// Thread-safe: every public method may be called from any thread.
#ifndef FLEET_BENCH_AGENT_SIMULATOR_H_
#define FLEET_BENCH_AGENT_SIMULATOR_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <queue>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/manifest.h"

namespace fleet::bench {

class SimulatedAgent;

struct SimulatorOptions {
  std::string controller;         // HOST:PORT
  std::string id_prefix = "sim";  // agent ids are PREFIX-000001, ...
  std::string product = "app";    // listed in Hello as installed
  std::string installed_version;  // "" = nothing installed yet
  std::string platform = "linux/amd64";
  std::map<std::string, std::string> labels;
  bool download = false;   // false: no-download mode
  TrustedKeys trust_keys;  // download mode: manifest signers
  absl::Duration phase_delay = absl::Milliseconds(10);
  double failure_rate = 0;  // share of directives that FAIL
  absl::Duration backoff_base = absl::Milliseconds(500);
  absl::Duration backoff_cap = absl::Seconds(30);
  // Events an agent keeps unacknowledged at most while flooding.
  int flood_window = 512;
  // Events queued behind a write in flight leave in one AgentMessage.events
  // (up to Welcome.max_events_per_batch), as fleet-agent may; false: one
  // message per event, as an agent that predates batches.
  bool event_batches = true;
  uint64_t seed = 1;
};

// Counters over all agents since the simulator started.
struct SimulatorStats {
  int64_t agents = 0;      // created
  int64_t connected = 0;   // streams open that got a Welcome
  int64_t welcomes = 0;    // Welcomes received (reconnects included)
  int64_t directives = 0;  // UpdateDirectives received (dups included)
  int64_t duplicate_directives = 0;
  int64_t healthy = 0;       // updates that reported HEALTHY
  int64_t failed = 0;        // updates that reported FAILED
  int64_t events_sent = 0;   // UpdateEvents written (resends included)
  int64_t events_acked = 0;  // distinct events covered by an EventAck
  int64_t heartbeats = 0;
  int64_t fetch_bytes = 0;  // artifact bytes received (download mode)
  // Stream ends by gRPC status code name (e.g. "UNAVAILABLE": 10000).
  std::map<std::string, int64_t> stream_ends;
  // The first status message seen per code name.
  std::map<std::string, std::string> first_end_message;
  double cpu_seconds = 0;  // this process, user + system
  int64_t rss_kib = 0;     // this process
};

// Runs callbacks at (or after) a given time on one thread. Callbacks must
// not block: they share the thread with every other agent's.
class TimerQueue {
 public:
  TimerQueue();
  ~TimerQueue();  // drops callbacks not yet due
  void At(absl::Time when, std::function<void()> callback);

 private:
  struct Entry {
    absl::Time when;
    uint64_t order;
    std::function<void()> callback;
    bool operator>(const Entry& other) const {
      return when != other.when ? when > other.when : order > other.order;
    }
  };
  void Loop();

  absl::Mutex mu_;
  absl::CondVar wake_;
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> queue_
      ABSL_GUARDED_BY(mu_);
  uint64_t next_order_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

class AgentSimulator {
 public:
  explicit AgentSimulator(SimulatorOptions options);
  ~AgentSimulator();  // Shutdown()
  AgentSimulator(const AgentSimulator&) = delete;
  AgentSimulator& operator=(const AgentSimulator&) = delete;

  // Creates `count` more agents and connects them at `per_second` (evenly
  // spaced; <= 0: all at once). Returns at once.
  void AddAgents(int count, double per_second);
  // Every connected agent sends `events_per_agent` more UpdateEvents as fast
  // as acks allow (at most options.flood_window unacknowledged): the
  // telemetry ingest load. Events are DOWNLOADING progress of directive "".
  void Flood(int events_per_agent);
  // Forgets every recorded directive receipt time (before a new fan-out).
  void ResetReceipts();
  // Writes one line per agent that received a directive since the last
  // ResetReceipts: "AGENT_ID UNIX_MICROS DIRECTIVE_ID". Errno status on I/O.
  absl::Status WriteReceipts(const std::string& path) const;
  SimulatorStats Stats() const;
  // Cancels every stream and waits (up to `timeout`) until all have ended.
  void Shutdown(absl::Duration timeout = absl::Seconds(10));

  // Used by the agents.
  const SimulatorOptions& options() const { return options_; }
  TimerQueue& timers() { return *timers_; }
  struct Counters;
  Counters& counters() { return *counters_; }

 private:
  const SimulatorOptions options_;
  std::unique_ptr<Counters> counters_;
  std::unique_ptr<TimerQueue> timers_;
  mutable absl::Mutex mu_;
  // Never shrinks: timers and reactors hold raw pointers to agents.
  std::vector<std::unique_ptr<SimulatedAgent>> agents_ ABSL_GUARDED_BY(mu_);
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

// Process CPU seconds (user + system) and resident set in KiB.
double ProcessCpuSeconds();
int64_t ProcessRssKib();

}  // namespace fleet::bench

#endif  // FLEET_BENCH_AGENT_SIMULATOR_H_
