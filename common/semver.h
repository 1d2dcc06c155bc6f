// Semantic Versioning 2.0.0: parsing and precedence (semver.org, section 11).
//
//   ASSIGN_OR_RETURN(SemVer a, SemVer::Parse("1.0.0-alpha.1"));
//   ASSIGN_OR_RETURN(SemVer b, SemVer::Parse("1.0.0"));
//   a < b  // true: a pre-release has lower precedence
#ifndef FLEET_COMMON_SEMVER_H_
#define FLEET_COMMON_SEMVER_H_

#include <compare>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fleet {

class SemVer {
 public:
  // Strict SemVer 2.0: MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD], no leading
  // zeros in numeric parts, no leading "v", identifiers [0-9A-Za-z-], no empty
  // identifiers, at most 128 bytes. INVALID_ARGUMENT naming what is wrong.
  static absl::StatusOr<SemVer> Parse(absl::string_view text);

  uint64_t major() const { return major_; }
  uint64_t minor() const { return minor_; }
  uint64_t patch() const { return patch_; }
  const std::vector<std::string>& prerelease() const { return prerelease_; }
  const std::string& build() const { return build_; }

  std::string ToString() const;  // the canonical text, build included

  // Precedence: build metadata is ignored, so 1.0.0+a == 1.0.0+b here.
  std::strong_ordering operator<=>(const SemVer& other) const;
  bool operator==(const SemVer& other) const { return (*this <=> other) == 0; }

 private:
  uint64_t major_ = 0, minor_ = 0, patch_ = 0;
  std::vector<std::string> prerelease_;
  std::string build_;
};

// Precedence of two version strings; versions that fail to parse sort before
// valid ones and among themselves by byte order (for stable listings).
int CompareVersions(absl::string_view a, absl::string_view b);

}  // namespace fleet

#endif  // FLEET_COMMON_SEMVER_H_
