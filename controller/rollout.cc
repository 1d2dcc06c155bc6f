#include "controller/rollout.h"

#include <algorithm>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "common/names.h"
#include "common/semver.h"

namespace fleet::controller {
namespace {

constexpr int kMaxStages = 20;
constexpr int64_t kMaxBakeSeconds = 30 * 24 * 3600;
constexpr uint32_t kBuckets = 100;

int64_t ToMs(absl::Time t) { return absl::ToUnixMillis(t); }

// FNV-1a: stable across builds and platforms, unlike std::hash.
uint64_t Fnv1a(absl::string_view a, absl::string_view b) {
  uint64_t h = 14695981039346656037ull;
  auto mix = [&h](absl::string_view s) {
    for (unsigned char c : s) {
      h ^= c;
      h *= 1099511628211ull;
    }
  };
  mix(a);
  mix(absl::string_view("\0", 1));
  mix(b);
  return h;
}

bool SettledThrough(const std::vector<v1::RolloutTarget>& targets,
                    uint32_t stage) {
  for (const v1::RolloutTarget& t : targets) {
    if (t.stage() <= stage && !IsFinal(t.state())) return false;
  }
  return true;
}

std::string CompletionReason(const v1::TargetCounts& c) {
  return absl::StrCat("all ", c.total(), " targets final: ", c.healthy(),
                      " healthy, ", c.failed(), " failed or rolled back, ",
                      c.skipped(), " skipped");
}

// 0.05 -> "5", 1/3 -> "33.33".
std::string Percent(double fraction) {
  return absl::StrFormat("%.4g", fraction * 100);
}

}  // namespace

bool IsFinal(v1::TargetState state) {
  return state == v1::TARGET_STATE_HEALTHY ||
         state == v1::TARGET_STATE_FAILED ||
         state == v1::TARGET_STATE_ROLLED_BACK ||
         state == v1::TARGET_STATE_SKIPPED;
}

std::string TargetStateName(v1::TargetState state) {
  return std::string(
      absl::StripPrefix(v1::TargetState_Name(state), "TARGET_STATE_"));
}

v1::TargetState TargetStateForPhase(v1::UpdatePhase phase) {
  switch (phase) {
    case v1::UPDATE_PHASE_RECEIVED:
      return v1::TARGET_STATE_DIRECTED;
    case v1::UPDATE_PHASE_DOWNLOADING:
    case v1::UPDATE_PHASE_DOWNLOADED:
      return v1::TARGET_STATE_DOWNLOADING;
    case v1::UPDATE_PHASE_VERIFIED:
    case v1::UPDATE_PHASE_STAGED:
      return v1::TARGET_STATE_VERIFIED;
    case v1::UPDATE_PHASE_SWAPPED:
      return v1::TARGET_STATE_SWAPPED;
    case v1::UPDATE_PHASE_RESTARTED:
      return v1::TARGET_STATE_RESTARTED;
    case v1::UPDATE_PHASE_HEALTHY:
      return v1::TARGET_STATE_HEALTHY;
    case v1::UPDATE_PHASE_FAILED:
      return v1::TARGET_STATE_FAILED;
    case v1::UPDATE_PHASE_ROLLED_BACK:
      return v1::TARGET_STATE_ROLLED_BACK;
    default:
      return v1::TARGET_STATE_UNSPECIFIED;
  }
}

bool ApplyEvent(const v1::UpdateEvent& event, absl::Time now,
                v1::RolloutTarget& target) {
  if (event.directive_id().empty() ||
      event.directive_id() != target.directive_id()) {
    return false;
  }
  if (IsFinal(target.state())) return false;
  const v1::TargetState next = TargetStateForPhase(event.phase());
  if (next == v1::TARGET_STATE_UNSPECIFIED) return false;
  // Non-final states are numbered in the order an update passes them.
  if (!IsFinal(next) && next <= target.state()) return false;
  target.set_state(next);
  if (next == v1::TARGET_STATE_FAILED || next == v1::TARGET_STATE_ROLLED_BACK) {
    std::string cause =
        event.error().empty()
            ? "agent reported " + TargetStateName(next) + " without a cause"
            : event.error();
    target.set_error(event.error_class().empty()
                         ? cause
                         : absl::StrCat(event.error_class(), ": ", cause));
  }
  target.set_updated_unix_ms(ToMs(now));
  return true;
}

absl::Status ValidateSelector(const v1::Selector& selector) {
  if (!selector.platform().empty()) {
    absl::Status s = ValidatePlatform(selector.platform());
    if (!s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("selector.platform: ", s.message()));
    }
  }
  for (const auto& [key, value] : selector.labels()) {
    absl::Status s = ValidateLabel(key, value);
    if (!s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("selector.labels: ", s.message()));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Stages> NormalizeStages(const Stages& stages) {
  Stages out;
  if (stages.empty()) {
    out.Add()->set_percent(100);
    return out;
  }
  if (stages.size() > kMaxStages) {
    return absl::InvalidArgumentError(
        absl::StrCat("at most ", kMaxStages, " stages, got ", stages.size()));
  }
  uint32_t previous = 0;
  for (int i = 0; i < stages.size(); ++i) {
    const v1::Stage& s = stages[i];
    if (s.percent() < 1 || s.percent() > 100) {
      return absl::InvalidArgumentError(absl::StrCat(
          "stages[", i, "].percent must be 1..100, got ", s.percent()));
    }
    if (s.percent() <= previous) {
      return absl::InvalidArgumentError(
          absl::StrCat("stages[", i,
                       "].percent must be greater than the "
                       "previous stage's ",
                       previous, ", got ", s.percent()));
    }
    if (s.bake_seconds() < 0 || s.bake_seconds() > kMaxBakeSeconds) {
      return absl::InvalidArgumentError(
          absl::StrCat("stages[", i, "].bake_seconds must be 0..",
                       kMaxBakeSeconds, ", got ", s.bake_seconds()));
    }
    previous = s.percent();
  }
  if (previous != 100) {
    return absl::InvalidArgumentError(
        absl::StrCat("the last stage must reach 100 percent, got ", previous));
  }
  out = stages;
  return out;
}

uint32_t StageOf(absl::string_view rollout_id, absl::string_view agent_id,
                 const Stages& stages) {
  const uint32_t bucket =
      static_cast<uint32_t>(Fnv1a(rollout_id, agent_id) % kBuckets);
  for (int i = 0; i < stages.size(); ++i) {
    if (bucket < stages[i].percent()) return static_cast<uint32_t>(i);
  }
  return stages.empty() ? 0 : static_cast<uint32_t>(stages.size() - 1);
}

bool SelectorMatches(const v1::Selector& selector, const v1::Agent& agent) {
  if (!selector.platform().empty() && selector.platform() != agent.platform()) {
    return false;
  }
  for (const auto& [key, value] : selector.labels()) {
    auto it = agent.labels().find(key);
    if (it == agent.labels().end() || it->second != value) return false;
  }
  return true;
}

bool SelectorsOverlap(const v1::Selector& a, const v1::Selector& b) {
  if (!a.platform().empty() && !b.platform().empty() &&
      a.platform() != b.platform()) {
    return false;
  }
  for (const auto& [key, value] : a.labels()) {
    auto it = b.labels().find(key);
    if (it != b.labels().end() && it->second != value) return false;
  }
  return true;
}

std::optional<v1::RolloutTarget> NewTarget(
    const v1::Rollout& rollout, const v1::Agent& agent,
    const std::vector<std::string>& release_platforms, absl::Time now) {
  const v1::InstalledProduct* installed = nullptr;
  for (const v1::InstalledProduct& p : agent.installed()) {
    if (p.product() == rollout.product()) installed = &p;
  }
  if (installed == nullptr) return std::nullopt;
  bool released = false;
  for (const std::string& platform : release_platforms) {
    released = released || platform == agent.platform();
  }
  if (!released || !SelectorMatches(rollout.selector(), agent)) {
    return std::nullopt;
  }
  v1::RolloutTarget target;
  target.set_agent_id(agent.agent_id());
  target.set_from_version(installed->version());
  target.set_state(installed->version() == rollout.version()
                       ? v1::TARGET_STATE_HEALTHY
                       : v1::TARGET_STATE_PENDING);
  target.set_stage(
      StageOf(rollout.rollout_id(), agent.agent_id(), rollout.stages()));
  target.set_updated_unix_ms(ToMs(now));
  return target;
}

bool NeedsDirective(const RolloutRecord& record,
                    const v1::RolloutTarget& target) {
  return record.rollout.state() == v1::ROLLOUT_STATE_RUNNING &&
         target.state() == v1::TARGET_STATE_PENDING &&
         target.stage() <= record.rollout.current_stage();
}

std::string RolloutCommandName(RolloutCommand command) {
  switch (command) {
    case RolloutCommand::kPause:
      return "pause";
    case RolloutCommand::kResume:
      return "resume";
    case RolloutCommand::kAbort:
      return "abort";
  }
  return "unknown";
}

std::string RolloutStateName(v1::RolloutState state) {
  return std::string(
      absl::StripPrefix(v1::RolloutState_Name(state), "ROLLOUT_STATE_"));
}

absl::Status ApplyRolloutCommand(RolloutCommand command,
                                 absl::string_view reason, absl::Time now,
                                 RolloutRecord& record) {
  v1::Rollout& r = record.rollout;
  const v1::RolloutState state = r.state();
  auto refuse = [&](absl::string_view needs) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot ", RolloutCommandName(command), " rollout ", r.rollout_id(),
        ": it is ", RolloutStateName(state), "; ", needs));
  };
  if (state == v1::ROLLOUT_STATE_COMPLETED ||
      state == v1::ROLLOUT_STATE_ABORTED) {
    return refuse("a finished rollout cannot change");
  }
  v1::RolloutState next = state;
  std::string why;
  switch (command) {
    case RolloutCommand::kPause:
      if (state != v1::ROLLOUT_STATE_RUNNING) {
        return refuse("only a RUNNING rollout can be paused");
      }
      next = v1::ROLLOUT_STATE_PAUSED;
      why = "paused by operator";
      break;
    case RolloutCommand::kResume:
      if (state != v1::ROLLOUT_STATE_PAUSED) {
        return refuse("only a PAUSED rollout can be resumed");
      }
      next = v1::ROLLOUT_STATE_RUNNING;
      why = "resumed by operator";
      break;
    case RolloutCommand::kAbort:
      if (state != v1::ROLLOUT_STATE_RUNNING &&
          state != v1::ROLLOUT_STATE_PAUSED) {
        return refuse("only a RUNNING or PAUSED rollout can be aborted");
      }
      next = v1::ROLLOUT_STATE_ABORTED;
      why = "aborted by operator";
      break;
  }
  if (!reason.empty()) absl::StrAppend(&why, ": ", reason);
  r.set_state(next);
  r.set_state_reason(why);
  r.set_updated_unix_ms(ToMs(now));
  return absl::OkStatus();
}

