#include "agent/trust.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "common/ed25519.h"
#include "common/files.h"
#include "common/manifest.h"
#include "common/root.h"
#include "common/testing/fake_clock.h"
#include "common/testing/test_roots.h"

namespace fleet::agent {
namespace {

Ed25519PrivateKey NewKey() { return *Ed25519PrivateKey::Generate(); }

class AgentTrustTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = JoinPath(
        getenv("TEST_TMPDIR"),
        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    ASSERT_TRUE(RemoveTree(dir_).ok());
    state_ = JoinPath(dir_, "state");
    ASSERT_TRUE(MakeDirs(state_).ok());
    pinned_path_ = JoinPath(dir_, "root.json");
  }

  v1::SignedRoot Root(uint64_t version, const Ed25519PrivateKey& root_key,
                      const Ed25519PrivateKey& release_key,
                      const std::vector<const Ed25519PrivateKey*>& by,
                      absl::Duration valid = absl::Hours(24)) {
    return MakeTestRoot(version, root_key, release_key, by,
                        clock_.Now() + valid);
  }

  v1::SignedManifest Release(const Ed25519PrivateKey& key) {
    v1::ReleaseManifest manifest;
    manifest.set_product("app");
    manifest.set_version("2.0.0");
    manifest.set_platform("linux/amd64");
    manifest.set_sha256(std::string(32, 'z'));
    manifest.set_size(3);
    manifest.set_created_unix_seconds(absl::ToUnixSeconds(clock_.Now()));
    return *SignManifest(manifest, key);
  }

  static google::protobuf::RepeatedPtrField<v1::SignedRoot> Chain(
      const std::vector<v1::SignedRoot>& roots) {
    return {roots.begin(), roots.end()};
  }

  FakeClock clock_;
  std::string dir_, state_, pinned_path_;
  Ed25519PrivateKey root_a_ = NewKey(), root_b_ = NewKey();
  Ed25519PrivateKey release_a_ = NewKey(), release_b_ = NewKey();
};

TEST_F(AgentTrustTest, CatchesUpOnTwoRotationsAndKeepsThemAcrossARestart) {
  ASSERT_TRUE(
      WriteRootFile(pinned_path_, Root(1, root_a_, release_a_, {&root_a_}))
          .ok());
  auto trust = AgentTrust::Open(pinned_path_, state_, clock_);
  ASSERT_TRUE(trust.ok()) << trust.status();
  const TrustedKeys& keys = (*trust)->keys();
  EXPECT_TRUE(VerifyManifest(Release(release_a_), keys, clock_.Now()).ok());

  // Offline across two rotations: v2 moves the root key to b, v3 the release
  // key to b. The controller sends both, oldest first (and v1 again, which
  // is skipped).
  const v1::SignedRoot v2 = Root(2, root_b_, release_a_, {&root_a_, &root_b_});
  const v1::SignedRoot v3 = Root(3, root_b_, release_b_, {&root_b_});
  ASSERT_TRUE(
      (*trust)
          ->Apply(Chain({Root(1, root_a_, release_a_, {&root_a_}), v2, v3}))
          .ok());
  EXPECT_EQ((*trust)->version(), 3u);
  // The Updater's keys followed the rotation.
  EXPECT_EQ(
      VerifyManifest(Release(release_a_), keys, clock_.Now()).status().code(),
      absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(VerifyManifest(Release(release_b_), keys, clock_.Now()).ok());

  // Persisted: a restart with the same pinned file trusts v3.
  absl::StatusOr<v1::SignedRoot> stored =
      LoadRootFile(JoinPath(state_, "root.json"));
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->root(), v3.root());
  trust->reset();
  auto restarted = AgentTrust::Open(pinned_path_, state_, clock_);
  ASSERT_TRUE(restarted.ok()) << restarted.status();
  EXPECT_EQ((*restarted)->version(), 3u);
}

TEST_F(AgentTrustTest, RefusesARootTheCurrentKeysDidNotSignOrThatSkipsAhead) {
  ASSERT_TRUE(
      WriteRootFile(pinned_path_, Root(1, root_a_, release_a_, {&root_a_}))
          .ok());
  auto trust = AgentTrust::Open(pinned_path_, state_, clock_);
  ASSERT_TRUE(trust.ok()) << trust.status();
  // A compromised controller's own root: signed by a key v1 does not trust.
  absl::Status forged =
      (*trust)->Apply(Chain({Root(2, root_b_, release_b_, {&root_b_})}));
  EXPECT_EQ(forged.code(), absl::StatusCode::kPermissionDenied);
  // Skipping v2.
  absl::Status skipped =
      (*trust)->Apply(Chain({Root(3, root_a_, release_b_, {&root_a_})}));
  EXPECT_EQ(skipped.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*trust)->version(), 1u);
  EXPECT_TRUE(
      absl::IsNotFound(ReadFile(JoinPath(state_, "root.json")).status()));
  EXPECT_EQ(VerifyManifest(Release(release_b_), (*trust)->keys(), clock_.Now())
                .status()
                .code(),
            absl::StatusCode::kPermissionDenied);
}

TEST_F(AgentTrustTest, ExpiredRootRefusesInstallsButAcceptsTheNextRoot) {
  ASSERT_TRUE(WriteRootFile(pinned_path_, Root(1, root_a_, release_a_,
                                               {&root_a_}, absl::Minutes(5)))
                  .ok());
  auto trust = AgentTrust::Open(pinned_path_, state_, clock_);
  ASSERT_TRUE(trust.ok()) << trust.status();
  EXPECT_FALSE((*trust)->NoteExpiry());
  clock_.Advance(absl::Minutes(10));
  EXPECT_TRUE((*trust)->NoteExpiry());
  absl::StatusOr<v1::ReleaseManifest> refused =
      VerifyManifest(Release(release_a_), (*trust)->keys(), clock_.Now());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("expired"), std::string::npos);

  // Operators re-sign: v2 with a fresh expiry is accepted despite the
  // expired v1, and installs work again.
  ASSERT_TRUE(
      (*trust)->Apply(Chain({Root(2, root_a_, release_a_, {&root_a_})})).ok());
  EXPECT_FALSE((*trust)->NoteExpiry());
  EXPECT_TRUE(
      VerifyManifest(Release(release_a_), (*trust)->keys(), clock_.Now()).ok());
}

TEST_F(AgentTrustTest, UseTrustRootNeedsARootOrAKey) {
  TrustedKeys none;
  auto neither = UseTrustRoot("", state_, none);
  EXPECT_EQ(neither.status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(
      WriteRootFile(pinned_path_, Root(1, root_a_, release_a_, {&root_a_}))
          .ok());
  TrustedKeys keys;
  keys.Add(release_b_.PublicKey());
  auto trust = UseTrustRoot(pinned_path_, state_, keys);
  ASSERT_TRUE(trust.ok()) << trust.status();
  ASSERT_NE(*trust, nullptr);
  // The root wins over the flat key.
  EXPECT_NE(keys.live_source(), nullptr);
  EXPECT_TRUE(VerifyManifest(Release(release_a_), keys, clock_.Now()).ok());
  EXPECT_FALSE(VerifyManifest(Release(release_b_), keys, clock_.Now()).ok());
  auto missing = UseTrustRoot(JoinPath(dir_, "absent.json"), state_, keys);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace fleet::agent
