// `fleetctl agents ...`: the machines the controller knows.
#ifndef FLEET_CLI_AGENT_COMMANDS_H_
#define FLEET_CLI_AGENT_COMMANDS_H_

#include <string>

#include "absl/status/status.h"
#include "cli/command_context.h"

namespace fleet::cli {

struct AgentsListOptions {
  std::string product;  // "" = all; else agents that run it
};

// `agents list`: AdminService.ListAgents as a table (agent id, hostname,
// platform, products as product@version, connected yes/no, last seen "12s
// ago") or as the JSON of the ListAgentsResponse. An empty table prints a
// note on err instead. UsageError for a malformed --product; ExplainRpcError
// otherwise.
absl::Status AgentsList(const AgentsListOptions& options, CommandContext& ctx);

}  // namespace fleet::cli

#endif  // FLEET_CLI_AGENT_COMMANDS_H_
