#include "controller/identity/trust_roots.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "common/ed25519.h"
#include "common/root.h"
#include "common/testing/fake_clock.h"
#include "common/testing/test_roots.h"
#include "controller/store/store.h"
#include "controller/testing/temp_dir.h"

namespace fleet::controller {
namespace {

Ed25519PrivateKey NewKey() { return *Ed25519PrivateKey::Generate(); }

class TrustRootsTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }

  void Reopen() {
    identities_.reset();
    store_.reset();
    auto store = Store::Open(dir_.Join("fleet.db"));
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    auto identities = IdentityStore::Open(dir_.Join("fleet.db"));
    ASSERT_TRUE(identities.ok()) << identities.status();
    identities_ = *std::move(identities);
  }

  testing::TempDir dir_;
  FakeClock clock_{absl::Now()};
  std::unique_ptr<Store> store_;
  std::unique_ptr<IdentityStore> identities_;
  Ed25519PrivateKey root_a_ = NewKey(), root_b_ = NewKey();
  Ed25519PrivateKey release_a_ = NewKey(), release_b_ = NewKey();
};

TEST_F(TrustRootsTest, PushAcceptsOnlyTheCrossSignedNextVersion) {
  auto roots = TrustRoots::Open(
      MakeTestRoot(1, root_a_, release_a_, {&root_a_}), *identities_, clock_);
  ASSERT_TRUE(roots.ok()) << roots.status();

  // Signed by the new key only: the old root never approved it.
  absl::StatusOr<TrustedRoot> unapproved = (*roots)->Push(
      MakeTestRoot(2, root_b_, release_b_, {&root_b_}), "admin:alice");
  EXPECT_EQ(unapproved.status().code(), absl::StatusCode::kPermissionDenied);
  // Skips a version.
  absl::StatusOr<TrustedRoot> skipping =
      (*roots)->Push(MakeTestRoot(3, root_b_, release_b_, {&root_a_, &root_b_}),
                     "admin:alice");
  EXPECT_EQ(skipping.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*roots)->chain().version(), 1u);

  const v1::SignedRoot v2 =
      MakeTestRoot(2, root_b_, release_b_, {&root_a_, &root_b_});
  absl::StatusOr<TrustedRoot> accepted = (*roots)->Push(v2, "admin:alice");
  ASSERT_TRUE(accepted.ok()) << accepted.status();
  EXPECT_EQ(accepted->version(), 2u);
  EXPECT_EQ((*roots)->chain().version(), 2u);
  // The same push again is a rollback now.
  EXPECT_EQ((*roots)->Push(v2, "admin:alice").status().code(),
            absl::StatusCode::kFailedPrecondition);

  // Both versions are stored, the pinned one first.
  auto stored = identities_->ListRoots();
  ASSERT_TRUE(stored.ok()) << stored.status();
  ASSERT_EQ(stored->size(), 2u);
  v1::SignedRoot second;
  ASSERT_TRUE(second.ParseFromString((*stored)[1]));
  EXPECT_EQ(second.root(), v2.root());
}

TEST_F(TrustRootsTest, RestartReplaysThePushedChainAboveThePinnedRoot) {
  const absl::Time now = clock_.Now();
  const v1::SignedRoot v1_root =
      MakeTestRoot(1, root_a_, release_a_, {&root_a_});
  const v1::SignedRoot v2 =
      MakeTestRoot(2, root_b_, release_b_, {&root_a_, &root_b_});
  {
    auto roots = TrustRoots::Open(v1_root, *identities_, clock_);
    ASSERT_TRUE(roots.ok()) << roots.status();
    ASSERT_TRUE((*roots)->Push(v2, "admin:alice").ok());
  }
  Reopen();
  auto roots = TrustRoots::Open(v1_root, *identities_, clock_);
  ASSERT_TRUE(roots.ok()) << roots.status();
  EXPECT_EQ((*roots)->chain().version(), 2u);
  std::vector<v1::SignedRoot> behind = (*roots)->chain().After(0);
  ASSERT_EQ(behind.size(), 2u);
  EXPECT_EQ(behind[0].root(), v1_root.root());
  EXPECT_EQ(behind[1].root(), v2.root());
  // Releases now need the rotated release key.
  v1::ReleaseManifest manifest;
  manifest.set_product("app");
  manifest.set_version("1.0.0");
  manifest.set_platform("linux/amd64");
  manifest.set_sha256(std::string(32, 'd'));
  manifest.set_size(1);
  manifest.set_created_unix_seconds(absl::ToUnixSeconds(now));
  const TrustedKeys live = TrustedKeys::Live(&(*roots)->chain());
  EXPECT_EQ(VerifyManifest(*SignManifest(manifest, release_a_), live, now)
                .status()
                .code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(
      VerifyManifest(*SignManifest(manifest, release_b_), live, now).ok());
}

TEST_F(TrustRootsTest, APinnedRootOfAnotherLineageIsRefusedAtOpen) {
  {
    auto roots = TrustRoots::Open(
        MakeTestRoot(1, root_a_, release_a_, {&root_a_}), *identities_, clock_);
    ASSERT_TRUE(roots.ok()) << roots.status();
    ASSERT_TRUE((*roots)
                    ->Push(MakeTestRoot(2, root_a_, release_b_, {&root_a_}),
                           "admin:alice")
                    .ok());
  }
  Reopen();
  // A different v1 (root key b) cannot have approved the stored v2.
  auto other = TrustRoots::Open(
      MakeTestRoot(1, root_b_, release_a_, {&root_b_}), *identities_, clock_);
  EXPECT_EQ(other.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(other.status().message().find("stored root v2"), std::string::npos)
      << other.status();
}

}  // namespace
}  // namespace fleet::controller
