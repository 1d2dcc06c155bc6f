// The controller's single writer. One thread owns every database write and
// every rollout decision; stream reactions and admin handlers hand it work
// and never touch the disk themselves.
//
// The thread drains its queue in batches. Each batch is one SQLite
// transaction; only after the commit are Welcomes, directives and event acks
// handed to the agents' streams and admin callers told the outcome. An ack
// therefore always means "stored". Hellos and admin writes run in their own
// savepoint (one failing does not undo the others), and so do disconnects;
// events, which fail only when SQLite does, run without one, and if one fails
// the batch is rolled back and run again with every item in its own savepoint.
// Heartbeats write nothing at once: last-seen is kept in memory and written
// every ControlLoopOptions::last_seen_flush.
//
//   ControlLoop loop(store, RealClock::Get(), {});
//   loop.Start(hub);
//   loop.PostHello(agent_id, session, hello);          // from a reaction
//   absl::Status s = loop.AddRelease(release);         // from an admin RPC
//   loop.Stop();
//
// Thread-safety: every public method is thread-safe. Post* never block
// beyond a short mutex; the admin writes (AddRelease, CreateRollout,
// ChangeRollout, AddBlacklist, RemoveBlacklist) block until their batch is
// committed.
#ifndef FLEET_CONTROLLER_CONTROL_LOOP_H_
#define FLEET_CONTROLLER_CONTROL_LOOP_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "controller/rollout.h"
#include "controller/store/store.h"
#include "proto/fleet/v1/admin.pb.h"
#include "proto/fleet/v1/agent.pb.h"
#include "proto/fleet/v1/release.pb.h"

namespace fleet::controller {

// How the loop reaches agents. A session is one Connect stream; an agent
// that reconnects gets a new session, and messages addressed to an old one
// are dropped. Implemented by AgentHub; tests use a recording fake.
class AgentSender {
 public:
  virtual ~AgentSender() = default;
  // Queues `message` on the stream of `session`. Returns false (and drops
  // it) if that stream is gone. Must not block.
  virtual bool Send(absl::string_view agent_id, uint64_t session,
                    v1::ControllerMessage message) = 0;
  // Ends the stream of `session` with `status`, if it is still open.
  virtual void Close(absl::string_view agent_id, uint64_t session,
                     const absl::Status& status) = 0;
};

struct ControlLoopOptions {
  // Told to agents in Welcome.
  absl::Duration heartbeat_interval = absl::Seconds(10);
  // How often time-driven decisions (stage bake times) are re-evaluated.
  absl::Duration tick = absl::Seconds(1);
  // Most work items committed in one transaction.
  int max_batch = 512;
  // Most new directives one reconciliation of a rollout journals and sends
  // in one transaction; the rest follow in the next batches. Bounds how long
  // the first agents wait (directives leave only after their commit) and how
  // long heartbeats and events queue behind a large rollout.
  int directive_chunk = 1000;
  // Offline timeout of rollouts created without their own
  // (CreateRolloutRequest.offline_timeout_seconds 0).
  absl::Duration offline_timeout = absl::Minutes(10);
  // How often running rollouts are checked for targets past their offline
  // timeout.
  absl::Duration offline_sweep = absl::Seconds(5);
  // How often the last-seen times of heartbeats and events, kept in memory,
  // are written (one UPDATE per agent seen since the last write). A crash
  // loses at most this much of last-seen; connects and disconnects write
  // theirs at once, and the offline timeout of rollouts reads only those of
  // disconnected agents.
  absl::Duration last_seen_flush = absl::Seconds(5);
  // Told, on the loop's thread, how long each batch transaction took
  // (seconds, commit included), for /metrics. Optional; must not block.
  std::function<void(double)> on_commit;
  // Handed, on the loop's thread after each commit and in commit order, the
  // events of every work item the commit stored (resends included), with
  // the received time stored with them: telemetry takes them from here
  // rather than reading fleet.db back. Optional; must not block.
  std::function<void(const std::string& agent_id, int64_t received_ms,
                     std::vector<v1::UpdateEvent> events)>
      on_events_stored;
};

class ControlLoop {
 public:
  // `store` and `clock` must outlive the loop; the loop is their only user
  // of `store` while it runs.
  ControlLoop(Store& store, const Clock& clock, ControlLoopOptions options);
  // Stops the loop if it runs.
  ~ControlLoop();
  ControlLoop(const ControlLoop&) = delete;
  ControlLoop& operator=(const ControlLoop&) = delete;

