#include "cli/agent_commands.h"

#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/human.h"
#include "cli/table.h"
#include "common/names.h"
#include "common/status_macros.h"

namespace fleet::cli {

namespace {

std::string Products(const v1::Agent& agent) {
  if (agent.installed().empty()) return "-";
  std::vector<std::string> products;
  for (const v1::InstalledProduct& p : agent.installed()) {
    products.push_back(absl::StrCat(
        p.product(), "@", p.version().empty() ? "unknown" : p.version()));
  }
  return absl::StrJoin(products, ",");
}

// The agent's effective labels, sorted: its enrolled ones (from its
// certificate) won over any it reported differently. "-" if none.
std::string Labels(const v1::Agent& agent) {
  if (agent.labels().empty()) return "-";
  std::map<std::string, std::string> sorted(agent.labels().begin(),
                                            agent.labels().end());
  return absl::StrJoin(sorted, ",", absl::PairFormatter("="));
}

// The root of trust the agent reported: "-" without root metadata, "v3",
// or "v3 EXPIRED" (it refuses new installs until operators push a re-signed
// root).
std::string Root(const v1::Agent& agent, absl::Time now) {
  if (agent.root_version() == 0) return "-";
  std::string root = absl::StrCat("v", agent.root_version());
  if (absl::FromUnixSeconds(agent.root_expires_unix_seconds()) < now) {
    absl::StrAppend(&root, " EXPIRED");
  }
  return root;
}

}  // namespace

absl::Status AgentsList(const AgentsListOptions& options, CommandContext& ctx) {
  if (!options.product.empty()) {
    RETURN_IF_ERROR(CheckFlag("--product", options.product,
                              ValidateProductName(options.product)));
  }
  v1::ListAgentsRequest request;
  request.set_product(options.product);
  v1::ListAgentsResponse response;
  grpc::ClientContext rpc;
  ctx.SetDeadline(rpc);
  grpc::Status status = ctx.admin().ListAgents(&rpc, request, &response);
  if (!status.ok()) return ExplainRpcError(status, ctx.Call("list agents"));

  if (ctx.structured()) return ctx.PrintResult(response);
  if (response.agents().empty()) {
    ctx.err() << (options.product.empty()
                      ? std::string("no agents have connected yet")
                      : absl::StrCat("no agents run ", options.product))
              << '\n';
    return absl::OkStatus();
  }
  Table table({{"AGENT"},
               {"HOSTNAME"},
               {"PLATFORM"},
               {"PRODUCTS"},
               {"CONNECTED"},
               {"LAST SEEN"},
               {"ROOT"},
               {"LABELS"}});
  const absl::Time now = ctx.Now();
  for (const v1::Agent& a : response.agents()) {
    table.AddRow({a.agent_id(), a.hostname(), a.platform(), Products(a),
                  a.connected() ? "yes" : "no",
                  HumanAgo(absl::FromUnixMillis(a.last_seen_unix_ms()), now),
                  Root(a, now), Labels(a)});
  }
  table.Print(ctx.out());
  return absl::OkStatus();
}

}  // namespace fleet::cli
