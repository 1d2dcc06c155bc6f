#include "controller/identity/identity_store.h"

#include <openssl/rand.h>

#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/names.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace fleet::controller {
namespace {

constexpr char kTokenPrefix[] = "fleet-enroll-";
constexpr size_t kTokenIdLength = 12;
constexpr absl::Duration kMaxTokenTtl = absl::Hours(24 * 30);

constexpr char kInsertTokenSql[] =
    "INSERT INTO enroll_tokens(token_sha256, token_id, labels, uses_left, "
    "expires_ms, created_by, created_ms) VALUES(?, ?, ?, ?, ?, ?, ?)";
constexpr char kSpendTokenSql[] =
    "UPDATE enroll_tokens SET uses_left = uses_left - 1 "
    "WHERE token_sha256 = ? AND uses_left > 0 AND expires_ms > ?";
constexpr char kSelectTokenSql[] =
    "SELECT token_id, labels, uses_left, expires_ms, created_by, created_ms "
    "FROM enroll_tokens WHERE token_sha256 = ?";
constexpr char kListTokensSql[] =
    "SELECT token_id, labels, uses_left, expires_ms, created_by, created_ms "
    "FROM enroll_tokens WHERE uses_left > 0 AND expires_ms > ? "
    "ORDER BY created_ms DESC";
constexpr char kDeleteTokenSql[] =
    "DELETE FROM enroll_tokens WHERE token_id = ?";
constexpr char kRevokeSql[] =
    "INSERT OR IGNORE INTO revoked_agents(agent_id, reason, revoked_by, "
    "revoked_ms) VALUES(?, ?, ?, ?)";
constexpr char kListRevokedSql[] = "SELECT agent_id FROM revoked_agents";
constexpr char kInsertAuditSql[] =
    "INSERT INTO audit_log(time_ms, actor, action, detail) VALUES(?, ?, ?, ?)";
constexpr char kListAuditSql[] =
    "SELECT id, time_ms, actor, action, detail FROM audit_log "
    "ORDER BY id DESC LIMIT ?";
constexpr char kInsertRootSql[] =
    "INSERT INTO trust_roots(version, signed_root, expires_ms, accepted_by, "
    "accepted_ms) VALUES(?, ?, ?, ?, ?)";
constexpr char kListRootsSql[] =
    "SELECT signed_root FROM trust_roots ORDER BY version";

int64_t ToMs(absl::Time t) { return absl::ToUnixMillis(t); }
absl::Time FromMs(int64_t ms) { return absl::FromUnixMillis(ms); }

EnrollTokenInfo ReadToken(const sqlite::Statement& s) {
  EnrollTokenInfo info;
  info.token_id = s.ColumnText(0);
  nlohmann::json labels = nlohmann::json::parse(s.ColumnText(1), nullptr,
                                                /*allow_exceptions=*/false);
  if (labels.is_object()) {
    for (const auto& [key, value] : labels.items()) {
      if (value.is_string()) info.labels[key] = value.get<std::string>();
    }
  }
  info.uses_left = s.ColumnInt64(2);
  info.expires = FromMs(s.ColumnInt64(3));
  info.created_by = s.ColumnText(4);
  info.created = FromMs(s.ColumnInt64(5));
  return info;
}

}  // namespace

std::string TokenDigest(const std::string& token) {
  return DigestToHex(Sha256Of(token));
}

absl::StatusOr<std::unique_ptr<IdentityStore>> IdentityStore::Open(
    const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<sqlite::Database> db,
                   sqlite::Database::Open(path));
  absl::StatusOr<std::unique_ptr<sqlite::Statement>> probe =
      db->Prepare("SELECT 1 FROM enroll_tokens LIMIT 1");
  if (!probe.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat(path,
                     " has no enrollment tables; open it with the controller's "
                     "Store first so it is migrated"));
  }
  auto store = std::unique_ptr<IdentityStore>(new IdentityStore(std::move(db)));
  absl::MutexLock lock(&store->mu_);
  ASSIGN_OR_RETURN(sqlite::Statement * list,
                   store->db_->Cached(kListRevokedSql));
  while (true) {
    ASSIGN_OR_RETURN(bool row, list->Step());
    if (!row) break;
    store->revoked_.insert(list->ColumnText(0));
  }
  list->Reset();
  return store;
}

absl::StatusOr<NewEnrollToken> IdentityStore::CreateToken(
    const std::map<std::string, std::string>& labels, int64_t uses,
    absl::Duration ttl, const std::string& created_by, absl::Time now) {
  if (uses < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("a token needs at least one use, got ", uses));
  }
  if (ttl <= absl::ZeroDuration() || ttl > kMaxTokenTtl) {
    return absl::InvalidArgumentError(
        absl::StrCat("token lifetime must be within (0, 30d], got ",
                     absl::FormatDuration(ttl)));
  }
  nlohmann::json labels_json = nlohmann::json::object();
  for (const auto& [key, value] : labels) {
    RETURN_IF_ERROR(ValidateLabel(key, value));
    labels_json[key] = value;
  }
  unsigned char secret[32];
  if (RAND_bytes(secret, sizeof(secret)) != 1) {
    return absl::InternalError("RAND_bytes failed");
  }
  NewEnrollToken result;
  absl::WebSafeBase64Escape(
      absl::string_view(reinterpret_cast<const char*>(secret), sizeof(secret)),
      &result.token);
  result.token = absl::StrCat(kTokenPrefix, result.token);
  const std::string digest = TokenDigest(result.token);
  result.info.token_id = digest.substr(0, kTokenIdLength);
  result.info.labels = labels;
  result.info.uses_left = uses;
  result.info.expires = now + ttl;
  result.info.created_by = created_by;
  result.info.created = now;

  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(sqlite::Statement * insert, db_->Cached(kInsertTokenSql));
  insert->BindText(1, digest);
  insert->BindText(2, result.info.token_id);
  insert->BindText(3, labels_json.dump());
  insert->BindInt64(4, uses);
  insert->BindInt64(5, ToMs(result.info.expires));
  insert->BindText(6, created_by);
  insert->BindInt64(7, ToMs(now));
  RETURN_IF_ERROR(insert->Run());
  return result;
}

