// SemVer parsing and precedence, as applied to every version an operator,
// the controller or an agent names. The input is split at its first NUL
// into two version strings.
#include <compare>
#include <string>
#include <vector>

#include "common/semver.h"
#include "tests/fuzz/fuzz_target.h"

namespace fleet::fuzz {

std::vector<std::string> FuzzSeeds() {
  return {std::string("1.0.0-alpha.1\0") + "1.0.0",
          std::string("1.0.0+build.5\0") + "1.0.0",
          std::string("10.20.30-rc.1.x-y\0") + "10.20.30-rc.1.x-y"};
}

}  // namespace fleet::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string a = input.substr(0, nul);
  const std::string b = nul == std::string::npos ? "" : input.substr(nul + 1);

  absl::StatusOr<fleet::SemVer> parsed_a = fleet::SemVer::Parse(a);
  absl::StatusOr<fleet::SemVer> parsed_b = fleet::SemVer::Parse(b);
  if (parsed_a.ok()) {
    // Canonical text parses back to an equal version.
    absl::StatusOr<fleet::SemVer> again =
        fleet::SemVer::Parse(parsed_a->ToString());
    FUZZ_CHECK(again.ok());
    FUZZ_CHECK(*again == *parsed_a);
    FUZZ_CHECK(fleet::CompareVersions(a, a) == 0);
  }
  if (parsed_a.ok() && parsed_b.ok()) {
    // Precedence is antisymmetric.
    const int ab = fleet::CompareVersions(a, b);
    const int ba = fleet::CompareVersions(b, a);
    FUZZ_CHECK((ab < 0) == (ba > 0));
    FUZZ_CHECK((ab == 0) == (ba == 0));
    FUZZ_CHECK(((*parsed_a <=> *parsed_b) < 0) == (ab < 0));
  }
  return 0;
}
