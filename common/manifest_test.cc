#include "common/manifest.h"

#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/sha256.h"
#include "gtest/gtest.h"

namespace fleet {
namespace {

constexpr int64_t kCreated = 1'800'000'000;
const absl::Time kNow = absl::FromUnixSeconds(kCreated + 3600);

Ed25519PrivateKey NewKey() { return *Ed25519PrivateKey::Generate(); }

v1::ReleaseManifest GoodManifest() {
  v1::ReleaseManifest m;
  m.set_product("fleet-agent");
  m.set_version("1.2.3-rc.1");
  m.set_platform("linux/amd64");
  m.set_sha256(DigestToBytes(Sha256Of("artifact bytes")));
  m.set_size(14);
  m.set_created_unix_seconds(kCreated);
  m.set_expires_unix_seconds(kCreated + 86400);
  return m;
}

TrustedKeys Trust(std::initializer_list<const Ed25519PrivateKey*> keys) {
  TrustedKeys trusted;
  for (const Ed25519PrivateKey* key : keys) trusted.Add(key->PublicKey());
  return trusted;
}

bool Contains(const absl::Status& s, absl::string_view needle) {
  return s.message().find(needle) != absl::string_view::npos;
}

TEST(ManifestTest, SignedManifestVerifiesAndRoundTrips) {
  Ed25519PrivateKey key = NewKey();
  absl::StatusOr<v1::SignedManifest> signed_manifest =
      SignManifest(GoodManifest(), key);
  ASSERT_TRUE(signed_manifest.ok()) << signed_manifest.status();
  ASSERT_EQ(signed_manifest->signatures_size(), 1);
  EXPECT_EQ(signed_manifest->signatures(0).key_id(), key.PublicKey().KeyId());

  absl::StatusOr<v1::ReleaseManifest> verified =
      VerifyManifest(*signed_manifest, Trust({&key}), kNow);
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_EQ(verified->product(), "fleet-agent");
  EXPECT_EQ(verified->version(), "1.2.3-rc.1");
  EXPECT_EQ(verified->platform(), "linux/amd64");
  EXPECT_EQ(verified->sha256(), DigestToBytes(Sha256Of("artifact bytes")));
  EXPECT_EQ(verified->size(), 14u);
}

TEST(ManifestTest, TamperedBytesAreRejected) {
  Ed25519PrivateKey key = NewKey();
  v1::SignedManifest signed_manifest = *SignManifest(GoodManifest(), key);
  // Swap in a different, perfectly valid manifest under the old signature.
  v1::ReleaseManifest evil = GoodManifest();
  evil.set_sha256(DigestToBytes(Sha256Of("malware")));
  signed_manifest.set_manifest(evil.SerializeAsString());
  absl::StatusOr<v1::ReleaseManifest> verified =
      VerifyManifest(signed_manifest, Trust({&key}), kNow);
  EXPECT_EQ(verified.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(Contains(verified.status(), "bad signature"))
      << verified.status();

  // A single flipped bit anywhere is enough.
  v1::SignedManifest flipped = *SignManifest(GoodManifest(), key);
  std::string bytes = flipped.manifest();
  bytes[bytes.size() / 2] ^= 0x01;
  flipped.set_manifest(bytes);
  EXPECT_EQ(VerifyManifest(flipped, Trust({&key}), kNow).status().code(),
            absl::StatusCode::kPermissionDenied);
}

TEST(ManifestTest, SignatureFromUntrustedKeyIsRejected) {
  Ed25519PrivateKey signer = NewKey();
  Ed25519PrivateKey trusted = NewKey();
  v1::SignedManifest signed_manifest = *SignManifest(GoodManifest(), signer);
  absl::StatusOr<v1::ReleaseManifest> verified =
      VerifyManifest(signed_manifest, Trust({&trusted}), kNow);
  EXPECT_EQ(verified.status().code(), absl::StatusCode::kPermissionDenied);
  // The operator sees both who signed and whom we trust.
  EXPECT_TRUE(Contains(verified.status(),
                       "no valid signature from a trusted release key"))
      << verified.status();
  EXPECT_TRUE(Contains(verified.status(), signer.PublicKey().KeyId()))
      << verified.status();
  EXPECT_TRUE(Contains(verified.status(), trusted.PublicKey().KeyId()))
      << verified.status();
}

TEST(ManifestTest, SignatureUnderTrustedKeyIdFromWrongKeyIsRejected) {
  Ed25519PrivateKey trusted = NewKey();
  Ed25519PrivateKey attacker = NewKey();
  v1::SignedManifest signed_manifest = *SignManifest(GoodManifest(), attacker);
  // The attacker claims the trusted key's id.
  signed_manifest.mutable_signatures(0)->set_key_id(
      trusted.PublicKey().KeyId());
  EXPECT_EQ(
      VerifyManifest(signed_manifest, Trust({&trusted}), kNow).status().code(),
      absl::StatusCode::kPermissionDenied);
}

TEST(ManifestTest, UnknownKeyIdIsReported) {
  Ed25519PrivateKey key = NewKey();
  v1::SignedManifest signed_manifest = *SignManifest(GoodManifest(), key);
  signed_manifest.mutable_signatures(0)->set_key_id("00000000deadbeef");
  absl::StatusOr<v1::ReleaseManifest> verified =
      VerifyManifest(signed_manifest, Trust({&key}), kNow);
  EXPECT_EQ(verified.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(Contains(verified.status(), "unknown key ids [00000000deadbeef]"))
      << verified.status();
}

TEST(ManifestTest, UnsignedManifestIsRejected) {
  Ed25519PrivateKey key = NewKey();
  v1::SignedManifest signed_manifest = *SignManifest(GoodManifest(), key);
  signed_manifest.clear_signatures();
  EXPECT_EQ(
      VerifyManifest(signed_manifest, Trust({&key}), kNow).status().code(),
      absl::StatusCode::kPermissionDenied);
}

TEST(ManifestTest, EmptyTrustSetRejectsEverything) {
  Ed25519PrivateKey key = NewKey();
  v1::SignedManifest signed_manifest = *SignManifest(GoodManifest(), key);
  EXPECT_EQ(
      VerifyManifest(signed_manifest, TrustedKeys(), kNow).status().code(),
      absl::StatusCode::kPermissionDenied);
}

TEST(ManifestTest, ThresholdCountsDistinctTrustedKeys) {
  Ed25519PrivateKey a = NewKey();
  Ed25519PrivateKey b = NewKey();
  Ed25519PrivateKey outsider = NewKey();
  TrustedKeys trusted = Trust({&a, &b});

  v1::SignedManifest one = *SignManifest(GoodManifest(), a);
  absl::StatusOr<v1::ReleaseManifest> verified =
      VerifyManifest(one, trusted, kNow, /*threshold=*/2);
  EXPECT_EQ(verified.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(Contains(verified.status(), "has 1")) << verified.status();

  // The same key signing twice still counts once.
  v1::SignedManifest twice = one;
  AddSignature(twice, a);
  ASSERT_EQ(twice.signatures_size(), 2);
  EXPECT_EQ(VerifyManifest(twice, trusted, kNow, 2).status().code(),
            absl::StatusCode::kPermissionDenied);

  // An untrusted co-signer does not count either.
  v1::SignedManifest with_outsider = one;
  AddSignature(with_outsider, outsider);
  EXPECT_EQ(VerifyManifest(with_outsider, trusted, kNow, 2).status().code(),
            absl::StatusCode::kPermissionDenied);

  v1::SignedManifest both = one;
  AddSignature(both, b);
  verified = VerifyManifest(both, trusted, kNow, 2);
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_EQ(verified->product(), "fleet-agent");
}

TEST(ManifestTest, ExpiredManifestIsRefusedUnlessExpiryIsNotChecked) {
  Ed25519PrivateKey key = NewKey();
  v1::SignedManifest signed_manifest = *SignManifest(GoodManifest(), key);
  const absl::Time after = absl::FromUnixSeconds(kCreated + 86400 + 1);
  absl::StatusOr<v1::ReleaseManifest> verified =
      VerifyManifest(signed_manifest, Trust({&key}), after);
  EXPECT_EQ(verified.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Contains(verified.status(), "expired at 2027-01-16T08:00:00Z"))
      << verified.status();

  EXPECT_TRUE(VerifyManifest(signed_manifest, Trust({&key}), after, 1,
                             /*check_expiry=*/false)
                  .ok());
  // Exactly at the expiry instant it is still valid.
  EXPECT_TRUE(VerifyManifest(signed_manifest, Trust({&key}),
                             absl::FromUnixSeconds(kCreated + 86400))
                  .ok());
}

TEST(ManifestTest, ZeroExpiryNeverExpires) {
  Ed25519PrivateKey key = NewKey();
  v1::ReleaseManifest m = GoodManifest();
  m.set_expires_unix_seconds(0);
  v1::SignedManifest signed_manifest = *SignManifest(m, key);
  EXPECT_TRUE(VerifyManifest(
                  signed_manifest, Trust({&key}),
                  absl::FromUnixSeconds(kCreated + int64_t{100} * 365 * 86400))
                  .ok());
}

TEST(ManifestTest, InvalidFieldsAreRejectedNamingTheField) {
  const struct {
    const char* field;
    void (*mutate)(v1::ReleaseManifest&);
  } kCases[] = {
      {"product", [](v1::ReleaseManifest& m) { m.set_product("../etc"); }},
      {"product", [](v1::ReleaseManifest& m) { m.set_product(""); }},
      {"version", [](v1::ReleaseManifest& m) { m.set_version("v1.2.3"); }},
      {"platform", [](v1::ReleaseManifest& m) { m.set_platform("linux"); }},
      {"sha256", [](v1::ReleaseManifest& m) { m.set_sha256("short"); }},
      {"size", [](v1::ReleaseManifest& m) { m.set_size(0); }},
      {"expires_unix_seconds",
       [](v1::ReleaseManifest& m) {
         m.set_expires_unix_seconds(m.created_unix_seconds() - 1);
       }},
  };
  Ed25519PrivateKey key = NewKey();
  for (const auto& c : kCases) {
    v1::ReleaseManifest m = GoodManifest();
    c.mutate(m);
    absl::Status s = ValidateManifest(m);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_TRUE(Contains(s, absl::StrCat("manifest field ", c.field)))
        << c.field << ": " << s;
    // The signer refuses to sign it ...
    EXPECT_EQ(SignManifest(m, key).status().code(),
              absl::StatusCode::kInvalidArgument)
        << c.field;
    // ... and a verifier refuses it even when it carries a good signature.
    v1::SignedManifest forged;
    forged.set_manifest(m.SerializeAsString());
    AddSignature(forged, key);
    EXPECT_EQ(VerifyManifest(forged, Trust({&key}), kNow).status().code(),
              absl::StatusCode::kInvalidArgument)
        << c.field;
  }
}

TEST(ManifestTest, SignedGarbageIsInvalidArgument) {
  Ed25519PrivateKey key = NewKey();
  v1::SignedManifest signed_manifest;
  signed_manifest.set_manifest("\xff\xff\xff\xff garbage");
  AddSignature(signed_manifest, key);
  EXPECT_EQ(
      VerifyManifest(signed_manifest, Trust({&key}), kNow).status().code(),
      absl::StatusCode::kInvalidArgument);
}

TEST(ManifestTest, TrustedKeysFindsByIdAndLoadsPemFiles) {
  Ed25519PrivateKey key = NewKey();
  const std::string path = testing::TempDir() + "/manifest_test_release.pub";
  std::remove(path.c_str());
  ASSERT_TRUE(key.PublicKey().WritePemFile(path).ok());
  TrustedKeys keys;
  EXPECT_TRUE(keys.empty());
  ASSERT_TRUE(keys.AddPemFile(path).ok());
  EXPECT_EQ(keys.size(), 1u);
  const Ed25519PublicKey* found = keys.Find(key.PublicKey().KeyId());
  ASSERT_NE(found, nullptr);
  EXPECT_EQ(found->raw(), key.PublicKey().raw());
  EXPECT_EQ(keys.Find("0000000000000000"), nullptr);
  EXPECT_EQ(keys.AddPemFile(path + ".missing").code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace fleet
