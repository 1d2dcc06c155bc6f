#include "cli/blacklist_commands.h"

#include "absl/strings/str_cat.h"
#include "cli/errors.h"
#include "cli/human.h"
#include "cli/table.h"
#include "common/names.h"
#include "common/status_macros.h"
#include "proto/fleet/v1/admin.grpc.pb.h"

namespace fleet::cli {
namespace {

absl::Status CheckProductVersion(const BlacklistOptions& options) {
  RETURN_IF_ERROR(CheckFlag("--product", options.product,
                            ValidateProductName(options.product)));
  return CheckFlag("--version", options.version,
                   ValidateVersion(options.version));
}

constexpr char kListHint[] = "see `fleetctl blacklist list`";

}  // namespace

absl::Status BlacklistAdd(const BlacklistOptions& options,
                          CommandContext& ctx) {
  RETURN_IF_ERROR(CheckProductVersion(options));
  if (options.reason.empty()) {
    return InvalidFlag("--reason", options.reason,
                       "say why the version is bad");
  }
  v1::AddBlacklistRequest request;
  request.set_product(options.product);
  request.set_version(options.version);
  request.set_reason(options.reason);
  v1::AddBlacklistResponse response;
  grpc::ClientContext rpc;
  ctx.SetDeadline(rpc);
  grpc::Status status = ctx.admin().AddBlacklist(&rpc, request, &response);
  const std::string release =
      absl::StrCat(options.product, " ", options.version);
  if (!status.ok()) {
    return ExplainRpcError(
        status, ctx.Call(absl::StrCat("blacklist ", release),
                         {{grpc::StatusCode::ALREADY_EXISTS,
                           absl::StrCat(release, " is already blacklisted"),
                           kListHint, /*with_detail=*/false}}));
  }
  if (ctx.structured()) return ctx.PrintResult(response);
  ctx.out() << "blacklisted " << release << '\n';
  for (const std::string& id : response.aborted_rollout_ids()) {
    ctx.out() << "aborted rollout " << id << '\n';
  }
  return absl::OkStatus();
}

absl::Status BlacklistRemove(const BlacklistOptions& options,
                             CommandContext& ctx) {
  RETURN_IF_ERROR(CheckProductVersion(options));
  v1::RemoveBlacklistRequest request;
  request.set_product(options.product);
  request.set_version(options.version);
  v1::RemoveBlacklistResponse response;
  grpc::ClientContext rpc;
  ctx.SetDeadline(rpc);
  grpc::Status status = ctx.admin().RemoveBlacklist(&rpc, request, &response);
  const std::string release =
      absl::StrCat(options.product, " ", options.version);
  if (!status.ok()) {
    return ExplainRpcError(
        status,
        ctx.Call(absl::StrCat("remove ", release, " from the blacklist"),
                 {{grpc::StatusCode::NOT_FOUND,
                   absl::StrCat(release, " is not blacklisted"), kListHint,
                   /*with_detail=*/false}}));
  }
  if (ctx.structured()) return ctx.PrintResult(response);
  ctx.out() << "removed " << release << " from the blacklist\n";
  return absl::OkStatus();
}

absl::Status BlacklistList(const std::string& product, CommandContext& ctx) {
  if (!product.empty()) {
    RETURN_IF_ERROR(
        CheckFlag("--product", product, ValidateProductName(product)));
  }
  v1::ListBlacklistRequest request;
  request.set_product(product);
  v1::ListBlacklistResponse response;
  grpc::ClientContext rpc;
  ctx.SetDeadline(rpc);
  grpc::Status status = ctx.admin().ListBlacklist(&rpc, request, &response);
  if (!status.ok()) return ExplainRpcError(status, ctx.Call("list blacklist"));

  if (ctx.structured()) return ctx.PrintResult(response);
  if (response.entries().empty()) {
    ctx.err() << "no blacklisted versions\n";
    return absl::OkStatus();
  }
  Table table({{"PRODUCT"}, {"VERSION"}, {"REASON"}, {"BY"}, {"ADDED"}});
  const absl::Time now = ctx.Now();
  for (const v1::BlacklistEntry& e : response.entries()) {
    table.AddRow({e.product(), e.version(), e.reason(), e.created_by(),
                  HumanAgo(absl::FromUnixMillis(e.created_unix_ms()), now)});
  }
  table.Print(ctx.out());
  return absl::OkStatus();
}

}  // namespace fleet::cli
