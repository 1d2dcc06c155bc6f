// How fleetctl turns failures into one actionable line and an exit code.
//
// Every command returns absl::Status whose message is the whole line an
// operator reads after "fleetctl: ": what went wrong and how to fix it.
//
//   exit 0  success
//   exit 1  the operation failed: an RPC error, an unreadable file, a key
//           that cannot be written
//   exit 2  usage error: a flag is missing or malformed, a value is invalid
//           (names, versions, platforms, selectors); nothing was attempted
//
// Usage errors are statuses made with UsageError(); everything else non-OK
// maps to 1.
//
// RPC failures go through ExplainRpcError, which knows the causes that do not
// depend on the call (an unreachable controller, a deadline, a version
// mismatch) and takes per-call hints for the codes a particular RPC gives a
// meaning (PERMISSION_DENIED on a push means an untrusted key).
#ifndef FLEET_CLI_ERRORS_H_
#define FLEET_CLI_ERRORS_H_

#include <grpcpp/support/status.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace fleet::cli {

enum ExitCode : int {
  kExitOk = 0,
  kExitFailed = 1,
  kExitUsage = 2,
};

// INVALID_ARGUMENT carrying a mark that makes ExitCodeFor() return
// kExitUsage.
absl::Status UsageError(absl::string_view message);
bool IsUsageError(const absl::Status& status);

// A UsageError reading: invalid --version "1.0": <why>
absl::Status InvalidFlag(absl::string_view flag, absl::string_view value,
                         absl::string_view why);
// OK when `valid` is OK; otherwise InvalidFlag with `valid`'s message.
absl::Status CheckFlag(absl::string_view flag, absl::string_view value,
                       const absl::Status& valid);

// `status` (not OK) carrying a mark that makes ExitCodeFor() return
// `exit_code`: for commands whose failures mean different things to a script
// (`rollout status --watch` ending on an aborted rollout).
absl::Status WithExitCode(absl::Status status, int exit_code);

// kExitOk for OK, the code of WithExitCode(), kExitUsage for UsageError(),
// kExitFailed otherwise.
int ExitCodeFor(const absl::Status& status);

// What a call means when it fails with one particular code.
struct RpcHint {
  grpc::StatusCode code;
  std::string problem;  // "the controller does not trust key 1a2b…"
  std::string fix;      // "start fleet-controller with --trust-key …"
  // Whether the controller's own message is added in parentheses; off when
  // `problem` already says all it would.
  bool with_detail = true;
};

// The RPC that failed, in an operator's words.
struct RpcCall {
  std::string controller;  // the --controller target
  std::string action;      // "push release web 1.2.0 (linux/amd64)"
  absl::Duration timeout;  // the deadline the call had
  std::vector<RpcHint> hints;
};

// Returns a status with the code of `status` (which must not be OK) and a
// one-line message: a matching hint's "problem (controller's message); fix"
// ("problem; fix" without detail),
// else a generic explanation by code, e.g. for UNAVAILABLE
//   cannot reach the controller at 127.0.0.1:7443 (connection refused); is
//   fleet-controller running? set --controller or FLEET_CONTROLLER
absl::Status ExplainRpcError(const grpc::Status& status, const RpcCall& call);

// The cause inside a transport error message, shortened for humans:
// "connection refused", "cannot resolve the host name", ...; the message
// itself when no known cause is found.
std::string TransportCause(absl::string_view grpc_message);

}  // namespace fleet::cli

#endif  // FLEET_CLI_ERRORS_H_
