// fleetctl: the operator's command line for fleet.
//
//   fleetctl keys generate --out DIR
//   fleetctl release push --product P --version V --file F --key KEY
//   fleetctl release list [--product P] [--platform OS/ARCH]
//   fleetctl agents list [--product P]
//   fleetctl rollout create --product P --version V [--selector k=v,...]
//   fleetctl rollout status ID
//   fleetctl rollout list [--product P]
//
// Global flags, before or after the command: --controller HOST:PORT (default
// $FLEET_CONTROLLER, then 127.0.0.1:7443), -o table|json, --timeout 30s,
// --version.
//
// Exit codes:
//   0  success (also --help and --version)
//   1  the operation failed: the controller refused or could not be reached,
//      a file could not be read or written
//   2  usage error: unknown command or flag, missing or invalid value;
//      nothing was attempted
//
// Every failure is one line on stderr, "fleetctl: <what is wrong>; <fix>".
#ifndef FLEET_CLI_COMMAND_LINE_H_
#define FLEET_CLI_COMMAND_LINE_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "cli/command_context.h"

namespace fleet::cli {

inline constexpr char kFleetctlVersion[] = "0.1.0";

// Parses `args` (args[0] is the program name) and runs the chosen command.
// `controller_from_env` is $FLEET_CONTROLLER ("" when unset). Help and
// --version go to io.out, errors to io.err. Returns the exit code above;
// never throws.
int RunFleetctl(const std::vector<std::string>& args, const Io& io,
                absl::string_view controller_from_env);

}  // namespace fleet::cli

#endif  // FLEET_CLI_COMMAND_LINE_H_
