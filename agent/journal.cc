#include "agent/journal.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/ids.h"
#include "common/names.h"
#include "common/status_macros.h"

namespace fleet::agent {
namespace {

const std::vector<sqlite::Migration>& Migrations() {
  static const auto* migrations = new std::vector<sqlite::Migration>{
      {"agent identity, installed products, updates, event outbox",
       R"sql(
CREATE TABLE agent_identity (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  agent_id TEXT NOT NULL,
  updated_ms INTEGER NOT NULL
);
CREATE TABLE installed (
  product TEXT PRIMARY KEY,
  version TEXT NOT NULL,
  sha256 BLOB NOT NULL,
  path TEXT NOT NULL,
  updated_ms INTEGER NOT NULL
);
CREATE TABLE updates (
  directive_id TEXT PRIMARY KEY,
  rollout_id TEXT NOT NULL,
  product TEXT NOT NULL,
  from_version TEXT NOT NULL,
  to_version TEXT NOT NULL,
  kind INTEGER NOT NULL,
  signed_manifest BLOB NOT NULL,
  deadline_ms INTEGER NOT NULL,
  state TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  error TEXT NOT NULL,
  error_class TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  updated_ms INTEGER NOT NULL
);
CREATE INDEX updates_by_state ON updates (state);
-- AUTOINCREMENT: a seq is never given twice, even after every event up to
-- it was acked and deleted.
CREATE TABLE events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  payload BLOB NOT NULL,
  created_ms INTEGER NOT NULL
);
)sql"},
      {"blacklist of bad versions, as the controller last sent it",
       R"sql(
CREATE TABLE blacklist (
  product TEXT NOT NULL,
  version TEXT NOT NULL,
  PRIMARY KEY (product, version)
) WITHOUT ROWID;
)sql"},
      {"executables that ran here, for the rollback downgrade rule",
       R"sql(
CREATE TABLE ran_here (
  product TEXT NOT NULL,
  sha256 BLOB NOT NULL,
  first_ms INTEGER NOT NULL,
  PRIMARY KEY (product, sha256)
) WITHOUT ROWID;
INSERT OR IGNORE INTO ran_here (product, sha256, first_ms)
  SELECT product, sha256, updated_ms FROM installed;
)sql"},
  };
  return *migrations;
}

constexpr char kSelectAgentIdSql[] =
    "SELECT agent_id FROM agent_identity WHERE id = 1";
constexpr char kUpsertAgentIdSql[] =
    "INSERT INTO agent_identity (id, agent_id, updated_ms) VALUES (1, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET agent_id = excluded.agent_id, "
    "updated_ms = excluded.updated_ms";

constexpr char kSelectInstalledSql[] =
    "SELECT product, version, sha256, path, updated_ms FROM installed "
    "WHERE product = ?";
constexpr char kUpsertInstalledSql[] =
    "INSERT INTO installed (product, version, sha256, path, updated_ms) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (product) DO UPDATE SET "
    "version = excluded.version, sha256 = excluded.sha256, "
    "path = excluded.path, updated_ms = excluded.updated_ms";

constexpr char kInsertUpdateSql[] =
    "INSERT INTO updates (directive_id, rollout_id, product, from_version, "
    "to_version, kind, signed_manifest, deadline_ms, state, attempt, error, "
    "error_class, created_ms, updated_ms) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
constexpr char kSaveUpdateSql[] =
    "UPDATE updates SET state = ?, attempt = ?, error = ?, error_class = ?, "
    "updated_ms = ? WHERE directive_id = ?";
constexpr char kSelectUpdateSql[] =
    "SELECT directive_id, rollout_id, product, from_version, to_version, "
    "kind, signed_manifest, deadline_ms, state, attempt, error, error_class, "
    "created_ms, updated_ms FROM updates WHERE directive_id = ?";
constexpr char kSelectActiveUpdateSql[] =
    "SELECT directive_id, rollout_id, product, from_version, to_version, "
    "kind, signed_manifest, deadline_ms, state, attempt, error, error_class, "
    "created_ms, updated_ms FROM updates "
    "WHERE state NOT IN ('HEALTHY', 'FAILED', 'ROLLED_BACK') "
    "ORDER BY rowid LIMIT 1";
constexpr char kSelectLastDirectiveSql[] =
    "SELECT directive_id FROM updates ORDER BY rowid DESC LIMIT 1";

constexpr char kSelectHealthyHistorySql[] =
    "SELECT to_version, from_version FROM updates "
    "WHERE product = ? AND state = 'HEALTHY' ORDER BY rowid DESC LIMIT 64";

constexpr char kDeleteBlacklistSql[] = "DELETE FROM blacklist";
constexpr char kInsertBlacklistSql[] =
    "INSERT OR IGNORE INTO blacklist (product, version) VALUES (?, ?)";
constexpr char kSelectBlacklistedSql[] =
    "SELECT 1 FROM blacklist WHERE product = ? AND version = ?";
constexpr char kListBlacklistSql[] =
    "SELECT product, version FROM blacklist ORDER BY product, version";

constexpr char kInsertRanHereSql[] =
    "INSERT OR IGNORE INTO ran_here (product, sha256, first_ms) "
    "VALUES (?, ?, ?)";
constexpr char kSelectRanHereSql[] =
    "SELECT 1 FROM ran_here WHERE product = ? AND sha256 = ?";

constexpr int kMaxPreviousVersions = 8;

constexpr char kInsertEventSql[] =
    "INSERT INTO events (payload, created_ms) VALUES (?, ?)";
constexpr char kSelectEventsSql[] =
    "SELECT seq, payload FROM events WHERE seq > ? ORDER BY seq LIMIT ?";
constexpr char kDeleteEventsSql[] = "DELETE FROM events WHERE seq <= ?";
constexpr char kInsertSeqSql[] =
    "INSERT INTO sqlite_sequence (name, seq) SELECT 'events', 0 "
    "WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'events')";
constexpr char kRaiseSeqSql[] =
    "UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'events' AND seq < ?1";
constexpr char kSelectLastSeqSql[] =
    "SELECT seq FROM sqlite_sequence WHERE name = 'events'";

absl::StatusOr<UpdateRecord> ReadUpdateRow(const sqlite::Statement& row) {
  UpdateRecord r;
  r.directive_id = row.ColumnText(0);
  r.rollout_id = row.ColumnText(1);
  r.product = row.ColumnText(2);
  r.from_version = row.ColumnText(3);
  r.to_version = row.ColumnText(4);
  r.kind = static_cast<v1::DirectiveKind>(row.ColumnInt64(5));
  if (!r.signed_manifest.ParseFromString(row.ColumnBlob(6))) {
    return absl::DataLossError("journaled manifest of directive " +
                               r.directive_id + " does not parse");
  }
  r.deadline_ms = row.ColumnInt64(7);
  std::optional<UpdateState> state = UpdateStateFromString(row.ColumnText(8));
  if (!state) {
    return absl::DataLossError(absl::StrCat("directive ", r.directive_id,
                                            " has unknown state ",
                                            row.ColumnText(8)));
  }
  r.state = *state;
  r.attempt = row.ColumnInt64(9);
  r.error = row.ColumnText(10);
  r.error_class = row.ColumnText(11);
  r.created_ms = row.ColumnInt64(12);
  r.updated_ms = row.ColumnInt64(13);
  return r;
}

}  // namespace