  // Starts the thread. `sender` must outlive Stop(). Call once.
  void Start(AgentSender& sender);
  // Processes everything already queued, then ends the thread. Later posts
  // are dropped and later admin writes fail with UNAVAILABLE. Idempotent.
  void Stop();

  // ---- from agent streams (validated input; see AgentHub)
  // The agent opened `session` with `hello`: the agent is stored, answered
  // with Welcome and sent the directives it is owed.
  void PostHello(std::string agent_id, uint64_t session, v1::Hello hello);
  // Stores the event once per (agent, seq), moves the rollout target it
  // belongs to and acks it after the commit.
  void PostEvent(std::string agent_id, uint64_t session, v1::UpdateEvent event);
  // The events of one AgentMessage.events, in order: each handled as by
  // PostEvent, in one work item, acked together after the commit.
  void PostEvents(std::string agent_id, uint64_t session,
                  std::vector<v1::UpdateEvent> events);
  void PostHeartbeat(std::string agent_id, uint64_t session);
  // The stream of `session` ended. Ignored if the agent has since opened a
  // newer stream.
  void PostDisconnect(std::string agent_id, uint64_t session);

  // ---- admin writes (block until committed)
  // Stores a release whose artifact is already in the blob store and
  // returns it with its created time set. ALREADY_EXISTS for a duplicate.
  absl::StatusOr<v1::Release> AddRelease(v1::Release release);
  // Creates and starts a rollout and sends directives to connected targets.
  // REQUIRES: names, selector and stages validated (see rollout.h).
  // FAILED_PRECONDITION if no release of product/version exists (for the
  // selector's platform, when it names one), if the version is blacklisted
  // (the message starts "version "), or if an active rollout of the
  // product has an overlapping selector (the message starts "active rollout
  // <id>"). Returns the rollout with counts, without targets.
  absl::StatusOr<v1::Rollout> CreateRollout(
      const v1::CreateRolloutRequest& request);
  // Pauses, resumes or aborts a rollout (see ApplyRolloutCommand), storing
  // the new state in the same transaction as any directives resuming sends.
  // NOT_FOUND for an unknown id; FAILED_PRECONDITION naming the rollout's
  // state when the command does not apply to it, or for a resume when the
  // version is blacklisted. A resume re-arms the failure gate: it evaluates
  // again only after a new sample. An abort with `rollback` also directs
  // every target that left its from_version back to it (see NeedsRevert;
  // ROLLBACK directives journaled as reverts, in-flight updates canceled),
  // and is accepted on an already ABORTED rollout too (reverting only).
  // Returns the rollout with counts (revert counts included), without
  // targets.
  absl::StatusOr<v1::Rollout> ChangeRollout(const std::string& rollout_id,
                                            RolloutCommand command,
                                            const std::string& reason,
                                            bool rollback = false);
  // Blacklists entry.product/version (created time set here) and aborts
  // every active rollout of that version in the same transaction, so no
  // directive for it is sent again. Connected agents of the product get the
  // new blacklist (BlacklistUpdate), and those running the version are led
  // back (see LeadBack). ALREADY_EXISTS if already blacklisted.
  // REQUIRES: entry validated.
  absl::StatusOr<v1::AddBlacklistResponse> AddBlacklist(
      v1::BlacklistEntry entry);
  // NOT_FOUND if the version is not blacklisted. Rollouts it aborted stay
  // aborted. Connected agents of the product get the new blacklist.
  absl::Status RemoveBlacklist(const std::string& product,
                               const std::string& version);

 private:
  struct Outgoing {
    std::string agent_id;
    uint64_t session;
    v1::ControllerMessage message;
  };
  // What handling one item produced; delivered only if the batch commits.
  struct Output {
    std::vector<Outgoing> messages;
    uint64_t acked_seq = 0;  // 0: no ack
  };
  struct Task {
    std::function<absl::Status(Output&)> fn;
    absl::Status result;
    absl::Notification done;
  };
  struct HelloItem {
    std::string agent_id;
    uint64_t session;
    v1::Hello hello;
  };
  struct EventItem {
    std::string agent_id;
    uint64_t session;
    std::vector<v1::UpdateEvent> events;  // one or a batch, in seq order
    int64_t received_ms = 0;              // stamped when handled
  };
  struct HeartbeatItem {
    std::string agent_id;
    uint64_t session;
  };
  struct DisconnectItem {
    std::string agent_id;
    uint64_t session;
  };
  using Item =
      std::variant<HelloItem, EventItem, HeartbeatItem, DisconnectItem, Task*>;