absl::Status ValidateMaxInFlight(const v1::MaxInFlight& limit) {
  switch (limit.limit_case()) {
    case v1::MaxInFlight::LIMIT_NOT_SET:
      return absl::OkStatus();
    case v1::MaxInFlight::kCount:
      if (limit.count() >= 1) return absl::OkStatus();
      return absl::InvalidArgumentError(
          "max_in_flight.count must be at least 1, got 0");
    case v1::MaxInFlight::kPercent:
      if (limit.percent() >= 1 && limit.percent() <= 100) {
        return absl::OkStatus();
      }
      return absl::InvalidArgumentError(absl::StrCat(
          "max_in_flight.percent must be 1..100, got ", limit.percent()));
  }
  return absl::InvalidArgumentError("max_in_flight: unknown kind of limit");
}

uint32_t DirectiveBudget(const v1::MaxInFlight& limit,
                         const v1::TargetCounts& counts) {
  uint64_t most = 0;
  switch (limit.limit_case()) {
    case v1::MaxInFlight::LIMIT_NOT_SET:
      return UINT32_MAX;
    case v1::MaxInFlight::kCount:
      most = limit.count();
      break;
    case v1::MaxInFlight::kPercent:
      most = (uint64_t{limit.percent()} * counts.total() + 99) / 100;
      break;
  }
  most = std::max<uint64_t>(most, 1);
  return most > counts.in_flight()
             ? static_cast<uint32_t>(most - counts.in_flight())
             : 0;
}

