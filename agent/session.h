// The agent's side of AgentService.Connect: one long-lived stream to the
// controller, reopened with exponential backoff and full jitter whenever it
// ends.
//
// Per stream: Hello (identity, platform, labels, the installed product as
// the journal and the executable's digest say, last/active directive ids),
// then Welcome, whose acked_event_seq drops acknowledged events from the
// journal. From then on a reader thread hands UpdateDirective/Cancel to the
// DirectiveHandler and applies EventAcks; the session's own thread sends the
// journal's unacknowledged events in seq order (again after every reconnect)
// and new ones as they are journaled, and a Heartbeat every
// Welcome.heartbeat_interval_seconds.
//
// With SetTrust, the Hello names the agent's root version, the roots a
// Welcome or RootUpdate brings are applied in order (AgentTrust::Apply), and
// heartbeats carry the root's version and expiry.
//
// The session never touches the program or the executable; it reads the
// journal and the executable's digest only.
#ifndef FLEET_AGENT_SESSION_H_
#define FLEET_AGENT_SESSION_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/directive_handler.h"
#include "agent/journal.h"
#include "agent/trust.h"
#include "common/clock.h"
#include "proto/fleet/v1/agent.grpc.pb.h"

namespace fleet::agent {

struct SessionOptions {
  std::string agent_id;
  std::string agent_version;
  std::string product;
  std::string exec_path;
  // The agent's own binary, reported in Hello as a second installed
  // product (version: the journal's if fleet installed it, else
  // agent_version) so rollouts of the agent product target it. Empty: not
  // reported.
  std::string agent_product;
  std::string agent_exec_path;
  std::string state_dir;  // for the free-space figure in heartbeats
  std::map<std::string, std::string> labels;
  absl::Duration backoff_base = absl::Milliseconds(500);
  absl::Duration backoff_cap = absl::Seconds(30);
  // Used until a Welcome names an interval (and if it names 0).
  absl::Duration heartbeat_interval = absl::Seconds(10);
};

// Fills the program's figures of a heartbeat (restarts, RSS, CPU).
using ProgramStatsFn = std::function<void(v1::Heartbeat&)>;

// gRPC channel arguments the agent's channel needs: keepalive pings every
// 20 s (10 s timeout) even without calls, and a reconnect backoff no longer
// than the session's own.
grpc::ChannelArguments AgentChannelArguments();

class Session {
 public:
  // Everything borrowed must outlive the Session.
  Session(SessionOptions options, v1::AgentService::StubInterface& stub,
          UpdateJournal& journal, DirectiveHandler& handler,
          ProgramStatsFn program_stats = nullptr,
          const Clock& clock = RealClock::Get());
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Connects, serves and reconnects until Shutdown(). Blocks.
  void Run();
  // Ends the current stream and makes Run() return. Thread-safe.
  void Shutdown();
  // The root of trust to report and rotate (nullptr: a flat key list).
  // Call before Run(); `trust` must outlive the Session.
  void SetTrust(AgentTrust* trust) { trust_ = trust; }

  // Streams that got a Welcome so far.
  uint64_t welcomes() const;
  bool connected() const;

  // The Hello this agent would send now.
  v1::Hello BuildHello();
  v1::Heartbeat BuildHeartbeat();

 private:
  // One stream from Connect to its end; the status it ended with.
  absl::Status Serve();
  bool shutting_down() const;

  const SessionOptions options_;
  v1::AgentService::StubInterface& stub_;
  UpdateJournal& journal_;
  DirectiveHandler& handler_;
  const ProgramStatsFn program_stats_;
  const Clock& clock_;
  const absl::Time started_;
  AgentTrust* trust_ = nullptr;

  mutable absl::Mutex mu_;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* context_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool connected_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t welcomes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace fleet::agent

#endif  // FLEET_AGENT_SESSION_H_
