// Who may connect: enrollment tokens, revoked agents and the audit log of
// admin actions, in the controller's SQLite database (tables created by the
// store's migration 6); and the roots of trust accepted (migration 7).
//
// Tokens are shown once, at creation, and stored only as their SHA-256: a
// copy of the database enrolls nobody. Each token has an id (the first 12
// hex characters of its digest) for listing and revoking it.
//
// Thread-safety: one IdentityStore is one connection, used under its own
// mutex. Its writes are rare (an enrollment, a revocation, an admin action)
// and short; SQLite's busy timeout orders them with the control loop's
// batches on the same file.
#ifndef FLEET_CONTROLLER_IDENTITY_IDENTITY_STORE_H_
#define FLEET_CONTROLLER_IDENTITY_IDENTITY_STORE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/sqlite/database.h"

namespace fleet::controller {

struct EnrollTokenInfo {
  std::string token_id;
  std::map<std::string, std::string> labels;
  int64_t uses_left = 0;
  absl::Time expires;
  std::string created_by;
  absl::Time created;
};

struct NewEnrollToken {
  std::string token;  // the secret, returned only here
  EnrollTokenInfo info;
};

struct AuditEntry {
  int64_t id = 0;
  absl::Time time;
  std::string actor;   // "admin:alice", "agent:ag-..."
  std::string action;  // e.g. "CreateRollout"
  std::string detail;  // the request, abbreviated
};

class IdentityStore {
 public:
  // Opens `path` (an existing, migrated fleet.db). FAILED_PRECONDITION if
  // its schema lacks the identity tables.
  static absl::StatusOr<std::unique_ptr<IdentityStore>> Open(
      const std::string& path);

  // A new token valid for `uses` enrollments until now + `ttl`, giving
  // enrolled agents `labels`. INVALID_ARGUMENT: uses < 1, ttl <= 0 or over
  // 30 days, bad label keys or values.
  absl::StatusOr<NewEnrollToken> CreateToken(
      const std::map<std::string, std::string>& labels, int64_t uses,
      absl::Duration ttl, const std::string& created_by, absl::Time now);

  // Spends one use of `token`. UNAUTHENTICATED for an unknown, expired or
  // used-up token (one message for all).
  absl::StatusOr<EnrollTokenInfo> RedeemToken(const std::string& token,
                                              absl::Time now);

  // Tokens with uses left that have not expired, newest first.
  absl::StatusOr<std::vector<EnrollTokenInfo>> ListTokens(absl::Time now);
  // NOT_FOUND if no such token id.
  absl::Status DeleteToken(const std::string& token_id);

  // Marks the agent revoked (idempotent: the first reason is kept).
  absl::Status RevokeAgent(const std::string& agent_id,
                           const std::string& reason,
                           const std::string& revoked_by, absl::Time now);
  // From memory (loaded at Open, kept by RevokeAgent): cheap enough for a
  // stream reaction, which must not touch the database.
  absl::StatusOr<bool> IsRevoked(const std::string& agent_id);

  absl::Status AppendAudit(const std::string& actor, const std::string& action,
                           const std::string& detail, absl::Time now);
  // The newest `limit` entries, newest first.
  absl::StatusOr<std::vector<AuditEntry>> ListAudit(int limit);

  // Stores an accepted root (a serialized SignedRoot; the caller verified
  // it). A second root of the same version is ALREADY_EXISTS.
  absl::Status InsertRoot(uint64_t version, const std::string& signed_root,
                          absl::Time expires, const std::string& accepted_by,
                          absl::Time now);
  // Every stored root (serialized SignedRoot), by version, lowest first.
  absl::StatusOr<std::vector<std::string>> ListRoots();

 private:
  explicit IdentityStore(std::unique_ptr<sqlite::Database> db)
      : db_(std::move(db)) {}

  absl::Mutex mu_;
  std::unique_ptr<sqlite::Database> db_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<std::string> revoked_ ABSL_GUARDED_BY(mu_);
};

// The digest stored for a token: lower-case hex SHA-256.
std::string TokenDigest(const std::string& token);

}  // namespace fleet::controller

#endif  // FLEET_CONTROLLER_IDENTITY_IDENTITY_STORE_H_