absl::Status ValidateFailurePolicy(const v1::FailurePolicy& policy) {
  const double rate = policy.max_failure_rate();
  // Written so that NaN fails too.
  if (!(rate >= 0 && rate <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "failure_policy.max_failure_rate must be 0..1, got ", rate));
  }
  if (policy.action() != v1::FAILURE_ACTION_UNSPECIFIED &&
      policy.action() != v1::FAILURE_ACTION_PAUSE &&
      policy.action() != v1::FAILURE_ACTION_ABORT) {
    return absl::InvalidArgumentError(absl::StrCat(
        "failure_policy.action: unknown action ", policy.action()));
  }
  return absl::OkStatus();
}

bool HasGate(const v1::FailurePolicy& policy) {
  return policy.max_failure_rate() > 0 || policy.min_samples() > 0;
}

std::optional<GateTrip> EvaluateGate(const v1::FailurePolicy& policy,
                                     const v1::TargetCounts& counts,
                                     uint32_t armed_samples) {
  if (!HasGate(policy)) return std::nullopt;
  const uint32_t samples = counts.healthy() + counts.failed();
  if (samples == 0 || samples <= armed_samples ||
      samples < policy.min_samples()) {
    return std::nullopt;
  }
  const double rate = static_cast<double>(counts.failed()) / samples;
  if (!(rate > policy.max_failure_rate())) return std::nullopt;
  GateTrip trip;
  trip.failed = counts.failed();
  trip.samples = samples;
  trip.reason = absl::StrCat("gate: ", trip.failed, " of ", samples,
                             " finished targets failed (", Percent(rate),
                             "% > ", Percent(policy.max_failure_rate()), "%)");
  return trip;
}

