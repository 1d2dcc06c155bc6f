#include "common/ed25519.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "gtest/gtest.h"

namespace fleet {
namespace {

Ed25519PrivateKey NewKey() {
  absl::StatusOr<Ed25519PrivateKey> key = Ed25519PrivateKey::Generate();
  EXPECT_TRUE(key.ok()) << key.status();
  return *std::move(key);
}

std::string FreshPath(const std::string& name) {
  std::string path = testing::TempDir() + "/" + name;
  unlink(path.c_str());
  return path;
}

// An RSA key in PEM, generated in-process so the test stays hermetic.
struct RsaPems {
  std::string private_pem;
  std::string public_pem;
};

RsaPems GenerateRsaPems() {
  EVP_PKEY* key = EVP_RSA_gen(1024);
  EXPECT_NE(key, nullptr);
  RsaPems out;
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  out.private_pem.assign(data, static_cast<size_t>(len));
  BIO_free(bio);
  bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PUBKEY(bio, key);
  len = BIO_get_mem_data(bio, &data);
  out.public_pem.assign(data, static_cast<size_t>(len));
  BIO_free(bio);
  EVP_PKEY_free(key);
  return out;
}

TEST(Ed25519Test, SignatureVerifiesWithMatchingPublicKey) {
  Ed25519PrivateKey key = NewKey();
  const std::string message = "release fleet-agent 1.2.3";
  const std::string sig = key.Sign(message);
  EXPECT_EQ(sig.size(), 64u);
  EXPECT_TRUE(key.PublicKey().Verify(message, sig));
  EXPECT_EQ(key.PublicKey().raw().size(), 32u);
  // Ed25519 is deterministic.
  EXPECT_EQ(key.Sign(message), sig);
}

TEST(Ed25519Test, TamperedMessageIsRejected) {
  Ed25519PrivateKey key = NewKey();
  std::string message = "install 1.2.3";
  const std::string sig = key.Sign(message);
  message[message.size() - 1] = '4';
  EXPECT_FALSE(key.PublicKey().Verify(message, sig));
  EXPECT_FALSE(key.PublicKey().Verify("", sig));
}

TEST(Ed25519Test, TamperedSignatureIsRejected) {
  Ed25519PrivateKey key = NewKey();
  const std::string message = "install 1.2.3";
  const std::string sig = key.Sign(message);
  for (size_t i : {0u, 31u, 32u, 63u}) {
    std::string bad = sig;
    bad[i] ^= 0x01;
    EXPECT_FALSE(key.PublicKey().Verify(message, bad)) << "byte " << i;
  }
  EXPECT_FALSE(key.PublicKey().Verify(message, sig.substr(0, 63)));
  EXPECT_FALSE(key.PublicKey().Verify(message, sig + "x"));
  EXPECT_FALSE(key.PublicKey().Verify(message, ""));
}

TEST(Ed25519Test, SignatureFromAnotherKeyIsRejected) {
  Ed25519PrivateKey signer = NewKey();
  Ed25519PrivateKey other = NewKey();
  const std::string sig = signer.Sign("m");
  EXPECT_FALSE(other.PublicKey().Verify("m", sig));
  EXPECT_NE(signer.PublicKey().KeyId(), other.PublicKey().KeyId());
}

TEST(Ed25519Test, PemRoundTripPreservesKeys) {
  Ed25519PrivateKey key = NewKey();
  const std::string private_pem = key.ToPem();
  EXPECT_EQ(private_pem.rfind("-----BEGIN PRIVATE KEY-----\n", 0), 0u)
      << private_pem;
  absl::StatusOr<Ed25519PrivateKey> loaded =
      Ed25519PrivateKey::FromPem(private_pem);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->PublicKey().raw(), key.PublicKey().raw());
  EXPECT_TRUE(key.PublicKey().Verify("m", loaded->Sign("m")));

