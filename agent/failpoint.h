// Failpoints: named places in the agent where the fault-injection suite
// (tests/fault) can kill the process with a real SIGKILL — no destructor,
// no flush, no exit handler runs, exactly as with `kill -9` or a power cut
// right after that line. The idea of leveldb's fault-injection tests,
// FreeBSD's fail(9) and etcd's gofail, sized for one process.
//
// Compiled into every build and inert unless the environment names a point:
//
//   FLEET_AGENT_FAILPOINT=<point>[:<n>]   kill at the n-th time (default 1st)
//                                         this process reaches <point>
//   FLEET_AGENT_FAILPOINT_ACTION=stop     optional: SIGSTOP instead of SIGKILL,
//                                         so the test can act while the
//                                         process is frozen there (restart
//                                         the controller mid-download) and
//                                         SIGCONT it after
//   FLEET_AGENT_FAILPOINT_MARKER=<path>   optional: fire only if <path> can
//                                         be created (O_EXCL), and write
//                                         "<point> <pid>" into it first (the
//                                         pid tells a test which process of
//                                         a supervisor/worker pair it was). A
//                                         process restarted with the same
//                                         environment (e.g. a worker the
//                                         supervisor restarts) then runs on
//                                         instead of dying at the same place
//                                         for ever, and the test can see that
//                                         the kill happened where it asked.
//
// The variables are read once, at the first Failpoint() call. For the fault
// suite only: nothing in production sets them.
//
// Points (see the calls): "journaled.<STATE>" right after the updater
// committed <STATE> (update_state.h names) to its journal, "swap.renamed"
// right after the new executable was renamed into place (before its event),
// "rollback.restored" right after a rollback renamed the backup back (before
// ROLLED_BACK is journaled), "download.chunk" after each chunk of a transfer
// was written to the partial file, "supervisor.spawned.<worker|program>"
// in the supervisor right after it started that child and before the
// child's pidfile names it.
#ifndef FLEET_AGENT_FAILPOINT_H_
#define FLEET_AGENT_FAILPOINT_H_

#include "absl/strings/string_view.h"

namespace fleet::agent {

// Environment variable names (for tests that set them).
inline constexpr char kFailpointEnv[] = "FLEET_AGENT_FAILPOINT";
inline constexpr char kFailpointMarkerEnv[] = "FLEET_AGENT_FAILPOINT_MARKER";
inline constexpr char kFailpointActionEnv[] = "FLEET_AGENT_FAILPOINT_ACTION";

// Kills this process with SIGKILL (or stops it with SIGSTOP, returning after
// SIGCONT) if the environment arms `point` and this is the armed occurrence;
// otherwise returns at once. Thread-safe.
void Failpoint(absl::string_view point);

}  // namespace fleet::agent

#endif  // FLEET_AGENT_FAILPOINT_H_