absl::StatusOr<EnrollTokenInfo> IdentityStore::RedeemToken(
    const std::string& token, absl::Time now) {
  const std::string digest = TokenDigest(token);
  absl::MutexLock lock(&mu_);
  sqlite::Transaction txn(*db_);
  RETURN_IF_ERROR(txn.Begin());
  // One conditional UPDATE spends the use: two agents racing for the last
  // use of a token cannot both win.
  ASSIGN_OR_RETURN(sqlite::Statement * spend, db_->Cached(kSpendTokenSql));
  spend->BindText(1, digest);
  spend->BindInt64(2, ToMs(now));
  RETURN_IF_ERROR(spend->Run());
  if (db_->Changes() != 1) {
    return absl::UnauthenticatedError(
        "enrollment token is unknown, expired or used up; create a new one "
        "with fleetctl enroll-token create");
  }
  ASSIGN_OR_RETURN(sqlite::Statement * select, db_->Cached(kSelectTokenSql));
  select->BindText(1, digest);
  ASSIGN_OR_RETURN(bool row, select->Step());
  if (!row) return absl::InternalError("spent token vanished");
  EnrollTokenInfo info = ReadToken(*select);
  select->Reset();
  RETURN_IF_ERROR(txn.Commit());
  return info;
}

absl::StatusOr<std::vector<EnrollTokenInfo>> IdentityStore::ListTokens(
    absl::Time now) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(sqlite::Statement * list, db_->Cached(kListTokensSql));
  list->BindInt64(1, ToMs(now));
  std::vector<EnrollTokenInfo> tokens;
  while (true) {
    ASSIGN_OR_RETURN(bool row, list->Step());
    if (!row) break;
    tokens.push_back(ReadToken(*list));
  }
  list->Reset();
  return tokens;
}

absl::Status IdentityStore::DeleteToken(const std::string& token_id) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(sqlite::Statement * remove, db_->Cached(kDeleteTokenSql));
  remove->BindText(1, token_id);
  RETURN_IF_ERROR(remove->Run());
  if (db_->Changes() == 0) {
    return absl::NotFoundError(absl::StrCat("no enrollment token ", token_id));
  }
  return absl::OkStatus();
}

absl::Status IdentityStore::RevokeAgent(const std::string& agent_id,
                                        const std::string& reason,
                                        const std::string& revoked_by,
                                        absl::Time now) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(sqlite::Statement * revoke, db_->Cached(kRevokeSql));
  revoke->BindText(1, agent_id);
  revoke->BindText(2, reason);
  revoke->BindText(3, revoked_by);
  revoke->BindInt64(4, ToMs(now));
  RETURN_IF_ERROR(revoke->Run());
  revoked_.insert(agent_id);
  return absl::OkStatus();
}

absl::StatusOr<bool> IdentityStore::IsRevoked(const std::string& agent_id) {
  absl::MutexLock lock(&mu_);
  return revoked_.contains(agent_id);
}

absl::Status IdentityStore::AppendAudit(const std::string& actor,
                                        const std::string& action,
                                        const std::string& detail,
                                        absl::Time now) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(sqlite::Statement * insert, db_->Cached(kInsertAuditSql));
  insert->BindInt64(1, ToMs(now));
  insert->BindText(2, actor);
  insert->BindText(3, action);
  insert->BindText(4, detail);
  return insert->Run();
}

absl::StatusOr<std::vector<AuditEntry>> IdentityStore::ListAudit(int limit) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(sqlite::Statement * list, db_->Cached(kListAuditSql));
  list->BindInt64(1, limit);
  std::vector<AuditEntry> entries;
  while (true) {
    ASSIGN_OR_RETURN(bool row, list->Step());
    if (!row) break;
    entries.push_back(AuditEntry{
        list->ColumnInt64(0), FromMs(list->ColumnInt64(1)), list->ColumnText(2),
        list->ColumnText(3), list->ColumnText(4)});
  }
  list->Reset();
  return entries;
}

absl::Status IdentityStore::InsertRoot(uint64_t version,
                                       const std::string& signed_root,
                                       absl::Time expires,
                                       const std::string& accepted_by,
                                       absl::Time now) {
  if (version == 0 ||
      version > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return absl::InvalidArgumentError(
        absl::StrCat("root version out of range: ", version));
  }
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(sqlite::Statement * insert, db_->Cached(kInsertRootSql));
  insert->BindInt64(1, static_cast<int64_t>(version));
  insert->BindBlob(2, signed_root);
  insert->BindInt64(3, ToMs(expires));
  insert->BindText(4, accepted_by);
  insert->BindInt64(5, ToMs(now));
  return insert->Run();
}

absl::StatusOr<std::vector<std::string>> IdentityStore::ListRoots() {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(sqlite::Statement * list, db_->Cached(kListRootsSql));
  std::vector<std::string> roots;
  while (true) {
    ASSIGN_OR_RETURN(bool row, list->Step());
    if (!row) break;
    roots.push_back(list->ColumnBlob(0));
  }
  list->Reset();
  return roots;
}

}  // namespace fleet::controller
