// The agent's write-ahead journal: STATE_DIR/journal.db, SQLite with
// synchronous=FULL, so a committed write survives power loss.
//
// It holds the agent's identity, the installed version of each product, one
// row per update directive with its state (written before the action that
// state names; see update_state.h), the blacklist of bad versions as the
// controller last sent it (so it holds while the controller is away, across
// restarts), and the outbox of UpdateEvents: every
// event is journaled with a sequence number (1, 2, 3, ... for the life of
// the state dir, never reused) before it is sent, and deleted once the
// controller acknowledged it.
//
//   ASSIGN_OR_RETURN(auto journal, UpdateJournal::Open(dir + "/journal.db"));
//   ASSIGN_OR_RETURN(uint64_t seq, journal->AppendEvent(event));
//   ...
//   RETURN_IF_ERROR(journal->AckEvents(ack.acked_seq()));
//
// Thread-safe: one connection, serialized by an internal mutex (SQLite calls
// are short; the lock is never held while waiting for anything else).
#ifndef FLEET_AGENT_JOURNAL_H_
#define FLEET_AGENT_JOURNAL_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/update_state.h"
#include "common/clock.h"
#include "common/sqlite/database.h"
#include "proto/fleet/v1/agent.pb.h"
#include "proto/fleet/v1/release.pb.h"

namespace fleet::agent {

// What fleet installed for a product.
struct InstalledRecord {
  std::string product;
  std::string version;
  std::string sha256;  // 32 raw bytes
  std::string path;    // the executable
  int64_t updated_ms = 0;
};

// One update directive and how far it got.
struct UpdateRecord {
  std::string directive_id;
  std::string rollout_id;
  std::string product;
  std::string
      from_version;  // installed when the directive arrived ("" if unknown)
  std::string to_version;
  v1::DirectiveKind kind = v1::DIRECTIVE_KIND_UPDATE;
  v1::SignedManifest signed_manifest;  // as received, bytes unchanged
  int64_t deadline_ms = 0;  // directive's deadline (unix ms), 0: none
  UpdateState state = UpdateState::kReceived;
  int64_t attempt = 1;  // 1 + times the agent restarted during this update
  std::string error;
  std::string error_class;
  int64_t created_ms = 0;
  int64_t updated_ms = 0;
};

class UpdateJournal {
 public:
  // Opens (creating) the journal at `path` and applies schema migrations.
  // FAILED_PRECONDITION if the file has a newer schema than this code.
  static absl::StatusOr<std::unique_ptr<UpdateJournal>> Open(
      const std::string& path, const Clock& clock = RealClock::Get());

  // The agent's id. A non-empty `preferred` (from a flag) is stored and
  // returned; otherwise the stored id, or a new NewId("agent") stored now.
  // INVALID_ARGUMENT if `preferred` is not a valid id.
  absl::StatusOr<std::string> AgentId(absl::string_view preferred);

  // nullopt if fleet never installed `product` here.
  absl::StatusOr<std::optional<InstalledRecord>> FindInstalled(
      absl::string_view product);

  // Journals a new directive (record.state is normally RECEIVED) and, in the
  // same transaction, appends `event` unless null. ALREADY_EXISTS if the
  // directive id is already journaled. Returns the event's seq (0 if none).
  absl::StatusOr<uint64_t> InsertUpdate(const UpdateRecord& record,
                                        const v1::UpdateEvent* event);

  // Stores record.state, attempt, error and error_class of a journaled
  // update; in the same transaction appends `event` and replaces the
  // installed row of record.product with `installed`, each unless null.
  // NOT_FOUND if the directive is not journaled. Returns the event's seq (0
  // if none).
  absl::StatusOr<uint64_t> SaveUpdate(const UpdateRecord& record,
                                      const v1::UpdateEvent* event,
                                      const InstalledRecord* installed);

