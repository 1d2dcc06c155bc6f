// Root metadata: fleet's root of trust, after TUF's root role.
//
// A RootMetadata names the release keys (and how many must sign a release
// manifest) and the root keys (and how many must sign the next root). Root
// keys are kept offline; only a threshold of them can change which release
// keys are trusted. See proto/fleet/v1/release.proto for the rules; this file
// enforces them.
//
//   ASSIGN_OR_RETURN(v1::SignedRoot pinned,
//   LoadRootFile("/etc/fleet/root.json")); ASSIGN_OR_RETURN(TrustedRoot root,
//   TrustedRoot::FromPinned(pinned));
//   RETURN_IF_ERROR(root.Update(next_root_from_controller));
//   ASSIGN_OR_RETURN(v1::ReleaseManifest m, root.VerifyRelease(signed, now));
#ifndef FLEET_COMMON_ROOT_H_
#define FLEET_COMMON_ROOT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/ed25519.h"
#include "common/manifest.h"
#include "proto/fleet/v1/release.pb.h"

namespace fleet {

// Checks every field: version >= 1, expiry after creation, keys 32 bytes
// and distinct within each list, thresholds within 1..number of keys.
// INVALID_ARGUMENT naming the first bad field.
absl::Status ValidateRoot(const v1::RootMetadata& root);

// Validates `root`, serializes it and signs the bytes with each of `keys`.
absl::StatusOr<v1::SignedRoot> SignRoot(
    const v1::RootMetadata& root,
    const std::vector<const Ed25519PrivateKey*>& keys);

// Adds a signature over the same bytes (for signing by several parties, one
// at a time, offline). A key that already signed is not added twice.
void AddRootSignature(v1::SignedRoot& signed_root,
                      const Ed25519PrivateKey& key);

// Parses the signed bytes without checking signatures (to show an operator
// what a file holds). INVALID_ARGUMENT if they do not parse.
absl::StatusOr<v1::RootMetadata> ParseRootUnverified(
    const v1::SignedRoot& signed_root);

class TrustedRoot {
 public:
  // The root pinned at install. It vouches for itself: a threshold of its
  // own root keys must have signed it. Its expiry is not checked here (an
  // agent with an expired pinned root keeps running and can still accept a
  // newer root). INVALID_ARGUMENT / PERMISSION_DENIED.
  static absl::StatusOr<TrustedRoot> FromPinned(const v1::SignedRoot& pinned);

  // Makes `next` the current root. On any error the current root stays.
  //   INVALID_ARGUMENT:    bytes that do not parse or a bad field.
  //   FAILED_PRECONDITION: version not exactly current + 1 (an older or
  //                        equal version is a rollback, a higher one skips
  //                        a rotation the agent must see first).
  //   PERMISSION_DENIED:   fewer than the current root's root_threshold
  //                        valid signatures from its root keys, or fewer
  //                        than next's root_threshold from next's own keys.
  absl::Status Update(const v1::SignedRoot& next);

  // Verifies a release manifest with this root's release keys and
  // threshold (or `min_threshold` if higher). FAILED_PRECONDITION when this
  // root expired before `now` (stale trust is refused for new installs:
  // re-sign the root) or the manifest did; neither is checked without
  // `check_expiry` (an explicit rollback to a release the agent ran).
  // Otherwise as VerifyManifest.
  absl::StatusOr<v1::ReleaseManifest> VerifyRelease(
      const v1::SignedManifest& signed_manifest, absl::Time now,
      bool check_expiry = true, int min_threshold = 1) const;

  const v1::RootMetadata& metadata() const { return metadata_; }
  const v1::SignedRoot& signed_root() const { return signed_; }
  uint64_t version() const { return metadata_.version(); }
  absl::Time expires() const;
  bool Expired(absl::Time now) const { return now > expires(); }
  const TrustedKeys& release_keys() const { return release_keys_; }

 private:
  TrustedRoot() = default;
  // Sets every member from an already verified root.
  void Adopt(v1::SignedRoot signed_root, v1::RootMetadata metadata,
             TrustedKeys root_keys, TrustedKeys release_keys);

  v1::SignedRoot signed_;
  v1::RootMetadata metadata_;
  TrustedKeys root_keys_;
  TrustedKeys release_keys_;
};

// The current root of trust and every root version accepted since the
// first one, oldest first: what a controller sends an agent that is several
// rotations behind, and what an agent verifies releases with. A live
// ReleaseTrustSource (TrustedKeys::Live), so verifiers follow rotations.
// Thread-safe.
//
//   RootChain chain(*TrustedRoot::FromPinned(pinned));
//   RETURN_IF_ERROR(chain.Accept(next));   // only via TrustedRoot::Update
//   for (const v1::SignedRoot& r : chain.After(agent_root_version)) ...
class RootChain : public ReleaseTrustSource {
 public:
  explicit RootChain(TrustedRoot first);

  // Makes `next` current through TrustedRoot::Update and appends it. Same
  // errors as Update; on error nothing changes.
  absl::Status Accept(const v1::SignedRoot& next) ABSL_LOCKS_EXCLUDED(mu_);

  TrustedRoot Current() const ABSL_LOCKS_EXCLUDED(mu_);
  uint64_t version() const ABSL_LOCKS_EXCLUDED(mu_);
  absl::Time expires() const ABSL_LOCKS_EXCLUDED(mu_);
  // The roots of this chain with a version above `version`, oldest first
  // (each one must be applied in order). Empty when `version` is current.
  std::vector<v1::SignedRoot> After(uint64_t version) const
      ABSL_LOCKS_EXCLUDED(mu_);

  // ReleaseTrustSource: the current root's TrustedRoot::VerifyRelease.
  absl::StatusOr<v1::ReleaseManifest> VerifyRelease(
      const v1::SignedManifest& signed_manifest, absl::Time now,
      int min_threshold, bool check_expiry) const override
      ABSL_LOCKS_EXCLUDED(mu_);

 private:
  mutable absl::Mutex mu_;
  TrustedRoot current_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::SignedRoot> chain_ ABSL_GUARDED_BY(mu_);
};

// Root files are the SignedRoot in protobuf JSON (bytes as base64), so they
// can be mailed, diffed and pasted. NOT_FOUND / INVALID_ARGUMENT.
absl::StatusOr<v1::SignedRoot> LoadRootFile(const std::string& path);
// Replaces `path` atomically (0644).
absl::Status WriteRootFile(const std::string& path,
                           const v1::SignedRoot& signed_root);

}  // namespace fleet

#endif  // FLEET_COMMON_ROOT_H_
