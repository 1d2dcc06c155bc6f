#include "common/sha256.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace fleet {

struct Sha256::Context {
  EVP_MD_CTX* md = nullptr;
  ~Context() { EVP_MD_CTX_free(md); }
};

namespace {

// EVP only fails on allocation failure or a broken library; there is no
// sensible way to continue hashing after that.
void CheckEvp(int rc) {
  if (rc != 1) abort();
}

}  // namespace

Sha256::Sha256() : ctx_(std::make_unique<Context>()) {
  ctx_->md = EVP_MD_CTX_new();
  if (ctx_->md == nullptr) abort();
  Reset();
}

Sha256::~Sha256() = default;

void Sha256::Reset() {
  CheckEvp(EVP_DigestInit_ex(ctx_->md, EVP_sha256(), nullptr));
}

void Sha256::Update(absl::string_view data) {
  Update(data.data(), data.size());
}

void Sha256::Update(const void* data, size_t size) {
  if (size == 0) return;
  CheckEvp(EVP_DigestUpdate(ctx_->md, data, size));
}

Digest Sha256::Finish() {
  Digest digest{};
  unsigned int len = 0;
  CheckEvp(EVP_DigestFinal_ex(ctx_->md, digest.data(), &len));
  if (len != digest.size()) abort();
  return digest;
}

Digest Sha256Of(absl::string_view data) {
  Sha256 hasher;
  hasher.Update(data);
  return hasher.Finish();
}

absl::StatusOr<Digest> Sha256OfFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, "open " + path);
  constexpr size_t kChunk = 1 << 20;
  std::vector<char> buffer(kChunk);
  Sha256 hasher;
  while (true) {
    ssize_t n = read(fd, buffer.data(), buffer.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      int saved = errno;
      close(fd);
      return absl::ErrnoToStatus(saved, "read " + path);
    }
    if (n == 0) break;
    hasher.Update(buffer.data(), static_cast<size_t>(n));
  }
  close(fd);
  return hasher.Finish();
}

std::string DigestToHex(const Digest& digest) {
  return absl::BytesToHexString(absl::string_view(
      reinterpret_cast<const char*>(digest.data()), digest.size()));
}

namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

absl::StatusOr<Digest> DigestFromHex(absl::string_view hex) {
  if (hex.size() != 64) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sha256 hex digest must be 64 characters, got ", hex.size()));
  }
  Digest digest{};
  for (size_t i = 0; i < digest.size(); ++i) {
    int hi = HexValue(hex[2 * i]);
    int lo = HexValue(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("sha256 hex digest has a non-hex character at offset ",
                       hi < 0 ? 2 * i : 2 * i + 1));
    }
    digest[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return digest;
}

absl::StatusOr<Digest> DigestFromBytes(absl::string_view bytes) {
  Digest digest{};
  if (bytes.size() != digest.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("sha256 digest must be 32 bytes, got ", bytes.size()));
  }
  std::copy(bytes.begin(), bytes.end(), digest.begin());
  return digest;
}

std::string DigestToBytes(const Digest& digest) {
  return std::string(reinterpret_cast<const char*>(digest.data()),
                     digest.size());
}

}  // namespace fleet
