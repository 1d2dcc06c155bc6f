// The agent's root of trust (docs/security.md, "Release signing").
//
// Pinned at install (--trust-root FILE), then rotated only by roots the
// controller sends (Welcome.roots, RootUpdate), each accepted through
// TrustedRoot::Update: exactly the next version, cross-signed by a threshold
// of the current and of its own root keys. Every accepted root is written to
// STATE/root.json (temp file, fsync, rename), so a restart keeps it; an
// agent several rotations behind is sent the whole chain and applies it in
// order.
//
// keys() is a live TrustedKeys (TrustedKeys::Live): the Updater, which
// verifies manifests with a `const TrustedKeys&`, always uses the current
// root's release keys, threshold and expiry without knowing about roots.
//
// An expired root refuses new installs (error_class "expired"), but the
// agent keeps running, keeps its stream, never uninstalls and still accepts
// the next root. It says so: a warning once per root version
// (NoteExpiry) and the root's version and expiry in every heartbeat.
//
// Thread-safety: all methods are thread-safe.
#ifndef FLEET_AGENT_TRUST_H_
#define FLEET_AGENT_TRUST_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/manifest.h"
#include "common/root.h"
#include "proto/fleet/v1/release.pb.h"

namespace fleet::agent {

class AgentTrust {
 public:
  // Trusts the root in `pinned_path` (it must vouch for itself), or the one
  // in STATE/root.json when that one is newer (rotations accepted before a
  // restart; it must vouch for itself too). A pinned file newer than the
  // state's wins: the operator reinstalled with a newer root.
  // NOT_FOUND / INVALID_ARGUMENT / PERMISSION_DENIED naming the file.
  // `clock` must outlive the result.
  static absl::StatusOr<std::unique_ptr<AgentTrust>> Open(
      const std::string& pinned_path, const std::string& state_dir,
      const Clock& clock = RealClock::Get());

  AgentTrust(const AgentTrust&) = delete;
  AgentTrust& operator=(const AgentTrust&) = delete;

  // Applies `roots` in order; those at or below the current version are
  // skipped (already applied). Stops at the first refused one and returns
  // why (TrustedRoot::Update's status); the roots before it stay applied.
  // Each accepted root is persisted before the call returns (a failed write
  // is returned as well; the root stays in force until the restart).
  absl::Status Apply(
      const google::protobuf::RepeatedPtrField<v1::SignedRoot>& roots);

  // A live view of the current root's release keys, threshold and expiry;
  // valid as long as this object.
  const TrustedKeys& keys() const { return keys_; }
  uint64_t version() const { return chain_.version(); }
  absl::Time expires() const { return chain_.expires(); }
  // Logs a warning if the root has expired, once per root version; true if
  // it has expired.
  bool NoteExpiry();

 private:
  AgentTrust(TrustedRoot root, std::string state_path, const Clock& clock);

  RootChain chain_;
  const TrustedKeys keys_;
  const std::string state_path_;
  const Clock& clock_;
  absl::Mutex mu_;
  uint64_t warned_expired_version_ ABSL_GUARDED_BY(mu_) = 0;
};

// For main: with `root_path` set, opens the AgentTrust and makes `keys` its
// live view (--trust-root wins over --trust-key); returns nullptr when
// `root_path` is empty and `keys` holds at least one key.
// INVALID_ARGUMENT when neither is given; otherwise as AgentTrust::Open.
absl::StatusOr<std::unique_ptr<AgentTrust>> UseTrustRoot(
    const std::string& root_path, const std::string& state_dir,
    TrustedKeys& keys);

}  // namespace fleet::agent

#endif  // FLEET_AGENT_TRUST_H_
