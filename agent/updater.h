// The update state machine: takes UpdateDirectives one at a time, on its own
// thread, through the states of update_state.h, and reports an UpdateEvent
// at every phase through the journal's outbox.
//
// Per directive:
//   RECEIVED     journaled (a directive id already journaled is a no-op)
//                then, before anything else: the manifest's signature against
//                the pinned keys, product, platform, version, no downgrade
//                (unless kind ROLLBACK), not blacklisted (the journal keeps
//                the controller's last blacklist; no kind of directive
//                overrides it). EXEC already holding the artifact's
//                digest: HEALTHY at once, nothing swapped.
//   DOWNLOADING  resumable FetchArtifact into STATE_DIR/downloads
//   DOWNLOADED   all bytes on disk
//   VERIFIED     size and sha256 equal the signed manifest's
//   STAGED       EXEC.fleet-new written, fsync'd, 0755
//   SWAPPED      journaled first, then the rename (old kept as backup)
//   RESTARTED    old program stopped (SIGTERM, grace, SIGKILL), new started
//   HEALTHY      the new process stayed up for the health window and passed
//                the health command / URL if configured: committed
//   FAILED       ended before the swap; the old program kept running
//   ROLLED_BACK  ended after the swap; backup restored, old program restarted
//
// A directive for the agent's own product (options.agent) runs the same
// states up to STAGED (beside AGENT_EXEC, its own downloads and cache);
// then SWAPPED is journaled and the supervisor is asked for a trial
// (agent/agent_trial_control.h), which renames the binary in and replaces
// this worker. The trial worker's Start() journals SWAPPED's event and
// RESTARTED, waits until the controller acknowledged RESTARTED, asks the
// supervisor to commit, and only then journals HEALTHY: a HEALTHY that
// could still be rolled back would be two final outcomes. Any other
// worker that finds such an update open resolves it by what AGENT_EXEC
// holds: the new binary (committed) -> HEALTHY; the old one (the
// supervisor rolled the trial back) -> ROLLED_BACK, error class
// agent-trial, with the supervisor's reason. The program is never touched.
//
// On Start(), an update journaled at SWAPPED or RESTARTED is rolled back and
// one journaled earlier is resumed (its download resumes from the partial
// file) before new directives are taken; only then is the program started.
//
// The updater drives the program supervisor, the swap and the journal; it
// knows nothing of the session: directives come in through Submit/Cancel,
// events leave through the journal.
#ifndef FLEET_AGENT_UPDATER_H_
#define FLEET_AGENT_UPDATER_H_

#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/agent_trial_control.h"
#include "agent/cancellation.h"
#include "agent/directive_handler.h"
#include "agent/downloader.h"
#include "agent/health.h"
#include "agent/journal.h"
#include "agent/platform/process.h"
#include "agent/platform/program_control.h"
#include "agent/platform/swap.h"
#include "common/clock.h"
#include "common/manifest.h"
#include "proto/fleet/v1/agent.pb.h"
#include "proto/fleet/v1/release.pb.h"

namespace fleet::agent {

struct UpdaterOptions {
  std::string product;    // the product this agent manages
  std::string exec_path;  // its executable
  // The new process must stay up this long after its start to commit.
  absl::Duration health_window = absl::Seconds(5);
  // SIGTERM-to-SIGKILL grace when stopping the program.
  absl::Duration stop_grace = absl::Seconds(10);
  // Transient download failures (UNAVAILABLE, ...) are retried with
  // exponential backoff; this many failures in a row without progress FAIL
  // the update.
  int download_attempts = 8;
  absl::Duration download_retry_initial = absl::Seconds(1);
  absl::Duration download_retry_max = absl::Seconds(30);
  // An update interrupted by agent restarts this many times FAILs instead of
  // resuming again (a crash loop must end).
  int max_resumes = 5;
  // Whether Stop() stops the program too. A worker under the supervisor
  // leaves it running: the supervisor decides when the program ends (a
  // worker restart or an agent self-update must not restart it).
  bool stop_program_on_stop = true;
  // Checks the new version must pass within the health window besides
  // staying up (agent/health.h); none by default.
  HealthCheckOptions health;

  // Agent self-update: directives whose signed manifest names
  // `agent.product` replace the agent's own binary through the
  // supervisor's trial instead of the program. Off unless `trial` and
  // `downloader` are set.
  struct SelfUpdate {
    std::string product;    // --agent-product
    std::string exec_path;  // --agent-exec
    // from_version while fleet never installed the agent here
    // (agent/version.h).
    std::string version;
    AgentTrialControl* trial = nullptr;  // borrowed
    // Its own downloads dir and cache, so the agent's versions are kept
    // apart from the program's.
    Downloader* downloader = nullptr;  // borrowed
    // kAgentTrialEnv: this worker is the trial of that directive.
    std::string trial_directive_id;
    // kAgentTrialFailedEnv: "<directive id> <reason>" of a failed trial.
    std::string trial_failed;
  };
  SelfUpdate agent;
};

class Updater : public DirectiveHandler {
 public:
  // Everything borrowed must outlive the Updater. The program's spec is
  // owned by the caller except FLEET_VERSION, which the updater sets.
  Updater(UpdaterOptions options, UpdateJournal& journal,
          const TrustedKeys& keys, Downloader& downloader,
          ProgramControl& program, const Clock& clock = RealClock::Get());
  // Calls Stop().
  ~Updater() override;
  Updater(const Updater&) = delete;
  Updater& operator=(const Updater&) = delete;

  // Starts the updater thread: recovery, program start, then directives.
  void Start();

