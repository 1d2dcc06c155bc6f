// `fleetctl enroll-token ...`, `fleetctl agents revoke` and
// `fleetctl audit list`: who may join the fleet, who may no longer, and who
// did what (IdentityService in proto/fleet/v1/enrollment.proto).
#ifndef FLEET_CLI_IDENTITY_COMMANDS_H_
#define FLEET_CLI_IDENTITY_COMMANDS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "cli/command_context.h"

namespace fleet::cli {

struct EnrollTokenCreateOptions {
  std::string ttl = "1h";           // --ttl, at most 30d
  int64_t uses = 1;                 // --uses
  std::vector<std::string> labels;  // --label k=v, repeatable
};

// `enroll-token create`: prints the token (shown only now: the controller
// keeps its hash) and how to start an agent with it; JSON: the response.
// UsageError for a bad --ttl, --uses below 1 or a label not "key=value".
absl::Status EnrollTokenCreate(const EnrollTokenCreateOptions& options,
                               CommandContext& ctx);

// `enroll-token list`: usable tokens (id, uses left, expiry, labels, who
// created them). Never shows a secret.
absl::Status EnrollTokenList(CommandContext& ctx);

// `enroll-token delete ID`. NOT_FOUND says to list the tokens.
absl::Status EnrollTokenDelete(const std::string& token_id,
                               CommandContext& ctx);

// `agents revoke ID [--reason TEXT]`: the agent's stream is cut and every
// later connection refused.
absl::Status AgentsRevoke(const std::string& agent_id,
                          const std::string& reason, CommandContext& ctx);

// `audit list [--limit N]`: newest first (time, actor, action, detail).
absl::Status AuditList(int limit, CommandContext& ctx);

}  // namespace fleet::cli

#endif  // FLEET_CLI_IDENTITY_COMMANDS_H_