absl::StatusOr<std::unique_ptr<UpdateJournal>> UpdateJournal::Open(
    const std::string& path, const Clock& clock) {
  ASSIGN_OR_RETURN(std::unique_ptr<sqlite::Database> db,
                   sqlite::Database::Open(path, /*durable=*/true));
  RETURN_IF_ERROR(db->Migrate(Migrations()));
  uint64_t last_seq = 0;
  {
    ASSIGN_OR_RETURN(sqlite::Statement * stmt, db->Cached(kSelectLastSeqSql));
    ASSIGN_OR_RETURN(bool row, stmt->Step());
    if (row) last_seq = static_cast<uint64_t>(stmt->ColumnInt64(0));
    stmt->Reset();
  }
  std::unique_ptr<UpdateJournal> journal(
      new UpdateJournal(std::move(db), clock));
  journal->PublishSeq(last_seq);
  return journal;
}

UpdateJournal::UpdateJournal(std::unique_ptr<sqlite::Database> db,
                             const Clock& clock)
    : clock_(clock), db_(std::move(db)) {}

int64_t UpdateJournal::NowMs() const {
  return absl::ToUnixMillis(clock_.Now());
}

absl::StatusOr<std::string> UpdateJournal::AgentId(
    absl::string_view preferred) {
  if (!preferred.empty()) RETURN_IF_ERROR(ValidateId(preferred, "agent id"));
  absl::MutexLock lock(&db_mu_);
  std::string stored;
  {
    ASSIGN_OR_RETURN(sqlite::Statement * select,
                     db_->Cached(kSelectAgentIdSql));
    ASSIGN_OR_RETURN(bool row, select->Step());
    if (row) stored = select->ColumnText(0);
    select->Reset();
  }
  if (!stored.empty() && (preferred.empty() || preferred == stored)) {
    return stored;
  }
  std::string id = preferred.empty() ? NewId("agent") : std::string(preferred);
  ASSIGN_OR_RETURN(sqlite::Statement * upsert, db_->Cached(kUpsertAgentIdSql));
  upsert->BindText(1, id);
  upsert->BindInt64(2, NowMs());
  RETURN_IF_ERROR(upsert->Run());
  return id;
}

