// Release manifests: validation, signing and verification.
//
// The signed bytes are SignedManifest.manifest exactly as produced by the
// signer; verification parses them only after a signature checks out, so a
// forged manifest is never even interpreted.
//
//   TrustedKeys keys;
//   RETURN_IF_ERROR(keys.AddPemFile("/etc/fleet/release.pub"));
//   ASSIGN_OR_RETURN(v1::ReleaseManifest m, VerifyManifest(signed, keys, now));
#ifndef FLEET_COMMON_MANIFEST_H_
#define FLEET_COMMON_MANIFEST_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/ed25519.h"
#include "proto/fleet/v1/release.pb.h"

namespace fleet {

class TrustedKeys;

// Release trust that can change while it is in use: a root of trust that
// rotates (common/root.h RootChain). A TrustedKeys bound to a source with
// TrustedKeys::Live verifies every manifest with whatever the source trusts
// at that moment, so code that holds a `const TrustedKeys&` (the agent's
// Updater, the controller's AdminService) follows root rotations unchanged.
class ReleaseTrustSource {
 public:
  virtual ~ReleaseTrustSource() = default;
  // As VerifyManifest, with the source's keys and at least the greater of
  // its own threshold and `min_threshold`. Thread-safe.
  virtual absl::StatusOr<v1::ReleaseManifest> VerifyRelease(
      const v1::SignedManifest& signed_manifest, absl::Time now,
      int min_threshold, bool check_expiry) const = 0;
};

// The set of release public keys a verifier accepts, by key id.
class TrustedKeys {
 public:
  TrustedKeys() = default;
  // Keys that are whatever `source` trusts when VerifyManifest runs (a
  // live view, not a copy). `source` must outlive this and every copy.
  static TrustedKeys Live(const ReleaseTrustSource* source) {
    TrustedKeys keys;
    keys.live_ = source;
    return keys;
  }
  // The source of a Live set; nullptr for a fixed set of keys.
  const ReleaseTrustSource* live_source() const { return live_; }

  void Add(Ed25519PublicKey key);
  // Loads a PEM public key file and adds it. NOT_FOUND / INVALID_ARGUMENT.
  absl::Status AddPemFile(const std::string& path);
  // nullptr if the id is unknown.
  const Ed25519PublicKey* Find(absl::string_view key_id) const;
  // The ids of all keys, in the order they were added (for error messages).
  std::vector<std::string> KeyIds() const;
  bool empty() const { return keys_.empty(); }
  size_t size() const { return keys_.size(); }

 private:
  std::vector<Ed25519PublicKey> keys_;
  const ReleaseTrustSource* live_ = nullptr;
};

// Checks every field of a manifest: product name, SemVer version, platform
// ("os/arch" from the known set), 32-byte digest, size > 0, expiry not
// before creation. INVALID_ARGUMENT naming the first bad field.
absl::Status ValidateManifest(const v1::ReleaseManifest& manifest);

// Validates `manifest`, serializes it and signs the bytes with `key`.
absl::StatusOr<v1::SignedManifest> SignManifest(
    const v1::ReleaseManifest& manifest, const Ed25519PrivateKey& key);

// Adds another signature over the same bytes (for k-of-n signing).
void AddSignature(v1::SignedManifest& signed_manifest,
                  const Ed25519PrivateKey& key);

// OK iff at least `threshold` distinct keys of `keys` made valid Ed25519
// signatures over `bytes`. INVALID_ARGUMENT for a threshold below 1;
// PERMISSION_DENIED otherwise, naming `subject` ("release manifest"), the
// counts and the key ids (valid, bad, unknown, trusted) with `key_kind`
// ("release", "root") in the wording.
absl::Status CheckSignatureThreshold(
    absl::string_view subject, absl::string_view key_kind,
    absl::string_view bytes,
    const google::protobuf::RepeatedPtrField<v1::Signature>& signatures,
    const TrustedKeys& keys, int threshold);

// Verifies that at least `threshold` distinct trusted keys signed the
// manifest bytes, then parses and validates them. With a Live `keys` the
// source decides (its keys, its threshold if higher, its own expiry).
//   PERMISSION_DENIED: fewer than `threshold` valid trusted signatures
//                      (message says how many were valid / unknown key ids).
//   INVALID_ARGUMENT:  bytes do not parse, or a field is invalid.
//   FAILED_PRECONDITION: the manifest expired before `now` (only when
//                      `check_expiry`).
absl::StatusOr<v1::ReleaseManifest> VerifyManifest(
    const v1::SignedManifest& signed_manifest, const TrustedKeys& keys,
    absl::Time now, int threshold = 1, bool check_expiry = true);

}  // namespace fleet

#endif  // FLEET_COMMON_MANIFEST_H_
