#include "agent/update_state.h"

#include "absl/strings/str_cat.h"

namespace fleet::agent {
namespace {

using S = UpdateState;

struct Transition {
  UpdateState from;
  UpdateState to;
};

// Every transition an update may take; anything else is a bug.
constexpr Transition kTransitions[] = {
    {S::kReceived, S::kDownloading},
    {S::kReceived, S::kHealthy},  // the release is already in place
    {S::kReceived, S::kFailed},
    {S::kDownloading, S::kDownloaded},
    {S::kDownloading, S::kFailed},
    {S::kDownloaded, S::kVerified},
    {S::kDownloaded, S::kFailed},
    {S::kVerified, S::kStaged},
    {S::kVerified, S::kFailed},
    {S::kStaged, S::kSwapped},
    {S::kStaged, S::kFailed},
    {S::kSwapped, S::kRestarted},
    {S::kSwapped, S::kFailed},  // the rename did not happen: nothing changed
    {S::kSwapped, S::kRolledBack},
    {S::kRestarted, S::kHealthy},
    {S::kRestarted, S::kRolledBack},
};

struct Name {
  UpdateState state;
  absl::string_view text;
  v1::UpdatePhase phase;
};

constexpr Name kNames[] = {
    {S::kReceived, "RECEIVED", v1::UPDATE_PHASE_RECEIVED},
    {S::kDownloading, "DOWNLOADING", v1::UPDATE_PHASE_DOWNLOADING},
    {S::kDownloaded, "DOWNLOADED", v1::UPDATE_PHASE_DOWNLOADED},
    {S::kVerified, "VERIFIED", v1::UPDATE_PHASE_VERIFIED},
    {S::kStaged, "STAGED", v1::UPDATE_PHASE_STAGED},
    {S::kSwapped, "SWAPPED", v1::UPDATE_PHASE_SWAPPED},
    {S::kRestarted, "RESTARTED", v1::UPDATE_PHASE_RESTARTED},
    {S::kHealthy, "HEALTHY", v1::UPDATE_PHASE_HEALTHY},
    {S::kFailed, "FAILED", v1::UPDATE_PHASE_FAILED},
    {S::kRolledBack, "ROLLED_BACK", v1::UPDATE_PHASE_ROLLED_BACK},
};

}  // namespace

absl::string_view ToString(UpdateState state) {
  for (const Name& n : kNames) {
    if (n.state == state) return n.text;
  }
  return "UNKNOWN";
}

std::optional<UpdateState> UpdateStateFromString(absl::string_view text) {
  for (const Name& n : kNames) {
    if (n.text == text) return n.state;
  }
  return std::nullopt;
}

v1::UpdatePhase ToPhase(UpdateState state) {
  for (const Name& n : kNames) {
    if (n.state == state) return n.phase;
  }
  return v1::UPDATE_PHASE_UNSPECIFIED;
}

bool IsFinal(UpdateState state) {
  return state == S::kHealthy || state == S::kFailed || state == S::kRolledBack;
}

bool MayBeSwapped(UpdateState state) {
  return state == S::kSwapped || state == S::kRestarted;
}

absl::Status CheckTransition(UpdateState from, UpdateState to) {
  for (const Transition& t : kTransitions) {
    if (t.from == from && t.to == to) return absl::OkStatus();
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "no update transition ", ToString(from), " -> ", ToString(to)));
}

}  // namespace fleet::agent
