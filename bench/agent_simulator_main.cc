// agent_simulator: N simulated fleet agents in one process (see
// bench/agent_simulator.h). Thin main: flags, RLIMIT_NOFILE, a command loop
// on stdin and a JSON stats line on stdout every --stats-ms.
//
// Commands (one per line on stdin; EOF or SIGTERM ends the run):
//   add N [PER_SECOND]   connect N more agents
//   flood N              every agent sends N more events (telemetry load)
//   reset                forget directive receipt times
//   receipts PATH        write "AGENT_ID UNIX_MICROS DIRECTIVE_ID" lines
//   stats                print a stats line now
//   quit
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdio>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "bench/agent_simulator.h"

namespace {

using fleet::bench::AgentSimulator;
using fleet::bench::SimulatorStats;

// Quotes and backslashes escaped, control characters dropped.
std::string JsonEscape(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) >= 0x20) out += c;
  }
  return out;
}

std::string StatsJson(const SimulatorStats& s) {
  std::string ends;
  for (const auto& [code, count] : s.stream_ends) {
    absl::StrAppend(&ends, ends.empty() ? "" : ",", "\"", code, "\":", count);
  }
  std::string messages;
  for (const auto& [code, message] : s.first_end_message) {
    absl::StrAppend(&messages, messages.empty() ? "" : ",", "\"", code, "\":\"",
                    JsonEscape(message), "\"");
  }
  return absl::StrCat(
      "{\"stats\":1,\"t_unix_ms\":", absl::ToUnixMillis(absl::Now()),
      ",\"agents\":", s.agents, ",\"connected\":", s.connected,
      ",\"welcomes\":", s.welcomes, ",\"directives\":", s.directives,
      ",\"duplicate_directives\":", s.duplicate_directives,
      ",\"healthy\":", s.healthy, ",\"failed\":", s.failed,
      ",\"events_sent\":", s.events_sent, ",\"events_acked\":", s.events_acked,
      ",\"heartbeats\":", s.heartbeats, ",\"fetch_bytes\":", s.fetch_bytes,
      ",\"stream_ends\":{", ends, "},\"end_messages\":{", messages,
      "},\"cpu_s\":", s.cpu_seconds, ",\"rss_kib\":", s.rss_kib, "}");
}

void Print(const std::string& line) {
  std::fprintf(stdout, "%s\n", line.c_str());
  std::fflush(stdout);
}

// Raises the soft open-files limit to the hard one: one socket per agent.
rlim_t RaiseNoFile() {
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = limit.rlim_max;
  setrlimit(RLIMIT_NOFILE, &limit);
  getrlimit(RLIMIT_NOFILE, &limit);
  return limit.rlim_cur;
}

