// Streaming SHA-256 on OpenSSL's EVP API (SHA-NI where the CPU has it).
//
//   Sha256 hasher;
//   hasher.Update(chunk1);
//   hasher.Update(chunk2);
//   Digest d = hasher.Finish();
//   std::string hex = DigestToHex(d);
#ifndef FLEET_COMMON_SHA256_H_
#define FLEET_COMMON_SHA256_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fleet {

using Digest = std::array<uint8_t, 32>;

// Incremental hasher. Not thread-safe. Finish() may be called once; after
// it the object must be Reset() before reuse.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(absl::string_view data);
  void Update(const void* data, size_t size);
  Digest Finish();
  void Reset();

 private:
  struct Context;
  std::unique_ptr<Context> ctx_;
};

// One-shot digest of `data`.
Digest Sha256Of(absl::string_view data);

// Digest of a whole file, read in large chunks. NOT_FOUND if missing; the
// errno-derived status on other I/O errors.
absl::StatusOr<Digest> Sha256OfFile(const std::string& path);

// Lower-case hex, 64 characters.
std::string DigestToHex(const Digest& digest);

// Parses 64 hex characters (either case). INVALID_ARGUMENT otherwise.
absl::StatusOr<Digest> DigestFromHex(absl::string_view hex);

// Interprets 32 raw bytes (as carried in protos). INVALID_ARGUMENT if the
// length is not 32.
absl::StatusOr<Digest> DigestFromBytes(absl::string_view bytes);
std::string DigestToBytes(const Digest& digest);

}  // namespace fleet

#endif  // FLEET_COMMON_SHA256_H_
