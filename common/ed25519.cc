#include "common/ed25519.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <cstdlib>
#include <memory>
#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/openssl_util.h"
#include "common/sha256.h"
#include "common/status_macros.h"

namespace fleet {
namespace {

constexpr size_t kKeySize = 32;
constexpr size_t kSignatureSize = 64;

using PkeyPtr = OpenSslPtr<EVP_PKEY, EVP_PKEY_free>;
using MdCtxPtr = OpenSslPtr<EVP_MD_CTX, EVP_MD_CTX_free>;

PkeyPtr PrivateKeyFromSeed(const std::string& seed) {
  return PkeyPtr(EVP_PKEY_new_raw_private_key(
      EVP_PKEY_ED25519, nullptr,
      reinterpret_cast<const unsigned char*>(seed.data()), seed.size()));
}

PkeyPtr PublicKeyFromRaw(const std::string& raw) {
  return PkeyPtr(EVP_PKEY_new_raw_public_key(
      EVP_PKEY_ED25519, nullptr,
      reinterpret_cast<const unsigned char*>(raw.data()), raw.size()));
}

absl::Status CheckEd25519(const EVP_PKEY* key, absl::string_view what) {
  int id = EVP_PKEY_get_id(key);
  if (id != EVP_PKEY_ED25519) {
    const char* name = EVP_PKEY_get0_type_name(key);
    return absl::InvalidArgumentError(
        absl::StrCat(what, " is a ", name != nullptr ? name : "unknown",
                     " key, not an Ed25519 key"));
  }
  return absl::OkStatus();
}

}  // namespace

// ---------------------------------------------------------------------------
// Ed25519PublicKey

absl::StatusOr<Ed25519PublicKey> Ed25519PublicKey::FromRaw(
    absl::string_view raw) {
  if (raw.size() != kKeySize) {
    return absl::InvalidArgumentError(
        absl::StrCat("Ed25519 public key must be 32 bytes, got ", raw.size()));
  }
  return Ed25519PublicKey(std::string(raw));
}

absl::StatusOr<Ed25519PublicKey> Ed25519PublicKey::FromPem(
    absl::string_view pem) {
  BioPtr bio = ReadOnlyBio(pem);
  if (bio == nullptr) return absl::InternalError("BIO_new_mem_buf failed");
  PkeyPtr key(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "not a PEM public key (\"PUBLIC KEY\"): ", OpenSslError()));
  }
  RETURN_IF_ERROR(CheckEd25519(key.get(), "public key"));
  std::string raw(kKeySize, '\0');
  size_t len = raw.size();
  if (EVP_PKEY_get_raw_public_key(
          key.get(), reinterpret_cast<unsigned char*>(raw.data()), &len) != 1 ||
      len != kKeySize) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot extract Ed25519 public key: ", OpenSslError()));
  }
  return Ed25519PublicKey(std::move(raw));
}

absl::StatusOr<Ed25519PublicKey> Ed25519PublicKey::LoadPemFile(
    const std::string& path) {
  ASSIGN_OR_RETURN(std::string pem, ReadFile(path));
  absl::StatusOr<Ed25519PublicKey> key = FromPem(pem);
  if (!key.ok()) {
    return absl::Status(key.status().code(),
                        absl::StrCat(path, ": ", key.status().message()));
  }
  return key;
}

std::string Ed25519PublicKey::ToPem() const {
  PkeyPtr key = PublicKeyFromRaw(raw_);
  BioPtr bio(BIO_new(BIO_s_mem()));
  // Only allocation failure can make these fail for a valid 32-byte key.
  if (key == nullptr || bio == nullptr ||
      PEM_write_bio_PUBKEY(bio.get(), key.get()) != 1) {
    abort();
  }
  return BioContents(bio.get());
}

absl::Status Ed25519PublicKey::WritePemFile(const std::string& path) const {
  return WriteNewFile(path, ToPem(), 0644);
}

std::string Ed25519PublicKey::KeyId() const {
  Digest d = Sha256Of(raw_);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(d.data()), 8));
}

bool Ed25519PublicKey::Verify(absl::string_view message,
                              absl::string_view signature) const {
  if (signature.size() != kSignatureSize) return false;
  PkeyPtr key = PublicKeyFromRaw(raw_);
  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (key == nullptr || ctx == nullptr) return false;
  bool ok =
      EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, key.get()) ==
          1 &&
      EVP_DigestVerify(ctx.get(),
                       reinterpret_cast<const unsigned char*>(signature.data()),
                       signature.size(),
                       reinterpret_cast<const unsigned char*>(message.data()),
                       message.size()) == 1;
  ERR_clear_error();
  return ok;
}

