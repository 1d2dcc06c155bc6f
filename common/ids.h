// Random identifiers for rollouts, directives and agents.
#ifndef FLEET_COMMON_IDS_H_
#define FLEET_COMMON_IDS_H_

#include <string>

#include "absl/strings/string_view.h"

namespace fleet {

// `prefix` + "-" + 16 lower-case hex characters from a CSPRNG, e.g.
// "ro-3f2a9c0d11b2e4f7". Passes ValidateId.
std::string NewId(absl::string_view prefix);

}  // namespace fleet

#endif  // FLEET_COMMON_IDS_H_
