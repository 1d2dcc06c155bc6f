#include "common/root.h"

#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "common/ed25519.h"
#include "common/files.h"
#include "common/manifest.h"
#include "gtest/gtest.h"

namespace fleet {
namespace {

const absl::Time kNow = absl::FromUnixSeconds(1800000000);
constexpr absl::Duration kYear = absl::Hours(24 * 365);

Ed25519PrivateKey NewKey() { return *Ed25519PrivateKey::Generate(); }

class RootTest : public ::testing::Test {
 protected:
  // A root of `version` trusting `roots` (threshold `root_threshold`) and
  // `releases` (threshold `release_threshold`).
  static v1::RootMetadata Root(uint64_t version,
                               const std::vector<Ed25519PrivateKey*>& roots,
                               uint32_t root_threshold,
                               const std::vector<Ed25519PrivateKey*>& releases,
                               uint32_t release_threshold,
                               absl::Time expires = kNow + kYear) {
    v1::RootMetadata root;
    root.set_version(version);
    root.set_created_unix_seconds(absl::ToUnixSeconds(kNow - absl::Hours(1)));
    root.set_expires_unix_seconds(absl::ToUnixSeconds(expires));
    for (const Ed25519PrivateKey* key : roots) {
      root.add_root_keys(key->PublicKey().raw());
    }
    root.set_root_threshold(root_threshold);
    for (const Ed25519PrivateKey* key : releases) {
      root.add_release_keys(key->PublicKey().raw());
    }
    root.set_release_threshold(release_threshold);
    return root;
  }

  static v1::SignedRoot Sign(const v1::RootMetadata& root,
                             const std::vector<const Ed25519PrivateKey*>& by) {
    absl::StatusOr<v1::SignedRoot> signed_root = SignRoot(root, by);
    EXPECT_TRUE(signed_root.ok()) << signed_root.status();
    return *signed_root;
  }

  static v1::SignedManifest Release(
      const std::vector<const Ed25519PrivateKey*>& by) {
    v1::ReleaseManifest manifest;
    manifest.set_product("app");
    manifest.set_version("1.2.0");
    manifest.set_platform("linux/amd64");
    manifest.set_sha256(std::string(32, 'x'));
    manifest.set_size(10);
    manifest.set_created_unix_seconds(absl::ToUnixSeconds(kNow));
    absl::StatusOr<v1::SignedManifest> signed_manifest =
        SignManifest(manifest, *by.front());
    for (size_t i = 1; i < by.size(); ++i)
      AddSignature(*signed_manifest, *by[i]);
    return *signed_manifest;
  }