  // Interrupts the update in flight (it stays journaled, to be resumed or
  // rolled back by the next Start), joins the thread and stops the program
  // (unless options.stop_program_on_stop is false).
  void Stop();

  // Queues a directive. Returns at once; never blocks on I/O, so it is safe
  // on a stream's reader thread. Duplicates of a queued or running
  // directive are dropped here; of a journaled one, when dequeued.
  void Submit(v1::UpdateDirective directive) override;

  // Cancels a directive that has not reached SWAPPED: it ends FAILED with
  // error_class "canceled". Too late after the swap (logged, ignored).
  void Cancel(const std::string& directive_id,
              const std::string& reason) override;

  // Stores `entries` in the journal as the blacklist (logged on failure: the
  // previous list then stays in force).
  void SetBlacklist(std::vector<v1::BlacklistedVersion> entries) override;

  // Blocks until nothing is queued or running, or `timeout`; true if idle.
  bool WaitIdle(absl::Duration timeout);

 private:
  void Run();
  // Rolls back or returns the update to resume (nullopt if none).
  std::optional<UpdateRecord> Recover();
  // Brings an update the journal still has open (after a failed rollback
  // or journal write) to a final state. True if none is left open.
  bool ResolveOpenUpdate();
  void EnsureProgramRunning();
  void Process(const v1::UpdateDirective& directive);
  // Drives `record` from its journaled state to a final state (or until
  // the updater is stopped).
  void Execute(UpdateRecord record);

  absl::StatusOr<v1::ReleaseManifest> CheckManifest(const UpdateRecord& record,
                                                    std::string* error_class);
  absl::StatusOr<DownloadResult> DownloadWithRetry(
      UpdateRecord& record, const v1::ReleaseManifest& manifest,
      Cancellation& cancel);
  // Journals `to` (checked against the transition table) with an event
  // unless `event` is false, and the installed row if given.
  absl::Status Advance(UpdateRecord& record, UpdateState to,
                       const std::string& error = "",
                       const std::string& error_class = "", uint64_t bytes = 0,
                       bool event = true,
                       const InstalledRecord* installed = nullptr);
  void Fail(UpdateRecord& record, const std::string& error_class,
            const absl::Status& error);
  void RollBack(UpdateRecord& record, const std::string& error_class,
                const std::string& error);
  v1::UpdateEvent MakeEvent(const UpdateRecord& record, UpdateState phase,
                            const std::string& error,
                            const std::string& error_class, uint64_t bytes);
  // The journal's version of `product` (for the agent's own product
  // without one: options.agent.version).
  std::string InstalledVersion(const std::string& product);
  bool stopping() const;
  // Blocks until Stop().
  void WaitUntilStopped();

  // Agent self-update (see the file comment).
  bool SelfUpdateEnabled() const;
  bool IsAgentUpdate(const UpdateRecord& record) const;
  Downloader& DownloaderFor(const UpdateRecord& record);
  // From STAGED: journals SWAPPED, asks the supervisor for the trial, then
  // waits to be stopped (FAILED if the supervisor refused).
  void BeginAgentTrial(UpdateRecord& record, const Digest& digest);
  // An agent update found open at SWAPPED or RESTARTED at start.
  void ResolveAgentTrial(UpdateRecord& record);
  // In the trial worker: RESTARTED, its ack, the supervisor's commit.
  void RunAgentTrial(UpdateRecord& record, const Digest& digest);
  void CommitAgentUpdate(UpdateRecord& record, const Digest& digest);

  const UpdaterOptions options_;
  UpdateJournal& journal_;
  const TrustedKeys& keys_;
  Downloader& downloader_;
  ProgramControl& program_;
  const Clock& clock_;
  ExecutableSwap swap_;
  // Stages the agent's own binary; the supervisor renames it in.
  ExecutableSwap agent_swap_;
  // When the current update reached its last phase (for duration_ms).
  absl::Time phase_started_;

  mutable absl::Mutex mu_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<v1::UpdateDirective> queue_ ABSL_GUARDED_BY(mu_);
  // Directives cancelled while still queued: id -> reason.
  std::map<std::string, std::string> cancelled_ ABSL_GUARDED_BY(mu_);
  std::string active_id_ ABSL_GUARDED_BY(mu_);
  bool active_swapped_ ABSL_GUARDED_BY(mu_) = false;
  Cancellation* active_cancel_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool busy_ ABSL_GUARDED_BY(mu_) = false;

  std::thread thread_;
};

// The stable error classes of UpdateEvent.error_class.
namespace error_class {
inline constexpr char kSignature[] = "signature";
inline constexpr char kExpired[] = "expired";
inline constexpr char kPlatform[] = "platform";
inline constexpr char kProduct[] = "product";
inline constexpr char kDowngrade[] = "downgrade";
inline constexpr char kDownload[] = "download";
inline constexpr char kVerify[] = "verify";
inline constexpr char kDisk[] = "disk";
inline constexpr char kSwap[] = "swap";
inline constexpr char kRestart[] = "restart";
inline constexpr char kHealth[] = "health";
inline constexpr char kCanceled[] = "canceled";
inline constexpr char kDeadline[] = "deadline";
inline constexpr char kInterrupted[] = "interrupted";
inline constexpr char kBusy[] = "busy";
inline constexpr char kBlacklisted[] = "blacklisted";
// An agent self-update whose trial failed (or was interrupted): the new
// agent binary crashed, hung, or did not commit within the trial window.
inline constexpr char kAgentTrial[] = "agent-trial";
}  // namespace error_class

}  // namespace fleet::agent

#endif  // FLEET_AGENT_UPDATER_H_
