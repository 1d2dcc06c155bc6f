#include "common/root.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <set>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/status_macros.h"

namespace fleet {
namespace {

constexpr size_t kKeySize = 32;

absl::Status ValidateKeyList(
    const google::protobuf::RepeatedPtrField<std::string>& keys,
    uint32_t threshold, absl::string_view role) {
  if (keys.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("root metadata lists no ", role, " keys"));
  }
  std::set<std::string> seen;
  for (int i = 0; i < keys.size(); ++i) {
    if (keys[i].size() != kKeySize) {
      return absl::InvalidArgumentError(
          absl::StrCat(role, "_keys[", i, "] is ", keys[i].size(),
                       " bytes; an Ed25519 public key is 32"));
    }
    if (!seen.insert(keys[i]).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(role, "_keys[", i, "] is listed twice"));
    }
  }
  if (threshold < 1 || threshold > static_cast<uint32_t>(keys.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat(role, "_threshold is ", threshold, "; it must be 1..",
                     keys.size(), " (the number of ", role, " keys)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<TrustedKeys> KeysOf(
    const google::protobuf::RepeatedPtrField<std::string>& raw) {
  TrustedKeys keys;
  for (const std::string& key : raw) {
    ASSIGN_OR_RETURN(Ed25519PublicKey public_key,
                     Ed25519PublicKey::FromRaw(key));
    keys.Add(std::move(public_key));
  }
  return keys;
}

absl::StatusOr<v1::RootMetadata> ParseAndValidate(
    const v1::SignedRoot& signed_root) {
  ASSIGN_OR_RETURN(v1::RootMetadata root, ParseRootUnverified(signed_root));
  RETURN_IF_ERROR(ValidateRoot(root));
  return root;
}

}  // namespace

absl::Status ValidateRoot(const v1::RootMetadata& root) {
  if (root.version() < 1) {
    return absl::InvalidArgumentError("root version must be at least 1");
  }
  if (root.expires_unix_seconds() <= 0) {
    return absl::InvalidArgumentError(
        "root metadata must expire (expires_unix_seconds is required)");
  }
  if (root.expires_unix_seconds() <= root.created_unix_seconds()) {
    return absl::InvalidArgumentError(
        "root metadata expires before it is created");
  }
  RETURN_IF_ERROR(
      ValidateKeyList(root.root_keys(), root.root_threshold(), "root"));
  return ValidateKeyList(root.release_keys(), root.release_threshold(),
                         "release");
}

absl::StatusOr<v1::SignedRoot> SignRoot(
    const v1::RootMetadata& root,
    const std::vector<const Ed25519PrivateKey*>& keys) {
  RETURN_IF_ERROR(ValidateRoot(root));
  v1::SignedRoot signed_root;
  if (!root.SerializeToString(signed_root.mutable_root())) {
    return absl::InternalError("cannot serialize root metadata");
  }
  for (const Ed25519PrivateKey* key : keys) AddRootSignature(signed_root, *key);
  return signed_root;
}

void AddRootSignature(v1::SignedRoot& signed_root,
                      const Ed25519PrivateKey& key) {
  const std::string key_id = key.PublicKey().KeyId();
  for (const v1::Signature& existing : signed_root.signatures()) {
    if (existing.key_id() == key_id) return;
  }
  v1::Signature* signature = signed_root.add_signatures();
  signature->set_key_id(key_id);
  signature->set_signature(key.Sign(signed_root.root()));
}

absl::StatusOr<v1::RootMetadata> ParseRootUnverified(
    const v1::SignedRoot& signed_root) {
  v1::RootMetadata root;
  if (signed_root.root().empty() || !root.ParseFromString(signed_root.root())) {
    return absl::InvalidArgumentError(
        "signed root bytes do not parse as RootMetadata");
  }
  return root;
}

absl::StatusOr<TrustedRoot> TrustedRoot::FromPinned(
    const v1::SignedRoot& pinned) {
  ASSIGN_OR_RETURN(v1::RootMetadata metadata, ParseAndValidate(pinned));
  ASSIGN_OR_RETURN(TrustedKeys root_keys, KeysOf(metadata.root_keys()));
  ASSIGN_OR_RETURN(TrustedKeys release_keys, KeysOf(metadata.release_keys()));
  RETURN_IF_ERROR(CheckSignatureThreshold(
      absl::StrCat("root metadata v", metadata.version()), "root",
      pinned.root(), pinned.signatures(), root_keys,
      static_cast<int>(metadata.root_threshold())));
  TrustedRoot root;
  root.Adopt(pinned, std::move(metadata), std::move(root_keys),
             std::move(release_keys));
  return root;
}

absl::Status TrustedRoot::Update(const v1::SignedRoot& next) {
  ASSIGN_OR_RETURN(v1::RootMetadata metadata, ParseAndValidate(next));
  if (metadata.version() != version() + 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "root metadata v", metadata.version(), " cannot follow v", version(),
        metadata.version() <= version()
            ? ": versions only grow (a replayed or older root is refused)"
            : ": roots are accepted one version at a time; send v",
        metadata.version() <= version() ? "" : absl::StrCat(version() + 1),
        metadata.version() <= version() ? "" : " first"));
  }
  // The current root's keys approve the change...
  RETURN_IF_ERROR(CheckSignatureThreshold(
      absl::StrCat("root metadata v", metadata.version(),
                   " (signed by the keys of v", version(), ")"),
      "root", next.root(), next.signatures(), root_keys_,
      static_cast<int>(metadata_.root_threshold())));
  // ...and the new keys prove they are held, so a typo cannot lock the fleet
  // out of its next rotation.
  ASSIGN_OR_RETURN(TrustedKeys next_root_keys, KeysOf(metadata.root_keys()));
  RETURN_IF_ERROR(CheckSignatureThreshold(
      absl::StrCat("root metadata v", metadata.version(),
                   " (signed by its own keys)"),
      "root", next.root(), next.signatures(), next_root_keys,
      static_cast<int>(metadata.root_threshold())));
  ASSIGN_OR_RETURN(TrustedKeys release_keys, KeysOf(metadata.release_keys()));
  Adopt(next, std::move(metadata), std::move(next_root_keys),
        std::move(release_keys));
  return absl::OkStatus();
}