// Runs one command line; false on "quit".
bool Run(AgentSimulator& sim, const std::string& line) {
  std::vector<std::string> words =
      absl::StrSplit(line, ' ', absl::SkipWhitespace());
  if (words.empty()) return true;
  const std::string& command = words[0];
  int n = 0;
  if (command == "add" && words.size() >= 2 && absl::SimpleAtoi(words[1], &n)) {
    double rate = 0;
    if (words.size() >= 3 && !absl::SimpleAtod(words[2], &rate)) rate = 0;
    sim.AddAgents(n, rate);
    Print(absl::StrCat("{\"ok\":\"add\",\"count\":", n, "}"));
  } else if (command == "flood" && words.size() == 2 &&
             absl::SimpleAtoi(words[1], &n)) {
    sim.Flood(n);
    Print(absl::StrCat("{\"ok\":\"flood\",\"t_unix_ms\":",
                       absl::ToUnixMillis(absl::Now()), "}"));
  } else if (command == "reset") {
    sim.ResetReceipts();
    Print("{\"ok\":\"reset\"}");
  } else if (command == "receipts" && words.size() == 2) {
    absl::Status s = sim.WriteReceipts(words[1]);
    Print(s.ok() ? "{\"ok\":\"receipts\"}"
                 : absl::StrCat("{\"error\":\"", s.message(), "\"}"));
  } else if (command == "stats") {
    Print(StatsJson(sim.Stats()));
  } else if (command == "quit") {
    return false;
  } else {
    Print(absl::StrCat("{\"error\":\"unknown command: ", command,
                       "; use add N [PER_SECOND], flood N, reset, receipts "
                       "PATH, stats or quit\"}"));
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  fleet::bench::SimulatorOptions options;
  int agents = 0;
  double rate = 500;
  int stats_ms = 1000;
  int phase_delay_ms = 10;
  std::vector<std::string> labels;
  std::vector<std::string> trust_keys;

  CLI::App app{"agent_simulator: N simulated fleet agents in one process"};
  app.add_option("--controller", options.controller, "HOST:PORT")->required();
  app.add_option("--agents", agents, "agents to connect at start")
      ->capture_default_str();
  app.add_option("--rate", rate, "connects per second at start (0: at once)")
      ->capture_default_str();
  app.add_option("--id-prefix", options.id_prefix, "agent ids PREFIX-000001..")
      ->capture_default_str();
  app.add_option("--product", options.product, "product in Hello")
      ->capture_default_str();
  app.add_option("--installed-version", options.installed_version,
                 "version reported as installed (default none)");
  app.add_option("--platform", options.platform, "os/arch")
      ->capture_default_str();
  app.add_option("--label", labels, "key=value; repeatable");
  app.add_flag("--download", options.download,
               "fetch and verify artifacts (default: no-download mode)");
  app.add_option("--trust-key", trust_keys,
                 "release public key (PEM); required with --download")
      ->check(CLI::ExistingFile);
  app.add_option("--phase-delay-ms", phase_delay_ms, "delay between phases")
      ->capture_default_str();
  app.add_option("--failure-rate", options.failure_rate,
                 "share of updates that FAIL, 0..1")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--flood-window", options.flood_window,
                 "unacknowledged events per agent while flooding")
      ->capture_default_str();
  bool single_events = false;
  app.add_flag("--single-events", single_events,
               "send one event per message, as an agent that predates "
               "Welcome.max_events_per_batch");
  app.add_option("--seed", options.seed, "random seed")->capture_default_str();
  app.add_option("--stats-ms", stats_ms, "stats line interval (0: none)")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  options.event_batches = !single_events;

  for (const std::string& label : labels) {
    std::vector<std::string> kv =
        absl::StrSplit(label, absl::MaxSplits('=', 1));
    if (kv.size() != 2 || kv[0].empty()) {
      std::fprintf(stderr, "bad --label \"%s\": expected key=value\n",
                   label.c_str());
      return 2;
    }
    options.labels[kv[0]] = kv[1];
  }
  for (const std::string& path : trust_keys) {
    if (absl::Status s = options.trust_keys.AddPemFile(path); !s.ok()) {
      std::fprintf(stderr, "cannot load --trust-key %s: %s\n", path.c_str(),
                   std::string(s.message()).c_str());
      return 2;
    }
  }
  if (options.download && options.trust_keys.empty()) {
    std::fprintf(stderr,
                 "--download needs --trust-key: the agent checks the "
                 "manifest's signature before fetching\n");
    return 2;
  }
  options.phase_delay = absl::Milliseconds(phase_delay_ms);

  const rlim_t nofile = RaiseNoFile();
  // Only the signal thread below sees SIGTERM/SIGINT.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::atomic<bool> stop{false};
  std::thread signal_thread([&] {
    int signal_number = 0;
    sigwait(&signals, &signal_number);
    stop = true;
  });
  signal_thread.detach();

  Print(absl::StrCat("{\"started\":1,\"pid\":", getpid(),
                     ",\"nofile\":", nofile, "}"));
  AgentSimulator sim(options);
  if (agents > 0) sim.AddAgents(agents, rate);

  std::string buffer;
  absl::Time next_stats = absl::Now() + absl::Milliseconds(stats_ms);
  bool running = true;
  while (running && !stop) {
    pollfd fd{STDIN_FILENO, POLLIN, 0};
    const int ready = poll(&fd, 1, 100);
    if (ready > 0) {
      char chunk[4096];
      const ssize_t n = read(STDIN_FILENO, chunk, sizeof(chunk));
      if (n <= 0) break;  // EOF: the driver is gone
      buffer.append(chunk, n);
      size_t newline;
      while (running && (newline = buffer.find('\n')) != std::string::npos) {
        running = Run(sim, buffer.substr(0, newline));
        buffer.erase(0, newline + 1);
      }
    }
    if (stats_ms > 0 && absl::Now() >= next_stats) {
      Print(StatsJson(sim.Stats()));
      next_stats += absl::Milliseconds(stats_ms);
    }
  }
  sim.Shutdown();
  Print(StatsJson(sim.Stats()));
  return 0;
}
