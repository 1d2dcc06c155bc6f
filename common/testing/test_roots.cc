#include "common/testing/test_roots.h"

#include <algorithm>

#include "common/root.h"
#include "gtest/gtest.h"

namespace fleet {

v1::SignedRoot MakeTestRoot(
    uint64_t version, const Ed25519PrivateKey& root_key,
    const Ed25519PrivateKey& release_key,
    const std::vector<const Ed25519PrivateKey*>& signers, absl::Time expires) {
  v1::RootMetadata root;
  root.set_version(version);
  root.set_created_unix_seconds(
      absl::ToUnixSeconds(std::min(absl::Now(), expires) - absl::Hours(1)));
  root.set_expires_unix_seconds(absl::ToUnixSeconds(expires));
  root.add_root_keys(root_key.PublicKey().raw());
  root.set_root_threshold(1);
  root.add_release_keys(release_key.PublicKey().raw());
  root.set_release_threshold(1);
  absl::StatusOr<v1::SignedRoot> signed_root = SignRoot(root, signers);
  EXPECT_TRUE(signed_root.ok()) << signed_root.status();
  return signed_root.ok() ? *signed_root : v1::SignedRoot();
}

}  // namespace fleet