void ApplyGateTrip(const GateTrip& trip, const v1::FailurePolicy& policy,
                   absl::Time now, RolloutRecord& record) {
  v1::Rollout& r = record.rollout;
  r.set_state(policy.action() == v1::FAILURE_ACTION_ABORT
                  ? v1::ROLLOUT_STATE_ABORTED
                  : v1::ROLLOUT_STATE_PAUSED);
  r.set_state_reason(trip.reason);
  r.set_updated_unix_ms(ToMs(now));
  record.gate_armed_samples = trip.samples;
}

v1::BlacklistEntry GateBlacklistEntry(const GateTrip& trip,
                                      const v1::Rollout& rollout) {
  v1::BlacklistEntry entry;
  entry.set_product(rollout.product());
  entry.set_version(rollout.version());
  entry.set_reason(absl::StrCat("rollout ", rollout.rollout_id(),
                                " tripped its failure gate: ", trip.failed,
                                " of ", trip.samples,
                                " finished targets failed"));
  entry.set_created_by(absl::StrCat("gate:", rollout.rollout_id()));
  return entry;
}

bool AdvanceRollout(const std::vector<v1::RolloutTarget>& targets,
                    absl::Time now, RolloutRecord& record) {
  v1::Rollout& r = record.rollout;
  if (r.state() != v1::ROLLOUT_STATE_RUNNING || targets.empty() ||
      r.stages().empty()) {
    return false;
  }
  const uint32_t last = static_cast<uint32_t>(r.stages_size() - 1);
  bool changed = false;
  while (true) {
    if (!SettledThrough(targets, r.current_stage())) {
      // A target that joined late can reopen a settled stage.
      if (record.stage_settled_ms != 0) {
        record.stage_settled_ms = 0;
        changed = true;
      }
      break;
    }
    if (r.current_stage() >= last) {
      r.set_state(v1::ROLLOUT_STATE_COMPLETED);
      r.set_state_reason(CompletionReason(CountTargets(targets)));
      changed = true;
      break;
    }
    if (record.stage_settled_ms == 0) {
      record.stage_settled_ms = ToMs(now);
      changed = true;
    }
    const absl::Duration bake = absl::Seconds(
        r.stages(static_cast<int>(r.current_stage())).bake_seconds());
    if (now - absl::FromUnixMillis(record.stage_settled_ms) < bake) break;
    r.set_current_stage(r.current_stage() + 1);
    record.stage_settled_ms = 0;
    changed = true;
  }
  if (changed) r.set_updated_unix_ms(ToMs(now));
  return changed;
}