absl::StatusOr<std::optional<InstalledRecord>> UpdateJournal::FindInstalled(
    absl::string_view product) {
  absl::MutexLock lock(&db_mu_);
  ASSIGN_OR_RETURN(sqlite::Statement * select,
                   db_->Cached(kSelectInstalledSql));
  select->BindText(1, product);
  ASSIGN_OR_RETURN(bool row, select->Step());
  if (!row) {
    select->Reset();
    return std::nullopt;
  }
  InstalledRecord r;
  r.product = select->ColumnText(0);
  r.version = select->ColumnText(1);
  r.sha256 = select->ColumnBlob(2);
  r.path = select->ColumnText(3);
  r.updated_ms = select->ColumnInt64(4);
  select->Reset();
  return r;
}

absl::Status UpdateJournal::WriteInstalledLocked(
    const InstalledRecord& installed) {
  ASSIGN_OR_RETURN(sqlite::Statement * upsert,
                   db_->Cached(kUpsertInstalledSql));
  upsert->BindText(1, installed.product);
  upsert->BindText(2, installed.version);
  upsert->BindBlob(3, installed.sha256);
  upsert->BindText(4, installed.path);
  upsert->BindInt64(5, NowMs());
  RETURN_IF_ERROR(upsert->Run());
  return RecordRanHereLocked(installed.product, installed.sha256);
}

absl::Status UpdateJournal::RecordRanHereLocked(absl::string_view product,
                                                absl::string_view sha256) {
  ASSIGN_OR_RETURN(sqlite::Statement * insert, db_->Cached(kInsertRanHereSql));
  insert->BindText(1, product);
  insert->BindBlob(2, sha256);
  insert->BindInt64(3, NowMs());
  return insert->Run();
}

absl::Status UpdateJournal::RecordRanHere(absl::string_view product,
                                          absl::string_view sha256) {
  absl::MutexLock lock(&db_mu_);
  return RecordRanHereLocked(product, sha256);
}

absl::StatusOr<bool> UpdateJournal::RanHere(absl::string_view product,
                                            absl::string_view sha256) {
  absl::MutexLock lock(&db_mu_);
  ASSIGN_OR_RETURN(sqlite::Statement * select, db_->Cached(kSelectRanHereSql));
  select->BindText(1, product);
  select->BindBlob(2, sha256);
  absl::StatusOr<bool> row = select->Step();
  select->Reset();
  return row;
}

