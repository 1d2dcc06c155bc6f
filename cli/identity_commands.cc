#include "cli/identity_commands.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/errors.h"
#include "cli/human.h"
#include "cli/table.h"
#include "common/names.h"
#include "common/status_macros.h"

namespace fleet::cli {
namespace {

constexpr char kTokensHint[] = "see `fleetctl enroll-token list`";

// How long until `expires`, rounded up to the second: a token created for
// 2h reads "2h", not "1h" because of the milliseconds spent getting here.
std::string ExpiresIn(int64_t expires_unix_ms, absl::Time now) {
  return HumanDuration(absl::Ceil(absl::FromUnixMillis(expires_unix_ms) - now,
                                  absl::Seconds(1)));
}

std::string LabelsText(
    const google::protobuf::Map<std::string, std::string>& labels) {
  std::vector<std::string> pairs;
  for (const auto& [key, value] : labels) {
    pairs.push_back(absl::StrCat(key, "=", value));
  }
  std::sort(pairs.begin(), pairs.end());
  return pairs.empty() ? "-" : absl::StrJoin(pairs, ",");
}

}  // namespace

absl::Status EnrollTokenCreate(const EnrollTokenCreateOptions& options,
                               CommandContext& ctx) {
  absl::StatusOr<absl::Duration> ttl = ParseHumanDuration(options.ttl);
  if (!ttl.ok() || *ttl <= absl::ZeroDuration() ||
      *ttl > absl::Hours(24 * 30)) {
    return InvalidFlag("--ttl", options.ttl,
                       "give a lifetime from 1s to 30d, e.g. 1h");
  }
  if (options.uses < 1) {
    return InvalidFlag("--uses", std::to_string(options.uses),
                       "a token needs at least one use");
  }
  v1::CreateEnrollTokenRequest request;
  request.set_ttl_seconds(absl::ToInt64Seconds(*ttl));
  request.set_uses(options.uses);
  for (const std::string& label : options.labels) {
    const size_t eq = label.find('=');
    if (eq == std::string::npos) {
      return InvalidFlag("--label", label, "expected key=value");
    }
    const std::string key = label.substr(0, eq);
    const std::string value = label.substr(eq + 1);
    RETURN_IF_ERROR(CheckFlag("--label", label, ValidateLabel(key, value)));
    (*request.mutable_labels())[key] = value;
  }
  v1::CreateEnrollTokenResponse response;
  grpc::ClientContext rpc;
  ctx.SetDeadline(rpc);
  grpc::Status status =
      ctx.identity().CreateEnrollToken(&rpc, request, &response);
  if (!status.ok()) {
    return ExplainRpcError(status, ctx.Call("create an enrollment token"));
  }
  if (ctx.structured()) return ctx.PrintResult(response);
  ctx.out() << response.token() << '\n';
  ctx.err() << "token " << response.info().token_id() << ": "
            << response.info().uses_left() << " use(s), expires in "
            << ExpiresIn(response.info().expires_unix_ms(), ctx.Now())
            << "; shown only now.\n"
            << "start an agent with it:\n"
            << "  fleet-agent --controller " << ctx.options().controller
            << " --tls-ca ca.crt --enroll-token " << response.token()
            << " --state-dir DIR --product P --exec PATH\n";
  return absl::OkStatus();
}

absl::Status EnrollTokenList(CommandContext& ctx) {
  v1::ListEnrollTokensResponse response;
  grpc::ClientContext rpc;
  ctx.SetDeadline(rpc);
  grpc::Status status = ctx.identity().ListEnrollTokens(
      &rpc, v1::ListEnrollTokensRequest(), &response);
  if (!status.ok()) {
    return ExplainRpcError(status, ctx.Call("list enrollment tokens"));
  }
  if (ctx.structured()) return ctx.PrintResult(response);
  if (response.tokens().empty()) {
    ctx.err() << "no usable enrollment tokens\n";
    return absl::OkStatus();
  }
  Table table({{"ID"},
               {"USES LEFT", Table::Align::kRight},
               {"EXPIRES IN"},
               {"LABELS"},
               {"CREATED BY"},
               {"CREATED"}});
  const absl::Time now = ctx.Now();
  for (const v1::EnrollToken& token : response.tokens()) {
    table.AddRow(
        {token.token_id(), std::to_string(token.uses_left()),
         ExpiresIn(token.expires_unix_ms(), now), LabelsText(token.labels()),
         token.created_by(),
         HumanAgo(absl::FromUnixMillis(token.created_unix_ms()), now)});
  }
  table.Print(ctx.out());
  return absl::OkStatus();
}

absl::Status EnrollTokenDelete(const std::string& token_id,
                               CommandContext& ctx) {
  v1::DeleteEnrollTokenRequest request;
  request.set_token_id(token_id);
  v1::DeleteEnrollTokenResponse response;
  grpc::ClientContext rpc;
  ctx.SetDeadline(rpc);
  grpc::Status status =
      ctx.identity().DeleteEnrollToken(&rpc, request, &response);
  if (!status.ok()) {
    return ExplainRpcError(
        status, ctx.Call(absl::StrCat("delete enrollment token ", token_id),
                         {{grpc::StatusCode::NOT_FOUND,
                           absl::StrCat("no usable token ", token_id),
                           kTokensHint, /*with_detail=*/false}}));
  }
  if (ctx.structured()) return ctx.PrintResult(response);
  ctx.out() << "deleted enrollment token " << token_id << '\n';
  return absl::OkStatus();
}

absl::Status AgentsRevoke(const std::string& agent_id,
                          const std::string& reason, CommandContext& ctx) {
  RETURN_IF_ERROR(
      CheckFlag("AGENT_ID", agent_id, ValidateId(agent_id, "agent id")));
  v1::RevokeAgentRequest request;
  request.set_agent_id(agent_id);
  request.set_reason(reason);
  v1::RevokeAgentResponse response;
  grpc::ClientContext rpc;
  ctx.SetDeadline(rpc);
  grpc::Status status = ctx.identity().RevokeAgent(&rpc, request, &response);
  if (!status.ok()) {
    return ExplainRpcError(status,
                           ctx.Call(absl::StrCat("revoke agent ", agent_id)));
  }
  if (ctx.structured()) return ctx.PrintResult(response);
  ctx.out() << "revoked agent " << agent_id
            << (response.stream_closed() ? " (its stream was cut)" : "")
            << '\n';
  return absl::OkStatus();
}

absl::Status AuditList(int limit, CommandContext& ctx) {
  if (limit < 1 || limit > 10000) {
    return InvalidFlag("--limit", std::to_string(limit), "give 1..10000");
  }
  v1::ListAuditRequest request;
  request.set_limit(limit);
  v1::ListAuditResponse response;
  grpc::ClientContext rpc;
  ctx.SetDeadline(rpc);
  grpc::Status status = ctx.identity().ListAudit(&rpc, request, &response);
  if (!status.ok())
    return ExplainRpcError(status, ctx.Call("list the audit log"));
  if (ctx.structured()) return ctx.PrintResult(response);
  if (response.records().empty()) {
    ctx.err() << "the audit log is empty\n";
    return absl::OkStatus();
  }
  Table table({{"TIME"}, {"ACTOR"}, {"ACTION"}, {"DETAIL"}});
  for (const v1::AuditRecord& record : response.records()) {
    table.AddRow({absl::FormatTime("%Y-%m-%d %H:%M:%S",
                                   absl::FromUnixMillis(record.time_unix_ms()),
                                   absl::UTCTimeZone()),
                  record.actor(), record.action(), record.detail()});
  }
  table.Print(ctx.out());
  return absl::OkStatus();
}

}  // namespace fleet::cli