  absl::StatusOr<std::optional<UpdateRecord>> FindUpdate(
      absl::string_view directive_id);
  // The oldest update that is not final (at most one exists when a single
  // updater writes), nullopt if none.
  absl::StatusOr<std::optional<UpdateRecord>> ActiveUpdate();
  // The most recently journaled directive id, "" if none.
  absl::StatusOr<std::string> LastDirectiveId();

  // The versions of `product` this agent ran before, newest first, from the
  // install history (what each committed update installed and what ran
  // before it), without `current` and "", at most 8. Empty if fleet never
  // committed an update here.
  absl::StatusOr<std::vector<std::string>> PreviousVersions(
      absl::string_view product, absl::string_view current);

  // Remembers that the executable with digest `sha256` (32 raw bytes) ran
  // here as `product` (what EXEC held when a directive arrived; every
  // committed install is recorded too). Idempotent.
  absl::Status RecordRanHere(absl::string_view product,
                             absl::string_view sha256);
  // True if RecordRanHere (or a committed install) recorded that digest for
  // `product`: a ROLLBACK may go down to such a release without the
  // manifest's allows_downgrade.
  absl::StatusOr<bool> RanHere(absl::string_view product,
                               absl::string_view sha256);

  // Replaces the stored blacklist with `entries` (the controller's complete
  // list for this agent's products), in one transaction.
  absl::Status ReplaceBlacklist(
      const std::vector<v1::BlacklistedVersion>& entries);
  // True if (product, version) is on the stored blacklist.
  absl::StatusOr<bool> IsBlacklisted(absl::string_view product,
                                     absl::string_view version);
  // The stored blacklist, sorted by product and version.
  absl::StatusOr<std::vector<v1::BlacklistedVersion>> Blacklist();

  // Appends an event to the outbox (event.seq is ignored) and returns the
  // seq it was given: one more than the last ever given.
  absl::StatusOr<uint64_t> AppendEvent(const v1::UpdateEvent& event);
  // Up to `limit` journaled events with seq > `after_seq`, in seq order,
  // each with its seq set.
  absl::StatusOr<std::vector<v1::UpdateEvent>> PendingEvents(uint64_t after_seq,
                                                             int limit);
  // Deletes every event with seq <= `acked_seq`. Later seqs are unaffected.
  absl::Status AckEvents(uint64_t acked_seq);
  // Makes the next seq at least `seq` + 1. For a controller that already
  // stored events up to `seq` from this agent id (a wiped state dir): new
  // events must not reuse seqs it would drop as duplicates.
  absl::Status EnsureSeqAbove(uint64_t seq);
  // The highest seq ever given (0 if none).
  uint64_t LastEventSeq() const;
  // Blocks until an event with seq > `seq` has been appended or `deadline`
  // passes or Interrupt() is called; true if such an event exists.
  bool WaitForEventAfter(uint64_t seq, absl::Time deadline);
  // Wakes every WaitForEventAfter caller once.
  void Interrupt();

 private:
  UpdateJournal(std::unique_ptr<sqlite::Database> db, const Clock& clock);
  absl::StatusOr<uint64_t> AppendEventLocked(const v1::UpdateEvent& event)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(db_mu_);
  absl::Status WriteInstalledLocked(const InstalledRecord& installed)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(db_mu_);
  absl::Status RecordRanHereLocked(absl::string_view product,
                                   absl::string_view sha256)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(db_mu_);
  absl::StatusOr<std::optional<UpdateRecord>> QueryOneUpdateLocked(
      const char* sql, absl::string_view arg)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(db_mu_);
  void PublishSeq(uint64_t seq);
  int64_t NowMs() const;

  const Clock& clock_;
  absl::Mutex db_mu_;
  std::unique_ptr<sqlite::Database> db_ ABSL_GUARDED_BY(db_mu_);

  mutable absl::Mutex seq_mu_;
  uint64_t last_seq_ ABSL_GUARDED_BY(seq_mu_) = 0;
  uint64_t interrupts_ ABSL_GUARDED_BY(seq_mu_) = 0;
};

}  // namespace fleet::agent

#endif  // FLEET_AGENT_JOURNAL_H_