  const std::string public_pem = key.PublicKey().ToPem();
  EXPECT_EQ(public_pem.rfind("-----BEGIN PUBLIC KEY-----\n", 0), 0u)
      << public_pem;
  absl::StatusOr<Ed25519PublicKey> pub = Ed25519PublicKey::FromPem(public_pem);
  ASSERT_TRUE(pub.ok()) << pub.status();
  EXPECT_EQ(pub->raw(), key.PublicKey().raw());
  EXPECT_EQ(pub->KeyId(), key.PublicKey().KeyId());
}

TEST(Ed25519Test, PemFilesHaveTheirModesAndLoadBack) {
  Ed25519PrivateKey key = NewKey();
  const std::string private_path = FreshPath("ed25519_test.key");
  const std::string public_path = FreshPath("ed25519_test.pub");
  ASSERT_TRUE(key.WritePemFile(private_path).ok());
  ASSERT_TRUE(key.PublicKey().WritePemFile(public_path).ok());

  struct stat st;
  ASSERT_EQ(stat(private_path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(stat(public_path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);

  absl::StatusOr<Ed25519PrivateKey> loaded =
      Ed25519PrivateKey::LoadPemFile(private_path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  absl::StatusOr<Ed25519PublicKey> pub =
      Ed25519PublicKey::LoadPemFile(public_path);
  ASSERT_TRUE(pub.ok()) << pub.status();
  EXPECT_TRUE(pub->Verify("m", loaded->Sign("m")));
}

TEST(Ed25519Test, ExistingKeyFileIsNeverOverwritten) {
  Ed25519PrivateKey first = NewKey();
  Ed25519PrivateKey second = NewKey();
  const std::string path = FreshPath("ed25519_test_existing.key");
  ASSERT_TRUE(first.WritePemFile(path).ok());
  absl::Status s = second.WritePemFile(path);
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists) << s;
  absl::StatusOr<Ed25519PrivateKey> loaded =
      Ed25519PrivateKey::LoadPemFile(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->PublicKey().raw(), first.PublicKey().raw());

  s = first.PublicKey().WritePemFile(path);
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists) << s;
}

TEST(Ed25519Test, MissingKeyFileIsNotFound) {
  const std::string path = FreshPath("ed25519_test_missing.pem");
  EXPECT_EQ(Ed25519PrivateKey::LoadPemFile(path).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(Ed25519PublicKey::LoadPemFile(path).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(Ed25519Test, RsaKeysAreRejected) {
  RsaPems rsa = GenerateRsaPems();
  absl::StatusOr<Ed25519PrivateKey> priv =
      Ed25519PrivateKey::FromPem(rsa.private_pem);
  EXPECT_EQ(priv.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(priv.status().message().find("RSA"), absl::string_view::npos)
      << priv.status();
  absl::StatusOr<Ed25519PublicKey> pub =
      Ed25519PublicKey::FromPem(rsa.public_pem);
  EXPECT_EQ(pub.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(pub.status().message().find("not an Ed25519 key"),
            absl::string_view::npos)
      << pub.status();
}

TEST(Ed25519Test, GarbageAndSwappedPemsAreRejected) {
  Ed25519PrivateKey key = NewKey();
  EXPECT_EQ(Ed25519PrivateKey::FromPem("not a pem").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Ed25519PublicKey::FromPem("").status().code(),
            absl::StatusCode::kInvalidArgument);
  // A public key is not a private key.
  EXPECT_EQ(Ed25519PrivateKey::FromPem(key.PublicKey().ToPem()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(Ed25519Test, RawPublicKeyMustBe32Bytes) {
  Ed25519PrivateKey key = NewKey();
  absl::StatusOr<Ed25519PublicKey> pub =
      Ed25519PublicKey::FromRaw(key.PublicKey().raw());
  ASSERT_TRUE(pub.ok());
  EXPECT_TRUE(pub->Verify("m", key.Sign("m")));
  EXPECT_EQ(Ed25519PublicKey::FromRaw(std::string(31, 'a')).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Ed25519PublicKey::FromRaw(std::string(33, 'a')).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(Ed25519Test, KeyIdIs16LowerHexCharsAndStable) {
  // RFC 8032 test 1 public key; its id is the first 8 bytes of its sha256.
  const std::string raw(
      "\xd7\x5a\x98\x01\x82\xb1\x0a\xb7\xd5\x4b\xfe\xd3\xc9\x64\x07\x3a"
      "\x0e\xe1\x72\xf3\xda\xa6\x23\x25\xaf\x02\x1a\x68\xf7\x07\x51\x1a",
      32);
  absl::StatusOr<Ed25519PublicKey> pub = Ed25519PublicKey::FromRaw(raw);
  ASSERT_TRUE(pub.ok());
  const std::string id = pub->KeyId();
  ASSERT_EQ(id.size(), 16u);
  for (char c : id) {
    EXPECT_TRUE((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) << id;
  }
  EXPECT_EQ(id, Ed25519PublicKey::FromRaw(raw)->KeyId());

  Ed25519PrivateKey key = NewKey();
  absl::StatusOr<Ed25519PublicKey> reloaded =
      Ed25519PublicKey::FromPem(key.PublicKey().ToPem());
  ASSERT_TRUE(reloaded.ok());
  EXPECT_EQ(reloaded->KeyId(), key.PublicKey().KeyId());
}

TEST(Ed25519Test, MatchesRfc8032Test1) {
  // RFC 8032 section 7.1, TEST 1: secret key, empty message, signature.
  const std::string pem =
      "-----BEGIN PRIVATE KEY-----\n"
      "MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n"
      "-----END PRIVATE KEY-----\n";
  absl::StatusOr<Ed25519PrivateKey> key = Ed25519PrivateKey::FromPem(pem);
  ASSERT_TRUE(key.ok()) << key.status();
  const std::string expected_pub(
      "\xd7\x5a\x98\x01\x82\xb1\x0a\xb7\xd5\x4b\xfe\xd3\xc9\x64\x07\x3a"
      "\x0e\xe1\x72\xf3\xda\xa6\x23\x25\xaf\x02\x1a\x68\xf7\x07\x51\x1a",
      32);
  EXPECT_EQ(key->PublicKey().raw(), expected_pub);
  const std::string expected_sig(
      "\xe5\x56\x43\x00\xc3\x60\xac\x72\x90\x86\xe2\xcc\x80\x6e\x82\x8a"
      "\x84\x87\x7f\x1e\xb8\xe5\xd9\x74\xd8\x73\xe0\x65\x22\x49\x01\x55"
      "\x5f\xb8\x82\x15\x90\xa3\x3b\xac\xc6\x1e\x39\x70\x1c\xf9\xb4\x6b"
      "\xd2\x5b\xf5\xf0\x59\x5b\xbe\x24\x65\x51\x41\x43\x8e\x7a\x10\x0b",
      64);
  EXPECT_EQ(key->Sign(""), expected_sig);
}

}  // namespace
}  // namespace fleet
