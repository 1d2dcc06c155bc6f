// The worker's side of the supervisor socket (agent/supervisor.h): runs the
// managed program through the supervisor process, so the program outlives
// the worker. Thread-safe: the updater's thread starts, stops and waits
// while the session's thread reads the state for heartbeats; one reader
// thread matches replies to requests by id.
#ifndef FLEET_AGENT_SUPERVISOR_CLIENT_H_
#define FLEET_AGENT_SUPERVISOR_CLIENT_H_

#include <cstdint>
#include <map>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/agent_trial_control.h"
#include "agent/platform/program_control.h"
#include "agent/supervisor.pb.h"

namespace fleet::agent {

// The descriptor a worker finds its supervisor socket on.
inline constexpr int kWorkerSocketFd = 3;

class SupervisorClient : public ProgramControl, public AgentTrialControl {
 public:
  // Takes ownership of `fd` (a connected stream socket) and starts reading.
  explicit SupervisorClient(int fd);
  // Shuts the socket down and joins the reader.
  ~SupervisorClient() override;
  SupervisorClient(const SupervisorClient&) = delete;
  SupervisorClient& operator=(const SupervisorClient&) = delete;

  // Only FLEET_VERSION is meaningful: the supervisor owns the rest of the
  // program's environment. Others are ignored.
  void SetEnv(const std::string& name, const std::string& value) override;
  absl::Status Start() override;
  absl::Status Stop(absl::Duration grace) override;
  absl::Status WaitStaysUp(absl::Duration window) override;
  void CancelWaits() override;
  // The supervisor's answer; a default state (not wanted, no pid) if it does
  // not answer within 5 s.
  ProgramState state() const override;

  absl::Status BeginAgentTrial(const std::string& directive_id,
                               const std::string& sha256_hex) override;
  absl::Status CommitAgentTrial(const std::string& directive_id) override;

  // False once the supervisor closed the socket (it died or restarts us).
  bool connected() const;

 private:
  struct Pending {
    bool done = false;
    bool wait = false;  // a WaitProgramUp, cancelled by CancelWaits
    internal::SupervisorReply reply;
  };
  // Sends `request` (its id is assigned here) and waits for the reply.
  // UNAVAILABLE if the supervisor is gone, DEADLINE_EXCEEDED after
  // `timeout`, CANCELLED for a wait that CancelWaits ended; otherwise the
  // reply's own status, with the reply in `*reply` if given.
  absl::Status Call(internal::SupervisorRequest request, absl::Duration timeout,
                    internal::SupervisorReply* reply = nullptr) const;
  void ReadLoop();

  const int fd_;
  mutable absl::Mutex write_mu_;  // one frame at a time on the socket
  mutable absl::Mutex mu_;
  mutable uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  mutable std::map<uint64_t, Pending> pending_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::string version_ ABSL_GUARDED_BY(mu_);
  std::thread reader_;
};

}  // namespace fleet::agent

#endif  // FLEET_AGENT_SUPERVISOR_CLIENT_H_
