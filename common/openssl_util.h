// Small RAII and error helpers over OpenSSL 3 shared by common/ed25519 and
// common/pki, so each frees what it allocates and reports OpenSSL's own
// reason instead of a bare failure.
//
//   OpenSslPtr<EVP_PKEY, EVP_PKEY_free> key(EVP_EC_gen("P-256"));
//   if (key == nullptr) return absl::InternalError(OpenSslError());
#ifndef FLEET_COMMON_OPENSSL_UTIL_H_
#define FLEET_COMMON_OPENSSL_UTIL_H_

#include <openssl/bio.h>

#include <memory>
#include <string>

#include "absl/strings/string_view.h"

namespace fleet {

template <typename T, void (*Free)(T*)>
struct OpenSslDeleter {
  void operator()(T* p) const { Free(p); }
};
// An owning pointer freed with `Free` (EVP_PKEY_free, X509_free, ...).
template <typename T, void (*Free)(T*)>
using OpenSslPtr = std::unique_ptr<T, OpenSslDeleter<T, Free>>;

struct BioDeleter {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
using BioPtr = std::unique_ptr<BIO, BioDeleter>;

// The most recent OpenSSL error as text ("unknown OpenSSL error" if none).
// Clears the thread's error queue, so a stale error never shows up in an
// unrelated later message.
std::string OpenSslError();

// A read-only memory BIO over `data`, which must outlive it.
BioPtr ReadOnlyBio(absl::string_view data);

// Everything written to a memory BIO so far.
std::string BioContents(BIO* bio);

}  // namespace fleet

#endif  // FLEET_COMMON_OPENSSL_UTIL_H_
