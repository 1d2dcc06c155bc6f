#include "common/ids.h"

#include <openssl/rand.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace fleet {

std::string NewId(absl::string_view prefix) {
  uint8_t bytes[8];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) {
    // A CSPRNG failure means colliding ids could follow; refusing to continue
    // is safer than handing out guessable ones.
    abort();
  }
  return absl::StrCat(
      prefix, "-",
      absl::BytesToHexString(absl::string_view(
          reinterpret_cast<const char*>(bytes), sizeof(bytes))));
}

}  // namespace fleet
