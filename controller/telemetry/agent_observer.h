// What the agent hub tells telemetry about agent streams. Called from gRPC
// reactions: implementations must be thread-safe and must not block (no
// disk, no waiting on locks held across I/O).
#ifndef FLEET_CONTROLLER_TELEMETRY_AGENT_OBSERVER_H_
#define FLEET_CONTROLLER_TELEMETRY_AGENT_OBSERVER_H_

#include "absl/strings/string_view.h"
#include "controller/telemetry/controller_metrics.h"
#include "controller/telemetry/telemetry_store.h"
#include "proto/fleet/v1/agent.pb.h"

namespace fleet::controller::telemetry {

class AgentObserver {
 public:
  virtual ~AgentObserver() = default;
  // A valid Hello opened a stream.
  virtual void OnHello(const v1::Hello& hello) = 0;
  virtual void OnHeartbeat(absl::string_view agent_id,
                           const v1::Heartbeat& heartbeat) = 0;
  // An UpdateDirective was queued on an agent's stream.
  virtual void OnDirectiveSent(const v1::UpdateDirective& directive) = 0;
};

// Forwards to the telemetry store (heartbeats, versions) and the metrics
// (directives sent). Both must outlive it.
class TelemetryRecorder : public AgentObserver {
 public:
  TelemetryRecorder(TelemetryStore& store, ControllerMetrics& metrics)
      : store_(store), metrics_(metrics) {}
  void OnHello(const v1::Hello& hello) override { store_.RecordHello(hello); }
  void OnHeartbeat(absl::string_view agent_id,
                   const v1::Heartbeat& heartbeat) override {
    store_.RecordHeartbeat(agent_id, heartbeat);
  }
  void OnDirectiveSent(const v1::UpdateDirective& directive) override {
    metrics_.DirectiveSent(directive.kind() == v1::DIRECTIVE_KIND_ROLLBACK
                               ? "rollback"
                               : "update");
  }

 private:
  TelemetryStore& store_;
  ControllerMetrics& metrics_;
};

}  // namespace fleet::controller::telemetry

#endif  // FLEET_CONTROLLER_TELEMETRY_AGENT_OBSERVER_H_
