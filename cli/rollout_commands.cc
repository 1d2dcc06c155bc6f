#include "cli/rollout_commands.h"

#include <unistd.h>

#include <algorithm>
#include <iostream>
#include <map>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "cli/errors.h"
#include "cli/human.h"
#include "cli/table.h"
#include "common/names.h"
#include "common/status_macros.h"

namespace fleet::cli {

namespace {

std::string EnumLabel(const std::string& name, absl::string_view prefix) {
  absl::string_view rest = name;
  if (!absl::ConsumePrefix(&rest, prefix)) rest = name;
  if (rest.empty()) return "unknown";
  return absl::StrReplaceAll(absl::AsciiStrToLower(rest), {{"_", "-"}});
}

std::string SelectorText(const v1::Selector& selector) {
  std::vector<std::string> parts;
  if (!selector.platform().empty()) {
    parts.push_back(absl::StrCat("platform ", selector.platform()));
  }
  // Proto maps are unordered; sort for output that is the same every time.
  std::map<std::string, std::string> labels(selector.labels().begin(),
                                            selector.labels().end());
  for (const auto& [key, value] : labels) {
    parts.push_back(absl::StrCat(key, "=", value));
  }
  if (parts.empty()) return "all agents";
  return absl::StrJoin(parts, ", ");
}

std::string StageText(const v1::Rollout& rollout) {
  const int stages = std::max(rollout.stages_size(), 1);
  const int current =
      std::min(static_cast<int>(rollout.current_stage()), stages - 1);
  std::string text = absl::StrCat(current + 1, "/", stages);
  if (rollout.stages_size() > 0) {
    absl::StrAppend(&text, " (", rollout.stages(current).percent(), "%)");
  }
  return text;
}

std::string VersionOrDash(absl::string_view version) {
  return version.empty() ? "-" : std::string(version);
}

// 0.05 -> "5%".
std::string PercentText(double fraction) {
  return absl::StrCat(absl::StrFormat("%.4g", fraction * 100), "%");
}

// "pause when more than 5% of at least 3 finished targets failed, then
// blacklist; now 1 of 4 failed (25%)".
std::string GateText(const v1::Rollout& r) {
  const v1::FailurePolicy& p = r.failure_policy();
  std::string text = absl::StrCat(
      p.action() == v1::FAILURE_ACTION_ABORT ? "abort" : "pause",
      " when more than ", PercentText(p.max_failure_rate()), " of at least ",
      p.min_samples(), " finished targets failed");
  if (p.blacklist()) absl::StrAppend(&text, ", then blacklist the version");
  const v1::TargetCounts& c = r.counts();
  const uint32_t samples = c.healthy() + c.failed();
  absl::StrAppend(&text, "; now ", c.failed(), " of ", samples, " failed");
  if (samples > 0) {
    absl::StrAppend(&text, " (",
                    PercentText(static_cast<double>(c.failed()) / samples),
                    ")");
  }
  return text;
}

// "2 reverting, 3 reverted, 1 revert failed"; "" when nothing was directed
// back.
std::string RevertText(const v1::Rollout& r) {
  const v1::TargetCounts& c = r.counts();
  if (c.reverting() + c.reverted() + c.revert_failed() == 0) return "";
  return absl::StrCat(c.reverting(), " reverting, ", c.reverted(),
                      " reverted, ", c.revert_failed(), " revert failed");
}

void PrintRolloutSummary(const v1::Rollout& r, const CommandContext& ctx) {
  const absl::Time now = ctx.Now();
  const v1::TargetCounts& c = r.counts();
  std::vector<std::pair<std::string, std::string>> fields = {
      {"ROLLOUT", r.rollout_id()},
      {"RELEASE", absl::StrCat(r.product(), " ", r.version())},
      {"SELECTOR", SelectorText(r.selector())},
      {"STATE", PaintedRolloutState(r.state(), ctx)},
  };
  if (!r.state_reason().empty()) fields.push_back({"REASON", r.state_reason()});
  fields.push_back({"STAGE", StageText(r)});
  if (r.max_in_flight().limit_case() == v1::MaxInFlight::kCount) {
    fields.push_back(
        {"MAX IN FLIGHT", absl::StrCat(r.max_in_flight().count())});
  } else if (r.max_in_flight().limit_case() == v1::MaxInFlight::kPercent) {
    fields.push_back(
        {"MAX IN FLIGHT", absl::StrCat(r.max_in_flight().percent(), "%")});
  }
  if (r.has_failure_policy()) fields.push_back({"GATE", GateText(r)});
  fields.push_back(
      {"TARGETS",
       absl::StrCat(c.total(), " total: ", c.healthy(), " healthy, ",
                    c.in_flight(), " in flight, ", c.pending(), " pending, ",
                    c.failed(), " failed, ", c.skipped(), " skipped")});
  if (const std::string revert = RevertText(r); !revert.empty()) {
    fields.push_back({"ROLLBACK", revert});
  }
  fields.push_back(
      {"CREATED", HumanAgo(absl::FromUnixMillis(r.created_unix_ms()), now)});
  fields.push_back(
      {"UPDATED", HumanAgo(absl::FromUnixMillis(r.updated_unix_ms()), now)});
  PrintFields(fields, ctx.out());
}

absl::Status CheckRolloutId(const std::string& rollout_id) {
  if (absl::Status s = ValidateId(rollout_id, "rollout id"); !s.ok()) {
    return UsageError(
        absl::StrCat("invalid rollout id \"", rollout_id, "\": ", s.message()));
  }
  return absl::OkStatus();
}

// The hints every state change shares: an unknown id, a state the change
// does not apply to (the controller's message names it).
RpcCall ChangeCall(const CommandContext& ctx, absl::string_view verb,
                   const std::string& rollout_id) {
  return ctx.Call(
      absl::StrCat(verb, " rollout ", rollout_id),
      {{grpc::StatusCode::NOT_FOUND,
        absl::StrCat("rollout ", rollout_id, " does not exist"),
        "see `fleetctl rollout list` for rollout ids", /*with_detail=*/false},
       {grpc::StatusCode::FAILED_PRECONDITION,
        absl::StrCat("cannot ", verb, " rollout ", rollout_id),
        absl::StrCat("see `fleetctl rollout status ", rollout_id, "`")}});
}

std::string Plural(uint32_t n, absl::string_view one, absl::string_view many) {
  return absl::StrCat(n, " ", n == 1 ? one : many);
}

void PrintChanged(const v1::Rollout& r, absl::string_view verb,
                  CommandContext& ctx) {
  const v1::TargetCounts& c = r.counts();
  ctx.out() << "rollout " << r.rollout_id() << " " << verb;
  if (r.state() == v1::ROLLOUT_STATE_PAUSED) {
    ctx.out() << ": " << Plural(c.in_flight(), "update", "updates")
              << " in flight will finish, "
              << Plural(c.pending(), "pending target waits",
                        "pending targets wait")
              << "; continue with `fleetctl rollout resume " << r.rollout_id()
              << "`\n";
  } else if (r.state() == v1::ROLLOUT_STATE_ABORTED) {
    ctx.out() << ": " << Plural(c.in_flight(), "update", "updates")
              << " in flight will finish, "
              << Plural(c.pending(), "pending target", "pending targets")
              << " will not be updated\n";
  } else {
    ctx.out() << ": stage " << StageText(r) << ", "
              << Plural(c.in_flight(), "update", "updates") << " in flight, "
              << c.pending() << " pending\n";
  }
}

}  // namespace

std::string RolloutStateLabel(v1::RolloutState state) {
  return EnumLabel(v1::RolloutState_Name(state), "ROLLOUT_STATE_");
}

std::string TargetStateLabel(v1::TargetState state) {
  return EnumLabel(v1::TargetState_Name(state), "TARGET_STATE_");
}

std::string PaintedRolloutState(v1::RolloutState state,
                                const CommandContext& ctx) {
  const std::string label = RolloutStateLabel(state);
  switch (state) {
    case v1::ROLLOUT_STATE_COMPLETED:
      return ctx.Paint(label, Color::kGreen);
    case v1::ROLLOUT_STATE_PAUSED:
      return ctx.Paint(label, Color::kYellow);
    case v1::ROLLOUT_STATE_ABORTED:
      return ctx.Paint(label, Color::kRed);
    default:
      return label;
  }
}

std::string PaintedTargetState(v1::TargetState state,
                               const CommandContext& ctx) {
  const std::string label = TargetStateLabel(state);
  switch (state) {
    case v1::TARGET_STATE_HEALTHY:
      return ctx.Paint(label, Color::kGreen);
    case v1::TARGET_STATE_FAILED:
      return ctx.Paint(label, Color::kRed);
    case v1::TARGET_STATE_ROLLED_BACK:
      return ctx.Paint(label, Color::kYellow);
    case v1::TARGET_STATE_SKIPPED:
    case v1::TARGET_STATE_PENDING:
      return ctx.Paint(label, Color::kDim);
    default:
      return label;
  }
}

namespace {

absl::Status AddFailurePolicy(const RolloutCreateOptions& options,
                              v1::CreateRolloutRequest& request) {
  if (options.max_failure_rate.empty()) {
    for (const auto& [flag, set] :
         {std::pair<const char*, bool>{"--min-samples",
                                       !options.min_samples.empty()},
          {"--on-failure", !options.on_failure.empty()},
          {"--blacklist-on-failure", options.blacklist_on_failure}}) {
      if (set) {
        return UsageError(absl::StrCat(
            flag, " needs --max-failure-rate: it configures the failure gate"));
      }
    }
    return absl::OkStatus();
  }
  v1::FailurePolicy* policy = request.mutable_failure_policy();
  absl::string_view text = options.max_failure_rate;
  const bool percent = absl::ConsumeSuffix(&text, "%");
  double rate = 0;
  if (!absl::SimpleAtod(text, &rate) || !(rate >= 0) ||
      rate > (percent ? 100 : 1)) {
    return InvalidFlag("--max-failure-rate", options.max_failure_rate,
                       "expected a percent from 0% to 100% (5%) or a "
                       "fraction from 0 to 1 (0.05)");
  }
  policy->set_max_failure_rate(percent ? rate / 100 : rate);
  // At least 1: the gate needs a sample anyway, and a policy of rate 0 and
  // min samples 0 would mean "no gate" to the controller.
  uint32_t min_samples = 1;
  if (!options.min_samples.empty() &&
      !absl::SimpleAtoi(options.min_samples, &min_samples)) {
    return InvalidFlag("--min-samples", options.min_samples,
                       "expected a count of finished targets, e.g. 3");
  }
  policy->set_min_samples(std::max<uint32_t>(min_samples, 1));
  if (options.on_failure.empty() || options.on_failure == "pause") {
    policy->set_action(v1::FAILURE_ACTION_PAUSE);
  } else if (options.on_failure == "abort") {
    policy->set_action(v1::FAILURE_ACTION_ABORT);
  } else {
    return InvalidFlag("--on-failure", options.on_failure,
                       "expected pause or abort");
  }
  policy->set_blacklist(options.blacklist_on_failure);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<v1::CreateRolloutRequest> BuildCreateRolloutRequest(
    const RolloutCreateOptions& options) {
  RETURN_IF_ERROR(CheckFlag("--product", options.product,
                            ValidateProductName(options.product)));
  RETURN_IF_ERROR(CheckFlag("--version", options.version,
                            ValidateVersion(options.version)));
  v1::CreateRolloutRequest request;
  request.set_product(options.product);
  request.set_version(options.version);
  if (!options.platform.empty()) {
    RETURN_IF_ERROR(CheckFlag("--platform", options.platform,
                              ValidatePlatform(options.platform)));
    request.mutable_selector()->set_platform(options.platform);
  }
  auto& labels = *request.mutable_selector()->mutable_labels();
  for (const std::string& pair : options.selector) {
    size_t eq = pair.find('=');
    if (eq == std::string::npos) {
      return InvalidFlag("--selector", pair, "expected key=value");
    }
    std::string key = pair.substr(0, eq);
    std::string value = pair.substr(eq + 1);
    RETURN_IF_ERROR(CheckFlag("--selector", pair, ValidateLabel(key, value)));
    if (!labels.insert({key, value}).second) {
      return InvalidFlag("--selector", pair,
                         absl::StrCat("label ", key, " is given twice"));
    }
  }

  int64_t bake_seconds = 0;
  if (!options.bake.empty()) {
    if (options.stages.empty()) {
      return UsageError(
          "--bake needs --stages: it is the healthy time between stages");
    }
    absl::StatusOr<absl::Duration> bake = ParseHumanDuration(options.bake);
    RETURN_IF_ERROR(CheckFlag("--bake", options.bake, bake.status()));
    bake_seconds = absl::ToInt64Seconds(*bake);
  }
  uint32_t previous = 0;
  for (const std::string& text : options.stages) {
    uint32_t percent = 0;
    if (!absl::SimpleAtoi(text, &percent) || percent < 1 || percent > 100) {
      return InvalidFlag("--stages", text,
                         "each stage is a percent from 1 to 100");
    }
    if (percent <= previous) {
      return InvalidFlag("--stages", absl::StrJoin(options.stages, ","),
                         "stage percents must increase, e.g. 10,50,100");
    }
    previous = percent;
    v1::Stage* stage = request.add_stages();
    stage->set_percent(percent);
    stage->set_bake_seconds(bake_seconds);
  }
  if (!options.max_in_flight.empty()) {
    absl::string_view text = options.max_in_flight;
    const bool percent = absl::ConsumeSuffix(&text, "%");
    uint32_t n = 0;
    if (!absl::SimpleAtoi(text, &n) || n < 1 || (percent && n > 100)) {
      return InvalidFlag("--max-in-flight", options.max_in_flight,
                         "expected a count such as 5 or a percent of the "
                         "targets from 1% to 100%");
    }
    if (percent) {
      request.mutable_max_in_flight()->set_percent(n);
    } else {
      request.mutable_max_in_flight()->set_count(n);
    }
  }
  RETURN_IF_ERROR(AddFailurePolicy(options, request));
  return request;
}

absl::Status RolloutCreate(const RolloutCreateOptions& options,
                           CommandContext& ctx) {
  absl::StatusOr<v1::CreateRolloutRequest> request =
      BuildCreateRolloutRequest(options);
  if (!request.ok()) return request.status();

  const std::string release =
      absl::StrCat(options.product, " ", options.version);
  // FAILED_PRECONDITION: no release of that version (for that platform); the
  // controller's message says which.
  std::string target = release;
  std::string push_command =
      absl::StrCat("fleetctl release push --product ", options.product,
                   " --version ", options.version);
  if (!options.platform.empty()) {
    absl::StrAppend(&target, " to ", options.platform);
    absl::StrAppend(&push_command, " --platform ", options.platform);
  }
  v1::Rollout rollout;
  grpc::ClientContext rpc;
  ctx.SetDeadline(rpc);
  grpc::Status status = ctx.admin().CreateRollout(&rpc, *request, &rollout);
  if (status.error_code() == grpc::StatusCode::FAILED_PRECONDITION &&
      absl::StartsWith(status.error_message(), "version ")) {
    // The version is blacklisted; the message says why.
    return ExplainRpcError(
        status,
        ctx.Call(absl::StrCat("create a rollout of ", release),
                 {{grpc::StatusCode::FAILED_PRECONDITION,
                   absl::StrCat("cannot roll out ", target),
                   absl::StrCat("roll out another version, or see `fleetctl "
                                "blacklist list --product ",
                                options.product, "`")}}));
  }
  if (status.error_code() == grpc::StatusCode::FAILED_PRECONDITION &&
      absl::StartsWith(status.error_message(), "active rollout ")) {
    // Another rollout already moves some of these agents; the message names
    // it.
    return ExplainRpcError(
        status, ctx.Call(absl::StrCat("create a rollout of ", release),
                         {{grpc::StatusCode::FAILED_PRECONDITION,
                           absl::StrCat("cannot roll out ", target),
                           "wait for that rollout to complete, or end it "
                           "with `fleetctl rollout abort ID`"}}));
  }
  if (!status.ok()) {
    return ExplainRpcError(
        status,
        ctx.Call(absl::StrCat("create a rollout of ", release),
                 {{grpc::StatusCode::FAILED_PRECONDITION,
                   absl::StrCat("cannot roll out ", target),
                   absl::StrCat("push the release first with `", push_command,
                                "`, or see `fleetctl release list`")}}));
  }

  if (ctx.structured()) return ctx.PrintResult(rollout);
  const uint32_t n = rollout.counts().total();
  ctx.out() << "rollout " << rollout.rollout_id() << " created: " << n
            << (n == 1 ? " target" : " targets") << '\n';
  if (n == 0) {
    ctx.err() << "note: no connected agent runs " << options.product
              << " and matches the selector yet; agents that appear while "
                 "the rollout runs join it\n";
  }
  return absl::OkStatus();
}

absl::Status RolloutStatus(const std::string& rollout_id, CommandContext& ctx) {
  RETURN_IF_ERROR(CheckRolloutId(rollout_id));
  v1::GetRolloutRequest request;
  request.set_rollout_id(rollout_id);
  v1::Rollout rollout;
  grpc::ClientContext rpc;
  ctx.SetDeadline(rpc);
  grpc::Status status = ctx.admin().GetRollout(&rpc, request, &rollout);
  if (!status.ok()) {
    return ExplainRpcError(
        status,
        ctx.Call(absl::StrCat("get rollout ", rollout_id),
                 {{grpc::StatusCode::NOT_FOUND,
                   absl::StrCat("rollout ", rollout_id, " does not exist"),
                   "see `fleetctl rollout list` for rollout ids",
                   /*with_detail=*/false}}));
  }

  if (ctx.structured()) return ctx.PrintResult(rollout);
  PrintRolloutSummary(rollout, ctx);
  if (rollout.targets().empty()) {
    ctx.out() << "\nno targets: no agent matches the selector yet\n";
    return absl::OkStatus();
  }
  ctx.out() << '\n';
  // The REVERT column only once some target was directed back (abort
  // --rollback, or led back from a version the gate blacklisted).
  const bool reverts =
      std::any_of(rollout.targets().begin(), rollout.targets().end(),
                  [](const v1::RolloutTarget& t) {
                    return t.revert_state() != v1::TARGET_STATE_UNSPECIFIED;
                  });
  std::vector<Table::Column> columns = {
      {"AGENT"}, {"STATE"}, {"FROM → TO"}, {"UPDATED"}, {"ERROR"}};
  if (reverts) columns.insert(columns.begin() + 3, {"REVERT"});
  Table table(std::move(columns));
  const absl::Time now = ctx.Now();
  for (const v1::RolloutTarget& t : rollout.targets()) {
    std::vector<std::string> row = {
        t.agent_id(), PaintedTargetState(t.state(), ctx),
        absl::StrCat(VersionOrDash(t.from_version()), " → ", rollout.version()),
        HumanAgo(absl::FromUnixMillis(t.updated_unix_ms()), now), t.error()};
    if (reverts) {
      std::string revert;
      if (t.revert_state() != v1::TARGET_STATE_UNSPECIFIED) {
        revert = absl::StrCat("→ ", VersionOrDash(t.revert_to_version()), " ",
                              TargetStateLabel(t.revert_state()));
        if (!t.revert_error().empty()) {
          absl::StrAppend(&revert, ": ", t.revert_error());
        }
      }
      row.insert(row.begin() + 3, std::move(revert));
    }
    table.AddRow(std::move(row));
  }
  table.Print(ctx.out());
  return absl::OkStatus();
}

absl::Status RolloutList(const RolloutListOptions& options,
                         CommandContext& ctx) {
  if (!options.product.empty()) {
    RETURN_IF_ERROR(CheckFlag("--product", options.product,
                              ValidateProductName(options.product)));
  }
  v1::ListRolloutsRequest request;
  request.set_product(options.product);
  v1::ListRolloutsResponse response;
  grpc::ClientContext rpc;
  ctx.SetDeadline(rpc);
  grpc::Status status = ctx.admin().ListRollouts(&rpc, request, &response);
  if (!status.ok()) return ExplainRpcError(status, ctx.Call("list rollouts"));

  if (ctx.structured()) return ctx.PrintResult(response);
  if (response.rollouts().empty()) {
    ctx.err() << "no rollouts found; start one with `fleetctl rollout "
                 "create`\n";
    return absl::OkStatus();
  }
  Table table({{"ROLLOUT"},
               {"PRODUCT"},
               {"VERSION"},
               {"STATE"},
               {"STAGE"},
               {"TARGETS", Table::Align::kRight},
               {"HEALTHY", Table::Align::kRight},
               {"FAILED", Table::Align::kRight},
               {"CREATED"}});
  const absl::Time now = ctx.Now();
  for (const v1::Rollout& r : response.rollouts()) {
    table.AddRow({r.rollout_id(), r.product(), r.version(),
                  PaintedRolloutState(r.state(), ctx), StageText(r),
                  absl::StrCat(r.counts().total()),
                  absl::StrCat(r.counts().healthy()),
                  absl::StrCat(r.counts().failed()),
                  HumanAgo(absl::FromUnixMillis(r.created_unix_ms()), now)});
  }
  table.Print(ctx.out());
  return absl::OkStatus();
}

absl::Status RolloutPause(const RolloutChangeOptions& options,
                          CommandContext& ctx) {
  RETURN_IF_ERROR(CheckRolloutId(options.rollout_id));
  v1::PauseRolloutRequest request;
  request.set_rollout_id(options.rollout_id);
  request.set_reason(options.reason);
  v1::Rollout rollout;
  grpc::ClientContext rpc;
  ctx.SetDeadline(rpc);
  grpc::Status status = ctx.admin().PauseRollout(&rpc, request, &rollout);
  if (!status.ok()) {
    return ExplainRpcError(status,
                           ChangeCall(ctx, "pause", options.rollout_id));
  }
  if (ctx.structured()) return ctx.PrintResult(rollout);
  PrintChanged(rollout, "paused", ctx);
  return absl::OkStatus();
}

absl::Status RolloutResume(const std::string& rollout_id, CommandContext& ctx) {
  RETURN_IF_ERROR(CheckRolloutId(rollout_id));
  v1::ResumeRolloutRequest request;
  request.set_rollout_id(rollout_id);
  v1::Rollout rollout;
  grpc::ClientContext rpc;
  ctx.SetDeadline(rpc);
  grpc::Status status = ctx.admin().ResumeRollout(&rpc, request, &rollout);
  if (!status.ok()) {
    return ExplainRpcError(status, ChangeCall(ctx, "resume", rollout_id));
  }
  if (ctx.structured()) return ctx.PrintResult(rollout);
  PrintChanged(rollout, "resumed", ctx);
  return absl::OkStatus();
}

absl::Status RolloutAbort(const RolloutChangeOptions& options,
                          CommandContext& ctx) {
  RETURN_IF_ERROR(CheckRolloutId(options.rollout_id));
  v1::AbortRolloutRequest request;
  request.set_rollout_id(options.rollout_id);
  request.set_reason(options.reason);
  request.set_rollback(options.rollback);
  v1::Rollout rollout;
  grpc::ClientContext rpc;
  ctx.SetDeadline(rpc);
  grpc::Status status = ctx.admin().AbortRollout(&rpc, request, &rollout);
  if (!status.ok()) {
    return ExplainRpcError(status,
                           ChangeCall(ctx, "abort", options.rollout_id));
  }
  if (ctx.structured()) return ctx.PrintResult(rollout);
  PrintChanged(rollout, "aborted", ctx);
  if (options.rollback) {
    ctx.out() << "targets that left their previous version are being rolled "
                 "back to it; see their progress with `fleetctl rollout "
                 "status "
              << rollout.rollout_id() << "`\n";
  }
  return absl::OkStatus();
}

std::vector<StageProgress> StageBreakdown(const v1::Rollout& rollout) {
  std::vector<StageProgress> stages(std::max(rollout.stages_size(), 1));
  for (int i = 0; i < rollout.stages_size(); ++i) {
    stages[i].percent = rollout.stages(i).percent();
  }
  for (const v1::RolloutTarget& t : rollout.targets()) {
    StageProgress& stage =
        stages[std::min<size_t>(t.stage(), stages.size() - 1)];
    ++stage.total;
    switch (t.state()) {
      case v1::TARGET_STATE_PENDING:
        ++stage.pending;
        break;
      case v1::TARGET_STATE_HEALTHY:
        ++stage.succeeded;
        break;
      case v1::TARGET_STATE_FAILED:
      case v1::TARGET_STATE_ROLLED_BACK:
        ++stage.failed;
        break;
      case v1::TARGET_STATE_SKIPPED:
        ++stage.skipped;
        break;
      default:
        // DIRECTED .. RESTARTED, and any state newer than this fleetctl.
        ++stage.in_flight;
        break;
    }
  }
  return stages;
}

namespace {

bool TrippedByGate(const v1::Rollout& r) {
  return absl::StartsWith(r.state_reason(), "gate:");
}

// Ended, and nothing is still being led back (abort --rollback, or leading
// back after the gate blacklisted the version): an operator waiting on an
// aborted rollout wants its agents back where they were, not just the state.
bool WatchEnds(const v1::Rollout& r) {
  const bool ended =
      r.state() == v1::ROLLOUT_STATE_COMPLETED ||
      r.state() == v1::ROLLOUT_STATE_ABORTED ||
      (r.state() == v1::ROLLOUT_STATE_PAUSED && TrippedByGate(r));
  return ended && r.counts().reverting() == 0;
}

// "[########------------] 40%": the share of targets that are final.
std::string ProgressBar(const v1::Rollout& r) {
  constexpr int kWidth = 20;
  const v1::TargetCounts& c = r.counts();
  const uint32_t final_targets = c.healthy() + c.failed() + c.skipped();
  const double done =
      c.total() == 0 ? 0 : static_cast<double>(final_targets) / c.total();
  const int filled = static_cast<int>(done * kWidth);
  return absl::StrCat("[", std::string(filled, '#'),
                      std::string(kWidth - filled, '-'), "] ",
                      static_cast<int>(done * 100), "%");
}

// The gate in a few words: "no gate", "waiting for 3 samples (2 so far, 1
// failed)", "ok: 1 of 6 failed (17% <= 20%)", "tripped: <reason>".
std::string GateState(const v1::Rollout& r) {
  if (!r.has_failure_policy()) return "no gate";
  if (TrippedByGate(r)) return absl::StrCat("tripped (", r.state_reason(), ")");
  const v1::FailurePolicy& p = r.failure_policy();
  const v1::TargetCounts& c = r.counts();
  const uint32_t samples = c.healthy() + c.failed();
  if (samples < p.min_samples()) {
    return absl::StrCat("waiting for ", p.min_samples(), " samples (", samples,
                        " so far, ", c.failed(), " failed)");
  }
  const double rate = static_cast<double>(c.failed()) / samples;
  return absl::StrCat("ok: ", c.failed(), " of ", samples, " failed (",
                      PercentText(rate),
                      " <= ", PercentText(p.max_failure_rate()), ")");
}

std::string StateWithReason(const v1::Rollout& r) {
  std::string text = RolloutStateLabel(r.state());
  if (!r.state_reason().empty())
    absl::StrAppend(&text, " (", r.state_reason(), ")");
  return text;
}

// "1 succeeded, 2 in flight" (only the non-zero counts; "no targets").
std::string StageCounts(const StageProgress& s) {
  std::vector<std::string> parts;
  for (const auto& [n, what] :
       {std::pair<uint32_t, const char*>{s.succeeded, "succeeded"},
        {s.failed, "failed"},
        {s.skipped, "skipped"},
        {s.in_flight, "in flight"},
        {s.pending, "pending"}}) {
    if (n > 0) parts.push_back(absl::StrCat(n, " ", what));
  }
  if (parts.empty()) return "no targets";
  return absl::StrJoin(parts, ", ");
}

// One line with every fact the frame shows, without the time: two polls
// with the same line are "no change".
std::string WatchLine(const v1::Rollout& r) {
  const v1::TargetCounts& c = r.counts();
  std::string line =
      absl::StrCat("rollout ", r.rollout_id(), " ", StateWithReason(r),
                   ", stage ", StageText(r), " ", ProgressBar(r), " ",
                   c.healthy() + c.failed() + c.skipped(), "/", c.total(),
                   " final: ", c.healthy(), " succeeded, ", c.failed(),
                   " failed, ", c.skipped(), " skipped, ", c.in_flight(),
                   " in flight, ", c.pending(), " pending");
  const std::vector<StageProgress> stages = StageBreakdown(r);
  for (size_t i = 0; i < stages.size(); ++i) {
    absl::StrAppend(&line, " | stage ", i + 1, " (", stages[i].percent,
                    "%): ", StageCounts(stages[i]));
  }
  if (const std::string revert = RevertText(r); !revert.empty()) {
    absl::StrAppend(&line, " | rollback: ", revert);
  }
  absl::StrAppend(&line, " | gate ", GateState(r));
  return line;
}

// The terminal frame; ends with a newline.
std::string WatchFrame(const v1::Rollout& r, absl::Duration interval,
                       absl::Time now) {
  std::ostringstream frame;
  const v1::TargetCounts& c = r.counts();
  frame << "rollout " << r.rollout_id() << ": " << r.product() << " "
        << r.version() << ", " << RolloutStateLabel(r.state()) << ", stage "
        << StageText(r) << "\n";
  if (!r.state_reason().empty())
    frame << "reason: " << r.state_reason() << "\n";
  frame << ProgressBar(r) << "  " << c.healthy() + c.failed() + c.skipped()
        << " of " << c.total() << " targets final\n";
  Table table({{"STAGE"},
               {"TARGETS", Table::Align::kRight},
               {"PENDING", Table::Align::kRight},
               {"IN FLIGHT", Table::Align::kRight},
               {"SUCCEEDED", Table::Align::kRight},
               {"FAILED", Table::Align::kRight},
               {"SKIPPED", Table::Align::kRight}});
  const std::vector<StageProgress> stages = StageBreakdown(r);
  for (size_t i = 0; i < stages.size(); ++i) {
    const StageProgress& s = stages[i];
    table.AddRow({absl::StrCat(i + 1, " (", s.percent, "%)",
                               i == r.current_stage() ? " <" : ""),
                  absl::StrCat(s.total), absl::StrCat(s.pending),
                  absl::StrCat(s.in_flight), absl::StrCat(s.succeeded),
                  absl::StrCat(s.failed), absl::StrCat(s.skipped)});
  }
  table.Print(frame);
  if (const std::string revert = RevertText(r); !revert.empty()) {
    frame << "rollback: " << revert << "\n";
  }
  frame << "gate: " << GateState(r) << "\n";
  frame << absl::FormatTime("%H:%M:%S UTC", now, absl::UTCTimeZone())
        << ", every " << absl::FormatDuration(interval)
        << "; Ctrl-C stops watching, not the rollout\n";
  return frame.str();
}

absl::Status WatchOutcome(const v1::Rollout& r) {
  if (r.state() == v1::ROLLOUT_STATE_COMPLETED) return absl::OkStatus();
  const std::string what =
      absl::StrCat("rollout ", r.rollout_id(), " ", StateWithReason(r));
  if (r.state() == v1::ROLLOUT_STATE_ABORTED) {
    return WithExitCode(
        absl::AbortedError(absl::StrCat(what, "; see `fleetctl rollout status ",
                                        r.rollout_id(), "`")),
        kExitRolloutAborted);
  }
  return WithExitCode(
      absl::FailedPreconditionError(absl::StrCat(
          what, "; it waits for an operator: `fleetctl rollout resume ",
          r.rollout_id(), "` or `fleetctl rollout abort ", r.rollout_id(),
          "`")),
      kExitRolloutPausedByGate);
}

bool Transient(grpc::StatusCode code) {
  return code == grpc::StatusCode::UNAVAILABLE ||
         code == grpc::StatusCode::DEADLINE_EXCEEDED;
}

}  // namespace

absl::Status RolloutWatch(const RolloutWatchOptions& options,
                          CommandContext& ctx) {
  RETURN_IF_ERROR(CheckRolloutId(options.rollout_id));
  absl::StatusOr<absl::Duration> interval =
      ParseHumanDuration(options.interval);
  if (!interval.ok() || *interval < absl::Milliseconds(100)) {
    return InvalidFlag("--interval", options.interval,
                       "expected a duration of at least 100ms, e.g. 1s");
  }
  const bool terminal = options.terminal.value_or(&ctx.out() == &std::cout &&
                                                  isatty(STDOUT_FILENO) == 1);
  const std::function<void(absl::Duration)> sleep =
      options.sleep ? options.sleep
                    : [](absl::Duration d) { absl::SleepFor(d); };
  const RpcCall call = ctx.Call(
      absl::StrCat("get rollout ", options.rollout_id),
      {{grpc::StatusCode::NOT_FOUND,
        absl::StrCat("rollout ", options.rollout_id, " does not exist"),
        "see `fleetctl rollout list` for rollout ids",
        /*with_detail=*/false}});

  std::string last_printed;  // line, frame or JSON of the last output
  size_t frame_lines = 0;    // lines of the frame on screen
  std::optional<absl::Time> unreachable_since;
  while (true) {
    v1::GetRolloutRequest request;
    request.set_rollout_id(options.rollout_id);
    v1::Rollout rollout;
    grpc::ClientContext rpc;
    ctx.SetDeadline(rpc);
    grpc::Status status = ctx.admin().GetRollout(&rpc, request, &rollout);
    if (!status.ok()) {
      if (!Transient(status.error_code())) {
        return ExplainRpcError(status, call);
      }
      const absl::Time now = ctx.Now();
      if (!unreachable_since) {
        unreachable_since = now;
        ctx.err() << "fleetctl: cannot reach the controller at "
                  << ctx.options().controller << " ("
                  << TransportCause(status.error_message())
                  << "); retrying every " << absl::FormatDuration(*interval)
                  << " for up to "
                  << absl::FormatDuration(ctx.options().timeout) << "\n";
      } else if (now - *unreachable_since > ctx.options().timeout) {
        return ExplainRpcError(status, call);
      }
      sleep(*interval);
      continue;
    }
    if (unreachable_since) {
      ctx.err() << "fleetctl: controller reachable again\n";
      unreachable_since.reset();
    }

    if (ctx.structured()) {
      // One JSON line (or YAML document) per change, none while nothing
      // changes.
      ASSIGN_OR_RETURN(nlohmann::json doc,
                       CommandContext::MessageDocument(rollout));
      std::string json = doc.dump();
      if (json != last_printed) {
        RETURN_IF_ERROR(ctx.PrintStreamItem(rollout));
        last_printed = std::move(json);
      }
    } else if (terminal) {
      std::string frame = WatchFrame(rollout, *interval, ctx.Now());
      // Move to the first line of the previous frame and clear to the end
      // of the screen, so a shorter frame leaves nothing behind.
      if (frame_lines > 0) ctx.out() << "\x1b[" << frame_lines << "A\x1b[J";
      ctx.out() << frame << std::flush;
      frame_lines = std::count(frame.begin(), frame.end(), '\n');
    } else {
      std::string line = WatchLine(rollout);
      if (line != last_printed) {
        ctx.out() << absl::FormatTime("%Y-%m-%dT%H:%M:%SZ ", ctx.Now(),
                                      absl::UTCTimeZone())
                  << line << "\n"
                  << std::flush;
        last_printed = std::move(line);
      }
    }
    if (WatchEnds(rollout)) return WatchOutcome(rollout);
    sleep(*interval);
  }
}

}  // namespace fleet::cli