// ---------------------------------------------------------------------------
// Ed25519PrivateKey

absl::StatusOr<Ed25519PrivateKey> Ed25519PrivateKey::Generate() {
  EVP_PKEY* raw_key = nullptr;
  std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(
      EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, nullptr), &EVP_PKEY_CTX_free);
  if (ctx == nullptr || EVP_PKEY_keygen_init(ctx.get()) != 1 ||
      EVP_PKEY_keygen(ctx.get(), &raw_key) != 1) {
    return absl::InternalError(
        absl::StrCat("Ed25519 key generation failed: ", OpenSslError()));
  }
  PkeyPtr key(raw_key);
  std::string seed(kKeySize, '\0');
  size_t len = seed.size();
  if (EVP_PKEY_get_raw_private_key(
          key.get(), reinterpret_cast<unsigned char*>(seed.data()), &len) !=
          1 ||
      len != kKeySize) {
    return absl::InternalError(
        absl::StrCat("cannot extract Ed25519 private key: ", OpenSslError()));
  }
  return Ed25519PrivateKey(std::move(seed));
}

absl::StatusOr<Ed25519PrivateKey> Ed25519PrivateKey::FromPem(
    absl::string_view pem) {
  BioPtr bio = ReadOnlyBio(pem);
  if (bio == nullptr) return absl::InternalError("BIO_new_mem_buf failed");
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "not a PEM private key (\"PRIVATE KEY\"): ", OpenSslError()));
  }
  RETURN_IF_ERROR(CheckEd25519(key.get(), "private key"));
  std::string seed(kKeySize, '\0');
  size_t len = seed.size();
  if (EVP_PKEY_get_raw_private_key(
          key.get(), reinterpret_cast<unsigned char*>(seed.data()), &len) !=
          1 ||
      len != kKeySize) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot extract Ed25519 private key: ", OpenSslError()));
  }
  return Ed25519PrivateKey(std::move(seed));
}

absl::StatusOr<Ed25519PrivateKey> Ed25519PrivateKey::LoadPemFile(
    const std::string& path) {
  ASSIGN_OR_RETURN(std::string pem, ReadFile(path));
  absl::StatusOr<Ed25519PrivateKey> key = FromPem(pem);
  if (!key.ok()) {
    return absl::Status(key.status().code(),
                        absl::StrCat(path, ": ", key.status().message()));
  }
  return key;
}

absl::Status Ed25519PrivateKey::WritePemFile(const std::string& path) const {
  return WriteNewFile(path, ToPem(), 0600);
}

std::string Ed25519PrivateKey::ToPem() const {
  PkeyPtr key = PrivateKeyFromSeed(seed_);
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (key == nullptr || bio == nullptr ||
      PEM_write_bio_PrivateKey(bio.get(), key.get(), nullptr, nullptr, 0,
                               nullptr, nullptr) != 1) {
    abort();
  }
  return BioContents(bio.get());
}

Ed25519PublicKey Ed25519PrivateKey::PublicKey() const {
  PkeyPtr key = PrivateKeyFromSeed(seed_);
  std::string raw(kKeySize, '\0');
  size_t len = raw.size();
  if (key == nullptr ||
      EVP_PKEY_get_raw_public_key(
          key.get(), reinterpret_cast<unsigned char*>(raw.data()), &len) != 1 ||
      len != kKeySize) {
    abort();
  }
  // The public key's constructor is private to it; FromRaw cannot fail here.
  return *Ed25519PublicKey::FromRaw(raw);
}

std::string Ed25519PrivateKey::Sign(absl::string_view message) const {
  PkeyPtr key = PrivateKeyFromSeed(seed_);
  MdCtxPtr ctx(EVP_MD_CTX_new());
  std::string signature(kSignatureSize, '\0');
  size_t len = signature.size();
  // Ed25519 signing is deterministic and fails only on allocation failure;
  // returning an empty signature would only defer the failure to a verifier.
  if (key == nullptr || ctx == nullptr ||
      EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, key.get()) !=
          1 ||
      EVP_DigestSign(ctx.get(),
                     reinterpret_cast<unsigned char*>(signature.data()), &len,
                     reinterpret_cast<const unsigned char*>(message.data()),
                     message.size()) != 1 ||
      len != kSignatureSize) {
    abort();
  }
  return signature;
}

}  // namespace fleet