v1::TargetCounts CountTargets(
    const std::map<v1::TargetState, uint32_t>& by_state) {
  v1::TargetCounts c;
  for (const auto& [state, n] : by_state) {
    c.set_total(c.total() + n);
    switch (state) {
      case v1::TARGET_STATE_PENDING:
        c.set_pending(c.pending() + n);
        break;
      case v1::TARGET_STATE_HEALTHY:
        c.set_healthy(c.healthy() + n);
        break;
      case v1::TARGET_STATE_FAILED:
      case v1::TARGET_STATE_ROLLED_BACK:
        c.set_failed(c.failed() + n);
        break;
      case v1::TARGET_STATE_SKIPPED:
        c.set_skipped(c.skipped() + n);
        break;
      default:
        c.set_in_flight(c.in_flight() + n);
        break;
    }
  }
  return c;
}

v1::TargetCounts CountTargets(const std::vector<v1::RolloutTarget>& targets) {
  std::map<v1::TargetState, uint32_t> by_state;
  std::map<v1::TargetState, uint32_t> by_revert_state;
  for (const v1::RolloutTarget& t : targets) {
    ++by_state[t.state()];
    if (t.revert_state() != v1::TARGET_STATE_UNSPECIFIED) {
      ++by_revert_state[t.revert_state()];
    }
  }
  v1::TargetCounts counts = CountTargets(by_state);
  AddRevertCounts(by_revert_state, counts);
  return counts;
}

void AddRevertCounts(const std::map<v1::TargetState, uint32_t>& by_revert_state,
                     v1::TargetCounts& counts) {
  for (const auto& [state, n] : by_revert_state) {
    switch (state) {
      case v1::TARGET_STATE_UNSPECIFIED:
        break;
      case v1::TARGET_STATE_HEALTHY:
        counts.set_reverted(counts.reverted() + n);
        break;
      case v1::TARGET_STATE_FAILED:
      case v1::TARGET_STATE_ROLLED_BACK:
      case v1::TARGET_STATE_SKIPPED:
        counts.set_revert_failed(counts.revert_failed() + n);
        break;
      default:
        counts.set_reverting(counts.reverting() + n);
        break;
    }
  }
}

absl::Status ValidateOfflineTimeout(int64_t seconds) {
  if (seconds < 0 || seconds > kMaxBakeSeconds) {
    return absl::InvalidArgumentError(
        absl::StrCat("offline_timeout_seconds must be 0 (the controller's "
                     "default) up to ",
                     kMaxBakeSeconds, " (30 days), got ", seconds));
  }
  return absl::OkStatus();
}

bool SkipIfOffline(const v1::Rollout& rollout, absl::Time offline_since,
                   absl::Time now, v1::RolloutTarget& target) {
  if (rollout.state() != v1::ROLLOUT_STATE_RUNNING || IsFinal(target.state()) ||
      target.stage() > rollout.current_stage() ||
      rollout.offline_timeout_seconds() <= 0) {
    return false;
  }
  const absl::Duration timeout =
      absl::Seconds(rollout.offline_timeout_seconds());
  if (now - offline_since < timeout) return false;
  target.set_error(
      absl::StrCat("skipped: agent offline since ",
                   absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", offline_since,
                                    absl::UTCTimeZone()),
                   " (offline timeout ", absl::FormatDuration(timeout),
                   "); was ", TargetStateName(target.state())));
  target.set_state(v1::TARGET_STATE_SKIPPED);
  target.set_updated_unix_ms(ToMs(now));
  return true;
}

