// `fleetctl blacklist ...`: versions that must never be rolled out.
#ifndef FLEET_CLI_BLACKLIST_COMMANDS_H_
#define FLEET_CLI_BLACKLIST_COMMANDS_H_

#include <string>

#include "absl/status/status.h"
#include "cli/command_context.h"

namespace fleet::cli {

struct BlacklistOptions {
  std::string product;
  std::string version;
  std::string reason;  // add only; required
};

// `blacklist add --product P --version V --reason TEXT`:
// AdminService.AddBlacklist. Prints "blacklisted P V" and one line per
// rollout the controller aborted for it, or the AddBlacklistResponse as
// JSON. UsageError for a bad product or version or an empty reason;
// ALREADY_EXISTS says to list the blacklist; others via ExplainRpcError.
absl::Status BlacklistAdd(const BlacklistOptions& options, CommandContext& ctx);

// `blacklist remove --product P --version V`: AdminService.RemoveBlacklist.
// Prints "removed P V from the blacklist" (JSON: the empty response).
// NOT_FOUND says the version is not blacklisted.
absl::Status BlacklistRemove(const BlacklistOptions& options,
                             CommandContext& ctx);

// `blacklist list [--product P]`: AdminService.ListBlacklist as a table
// (product, version, reason, by, added "2d ago") or the JSON of the
// ListBlacklistResponse. An empty table prints a note on err instead.
absl::Status BlacklistList(const std::string& product, CommandContext& ctx);

}  // namespace fleet::cli

#endif  // FLEET_CLI_BLACKLIST_COMMANDS_H_