  Ed25519PrivateKey root_a_ = NewKey(), root_b_ = NewKey(), root_c_ = NewKey();
  Ed25519PrivateKey release_a_ = NewKey(), release_b_ = NewKey();
};

TEST_F(RootTest, PinnedRootMustBeSignedByAThresholdOfItsOwnKeys) {
  v1::RootMetadata root =
      Root(1, {&root_a_, &root_b_, &root_c_}, 2, {&release_a_}, 1);
  EXPECT_TRUE(TrustedRoot::FromPinned(Sign(root, {&root_a_, &root_c_})).ok());
  absl::StatusOr<TrustedRoot> one =
      TrustedRoot::FromPinned(Sign(root, {&root_a_}));
  EXPECT_EQ(one.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(absl::StrContains(one.status().message(), "has 1"))
      << one.status();
  // Signed by a release key only: not a root key.
  EXPECT_EQ(TrustedRoot::FromPinned(Sign(root, {&release_a_})).status().code(),
            absl::StatusCode::kPermissionDenied);
}

TEST_F(RootTest, ReleaseNeedsTheRootsReleaseThreshold) {
  absl::StatusOr<TrustedRoot> root = TrustedRoot::FromPinned(
      Sign(Root(1, {&root_a_}, 1, {&release_a_, &release_b_}, 2), {&root_a_}));
  ASSERT_TRUE(root.ok()) << root.status();
  EXPECT_TRUE(
      root->VerifyRelease(Release({&release_a_, &release_b_}), kNow).ok());
  // k-1 signatures, or the same key twice, are refused.
  EXPECT_EQ(root->VerifyRelease(Release({&release_a_}), kNow).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(root->VerifyRelease(Release({&release_a_, &release_a_}), kNow)
                .status()
                .code(),
            absl::StatusCode::kPermissionDenied);
  // A root key is not a release key.
  EXPECT_EQ(root->VerifyRelease(Release({&root_a_, &release_a_}), kNow)
                .status()
                .code(),
            absl::StatusCode::kPermissionDenied);
}

TEST_F(RootTest, RotationNeedsOldAndNewKeysAndTheNextVersion) {
  absl::StatusOr<TrustedRoot> root = TrustedRoot::FromPinned(
      Sign(Root(1, {&root_a_, &root_b_}, 2, {&release_a_}, 1),
           {&root_a_, &root_b_}));
  ASSERT_TRUE(root.ok());
  // v2 replaces root_b with root_c and release_a with release_b.
  v1::RootMetadata v2 = Root(2, {&root_a_, &root_c_}, 2, {&release_b_}, 1);

  struct Case {
    const char* name;
    v1::SignedRoot next;
    absl::StatusCode code;
  } refused[] = {
      {"only the new keys", Sign(v2, {&root_a_, &root_c_}),
       absl::StatusCode::kPermissionDenied},
      {"only the old keys", Sign(v2, {&root_a_, &root_b_}),
       absl::StatusCode::kPermissionDenied},
      {"one key common to both", Sign(v2, {&root_a_}),
       absl::StatusCode::kPermissionDenied},
      {"same version again",
       Sign(Root(1, {&root_a_}, 1, {&release_b_}, 1), {&root_a_, &root_b_}),
       absl::StatusCode::kFailedPrecondition},
      {"skips a version",
       Sign(Root(3, {&root_a_, &root_c_}, 2, {&release_b_}, 1),
            {&root_a_, &root_b_, &root_c_}),
       absl::StatusCode::kFailedPrecondition},
  };
  for (const Case& c : refused) {
    absl::Status status = root->Update(c.next);
    EXPECT_EQ(status.code(), c.code) << c.name << ": " << status;
    EXPECT_EQ(root->version(), 1u) << c.name;  // unchanged
  }
  // Releases signed by the old release key still verify under v1.
  EXPECT_TRUE(root->VerifyRelease(Release({&release_a_}), kNow).ok());

  ASSERT_TRUE(root->Update(Sign(v2, {&root_a_, &root_b_, &root_c_})).ok());
  EXPECT_EQ(root->version(), 2u);
  EXPECT_TRUE(root->VerifyRelease(Release({&release_b_}), kNow).ok());
  EXPECT_EQ(root->VerifyRelease(Release({&release_a_}), kNow).status().code(),
            absl::StatusCode::kPermissionDenied);

  // The replaced root key can no longer approve anything, even with a
  // remaining one.
  v1::RootMetadata v3 = Root(3, {&root_b_}, 1, {&release_a_}, 1);
  EXPECT_EQ(root->Update(Sign(v3, {&root_a_, &root_b_})).code(),
            absl::StatusCode::kPermissionDenied);
  // A rollback to v1 (validly signed, once) is refused.
  EXPECT_EQ(
      root->Update(Sign(Root(1, {&root_a_, &root_b_}, 2, {&release_a_}, 1),
                        {&root_a_, &root_b_}))
          .code(),
      absl::StatusCode::kFailedPrecondition);
}

TEST_F(RootTest, ExpiredRootRefusesNewInstallsButStillRotates) {
  absl::StatusOr<TrustedRoot> root = TrustedRoot::FromPinned(
      Sign(Root(1, {&root_a_}, 1, {&release_a_}, 1, kNow + absl::Hours(1)),
           {&root_a_}));
  ASSERT_TRUE(root.ok());
  const absl::Time later = kNow + absl::Hours(2);
  EXPECT_TRUE(root->Expired(later));
  absl::StatusOr<v1::ReleaseManifest> refused =
      root->VerifyRelease(Release({&release_a_}), later);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "expired"));

  // Operators re-sign: the agent takes v2 although v1 has expired.
  ASSERT_TRUE(
      root->Update(Sign(Root(2, {&root_a_}, 1, {&release_a_}, 1, later + kYear),
                        {&root_a_}))
          .ok());
  EXPECT_TRUE(root->VerifyRelease(Release({&release_a_}), later).ok());
}

TEST_F(RootTest, ValidateRootNamesTheBadField) {
  struct Case {
    const char* name;
    v1::RootMetadata root;
    const char* mentions;
  } cases[] = {
      {"version 0", Root(0, {&root_a_}, 1, {&release_a_}, 1), "version"},
      {"threshold above keys", Root(1, {&root_a_}, 2, {&release_a_}, 1),
       "root_threshold"},
      {"zero release threshold", Root(1, {&root_a_}, 1, {&release_a_}, 0),
       "release_threshold"},
      {"duplicate key", Root(1, {&root_a_, &root_a_}, 1, {&release_a_}, 1),
       "twice"},
      {"no release keys", Root(1, {&root_a_}, 1, {}, 1), "no release keys"},
      {"no expiry",
       Root(1, {&root_a_}, 1, {&release_a_}, 1, absl::FromUnixSeconds(0)),
       "expire"},
  };
  for (const Case& c : cases) {
    absl::Status status = ValidateRoot(c.root);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_TRUE(absl::StrContains(status.message(), c.mentions))
        << c.name << ": " << status;
  }
  v1::RootMetadata short_key = Root(1, {&root_a_}, 1, {&release_a_}, 1);
  short_key.set_root_keys(0, "short");
  EXPECT_EQ(ValidateRoot(short_key).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(RootTest, RootFileRoundTripsAndGarbageIsRefused) {
  const std::string dir = std::getenv("TEST_TMPDIR");
  v1::SignedRoot signed_root =
      Sign(Root(1, {&root_a_}, 1, {&release_a_}, 1), {&root_a_});
  ASSERT_TRUE(WriteRootFile(dir + "/root.json", signed_root).ok());
  absl::StatusOr<v1::SignedRoot> loaded = LoadRootFile(dir + "/root.json");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->SerializeAsString(), signed_root.SerializeAsString());
  EXPECT_TRUE(TrustedRoot::FromPinned(*loaded).ok());

  ASSERT_TRUE(WriteFileAtomically(dir + "/bad.json", "{\"root\": 5}").ok());
  EXPECT_EQ(LoadRootFile(dir + "/bad.json").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LoadRootFile(dir + "/missing.json").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(RootTest, ChainSendsEveryVersionAboveTheAgentsInOrder) {
  v1::RootMetadata v1_root = Root(1, {&root_a_}, 1, {&release_a_}, 1);
  RootChain chain(*TrustedRoot::FromPinned(Sign(v1_root, {&root_a_})));
  // v2 rotates the root key to b (cross-signed by a and b), v3 keeps b and
  // replaces the release key.
  v1::SignedRoot v2 =
      Sign(Root(2, {&root_b_}, 1, {&release_a_}, 1), {&root_a_, &root_b_});
  v1::SignedRoot v3 =
      Sign(Root(3, {&root_b_}, 1, {&release_b_}, 1), {&root_b_});
  ASSERT_TRUE(chain.Accept(v2).ok());
  ASSERT_TRUE(chain.Accept(v3).ok());
  EXPECT_EQ(chain.version(), 3u);
  std::vector<v1::SignedRoot> behind = chain.After(1);
  ASSERT_EQ(behind.size(), 2u);
  EXPECT_EQ(behind[0].root(), v2.root());
  EXPECT_EQ(behind[1].root(), v3.root());
  EXPECT_EQ(chain.After(0).size(), 3u);
  EXPECT_TRUE(chain.After(3).empty());

  // An agent pinned at v1 catches up by applying them in order.
  TrustedRoot agent = *TrustedRoot::FromPinned(Sign(v1_root, {&root_a_}));
  for (const v1::SignedRoot& next : behind) {
    ASSERT_TRUE(agent.Update(next).ok());
  }
  EXPECT_EQ(agent.version(), 3u);
  // But may not skip one.
  TrustedRoot skipper = *TrustedRoot::FromPinned(Sign(v1_root, {&root_a_}));
  EXPECT_EQ(skipper.Update(v3).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(RootTest, ChainRefusesARootNotCrossSignedAndKeepsTheCurrentOne) {
  RootChain chain(*TrustedRoot::FromPinned(
      Sign(Root(1, {&root_a_}, 1, {&release_a_}, 1), {&root_a_})));
  // Signed only by the new key: the old root did not approve it.
  absl::Status refused =
      chain.Accept(Sign(Root(2, {&root_b_}, 1, {&release_b_}, 1), {&root_b_}));
  EXPECT_EQ(refused.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(chain.version(), 1u);
  EXPECT_TRUE(chain.After(1).empty());
}

TEST_F(RootTest, LiveKeysFollowTheChainsRotationAndThreshold) {
  RootChain chain(*TrustedRoot::FromPinned(
      Sign(Root(1, {&root_a_}, 1, {&release_a_}, 1), {&root_a_})));
  const TrustedKeys live = TrustedKeys::Live(&chain);
  EXPECT_TRUE(VerifyManifest(Release({&release_a_}), live, kNow).ok());
  EXPECT_FALSE(VerifyManifest(Release({&release_b_}), live, kNow).ok());
  // v2 trusts a and b with a threshold of 2.
  ASSERT_TRUE(
      chain
          .Accept(Sign(Root(2, {&root_a_}, 1, {&release_a_, &release_b_}, 2),
                       {&root_a_}))
          .ok());
  absl::StatusOr<v1::ReleaseManifest> one =
      VerifyManifest(Release({&release_a_}), live, kNow);
  EXPECT_EQ(one.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(
      VerifyManifest(Release({&release_a_, &release_b_}), live, kNow).ok());
}

TEST_F(RootTest, ExpiredRootRefusesNewInstallsButNotAnExplicitRollback) {
  RootChain chain(*TrustedRoot::FromPinned(
      Sign(Root(1, {&root_a_}, 1, {&release_a_}, 1, kNow - absl::Minutes(30)),
           {&root_a_})));
  const TrustedKeys live = TrustedKeys::Live(&chain);
  absl::StatusOr<v1::ReleaseManifest> install =
      VerifyManifest(Release({&release_a_}), live, kNow);
  EXPECT_EQ(install.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(install.status().message(), "expired"));
  EXPECT_TRUE(VerifyManifest(Release({&release_a_}), live, kNow, 1,
                             /*check_expiry=*/false)
                  .ok());
}

}  // namespace
}  // namespace fleet
