// Release manifests as an agent or the controller receives them.
// Mode byte 0: the rest is a SignedManifest, verified against the fuzz key
// (random bytes almost never get past the signature check).
// Mode byte 1: the rest is a ReleaseManifest that the target signs with the
// fuzz key first, so every field validation runs.
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "common/ed25519.h"
#include "common/manifest.h"
#include "proto/fleet/v1/release.pb.h"
#include "tests/fuzz/fuzz_target.h"

namespace {

const fleet::Ed25519PrivateKey& Key() {
  static const auto* key = new fleet::Ed25519PrivateKey(
      *fleet::Ed25519PrivateKey::FromPem(fleet::fuzz::kFuzzKeyPem));
  return *key;
}

const fleet::TrustedKeys& Trusted() {
  static const auto* keys = [] {
    auto* trusted = new fleet::TrustedKeys();
    trusted->Add(Key().PublicKey());
    return trusted;
  }();
  return *keys;
}

const absl::Time kNow = absl::FromUnixSeconds(1800000000);

}  // namespace

namespace fleet::fuzz {

std::vector<std::string> FuzzSeeds() {
  v1::ReleaseManifest manifest;
  manifest.set_product("app");
  manifest.set_version("1.2.3-rc.1+build.7");
  manifest.set_platform("linux/amd64");
  manifest.set_sha256(std::string(32, '\x5a'));
  manifest.set_size(4096);
  manifest.set_created_unix_seconds(1700000000);
  manifest.set_expires_unix_seconds(1900000000);
  absl::StatusOr<v1::SignedManifest> signed_manifest =
      SignManifest(manifest, Key());
  return {std::string(1, '\0') + signed_manifest->SerializeAsString(),
          std::string(1, '\1') + manifest.SerializeAsString()};
}

}  // namespace fleet::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);
  fleet::v1::SignedManifest signed_manifest;
  if (data[0] % 2 == 0) {
    if (!signed_manifest.ParseFromString(body)) return 0;
  } else {
    fleet::v1::ReleaseManifest manifest;
    if (!manifest.ParseFromString(body)) return 0;
    absl::StatusOr<fleet::v1::SignedManifest> signed_or =
        fleet::SignManifest(manifest, Key());
    // SignManifest validates first: it and VerifyManifest must agree.
    if (!signed_or.ok()) {
      FUZZ_CHECK(!fleet::ValidateManifest(manifest).ok());
      return 0;
    }
    signed_manifest = *std::move(signed_or);
  }
  absl::StatusOr<fleet::v1::ReleaseManifest> verified =
      fleet::VerifyManifest(signed_manifest, Trusted(), kNow, 1, false);
  if (verified.ok()) {
    // What verifies is valid and is exactly the signed bytes.
    FUZZ_CHECK(fleet::ValidateManifest(*verified).ok());
    FUZZ_CHECK(verified->sha256().size() == 32);
  }
  // A threshold above the number of trusted keys can never be met.
  FUZZ_CHECK(
      !fleet::VerifyManifest(signed_manifest, Trusted(), kNow, 2, false).ok());
  return 0;
}