absl::StatusOr<uint64_t> UpdateJournal::InsertUpdate(
    const UpdateRecord& record, const v1::UpdateEvent* event) {
  uint64_t seq = 0;
  {
    absl::MutexLock lock(&db_mu_);
    sqlite::Transaction txn(*db_);
    RETURN_IF_ERROR(txn.Begin());
    ASSIGN_OR_RETURN(
        std::optional<UpdateRecord> existing,
        QueryOneUpdateLocked(kSelectUpdateSql, record.directive_id));
    if (existing) {
      return absl::AlreadyExistsError("directive " + record.directive_id +
                                      " is already journaled");
    }
    ASSIGN_OR_RETURN(sqlite::Statement * insert, db_->Cached(kInsertUpdateSql));
    const int64_t now = NowMs();
    insert->BindText(1, record.directive_id);
    insert->BindText(2, record.rollout_id);
    insert->BindText(3, record.product);
    insert->BindText(4, record.from_version);
    insert->BindText(5, record.to_version);
    insert->BindInt64(6, record.kind);
    insert->BindBlob(7, record.signed_manifest.SerializeAsString());
    insert->BindInt64(8, record.deadline_ms);
    insert->BindText(9, ToString(record.state));
    insert->BindInt64(10, record.attempt);
    insert->BindText(11, record.error);
    insert->BindText(12, record.error_class);
    insert->BindInt64(13, record.created_ms != 0 ? record.created_ms : now);
    insert->BindInt64(14, now);
    RETURN_IF_ERROR(insert->Run());
    if (event != nullptr) {
      ASSIGN_OR_RETURN(seq, AppendEventLocked(*event));
    }
    RETURN_IF_ERROR(txn.Commit());
  }
  if (seq != 0) PublishSeq(seq);
  return seq;
}

absl::StatusOr<uint64_t> UpdateJournal::SaveUpdate(
    const UpdateRecord& record, const v1::UpdateEvent* event,
    const InstalledRecord* installed) {
  uint64_t seq = 0;
  {
    absl::MutexLock lock(&db_mu_);
    sqlite::Transaction txn(*db_);
    RETURN_IF_ERROR(txn.Begin());
    ASSIGN_OR_RETURN(sqlite::Statement * save, db_->Cached(kSaveUpdateSql));
    save->BindText(1, ToString(record.state));
    save->BindInt64(2, record.attempt);
    save->BindText(3, record.error);
    save->BindText(4, record.error_class);
    save->BindInt64(5, NowMs());
    save->BindText(6, record.directive_id);
    RETURN_IF_ERROR(save->Run());
    if (db_->Changes() != 1) {
      return absl::NotFoundError("directive " + record.directive_id +
                                 " is not journaled");
    }
    if (installed != nullptr) RETURN_IF_ERROR(WriteInstalledLocked(*installed));
    if (event != nullptr) {
      ASSIGN_OR_RETURN(seq, AppendEventLocked(*event));
    }
    RETURN_IF_ERROR(txn.Commit());
  }
  if (seq != 0) PublishSeq(seq);
  return seq;
}

absl::StatusOr<std::optional<UpdateRecord>> UpdateJournal::QueryOneUpdateLocked(
    const char* sql, absl::string_view arg) {
  ASSIGN_OR_RETURN(sqlite::Statement * select, db_->Cached(sql));
  if (!arg.empty()) select->BindText(1, arg);
  ASSIGN_OR_RETURN(bool row, select->Step());
  if (!row) {
    select->Reset();
    return std::nullopt;
  }
  absl::StatusOr<UpdateRecord> record = ReadUpdateRow(*select);
  select->Reset();
  if (!record.ok()) return record.status();
  return *std::move(record);
}

