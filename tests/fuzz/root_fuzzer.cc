// Root metadata as an agent receives it (pinned at install, or a rotation
// sent by the controller).
// Mode byte 0: the rest is a SignedRoot, tried as a pinned root and as the
// successor of a fixed valid root.
// Mode byte 1: the rest is a RootMetadata the target signs with the fuzz
// key (which is the fixed root's root key), so validation and the rotation
// rules run on every field.
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "common/ed25519.h"
#include "common/root.h"
#include "proto/fleet/v1/release.pb.h"
#include "tests/fuzz/fuzz_target.h"

namespace {

const fleet::Ed25519PrivateKey& Key() {
  static const auto* key = new fleet::Ed25519PrivateKey(
      *fleet::Ed25519PrivateKey::FromPem(fleet::fuzz::kFuzzKeyPem));
  return *key;
}

fleet::v1::RootMetadata BaseRoot(uint64_t version) {
  fleet::v1::RootMetadata root;
  root.set_version(version);
  root.set_created_unix_seconds(1700000000);
  root.set_expires_unix_seconds(1900000000);
  root.add_root_keys(Key().PublicKey().raw());
  root.set_root_threshold(1);
  root.add_release_keys(Key().PublicKey().raw());
  root.set_release_threshold(1);
  return root;
}

const fleet::v1::SignedRoot& PinnedRoot() {
  static const auto* pinned =
      new fleet::v1::SignedRoot(*fleet::SignRoot(BaseRoot(1), {&Key()}));
  return *pinned;
}

}  // namespace

namespace fleet::fuzz {

std::vector<std::string> FuzzSeeds() {
  return {std::string(1, '\0') + PinnedRoot().SerializeAsString(),
          std::string(1, '\0') +
              SignRoot(BaseRoot(2), {&Key()})->SerializeAsString(),
          std::string(1, '\1') + BaseRoot(2).SerializeAsString()};
}

}  // namespace fleet::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);
  fleet::v1::SignedRoot candidate;
  if (data[0] % 2 == 0) {
    if (!candidate.ParseFromString(body)) return 0;
  } else {
    fleet::v1::RootMetadata metadata;
    if (!metadata.ParseFromString(body)) return 0;
    absl::StatusOr<fleet::v1::SignedRoot> signed_root =
        fleet::SignRoot(metadata, {&Key()});
    if (!signed_root.ok()) {
      FUZZ_CHECK(!fleet::ValidateRoot(metadata).ok());
      return 0;
    }
    candidate = *std::move(signed_root);
  }

  absl::StatusOr<fleet::TrustedRoot> pinned =
      fleet::TrustedRoot::FromPinned(candidate);
  if (pinned.ok()) {
    FUZZ_CHECK(fleet::ValidateRoot(pinned->metadata()).ok());
    FUZZ_CHECK(pinned->version() >= 1);
  }

  absl::StatusOr<fleet::TrustedRoot> current =
      fleet::TrustedRoot::FromPinned(PinnedRoot());
  FUZZ_CHECK(current.ok());
  const uint64_t before = current->version();
  absl::Status updated = current->Update(candidate);
  if (updated.ok()) {
    // Versions only grow, one at a time, and the new root is valid.
    FUZZ_CHECK(current->version() == before + 1);
    FUZZ_CHECK(fleet::ValidateRoot(current->metadata()).ok());
    // The same root twice is a replay.
    FUZZ_CHECK(!current->Update(candidate).ok());
  } else {
    FUZZ_CHECK(current->version() == before);
  }
  return 0;
}
