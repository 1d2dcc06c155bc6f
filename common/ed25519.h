// Ed25519 keys, signatures and key files, on OpenSSL 3's EVP API.
//
// Key files are PEM: private keys as PKCS#8 ("PRIVATE KEY"), written with
// mode 0600; public keys as SubjectPublicKeyInfo ("PUBLIC KEY"). These are
// what `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout` produce,
// so operators can use OpenSSL tooling on them.
//
//   ASSIGN_OR_RETURN(Ed25519PrivateKey key, Ed25519PrivateKey::Generate());
//   std::string sig = key.Sign(message);
//   ASSIGN_OR_RETURN(Ed25519PublicKey pub, Ed25519PublicKey::FromRaw(...));
//   bool ok = pub.Verify(message, sig);
#ifndef FLEET_COMMON_ED25519_H_
#define FLEET_COMMON_ED25519_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fleet {

class Ed25519PublicKey {
 public:
  // INVALID_ARGUMENT unless `raw` is 32 bytes.
  static absl::StatusOr<Ed25519PublicKey> FromRaw(absl::string_view raw);
  // Parses a PEM "PUBLIC KEY" holding an Ed25519 key. INVALID_ARGUMENT on
  // anything else (including an RSA/EC key).
  static absl::StatusOr<Ed25519PublicKey> FromPem(absl::string_view pem);
  // Reads and parses a PEM file; NOT_FOUND if it does not exist.
  static absl::StatusOr<Ed25519PublicKey> LoadPemFile(const std::string& path);

  const std::string& raw() const { return raw_; }  // 32 bytes
  std::string ToPem() const;
  // Writes the PEM with mode 0644; ALREADY_EXISTS if the file exists.
  absl::Status WritePemFile(const std::string& path) const;
  // Lower-case hex of the first 8 bytes of sha256(raw): 16 characters.
  std::string KeyId() const;

  // True iff `signature` is a valid Ed25519 signature of `message`.
  bool Verify(absl::string_view message, absl::string_view signature) const;

 private:
  explicit Ed25519PublicKey(std::string raw) : raw_(std::move(raw)) {}
  std::string raw_;
};

class Ed25519PrivateKey {
 public:
  static absl::StatusOr<Ed25519PrivateKey> Generate();
  static absl::StatusOr<Ed25519PrivateKey> FromPem(absl::string_view pem);
  // NOT_FOUND if missing.
  static absl::StatusOr<Ed25519PrivateKey> LoadPemFile(const std::string& path);

  // Writes PKCS#8 PEM with mode 0600 (created new; ALREADY_EXISTS if the file
  // exists, so a key is never overwritten by accident).
  absl::Status WritePemFile(const std::string& path) const;
  std::string ToPem() const;

  Ed25519PublicKey PublicKey() const;
  // 64-byte signature.
  std::string Sign(absl::string_view message) const;

 private:
  explicit Ed25519PrivateKey(std::string seed) : seed_(std::move(seed)) {}
  std::string seed_;  // 32-byte private seed
};

}  // namespace fleet

#endif  // FLEET_COMMON_ED25519_H_