absl::StatusOr<std::optional<UpdateRecord>> UpdateJournal::FindUpdate(
    absl::string_view directive_id) {
  if (directive_id.empty()) return std::nullopt;
  absl::MutexLock lock(&db_mu_);
  return QueryOneUpdateLocked(kSelectUpdateSql, directive_id);
}

absl::StatusOr<std::optional<UpdateRecord>> UpdateJournal::ActiveUpdate() {
  absl::MutexLock lock(&db_mu_);
  return QueryOneUpdateLocked(kSelectActiveUpdateSql, "");
}

absl::StatusOr<std::string> UpdateJournal::LastDirectiveId() {
  absl::MutexLock lock(&db_mu_);
  ASSIGN_OR_RETURN(sqlite::Statement * select,
                   db_->Cached(kSelectLastDirectiveSql));
  ASSIGN_OR_RETURN(bool row, select->Step());
  std::string id = row ? select->ColumnText(0) : "";
  select->Reset();
  return id;
}

absl::StatusOr<std::vector<std::string>> UpdateJournal::PreviousVersions(
    absl::string_view product, absl::string_view current) {
  absl::MutexLock lock(&db_mu_);
  ASSIGN_OR_RETURN(sqlite::Statement * select,
                   db_->Cached(kSelectHealthyHistorySql));
  select->BindText(1, product);
  std::vector<std::string> versions;
  auto add = [&](std::string version) {
    if (version.empty() || version == current ||
        versions.size() >= kMaxPreviousVersions) {
      return;
    }
    for (const std::string& seen : versions) {
      if (seen == version) return;
    }
    versions.push_back(std::move(version));
  };
  for (;;) {
    absl::StatusOr<bool> row = select->Step();
    if (!row.ok()) {
      select->Reset();
      return row.status();
    }
    if (!*row) break;
    // Newest update first: what it installed, then what ran before it.
    add(select->ColumnText(0));
    add(select->ColumnText(1));
  }
  select->Reset();
  return versions;
}

absl::Status UpdateJournal::ReplaceBlacklist(
    const std::vector<v1::BlacklistedVersion>& entries) {
  absl::MutexLock lock(&db_mu_);
  sqlite::Transaction txn(*db_);
  RETURN_IF_ERROR(txn.Begin());
  ASSIGN_OR_RETURN(sqlite::Statement * del, db_->Cached(kDeleteBlacklistSql));
  RETURN_IF_ERROR(del->Run());
  ASSIGN_OR_RETURN(sqlite::Statement * insert,
                   db_->Cached(kInsertBlacklistSql));
  for (const v1::BlacklistedVersion& entry : entries) {
    insert->BindText(1, entry.product());
    insert->BindText(2, entry.version());
    RETURN_IF_ERROR(insert->Run());
  }
  return txn.Commit();
}

absl::StatusOr<bool> UpdateJournal::IsBlacklisted(absl::string_view product,
                                                  absl::string_view version) {
  absl::MutexLock lock(&db_mu_);
  ASSIGN_OR_RETURN(sqlite::Statement * select,
                   db_->Cached(kSelectBlacklistedSql));
  select->BindText(1, product);
  select->BindText(2, version);
  absl::StatusOr<bool> row = select->Step();
  select->Reset();
  return row;
}

absl::StatusOr<std::vector<v1::BlacklistedVersion>> UpdateJournal::Blacklist() {
  absl::MutexLock lock(&db_mu_);
  ASSIGN_OR_RETURN(sqlite::Statement * select, db_->Cached(kListBlacklistSql));
  std::vector<v1::BlacklistedVersion> entries;
  for (;;) {
    absl::StatusOr<bool> row = select->Step();
    if (!row.ok()) {
      select->Reset();
      return row.status();
    }
    if (!*row) break;
    v1::BlacklistedVersion& entry = entries.emplace_back();
    entry.set_product(select->ColumnText(0));
    entry.set_version(select->ColumnText(1));
  }
  select->Reset();
  return entries;
}

