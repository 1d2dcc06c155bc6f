// The states of one update on an agent and every transition between them.
//
// An update's state is journaled before the action it names (write-ahead),
// so after a crash the state says what may have happened:
//
//   RECEIVED ─▶ DOWNLOADING ─▶ DOWNLOADED ─▶ VERIFIED ─▶ STAGED ─▶ SWAPPED
//      │             │              │            │          │        │  │
//      │             └──────────────┴────────────┴──────────┴─▶ FAILED  │
//      ├─▶ HEALTHY (already installed)                       ▲          │
//      └─▶ FAILED (signature, platform, product, downgrade)  └──────────┤
//                                                (the swap itself failed)
//   SWAPPED ─▶ RESTARTED ─▶ HEALTHY
//      │           │
//      └───────────┴─▶ ROLLED_BACK
//
// HEALTHY, FAILED and ROLLED_BACK are final. Before SWAPPED nothing on disk
// outside the state dir has changed (resume); from SWAPPED on EXEC may be the
// new version (roll back unless HEALTHY).
#ifndef FLEET_AGENT_UPDATE_STATE_H_
#define FLEET_AGENT_UPDATE_STATE_H_

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "proto/fleet/v1/agent.pb.h"

namespace fleet::agent {

enum class UpdateState {
  kReceived,
  kDownloading,
  kDownloaded,
  kVerified,
  kStaged,
  kSwapped,
  kRestarted,
  kHealthy,
  kFailed,
  kRolledBack,
};

// "RECEIVED", "DOWNLOADING", ... (as journaled and as the UpdatePhase names
// without the prefix).
absl::string_view ToString(UpdateState state);
// Inverse of ToString; nullopt for anything else.
std::optional<UpdateState> UpdateStateFromString(absl::string_view text);

v1::UpdatePhase ToPhase(UpdateState state);

bool IsFinal(UpdateState state);
// True from SWAPPED until final: EXEC may hold the new version.
bool MayBeSwapped(UpdateState state);

// OK if the table allows `from` -> `to`; FAILED_PRECONDITION naming both
// otherwise.
absl::Status CheckTransition(UpdateState from, UpdateState to);

}  // namespace fleet::agent

#endif  // FLEET_AGENT_UPDATE_STATE_H_
