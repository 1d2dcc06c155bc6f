// Validation of every name that crosses a trust boundary and may reach a
// file system path or a SQL row: products, platforms, label keys and values,
// agent ids. Names are checked against an allow-list of characters, so path
// separators, "..", NUL and control characters can never pass.
#ifndef FLEET_COMMON_NAMES_H_
#define FLEET_COMMON_NAMES_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace fleet {

// [a-z0-9][a-z0-9._-]{0,63}, and not containing "..".
absl::Status ValidateProductName(absl::string_view product);

// "os/arch" with os in {linux, darwin, windows} and arch in {amd64, arm64,
// arm, 386, riscv64}.
absl::Status ValidatePlatform(absl::string_view platform);

// SemVer 2.0 (see semver.h).
absl::Status ValidateVersion(absl::string_view version);

// [A-Za-z0-9][A-Za-z0-9._-]{0,127}: agent ids, rollout ids, directive ids.
absl::Status ValidateId(absl::string_view id, absl::string_view what);

// Label key: [a-z0-9][a-z0-9._/-]{0,62}; value: printable ASCII without
// '=' or ',', at most 128 bytes.
absl::Status ValidateLabel(absl::string_view key, absl::string_view value);

// The platform this binary was built for, e.g. "linux/amd64".
std::string HostPlatform();

}  // namespace fleet

#endif  // FLEET_COMMON_NAMES_H_