  void Post(Item item);
  absl::Status RunTask(std::function<absl::Status(Output&)> fn);
  bool HasWork() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Run();
  void ProcessBatch(std::vector<Item>& batch, bool tick, bool last);
  // Writes the last-seen times gathered since the last flush.
  void FlushLastSeen();
  absl::Status Handle(Item& item, Output& out);
  void Deliver(const std::vector<Item>& batch, std::vector<Output>& outputs,
               const std::vector<absl::Status>& results, Output& extra);

  absl::Status HandleHello(const HelloItem& item, Output& out);
  absl::Status HandleEvents(EventItem& item, Output& out);
  absl::Status HandleEvent(const std::string& agent_id,
                           const v1::UpdateEvent& event, int64_t received_ms,
                           Output& out);
  absl::Status HandleDisconnect(const DisconnectItem& item);
  absl::Status HandleCreateRollout(const v1::CreateRolloutRequest& request,
                                   v1::Rollout& result, Output& out);
  absl::Status HandleChangeRollout(const std::string& rollout_id,
                                   RolloutCommand command,
                                   const std::string& reason, bool rollback,
                                   v1::Rollout& result, Output& out);
  // The rollout with its target and revert counts.
  absl::StatusOr<v1::Rollout> WithCounts(const RolloutRecord& record);
  // Directs every target of an aborted rollout that NeedsRevert back to its
  // from_version.
  absl::Status RevertTargets(const RolloutRecord& record, Output& out);
  absl::Status HandleAddBlacklist(v1::BlacklistEntry entry,
                                  v1::AddBlacklistResponse& result,
                                  Output& out);
  // Stores `entry`, aborts every active rollout of its version except
  // `except_rollout_id` ("" for none), listing them in `result`, sends the
  // product's connected agents the new blacklist and leads back those that
  // run the version.
  absl::Status BlacklistVersion(v1::BlacklistEntry entry,
                                const std::string& except_rollout_id,
                                v1::AddBlacklistResponse& result, Output& out);
  // Blacklist entries by product, read once per batch of agents.
  using BlacklistCache =
      absl::flat_hash_map<std::string, std::vector<v1::BlacklistEntry>>;
  // The blacklist of every product `agent` lists, as agents get it; reads
  // through `cache` when given.
  absl::StatusOr<google::protobuf::RepeatedPtrField<v1::BlacklistedVersion>>
  BlacklistOf(const v1::Agent& agent, BlacklistCache* cache = nullptr);
  // Sends a BlacklistUpdate to every connected agent of `product`.
  absl::Status SendBlacklistUpdates(const std::string& product, Output& out);
  // Directs `agent`, which runs `installed` (a version blacklisted by
  // `banned`), back to LeadBackVersion with a journaled revert (rollout id
  // from BlacklistRolloutId). Not again if it already has an unfinished
  // revert from that version, or any made since the version was
  // blacklisted. Returns true if a directive was given.
  absl::StatusOr<bool> LeadBack(const v1::Agent& agent,
                                const v1::InstalledProduct& installed,
                                const v1::BlacklistEntry& banned, Output& out);
  // Stores a new revert (FAILED at once if its release is missing), mirrors
  // it into its rollout target and sends its directive if the agent is
  // connected.
  absl::Status StartRevert(RevertRecord& revert, const std::string& platform,
                           Output& out);
  // Copies the revert's progress into its rollout's target (if the agent is
  // one), unless the target has since been given a newer revert.
  absl::Status MirrorRevert(const RevertRecord& revert, bool created);
  // Resends the agent's reverts still DIRECTED, unless Hello names them.
  absl::Status ResendReverts(const v1::Agent& agent, const v1::Hello& hello,
                             uint64_t session, Output& out);
  // Evaluates the failure gate of a RUNNING rollout over `counts` and, if it
  // trips, pauses or aborts the rollout and blacklists the version as its
  // policy says, in the current transaction.
  absl::Status CheckGate(RolloutRecord& record, const v1::TargetCounts& counts,
                         Output& out);
  // Marks SKIPPED the targets of a RUNNING rollout whose agents are past
  // the offline timeout (SkipIfOffline), updating `targets` in place.
  // With `stored` false the targets are not written (see ReconcileTargets).
  absl::Status SkipOfflineTargets(const RolloutRecord& record,
                                  std::vector<v1::RolloutTarget>& targets,
                                  bool stored = true);
  // Marks rollouts waiting out a bake time (with `all_running`, every
  // RUNNING rollout) for reconciliation.
  absl::Status MarkBakingRollouts(bool all_running);
  // Reconciles every rollout marked dirty during the batch, once each.
  absl::Status ReconcileDirty(Output& out);
  // For a rollout whose targets only finished (events): evaluates the gate
  // from counts and runs the full Reconcile only when a stage may have
  // settled or a max_in_flight slot was freed. Keeps a batch of events
  // O(events) instead of reading every target of the rollout.
  absl::Status ReconcileAfterEvents(const std::string& rollout_id, Output& out);

