// `fleetctl version`, `fleetctl doctor` and `fleetctl completion`: what an
// operator runs first when something does not work, and shell completion.
#ifndef FLEET_CLI_INFO_COMMANDS_H_
#define FLEET_CLI_INFO_COMMANDS_H_

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "cli/command_context.h"

namespace fleet::cli {

// `version`: prints "fleetctl V" and, from AdminService.GetServerInfo,
// "fleet-controller V (schema N) at HOST:PORT" (-o json|yaml: {"client":
// {...}, "server": ServerInfo or null}). The client line is printed even when
// the controller cannot be reached; that failure is returned (exit 1) through
// ExplainRpcError.
absl::Status Version(absl::string_view client_version, CommandContext& ctx);

struct DoctorOptions {
  std::vector<std::string> trust_keys;  // release public keys to check
  // Clock skew beyond this fails the check (signed metadata and
  // certificates have validity windows); beyond a tenth of it, a warning.
  absl::Duration max_clock_skew = absl::Seconds(5);
};

// `doctor`: runs every check and prints one line each, "ok", "warn" or
// "FAIL" with what was found and, for a failure, the fix:
//   tls          --insecure (warn) or no TLS files at all (FAIL)
//   ca           the --tls-ca file is a CA certificate; days to expiry
//   client cert  matches its key, verifies against the CA, has the admin
//                role; days to expiry (warn under 30)
//   server cert  the certificate the controller presents (plain TLS
//                handshake) verifies against the CA and names the host of
//                --controller; days to expiry
//   controller   reachable, with the round trip time
//   version      controller and client versions (warn if they differ)
//   clock        skew against the controller's clock
//   trust key    each --trust-key file readable and an Ed25519 public key
// Returns FAILED_PRECONDITION (exit 1) if any check failed; the output is
// complete either way.
absl::Status Doctor(const DoctorOptions& options,
                    absl::string_view client_version, CommandContext& ctx);

// `completion bash|zsh`: a completion script for the command tree of
// `root` (subcommands and flags at every level, global flags everywhere),
// derived from the CLI11 App so new commands are covered. Load with
//   source <(fleetctl completion bash)
// zsh uses the same script through bashcompinit. UsageError for any other
// shell.
absl::StatusOr<std::string> CompletionScript(const CLI::App& root,
                                             absl::string_view shell);

}  // namespace fleet::cli

#endif  // FLEET_CLI_INFO_COMMANDS_H_