bool RetakeSkippedTarget(const v1::Rollout& rollout,
                         absl::string_view installed_version, absl::Time now,
                         v1::RolloutTarget& target) {
  if (target.state() != v1::TARGET_STATE_SKIPPED ||
      (rollout.state() != v1::ROLLOUT_STATE_RUNNING &&
       rollout.state() != v1::ROLLOUT_STATE_PAUSED)) {
    return false;
  }
  if (installed_version == rollout.version()) {
    target.set_state(v1::TARGET_STATE_HEALTHY);
  } else if (!target.directive_id().empty()) {
    target.set_state(v1::TARGET_STATE_DIRECTED);
  } else {
    target.set_state(v1::TARGET_STATE_PENDING);
    target.set_from_version(std::string(installed_version));
  }
  target.clear_error();
  target.set_updated_unix_ms(ToMs(now));
  return true;
}

bool NeedsRevert(const v1::Rollout& rollout, const v1::RolloutTarget& target) {
  if (target.revert_state() != v1::TARGET_STATE_UNSPECIFIED) return false;
  switch (target.state()) {
    case v1::TARGET_STATE_PENDING:
    case v1::TARGET_STATE_FAILED:
    case v1::TARGET_STATE_ROLLED_BACK:
      return false;
    case v1::TARGET_STATE_HEALTHY:
      return target.from_version() != rollout.version();
    case v1::TARGET_STATE_SKIPPED:
      return !target.directive_id().empty();
    default:
      return true;  // in flight
  }
}

bool ApplyRevertEvent(const v1::UpdateEvent& event, absl::Time now,
                      RevertRecord& revert) {
  v1::RolloutTarget progress;
  progress.set_directive_id(revert.directive_id);
  progress.set_state(revert.state);
  if (!ApplyEvent(event, now, progress)) return false;
  revert.state = progress.state();
  revert.error = progress.error();
  revert.updated_ms = progress.updated_unix_ms();
  return true;
}

void SetRevertProgress(const RevertRecord& revert, v1::RolloutTarget& target) {
  target.set_revert_state(revert.state);
  target.set_revert_directive_id(revert.directive_id);
  target.set_revert_to_version(revert.to_version);
  target.set_revert_error(revert.error);
}

std::optional<std::string> LeadBackVersion(
    const v1::InstalledProduct& installed,
    const std::vector<std::string>& released,
    const std::vector<std::string>& blacklisted) {
  auto usable = [&](const std::string& version) {
    return version != installed.version() &&
           std::find(released.begin(), released.end(), version) !=
               released.end() &&
           std::find(blacklisted.begin(), blacklisted.end(), version) ==
               blacklisted.end();
  };
  for (const std::string& version : installed.previous_versions()) {
    if (usable(version)) return version;
  }
  for (const std::string& version : released) {
    if (usable(version)) return version;
  }
  return std::nullopt;
}

std::string BlacklistRolloutId(const v1::BlacklistEntry& entry) {
  absl::string_view by = entry.created_by();
  if (!absl::ConsumePrefix(&by, "gate:")) return "";
  return std::string(by);
}

v1::UpdateDirective MakeDirective(const std::string& directive_id,
                                  const std::string& rollout_id,
                                  const v1::Release& release) {
  v1::UpdateDirective d;
  d.set_directive_id(directive_id);
  d.set_rollout_id(rollout_id);
  d.set_kind(v1::DIRECTIVE_KIND_UPDATE);
  *d.mutable_manifest() = release.signed_manifest();
  d.set_deadline_unix_ms(0);
  return d;
}

v1::UpdateDirective MakeRevertDirective(const RevertRecord& revert,
                                        const v1::Release& release) {
  v1::UpdateDirective d =
      MakeDirective(revert.directive_id, revert.rollout_id, release);
  const bool comparable = SemVer::Parse(revert.to_version).ok() &&
                          SemVer::Parse(revert.from_version).ok();
  d.set_kind(comparable &&
                     CompareVersions(revert.to_version, revert.from_version) > 0
                 ? v1::DIRECTIVE_KIND_UPDATE
                 : v1::DIRECTIVE_KIND_ROLLBACK);
  return d;
}

}  // namespace fleet::controller