  // Joins `agent` to the running rollouts of the products it runs and sends
  // it the directives it is owed.
  absl::Status DirectAgent(const v1::Agent& agent, const v1::Hello& hello,
                           uint64_t session, Output& out);
  // Evaluates the failure gate, moves the rollout forward and directs the
  // connected targets of started stages.
  absl::Status Reconcile(RolloutRecord& record, Output& out);
  // Reconcile over `targets` (every target of the rollout). With `stored`
  // false none of them is in the database yet: nothing is written for
  // them and the caller inserts them all afterwards, in the same
  // transaction (one write per target at creation).
  absl::Status ReconcileTargets(RolloutRecord& record,
                                std::vector<v1::RolloutTarget>& targets,
                                bool stored, Output& out);
  // The directive of a rollout for one platform without its directive_id
  // (the release read and its signed manifest copied once, not per target).
  using DirectiveCache =
      absl::flat_hash_map<std::string, absl::StatusOr<v1::UpdateDirective>>;
  // Gives `target` a new directive and sends it if the agent is connected.
  // Writes the target unless `store_target` is false (see ReconcileTargets).
  absl::Status SendNewDirective(const RolloutRecord& record,
                                v1::RolloutTarget& target,
                                const std::string& platform, Output& out,
                                DirectiveCache* cache = nullptr,
                                bool store_target = true);
  absl::StatusOr<v1::UpdateDirective> DirectiveFor(
      const RolloutRecord& record, const v1::RolloutTarget& target,
      const std::string& platform, DirectiveCache* cache = nullptr);

  int64_t NowMs() const;
  // The open session of a connected agent, or 0.
  uint64_t SessionOf(const std::string& agent_id) const;
  // The platform a connected agent said in the Hello of its open session.
  const std::string* PlatformOf(const std::string& agent_id) const;

  Store& store_;
  const Clock& clock_;
  const ControlLoopOptions options_;
  AgentSender* sender_ = nullptr;  // set by Start
  std::thread thread_;

  absl::Mutex mu_;
  std::deque<Item> queue_ ABSL_GUARDED_BY(mu_);
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;

  struct Connected {
    uint64_t session;
    // As stored for the agent by that Hello: a rollout reads it from here
    // rather than one agent row per target.
    std::string platform;
  };
  // Owned by the loop thread: the loop's view of who is connected, agent id
  // to the session whose Hello it processed last.
  absl::flat_hash_map<std::string, Connected> sessions_;
  // Owned by the loop thread: rollouts whose targets moved in this batch,
  // reconciled once at its end.
  absl::flat_hash_set<std::string> dirty_rollouts_;
  // Owned by the loop thread: rollouts whose targets became final in this
  // batch (ReconcileAfterEvents), unless also in dirty_rollouts_.
  absl::flat_hash_set<std::string> finished_in_rollouts_;
  // Owned by the loop thread: a reconciliation stopped at directive_chunk;
  // the next batch starts at once instead of waiting for work or a tick.
  bool more_directives_ = false;
  // Owned by the loop thread: last-seen (unix ms) of agents heard from
  // since the last flush, written every options_.last_seen_flush.
  absl::flat_hash_map<std::string, int64_t> last_seen_;
  absl::Time last_seen_flushed_ = absl::InfinitePast();
  absl::Time last_tick_ = absl::InfinitePast();
  absl::Time last_offline_sweep_ = absl::InfinitePast();
  // Agents offline longer than this count only from here: none could reach
  // a controller that was not running.
  const absl::Time loop_start_;
};

}  // namespace fleet::controller

#endif  // FLEET_CONTROLLER_CONTROL_LOOP_H_