absl::StatusOr<v1::ReleaseManifest> TrustedRoot::VerifyRelease(
    const v1::SignedManifest& signed_manifest, absl::Time now,
    bool check_expiry, int min_threshold) const {
  if (check_expiry && Expired(now)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "root metadata v", version(), " expired at ",
        absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", expires(), absl::UTCTimeZone()),
        "; no new release is installed until operators sign a new root "
        "(fleetctl keys root rotate)"));
  }
  return VerifyManifest(
      signed_manifest, release_keys_, now,
      std::max(static_cast<int>(metadata_.release_threshold()), min_threshold),
      check_expiry);
}

absl::Time TrustedRoot::expires() const {
  return absl::FromUnixSeconds(metadata_.expires_unix_seconds());
}

void TrustedRoot::Adopt(v1::SignedRoot signed_root, v1::RootMetadata metadata,
                        TrustedKeys root_keys, TrustedKeys release_keys) {
  signed_ = std::move(signed_root);
  metadata_ = std::move(metadata);
  root_keys_ = std::move(root_keys);
  release_keys_ = std::move(release_keys);
}

RootChain::RootChain(TrustedRoot first) : current_(std::move(first)) {
  chain_.push_back(current_.signed_root());
}

absl::Status RootChain::Accept(const v1::SignedRoot& next) {
  absl::MutexLock lock(&mu_);
  TrustedRoot updated = current_;
  RETURN_IF_ERROR(updated.Update(next));
  current_ = std::move(updated);
  chain_.push_back(next);
  return absl::OkStatus();
}

TrustedRoot RootChain::Current() const {
  absl::MutexLock lock(&mu_);
  return current_;
}

uint64_t RootChain::version() const {
  absl::MutexLock lock(&mu_);
  return current_.version();
}

absl::Time RootChain::expires() const {
  absl::MutexLock lock(&mu_);
  return current_.expires();
}

std::vector<v1::SignedRoot> RootChain::After(uint64_t version) const {
  absl::MutexLock lock(&mu_);
  std::vector<v1::SignedRoot> out;
  // chain_ holds consecutive versions ending at the current one.
  const uint64_t first = current_.version() + 1 - chain_.size();
  for (size_t i = 0; i < chain_.size(); ++i) {
    if (first + i > version) out.push_back(chain_[i]);
  }
  return out;
}

absl::StatusOr<v1::ReleaseManifest> RootChain::VerifyRelease(
    const v1::SignedManifest& signed_manifest, absl::Time now,
    int min_threshold, bool check_expiry) const {
  absl::MutexLock lock(&mu_);
  return current_.VerifyRelease(signed_manifest, now, check_expiry,
                                min_threshold);
}

absl::StatusOr<v1::SignedRoot> LoadRootFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string json, ReadFile(path));
  v1::SignedRoot signed_root;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  auto status =
      google::protobuf::util::JsonStringToMessage(json, &signed_root, options);
  if (!status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, " is not a signed root (JSON): ", status.ToString()));
  }
  return signed_root;
}

absl::Status WriteRootFile(const std::string& path,
                           const v1::SignedRoot& signed_root) {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  auto status =
      google::protobuf::util::MessageToJsonString(signed_root, &json, options);
  if (!status.ok()) {
    return absl::InternalError(status.ToString());
  }
  return WriteFileAtomically(path, json, 0644);
}

}  // namespace fleet