absl::StatusOr<uint64_t> UpdateJournal::AppendEventLocked(
    const v1::UpdateEvent& event) {
  v1::UpdateEvent copy = event;
  copy.clear_seq();
  ASSIGN_OR_RETURN(sqlite::Statement * insert, db_->Cached(kInsertEventSql));
  insert->BindBlob(1, copy.SerializeAsString());
  insert->BindInt64(2, NowMs());
  RETURN_IF_ERROR(insert->Run());
  return static_cast<uint64_t>(db_->LastInsertRowId());
}

absl::StatusOr<uint64_t> UpdateJournal::AppendEvent(
    const v1::UpdateEvent& event) {
  uint64_t seq = 0;
  {
    absl::MutexLock lock(&db_mu_);
    ASSIGN_OR_RETURN(seq, AppendEventLocked(event));
  }
  PublishSeq(seq);
  return seq;
}

absl::StatusOr<std::vector<v1::UpdateEvent>> UpdateJournal::PendingEvents(
    uint64_t after_seq, int limit) {
  absl::MutexLock lock(&db_mu_);
  ASSIGN_OR_RETURN(sqlite::Statement * select, db_->Cached(kSelectEventsSql));
  select->BindInt64(1, static_cast<int64_t>(after_seq));
  select->BindInt64(2, limit);
  std::vector<v1::UpdateEvent> events;
  for (;;) {
    absl::StatusOr<bool> row = select->Step();
    if (!row.ok()) {
      select->Reset();
      return row.status();
    }
    if (!*row) break;
    v1::UpdateEvent event;
    if (!event.ParseFromString(select->ColumnBlob(1))) {
      const int64_t seq = select->ColumnInt64(0);
      select->Reset();
      return absl::DataLossError(
          absl::StrCat("journaled event ", seq, " does not parse"));
    }
    event.set_seq(static_cast<uint64_t>(select->ColumnInt64(0)));
    events.push_back(std::move(event));
  }
  select->Reset();
  return events;
}

absl::Status UpdateJournal::AckEvents(uint64_t acked_seq) {
  absl::MutexLock lock(&db_mu_);
  ASSIGN_OR_RETURN(sqlite::Statement * del, db_->Cached(kDeleteEventsSql));
  del->BindInt64(1, static_cast<int64_t>(acked_seq));
  return del->Run();
}

absl::Status UpdateJournal::EnsureSeqAbove(uint64_t seq) {
  {
    absl::MutexLock lock(&db_mu_);
    sqlite::Transaction txn(*db_);
    RETURN_IF_ERROR(txn.Begin());
    ASSIGN_OR_RETURN(sqlite::Statement * insert, db_->Cached(kInsertSeqSql));
    RETURN_IF_ERROR(insert->Run());
    ASSIGN_OR_RETURN(sqlite::Statement * raise, db_->Cached(kRaiseSeqSql));
    raise->BindInt64(1, static_cast<int64_t>(seq));
    RETURN_IF_ERROR(raise->Run());
    RETURN_IF_ERROR(txn.Commit());
  }
  PublishSeq(seq);
  return absl::OkStatus();
}

void UpdateJournal::PublishSeq(uint64_t seq) {
  absl::MutexLock lock(&seq_mu_);
  if (seq > last_seq_) last_seq_ = seq;
}

uint64_t UpdateJournal::LastEventSeq() const {
  absl::MutexLock lock(&seq_mu_);
  return last_seq_;
}

bool UpdateJournal::WaitForEventAfter(uint64_t seq, absl::Time deadline) {
  absl::MutexLock lock(&seq_mu_);
  const uint64_t interrupts = interrupts_;
  auto ready = [&]() ABSL_SHARED_LOCKS_REQUIRED(seq_mu_) {
    return last_seq_ > seq || interrupts_ != interrupts;
  };
  seq_mu_.AwaitWithDeadline(absl::Condition(&ready), deadline);
  return last_seq_ > seq;
}

void UpdateJournal::Interrupt() {
  absl::MutexLock lock(&seq_mu_);
  ++interrupts_;
}

}  // namespace fleet::agent
