// What the updater needs from the supervisor to replace the agent's own
// binary (docs/ARCHITECTURE.md, "Agent self-update"): a trial of a staged
// new binary, then its commit. Implemented by SupervisorClient over the
// supervisor socket; a separate interface so the updater does not depend on
// the socket and its unit tests can run without a supervisor.
#ifndef FLEET_AGENT_AGENT_TRIAL_CONTROL_H_
#define FLEET_AGENT_AGENT_TRIAL_CONTROL_H_

#include <string>

#include "absl/status/status.h"

namespace fleet::agent {

class AgentTrialControl {
 public:
  virtual ~AgentTrialControl() = default;

  // Asks the supervisor to swap in the binary staged at
  // AGENT_EXEC.fleet-new (whose sha256 is `sha256_hex`) and run it as the
  // trial worker for `directive_id`. OK once the new binary is in place;
  // the supervisor then stops this worker. FAILED_PRECONDITION if a trial
  // runs already or the staged file is not that binary; the rename's errno
  // status (nothing changed) otherwise; UNAVAILABLE if the supervisor is
  // gone.
  virtual absl::Status BeginAgentTrial(const std::string& directive_id,
                                       const std::string& sha256_hex) = 0;

  // From the trial worker: makes the new binary permanent. OK once the
  // supervisor recorded the commit durably (it re-executes itself into the
  // new binary right after answering). FAILED_PRECONDITION if no trial of
  // `directive_id` runs (its window expired: the supervisor is rolling
  // back).
  virtual absl::Status CommitAgentTrial(const std::string& directive_id) = 0;
};

}  // namespace fleet::agent

#endif  // FLEET_AGENT_AGENT_TRIAL_CONTROL_H_
