#include "controller/control_loop.h"

#include <algorithm>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/ids.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "controller/rollout.h"

namespace fleet::controller {
namespace {

template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

std::string StatusText(const absl::Status& status) {
  return std::string(status.ToString());
}

}  // namespace

ControlLoop::ControlLoop(Store& store, const Clock& clock,
                         ControlLoopOptions options)
    : store_(store),
      clock_(clock),
      options_(options),
      loop_start_(clock.Now()) {}

ControlLoop::~ControlLoop() { Stop(); }

void ControlLoop::Start(AgentSender& sender) {
  absl::MutexLock lock(&mu_);
  if (started_) return;
  sender_ = &sender;
  started_ = true;
  thread_ = std::thread([this] { Run(); });
}

void ControlLoop::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (!started_ || stopping_) return;
    stopping_ = true;
  }
  thread_.join();
}

// ------------------------------------------------------------------ intake

void ControlLoop::Post(Item item) {
  absl::MutexLock lock(&mu_);
  if (!started_ || stopping_) return;
  queue_.push_back(std::move(item));
}

void ControlLoop::PostHello(std::string agent_id, uint64_t session,
                            v1::Hello hello) {
  Post(HelloItem{std::move(agent_id), session, std::move(hello)});
}

void ControlLoop::PostEvent(std::string agent_id, uint64_t session,
                            v1::UpdateEvent event) {
  std::vector<v1::UpdateEvent> events;
  events.push_back(std::move(event));
  Post(EventItem{std::move(agent_id), session, std::move(events)});
}

void ControlLoop::PostEvents(std::string agent_id, uint64_t session,
                             std::vector<v1::UpdateEvent> events) {
  if (events.empty()) return;
  Post(EventItem{std::move(agent_id), session, std::move(events)});
}

void ControlLoop::PostHeartbeat(std::string agent_id, uint64_t session) {
  Post(HeartbeatItem{std::move(agent_id), session});
}

void ControlLoop::PostDisconnect(std::string agent_id, uint64_t session) {
  Post(DisconnectItem{std::move(agent_id), session});
}

absl::Status ControlLoop::RunTask(std::function<absl::Status(Output&)> fn) {
  Task task;
  task.fn = std::move(fn);
  {
    absl::MutexLock lock(&mu_);
    if (!started_ || stopping_) {
      return absl::UnavailableError("the controller is shutting down");
    }
    queue_.push_back(&task);
  }
  task.done.WaitForNotification();
  return task.result;
}

absl::StatusOr<v1::Release> ControlLoop::AddRelease(v1::Release release) {
  RETURN_IF_ERROR(RunTask([&](Output&) -> absl::Status {
    release.set_created_unix_ms(NowMs());
    return store_.InsertRelease(release);
  }));
  LogInfo("release stored", {{"product", release.product()},
                             {"version", release.version()},
                             {"platform", release.platform()},
                             {"size", release.size()}});
  return release;
}

absl::StatusOr<v1::Rollout> ControlLoop::CreateRollout(
    const v1::CreateRolloutRequest& request) {
  v1::Rollout result;
  RETURN_IF_ERROR(RunTask(
      [&](Output& out) { return HandleCreateRollout(request, result, out); }));
  LogInfo("rollout created",
          {{"rollout_id", result.rollout_id()},
           {"product", result.product()},
           {"version", result.version()},
           {"targets", result.counts().total()},
           {"state", v1::RolloutState_Name(result.state())}});
  return result;
}

absl::StatusOr<v1::Rollout> ControlLoop::ChangeRollout(
    const std::string& rollout_id, RolloutCommand command,
    const std::string& reason, bool rollback) {
  v1::Rollout result;
  RETURN_IF_ERROR(RunTask([&](Output& out) {
    return HandleChangeRollout(rollout_id, command, reason, rollback, result,
                               out);
  }));
  LogInfo("rollout changed by operator",
          {{"rollout_id", rollout_id},
           {"command", RolloutCommandName(command)},
           {"rollback", rollback},
           {"state", RolloutStateName(result.state())},
           {"reverting", result.counts().reverting()},
           {"revert_failed", result.counts().revert_failed()},
           {"reason", reason}});
  return result;
}

absl::StatusOr<v1::AddBlacklistResponse> ControlLoop::AddBlacklist(
    v1::BlacklistEntry entry) {
  v1::AddBlacklistResponse result;
  RETURN_IF_ERROR(RunTask([&](Output& out) {
    return HandleAddBlacklist(std::move(entry), result, out);
  }));
  LogInfo(
      "version blacklisted",
      {{"product", result.entry().product()},
       {"version", result.entry().version()},
       {"reason", result.entry().reason()},
       {"led_back_agents", result.led_back_agents()},
       {"aborted_rollouts", absl::StrJoin(result.aborted_rollout_ids(), ",")}});
  return result;
}

absl::Status ControlLoop::RemoveBlacklist(const std::string& product,
                                          const std::string& version) {
  RETURN_IF_ERROR(RunTask([&](Output& out) -> absl::Status {
    RETURN_IF_ERROR(store_.DeleteBlacklist(product, version));
    return SendBlacklistUpdates(product, out);
  }));
  LogInfo("version removed from the blacklist",
          {{"product", product}, {"version", version}});
  return absl::OkStatus();
}

// ------------------------------------------------------------------- loop

bool ControlLoop::HasWork() const { return !queue_.empty() || stopping_; }

void ControlLoop::Run() {
  while (true) {
    std::vector<Item> batch;
    bool last = false;
    // A rollout stopped at its directive chunk goes on in the next batch
    // (with whatever was queued meanwhile), without waiting.
    const bool more = std::exchange(more_directives_, false);
    {
      absl::MutexLock lock(&mu_);
      if (!more) {
        mu_.AwaitWithTimeout(absl::Condition(this, &ControlLoop::HasWork),
                             options_.tick);
      }
      // While a rollout's directives go out chunk by chunk, the queued
      // items (mostly the events of the agents just directed) come along in
      // small batches, so the chunks follow each other closely.
      const int most =
          std::max(1, more ? options_.max_batch / 8 : options_.max_batch);
      while (!queue_.empty() && static_cast<int>(batch.size()) < most) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      last = stopping_ && queue_.empty();
    }
    const absl::Time now = clock_.Now();
    const bool tick = now - last_tick_ >= options_.tick;
    if (tick) last_tick_ = now;
    if (!batch.empty() || tick || last || !dirty_rollouts_.empty()) {
      ProcessBatch(batch, tick, last);
    }
    if (last) break;
  }
}

void ControlLoop::FlushLastSeen() {
  if (last_seen_.empty()) return;
  absl::flat_hash_map<std::string, int64_t> seen =
      std::exchange(last_seen_, {});
  absl::Status status = store_.RunInSavepoint([&]() -> absl::Status {
    for (const auto& [agent_id, ms] : seen) {
      RETURN_IF_ERROR(store_.TouchAgent(agent_id, ms));
    }
    return absl::OkStatus();
  });
  if (!status.ok()) {
    // Last-seen is advisory; the next heartbeats bring it back.
    LogWarning("writing last-seen times failed",
               {{"error", StatusText(status)}, {"agents", seen.size()}});
  }
}

void ControlLoop::ProcessBatch(std::vector<Item>& batch, bool tick, bool last) {
  std::vector<Output> outputs(batch.size());
  std::vector<absl::Status> results(batch.size());
  Output extra;
  const absl::Time started = absl::Now();
  const absl::Time now = clock_.Now();
  const bool flush =
      last || now - last_seen_flushed_ >= options_.last_seen_flush;
  if (flush) last_seen_flushed_ = now;
  // Hellos and admin writes can fail on their own (a precondition, a
  // missing release) and get a savepoint so that a failure undoes only
  // their writes. Events and heartbeats fail only when SQLite does: they
  // run without one, and if one fails the whole batch is rolled
  // back and run again with every item isolated. (The loop's in-memory
  // state touched by the first run is idempotent to redo.)
  bool item_failed = false;
  auto run = [&](bool isolate) -> absl::Status {
    return store_.RunInTransaction([&]() -> absl::Status {
      for (size_t i = 0; i < batch.size(); ++i) {
        outputs[i] = Output();
        // A disconnect forgets its session when handled: it could not be
        // run a second time, so it is isolated from the start.
        const bool own = isolate || std::holds_alternative<Task*>(batch[i]) ||
                         std::holds_alternative<HelloItem>(batch[i]) ||
                         std::holds_alternative<DisconnectItem>(batch[i]);
        if (own) {
          results[i] = store_.RunInSavepoint(
              [&] { return Handle(batch[i], outputs[i]); });
        } else {
          results[i] = Handle(batch[i], outputs[i]);
          if (!results[i].ok()) {
            item_failed = true;
            return results[i];
          }
        }
        if (!results[i].ok()) outputs[i] = Output();
      }
      if (flush) FlushLastSeen();
      extra = Output();
      absl::Status rollouts = store_.RunInSavepoint([&]() -> absl::Status {
        if (tick) {
          const absl::Time now = clock_.Now();
          const bool sweep =
              now - last_offline_sweep_ >= options_.offline_sweep;
          if (sweep) last_offline_sweep_ = now;
          RETURN_IF_ERROR(MarkBakingRollouts(sweep));
        }
        return ReconcileDirty(extra);
      });
      if (!rollouts.ok()) {
        // Kept dirty: retried with the next batch or tick.
        extra = Output();
        LogError("reconciling rollouts failed",
                 {{"error", StatusText(rollouts)}});
      }
      return absl::OkStatus();
    });
  };
  absl::Status commit = run(/*isolate=*/false);
  if (item_failed) {
    LogWarning(
        "an agent message failed; running its batch again with each "
        "item isolated",
        {{"error", StatusText(commit)}, {"items", batch.size()}});
    commit = run(/*isolate=*/true);
  }
  if (options_.on_commit) {
    options_.on_commit(absl::ToDoubleSeconds(absl::Now() - started));
  }
  if (!commit.ok()) {
    LogError(
        "committing a batch failed; its streams are closed so agents "
        "resend",
        {{"error", StatusText(commit)}, {"items", batch.size()}});
    for (size_t i = 0; i < batch.size(); ++i) {
      if (results[i].ok()) results[i] = commit;
      outputs[i] = Output();
    }
    extra = Output();
  }
  Deliver(batch, outputs, results, extra);
  if (commit.ok() && options_.on_events_stored) {
    for (size_t i = 0; i < batch.size(); ++i) {
      EventItem* item = std::get_if<EventItem>(&batch[i]);
      if (item == nullptr || !results[i].ok()) continue;
      options_.on_events_stored(item->agent_id, item->received_ms,
                                std::move(item->events));
    }
  }
}

void ControlLoop::Deliver(const std::vector<Item>& batch,
                          std::vector<Output>& outputs,
                          const std::vector<absl::Status>& results,
                          Output& extra) {
  // One ack per stream covers every event of the batch.
  std::map<std::pair<std::string, uint64_t>, uint64_t> acks;
  for (size_t i = 0; i < batch.size(); ++i) {
    const Item& item = batch[i];
    if (Task* const* task = std::get_if<Task*>(&item)) {
      for (Outgoing& o : outputs[i].messages) {
        sender_->Send(o.agent_id, o.session, std::move(o.message));
      }
      (*task)->result = results[i];
      (*task)->done.Notify();
      continue;
    }
    auto [agent_id, session] = std::visit(
        Overloaded{
            [](Task*) { return std::make_pair(std::string(), uint64_t{0}); },
            [](const auto& agent_item) {
              return std::make_pair(agent_item.agent_id, agent_item.session);
            }},
        item);
    if (!results[i].ok()) {
      LogWarning("agent message not processed; closing its stream",
                 {{"agent_id", agent_id}, {"error", StatusText(results[i])}});
      sender_->Close(agent_id, session,
                     absl::UnavailableError(absl::StrCat(
                         "controller could not process the message: ",
                         results[i].message())));
      continue;
    }
    for (Outgoing& o : outputs[i].messages) {
      sender_->Send(o.agent_id, o.session, std::move(o.message));
    }
    if (outputs[i].acked_seq != 0) {
      uint64_t& acked = acks[{agent_id, session}];
      acked = std::max(acked, outputs[i].acked_seq);
    }
  }
  for (Outgoing& o : extra.messages) {
    sender_->Send(o.agent_id, o.session, std::move(o.message));
  }
  for (const auto& [key, seq] : acks) {
    v1::ControllerMessage ack;
    ack.mutable_ack()->set_acked_seq(seq);
    sender_->Send(key.first, key.second, std::move(ack));
  }
}

absl::Status ControlLoop::Handle(Item& item, Output& out) {
  return std::visit(
      Overloaded{
          [&](const HelloItem& hello) { return HandleHello(hello, out); },
          [&](EventItem& events) { return HandleEvents(events, out); },
          [&](const HeartbeatItem& beat) -> absl::Status {
            if (SessionOf(beat.agent_id) == beat.session) {
              last_seen_[beat.agent_id] = NowMs();
            }
            return absl::OkStatus();
          },
          [&](const DisconnectItem& gone) { return HandleDisconnect(gone); },
          [&](Task* task) { return task->fn(out); },
      },
      item);
}

// ------------------------------------------------------------ agent items

absl::Status ControlLoop::HandleHello(const HelloItem& item, Output& out) {
  const v1::Hello& hello = item.hello;
  const int64_t now = NowMs();
  v1::Agent agent;
  agent.set_agent_id(item.agent_id);
  agent.set_hostname(hello.hostname());
  agent.set_platform(hello.platform());
  agent.set_agent_version(hello.agent_version());
  *agent.mutable_labels() = hello.labels();
  agent.set_connected(true);
  agent.set_last_seen_unix_ms(now);
  absl::StatusOr<v1::Agent> known = store_.GetAgent(item.agent_id);
  if (known.ok()) {
    agent.set_first_seen_unix_ms(known->first_seen_unix_ms());
  } else if (absl::IsNotFound(known.status())) {
    agent.set_first_seen_unix_ms(now);
  } else {
    return known.status();
  }
  for (const v1::InstalledProduct& reported : hello.installed()) {
    v1::InstalledProduct* installed = agent.add_installed();
    *installed = reported;
    // An executable fleet did not install is recognised by its digest.
    if (reported.version().empty() && reported.sha256().size() == 32) {
      ASSIGN_OR_RETURN(
          std::optional<std::string> version,
          store_.VersionForDigest(reported.product(), hello.platform(),
                                  reported.sha256()));
      if (version) installed->set_version(*version);
    }
  }
  RETURN_IF_ERROR(store_.UpsertAgent(agent));

  ASSIGN_OR_RETURN(uint64_t acked, store_.MaxEventSeq(item.agent_id));
  v1::ControllerMessage welcome;
  welcome.mutable_welcome()->set_agent_id(item.agent_id);
  welcome.mutable_welcome()->set_server_time_unix_ms(now);
  welcome.mutable_welcome()->set_heartbeat_interval_seconds(
      static_cast<uint32_t>(absl::ToInt64Seconds(options_.heartbeat_interval)));
  welcome.mutable_welcome()->set_acked_event_seq(acked);
  ASSIGN_OR_RETURN(*welcome.mutable_welcome()->mutable_blacklist(),
                   BlacklistOf(agent));
  out.messages.push_back({item.agent_id, item.session, std::move(welcome)});
  sessions_[item.agent_id] = Connected{item.session, hello.platform()};
  last_seen_.erase(item.agent_id);  // stored above, newer
  LogDebug("agent connected", {{"agent_id", item.agent_id},
                               {"session", item.session},
                               {"acked_event_seq", acked}});
  RETURN_IF_ERROR(ResendReverts(agent, hello, item.session, out));
  for (const v1::InstalledProduct& installed : agent.installed()) {
    ASSIGN_OR_RETURN(
        std::optional<v1::BlacklistEntry> banned,
        store_.GetBlacklist(installed.product(), installed.version()));
    if (banned) {
      RETURN_IF_ERROR(LeadBack(agent, installed, *banned, out).status());
    }
  }
  return DirectAgent(agent, hello, item.session, out);
}

absl::StatusOr<google::protobuf::RepeatedPtrField<v1::BlacklistedVersion>>
ControlLoop::BlacklistOf(const v1::Agent& agent, BlacklistCache* cache) {
  google::protobuf::RepeatedPtrField<v1::BlacklistedVersion> list;
  absl::flat_hash_set<std::string> products;
  BlacklistCache local;
  if (cache == nullptr) cache = &local;
  for (const v1::InstalledProduct& installed : agent.installed()) {
    if (!products.insert(installed.product()).second) continue;
    auto it = cache->find(installed.product());
    if (it == cache->end()) {
      ASSIGN_OR_RETURN(std::vector<v1::BlacklistEntry> entries,
                       store_.ListBlacklist(installed.product()));
      it = cache->emplace(installed.product(), std::move(entries)).first;
    }
    for (const v1::BlacklistEntry& entry : it->second) {
      v1::BlacklistedVersion* banned = list.Add();
      banned->set_product(entry.product());
      banned->set_version(entry.version());
    }
  }
  return list;
}

absl::Status ControlLoop::SendBlacklistUpdates(const std::string& product,
                                               Output& out) {
  ASSIGN_OR_RETURN(std::vector<v1::Agent> agents, store_.ListAgents(product));
  // One read per product, not per agent.
  BlacklistCache cache;
  for (const v1::Agent& agent : agents) {
    const uint64_t session = SessionOf(agent.agent_id());
    if (session == 0) continue;
    v1::ControllerMessage message;
    ASSIGN_OR_RETURN(*message.mutable_blacklist()->mutable_entries(),
                     BlacklistOf(agent, &cache));
    out.messages.push_back({agent.agent_id(), session, std::move(message)});
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> ControlLoop::LeadBack(
    const v1::Agent& agent, const v1::InstalledProduct& installed,
    const v1::BlacklistEntry& banned, Output& out) {
  const std::string& product = installed.product();
  const std::string& version = installed.version();
  // One lead back per blacklisting: an agent that got one (even a failed
  // one) is not directed again until the version is blacklisted anew.
  ASSIGN_OR_RETURN(std::vector<RevertRecord> reverts,
                   store_.ListAgentReverts(agent.agent_id()));
  for (const RevertRecord& r : reverts) {
    if (r.product == product && r.from_version == version &&
        (!IsFinal(r.state) || r.created_ms >= banned.created_unix_ms())) {
      return false;
    }
  }
  ASSIGN_OR_RETURN(std::vector<v1::Release> releases,
                   store_.ListReleases(product, agent.platform()));
  std::vector<std::string> released;
  for (const v1::Release& release : releases) {
    released.push_back(release.version());
  }
  ASSIGN_OR_RETURN(std::vector<v1::BlacklistEntry> entries,
                   store_.ListBlacklist(product));
  std::vector<std::string> blacklisted;
  for (const v1::BlacklistEntry& entry : entries) {
    blacklisted.push_back(entry.version());
  }
  std::optional<std::string> to =
      LeadBackVersion(installed, released, blacklisted);
  if (!to) {
    LogWarning(
        "agent runs a blacklisted version and no release to lead it "
        "back to exists",
        {{"agent_id", agent.agent_id()},
         {"product", product},
         {"version", version},
         {"platform", agent.platform()}});
    return false;
  }
  RevertRecord revert;
  revert.directive_id = NewId("dir");
  revert.agent_id = agent.agent_id();
  revert.product = product;
  revert.rollout_id = BlacklistRolloutId(banned);
  revert.from_version = version;
  revert.to_version = *to;
  revert.state = v1::TARGET_STATE_DIRECTED;
  revert.created_ms = NowMs();
  revert.updated_ms = revert.created_ms;
  RETURN_IF_ERROR(StartRevert(revert, agent.platform(), out));
  LogInfo("leading agent back from a blacklisted version",
          {{"agent_id", agent.agent_id()},
           {"product", product},
           {"from_version", version},
           {"to_version", *to},
           {"directive_id", revert.directive_id},
           {"rollout_id", revert.rollout_id}});
  return true;
}

absl::Status ControlLoop::StartRevert(RevertRecord& revert,
                                      const std::string& platform,
                                      Output& out) {
  std::optional<v1::UpdateDirective> directive;
  if (revert.state == v1::TARGET_STATE_DIRECTED) {
    absl::StatusOr<v1::Release> release =
        store_.GetRelease(revert.product, revert.to_version, platform);
    if (release.ok()) {
      directive = MakeRevertDirective(revert, *release);
    } else if (absl::IsNotFound(release.status())) {
      revert.state = v1::TARGET_STATE_FAILED;
      revert.error = std::string(release.status().message());
    } else {
      return release.status();
    }
  }
  RETURN_IF_ERROR(store_.UpsertRevert(revert));
  RETURN_IF_ERROR(MirrorRevert(revert, /*created=*/true));
  const uint64_t session = SessionOf(revert.agent_id);
  if (directive && session != 0) {
    v1::ControllerMessage message;
    *message.mutable_directive() = *std::move(directive);
    out.messages.push_back({revert.agent_id, session, std::move(message)});
  }
  return absl::OkStatus();
}

absl::Status ControlLoop::MirrorRevert(const RevertRecord& revert,
                                       bool created) {
  if (revert.rollout_id.empty()) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::optional<v1::RolloutTarget> target,
                   store_.GetTarget(revert.rollout_id, revert.agent_id));
  if (!target) return absl::OkStatus();
  // A newer revert of the same target wins; events of an older one do not
  // overwrite it.
  if (!created && target->revert_directive_id() != revert.directive_id) {
    return absl::OkStatus();
  }
  SetRevertProgress(revert, *target);
  return store_.UpsertTarget(revert.rollout_id, *target);
}

absl::Status ControlLoop::ResendReverts(const v1::Agent& agent,
                                        const v1::Hello& hello,
                                        uint64_t session, Output& out) {
  ASSIGN_OR_RETURN(std::vector<RevertRecord> reverts,
                   store_.ListAgentReverts(agent.agent_id()));
  // Oldest first, the order they were given in.
  for (auto it = reverts.rbegin(); it != reverts.rend(); ++it) {
    const RevertRecord& revert = *it;
    if (revert.state != v1::TARGET_STATE_DIRECTED ||
        revert.directive_id == hello.last_directive_id() ||
        revert.directive_id == hello.active_directive_id()) {
      continue;
    }
    absl::StatusOr<v1::Release> release =
        store_.GetRelease(revert.product, revert.to_version, agent.platform());
    if (!release.ok()) {
      if (!absl::IsNotFound(release.status())) return release.status();
      RevertRecord failed = revert;
      failed.state = v1::TARGET_STATE_FAILED;
      failed.error = std::string(release.status().message());
      failed.updated_ms = NowMs();
      RETURN_IF_ERROR(store_.UpsertRevert(failed));
      RETURN_IF_ERROR(MirrorRevert(failed, /*created=*/false));
      continue;
    }
    v1::ControllerMessage message;
    *message.mutable_directive() = MakeRevertDirective(revert, *release);
    out.messages.push_back({agent.agent_id(), session, std::move(message)});
  }
  return absl::OkStatus();
}

absl::Status ControlLoop::DirectAgent(const v1::Agent& agent,
                                      const v1::Hello& hello, uint64_t session,
                                      Output& out) {
  for (const v1::InstalledProduct& product : agent.installed()) {
    ASSIGN_OR_RETURN(std::vector<RolloutRecord> active,
                     store_.ListRollouts(product.product(),
                                         /*active_only=*/true));
    for (RolloutRecord& record : active) {
      // A paused rollout still takes in agents that appear (as PENDING) and
      // resends directives already given; NeedsDirective holds back new ones.
      if (record.rollout.state() != v1::ROLLOUT_STATE_RUNNING &&
          record.rollout.state() != v1::ROLLOUT_STATE_PAUSED) {
        continue;
      }
      const std::string& rollout_id = record.rollout.rollout_id();
      ASSIGN_OR_RETURN(std::optional<v1::RolloutTarget> target,
                       store_.GetTarget(rollout_id, agent.agent_id()));
      if (!target) {
        ASSIGN_OR_RETURN(std::vector<std::string> platforms,
                         store_.ReleasePlatforms(record.rollout.product(),
                                                 record.rollout.version()));
        std::optional<v1::RolloutTarget> joined =
            NewTarget(record.rollout, agent, platforms, clock_.Now());
        if (!joined) continue;
        RETURN_IF_ERROR(store_.UpsertTarget(rollout_id, *joined));
        LogInfo("agent joined running rollout",
                {{"agent_id", agent.agent_id()},
                 {"rollout_id", rollout_id},
                 {"state", TargetStateName(joined->state())}});
        RETURN_IF_ERROR(Reconcile(record, out));
        continue;
      }
      if (RetakeSkippedTarget(record.rollout, product.version(), clock_.Now(),
                              *target)) {
        RETURN_IF_ERROR(store_.UpsertTarget(rollout_id, *target));
        LogInfo("skipped agent is back; target taken back",
                {{"agent_id", agent.agent_id()},
                 {"rollout_id", rollout_id},
                 {"state", TargetStateName(target->state())}});
        dirty_rollouts_.insert(rollout_id);
      }
      if (NeedsDirective(record, *target)) {
        ASSIGN_OR_RETURN(auto by_state, store_.CountTargetsByState(rollout_id));
        if (DirectiveBudget(record.rollout.max_in_flight(),
                            CountTargets(by_state)) > 0) {
          RETURN_IF_ERROR(
              SendNewDirective(record, *target, agent.platform(), out));
        }
        continue;
      }
      // Sent before but maybe lost with the old stream: resend unless the
      // agent says it has it.
      if (target->state() == v1::TARGET_STATE_DIRECTED &&
          target->directive_id() != hello.last_directive_id() &&
          target->directive_id() != hello.active_directive_id()) {
        absl::StatusOr<v1::UpdateDirective> directive =
            DirectiveFor(record, *target, agent.platform());
        if (!directive.ok()) return directive.status();
        v1::ControllerMessage message;
        *message.mutable_directive() = *std::move(directive);
        out.messages.push_back({agent.agent_id(), session, std::move(message)});
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ControlLoop::HandleEvents(EventItem& item, Output& out) {
  item.received_ms = NowMs();
  for (const v1::UpdateEvent& event : item.events) {
    RETURN_IF_ERROR(HandleEvent(item.agent_id, event, item.received_ms, out));
  }
  if (SessionOf(item.agent_id) == item.session) {
    last_seen_[item.agent_id] = item.received_ms;
  }
  return absl::OkStatus();
}

absl::Status ControlLoop::HandleEvent(const std::string& agent_id,
                                      const v1::UpdateEvent& event,
                                      int64_t received_ms, Output& out) {
  ASSIGN_OR_RETURN(bool stored_now,
                   store_.InsertEvent(agent_id, event, received_ms));
  out.acked_seq = std::max(out.acked_seq, event.seq());
  if (!stored_now) return absl::OkStatus();  // a resend after a reconnect

  if (event.phase() == v1::UPDATE_PHASE_HEALTHY && !event.product().empty() &&
      !event.to_version().empty()) {
    ASSIGN_OR_RETURN(v1::Agent agent, store_.GetAgent(agent_id));
    absl::StatusOr<v1::Release> release = store_.GetRelease(
        event.product(), event.to_version(), agent.platform());
    if (!release.ok() && !absl::IsNotFound(release.status())) {
      return release.status();
    }
    absl::Status installed = store_.SetInstalledVersion(
        agent_id, event.product(), event.to_version(),
        release.ok() ? release->sha256() : "");
    if (!installed.ok() && !absl::IsNotFound(installed)) return installed;
    // An update that was in flight when its version was blacklisted.
    ASSIGN_OR_RETURN(std::optional<v1::BlacklistEntry> banned,
                     store_.GetBlacklist(event.product(), event.to_version()));
    if (banned && installed.ok() && SessionOf(agent_id) != 0) {
      ASSIGN_OR_RETURN(v1::Agent updated, store_.GetAgent(agent_id));
      for (const v1::InstalledProduct& p : updated.installed()) {
        if (p.product() == event.product()) {
          RETURN_IF_ERROR(LeadBack(updated, p, *banned, out).status());
        }
      }
    }
  }

  // Progress reports outside any update (no directive) move nothing.
  if (event.directive_id().empty()) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::optional<RevertRecord> revert,
                   store_.GetRevert(event.directive_id()));
  if (revert) {
    if (revert->agent_id == agent_id &&
        ApplyRevertEvent(event, clock_.Now(), *revert)) {
      RETURN_IF_ERROR(store_.UpsertRevert(*revert));
      RETURN_IF_ERROR(MirrorRevert(*revert, /*created=*/false));
      if (IsFinal(revert->state)) {
        LogInfo("revert finished", {{"agent_id", agent_id},
                                    {"directive_id", revert->directive_id},
                                    {"rollout_id", revert->rollout_id},
                                    {"to_version", revert->to_version},
                                    {"state", TargetStateName(revert->state)},
                                    {"error", revert->error}});
      }
    }
    return absl::OkStatus();  // a revert never moves a rollout target
  }

  if (event.rollout_id().empty()) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::optional<v1::RolloutTarget> target,
                   store_.GetTarget(event.rollout_id(), agent_id));
  if (!target || !ApplyEvent(event, clock_.Now(), *target)) {
    return absl::OkStatus();
  }
  RETURN_IF_ERROR(store_.UpsertTarget(event.rollout_id(), *target));
  if (IsFinal(target->state())) {
    LogInfo("rollout target finished",
            {{"agent_id", agent_id},
             {"rollout_id", event.rollout_id()},
             {"state", TargetStateName(target->state())},
             {"error", target->error()}});
    finished_in_rollouts_.insert(event.rollout_id());
  }
  return absl::OkStatus();
}

absl::Status ControlLoop::HandleDisconnect(const DisconnectItem& item) {
  auto it = sessions_.find(item.agent_id);
  if (it == sessions_.end() || it->second.session != item.session) {
    return absl::OkStatus();
  }
  sessions_.erase(it);
  last_seen_.erase(item.agent_id);  // written below, newer
  LogDebug("agent disconnected", {{"agent_id", item.agent_id}});
  absl::Status status =
      store_.SetAgentConnected(item.agent_id, /*connected=*/false, NowMs());
  return absl::IsNotFound(status) ? absl::OkStatus() : status;
}

// --------------------------------------------------------------- rollouts

absl::Status ControlLoop::HandleCreateRollout(
    const v1::CreateRolloutRequest& request, v1::Rollout& result, Output& out) {
  ASSIGN_OR_RETURN(
      std::vector<std::string> platforms,
      store_.ReleasePlatforms(request.product(), request.version()));
  if (platforms.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("no release of ", request.product(), " ",
                     request.version(), " exists"));
  }
  const std::string& wanted = request.selector().platform();
  if (!wanted.empty() && std::find(platforms.begin(), platforms.end(),
                                   wanted) == platforms.end()) {
    return absl::FailedPreconditionError(
        absl::StrCat("no release of ", request.product(), " ",
                     request.version(), " exists for ", wanted, " (only for ",
                     absl::StrJoin(platforms, ", "), ")"));
  }
  ASSIGN_OR_RETURN(std::optional<v1::BlacklistEntry> banned,
                   store_.GetBlacklist(request.product(), request.version()));
  if (banned) {
    return absl::FailedPreconditionError(
        absl::StrCat("version ", request.product(), " ", request.version(),
                     " is blacklisted: ", banned->reason()));
  }
  ASSIGN_OR_RETURN(Stages stages, NormalizeStages(request.stages()));
  const int64_t now = NowMs();

  RolloutRecord record;
  v1::Rollout& rollout = record.rollout;
  rollout.set_rollout_id(NewId("ro"));
  rollout.set_product(request.product());
  rollout.set_version(request.version());
  *rollout.mutable_selector() = request.selector();
  *rollout.mutable_stages() = std::move(stages);
  if (request.has_max_in_flight()) {
    *rollout.mutable_max_in_flight() = request.max_in_flight();
  }
  if (HasGate(request.failure_policy())) {
    *rollout.mutable_failure_policy() = request.failure_policy();
  }
  rollout.set_offline_timeout_seconds(
      request.offline_timeout_seconds() > 0
          ? request.offline_timeout_seconds()
          : absl::ToInt64Seconds(options_.offline_timeout));
  rollout.set_state(v1::ROLLOUT_STATE_RUNNING);
  rollout.set_current_stage(0);
  rollout.set_created_unix_ms(now);
  rollout.set_updated_unix_ms(now);

  // One rollout at a time moves any one agent's product: a second one whose
  // selector could match the same agent waits until the first ends.
  ASSIGN_OR_RETURN(std::vector<RolloutRecord> active,
                   store_.ListRollouts(request.product(),
                                       /*active_only=*/true));
  for (const RolloutRecord& other : active) {
    if (SelectorsOverlap(other.rollout.selector(), request.selector())) {
      return absl::FailedPreconditionError(absl::StrCat(
          "active rollout ", other.rollout.rollout_id(), " of ",
          other.rollout.product(), " ", other.rollout.version(), " is ",
          RolloutStateName(other.rollout.state()),
          " and its selector overlaps this one; wait for it to complete or "
          "abort it first"));
    }
  }
  RETURN_IF_ERROR(store_.InsertRollout(record));

  ASSIGN_OR_RETURN(std::vector<v1::Agent> agents,
                   store_.ListAgents(request.product()));
  std::vector<v1::RolloutTarget> targets;
  targets.reserve(agents.size());
  const absl::Time created = clock_.Now();
  for (const v1::Agent& agent : agents) {
    std::optional<v1::RolloutTarget> target =
        NewTarget(rollout, agent, platforms, created);
    if (target) targets.push_back(*std::move(target));
  }
  // The first chunk is directed before any target is written, so each
  // target is written once, in its final state for this transaction
  // (DIRECTED with its directive id where one is sent after the commit).
  RETURN_IF_ERROR(ReconcileTargets(record, targets, /*stored=*/false, out));
  for (const v1::RolloutTarget& target : targets) {
    RETURN_IF_ERROR(store_.UpsertTarget(rollout.rollout_id(), target));
  }
  // Nothing has reverted yet: the counts are those of `targets`.
  result = record.rollout;
  *result.mutable_counts() = CountTargets(targets);
  return absl::OkStatus();
}

absl::Status ControlLoop::HandleChangeRollout(const std::string& rollout_id,
                                              RolloutCommand command,
                                              const std::string& reason,
                                              bool rollback,
                                              v1::Rollout& result,
                                              Output& out) {
  ASSIGN_OR_RETURN(RolloutRecord record, store_.GetRollout(rollout_id));
  const bool revert = command == RolloutCommand::kAbort && rollback;
  // Rolling back an already aborted rollout (by a gate, or an abort without
  // rollback) only directs its targets back.
  if (!(revert && record.rollout.state() == v1::ROLLOUT_STATE_ABORTED)) {
    RETURN_IF_ERROR(ApplyRolloutCommand(command, reason, clock_.Now(), record));
  }
  if (revert) {
    record.rollout.set_state_reason(
        absl::StrCat(record.rollout.state_reason(), "; rolled back"));
  }
  if (command == RolloutCommand::kResume) {
    // A gate that blacklisted the version paused the rollout for good.
    ASSIGN_OR_RETURN(std::optional<v1::BlacklistEntry> banned,
                     store_.GetBlacklist(record.rollout.product(),
                                         record.rollout.version()));
    if (banned) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot resume rollout ", rollout_id, ": version ",
                       record.rollout.product(), " ", record.rollout.version(),
                       " is blacklisted: ", banned->reason()));
    }
    // The operator overrides the gate: it evaluates again on new samples
    // only.
    ASSIGN_OR_RETURN(auto by_state, store_.CountTargetsByState(rollout_id));
    const v1::TargetCounts counts = CountTargets(by_state);
    record.gate_armed_samples = counts.healthy() + counts.failed();
  }
  RETURN_IF_ERROR(store_.UpdateRollout(record));
  // Resuming directs the current stage's PENDING targets in this transaction.
  if (record.rollout.state() == v1::ROLLOUT_STATE_RUNNING) {
    RETURN_IF_ERROR(Reconcile(record, out));
  }
  if (revert) RETURN_IF_ERROR(RevertTargets(record, out));
  ASSIGN_OR_RETURN(result, WithCounts(record));
  return absl::OkStatus();
}

absl::StatusOr<v1::Rollout> ControlLoop::WithCounts(
    const RolloutRecord& record) {
  const std::string& rollout_id = record.rollout.rollout_id();
  ASSIGN_OR_RETURN(auto by_state, store_.CountTargetsByState(rollout_id));
  ASSIGN_OR_RETURN(auto by_revert, store_.CountRevertsByState(rollout_id));
  v1::Rollout rollout = record.rollout;
  *rollout.mutable_counts() = CountTargets(by_state);
  AddRevertCounts(by_revert, *rollout.mutable_counts());
  return rollout;
}

absl::Status ControlLoop::RevertTargets(const RolloutRecord& record,
                                        Output& out) {
  const v1::Rollout& rollout = record.rollout;
  ASSIGN_OR_RETURN(std::vector<v1::RolloutTarget> targets,
                   store_.ListTargets(rollout.rollout_id()));
  for (const v1::RolloutTarget& target : targets) {
    if (!NeedsRevert(rollout, target)) continue;
    ASSIGN_OR_RETURN(v1::Agent agent, store_.GetAgent(target.agent_id()));
    RevertRecord revert;
    revert.directive_id = NewId("dir");
    revert.agent_id = target.agent_id();
    revert.product = rollout.product();
    revert.rollout_id = rollout.rollout_id();
    revert.from_version = rollout.version();
    revert.to_version = target.from_version();
    revert.state = v1::TARGET_STATE_DIRECTED;
    revert.created_ms = NowMs();
    revert.updated_ms = revert.created_ms;
    if (target.from_version().empty()) {
      revert.state = v1::TARGET_STATE_FAILED;
      revert.error = absl::StrCat("not reverted: the agent had no version of ",
                                  rollout.product(), " before this rollout");
    } else {
      ASSIGN_OR_RETURN(
          std::optional<v1::BlacklistEntry> banned,
          store_.GetBlacklist(rollout.product(), target.from_version()));
      if (banned) {
        revert.state = v1::TARGET_STATE_FAILED;
        revert.error =
            absl::StrCat("not reverted: from_version ", target.from_version(),
                         " is blacklisted: ", banned->reason());
      }
    }
    // An update still in flight is stopped before the swap if it can be;
    // otherwise the rollback directive, queued behind it, undoes it.
    const uint64_t session = SessionOf(target.agent_id());
    if (revert.state == v1::TARGET_STATE_DIRECTED && session != 0 &&
        !IsFinal(target.state()) && !target.directive_id().empty()) {
      v1::ControllerMessage cancel;
      cancel.mutable_cancel()->set_directive_id(target.directive_id());
      cancel.mutable_cancel()->set_reason(absl::StrCat(
          "rollout ", rollout.rollout_id(), " aborted with rollback"));
      out.messages.push_back({target.agent_id(), session, std::move(cancel)});
    }
    RETURN_IF_ERROR(StartRevert(revert, agent.platform(), out));
  }
  return absl::OkStatus();
}

absl::Status ControlLoop::HandleAddBlacklist(v1::BlacklistEntry entry,
                                             v1::AddBlacklistResponse& result,
                                             Output& out) {
  return BlacklistVersion(std::move(entry), /*except_rollout_id=*/"", result,
                          out);
}

absl::Status ControlLoop::BlacklistVersion(v1::BlacklistEntry entry,
                                           const std::string& except_rollout_id,
                                           v1::AddBlacklistResponse& result,
                                           Output& out) {
  const int64_t now = NowMs();
  entry.set_created_unix_ms(now);
  RETURN_IF_ERROR(store_.InsertBlacklist(entry));
  ASSIGN_OR_RETURN(std::vector<RolloutRecord> active,
                   store_.ListRollouts(entry.product(), /*active_only=*/true));
  for (RolloutRecord& record : active) {
    if (record.rollout.version() != entry.version() ||
        record.rollout.rollout_id() == except_rollout_id) {
      continue;
    }
    record.rollout.set_state(v1::ROLLOUT_STATE_ABORTED);
    record.rollout.set_state_reason(
        absl::StrCat("aborted: version ", entry.product(), " ", entry.version(),
                     " blacklisted: ", entry.reason()));
    record.rollout.set_updated_unix_ms(now);
    RETURN_IF_ERROR(store_.UpdateRollout(record));
    result.add_aborted_rollout_ids(record.rollout.rollout_id());
  }
  RETURN_IF_ERROR(SendBlacklistUpdates(entry.product(), out));
  // Connected agents on the version go back now; the others when they say
  // Hello.
  ASSIGN_OR_RETURN(std::vector<v1::Agent> agents,
                   store_.ListAgents(entry.product()));
  for (const v1::Agent& agent : agents) {
    if (SessionOf(agent.agent_id()) == 0) continue;
    for (const v1::InstalledProduct& installed : agent.installed()) {
      if (installed.product() != entry.product() ||
          installed.version() != entry.version()) {
        continue;
      }
      ASSIGN_OR_RETURN(bool led, LeadBack(agent, installed, entry, out));
      if (led) result.set_led_back_agents(result.led_back_agents() + 1);
    }
  }
  *result.mutable_entry() = std::move(entry);
  return absl::OkStatus();
}

absl::Status ControlLoop::MarkBakingRollouts(bool all_running) {
  ASSIGN_OR_RETURN(std::vector<RolloutRecord> active,
                   store_.ListRollouts("", /*active_only=*/true));
  for (const RolloutRecord& record : active) {
    if (record.rollout.state() == v1::ROLLOUT_STATE_RUNNING &&
        (all_running || record.stage_settled_ms != 0)) {
      dirty_rollouts_.insert(record.rollout.rollout_id());
    }
  }
  return absl::OkStatus();
}

absl::Status ControlLoop::ReconcileDirty(Output& out) {
  // Reconciling may mark rollouts dirty again; those wait for the next pass.
  absl::flat_hash_set<std::string> dirty = std::exchange(dirty_rollouts_, {});
  absl::flat_hash_set<std::string> finished =
      std::exchange(finished_in_rollouts_, {});
  for (const std::string& rollout_id : dirty) {
    absl::Status status = [&]() -> absl::Status {
      ASSIGN_OR_RETURN(RolloutRecord record, store_.GetRollout(rollout_id));
      return Reconcile(record, out);
    }();
    if (!status.ok()) {
      dirty_rollouts_.insert(dirty.begin(), dirty.end());
      finished_in_rollouts_.insert(finished.begin(), finished.end());
      return status;
    }
  }
  for (const std::string& rollout_id : finished) {
    if (dirty.contains(rollout_id)) continue;
    absl::Status status = ReconcileAfterEvents(rollout_id, out);
    if (!status.ok()) {
      // Retried in full with the next batch or tick.
      dirty_rollouts_.insert(finished.begin(), finished.end());
      return status;
    }
  }
  return absl::OkStatus();
}

absl::Status ControlLoop::ReconcileAfterEvents(const std::string& rollout_id,
                                               Output& out) {
  ASSIGN_OR_RETURN(RolloutRecord record, store_.GetRollout(rollout_id));
  // Only a RUNNING rollout evaluates its gate, advances or directs.
  if (record.rollout.state() != v1::ROLLOUT_STATE_RUNNING) {
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(auto by_stage,
                   store_.CountTargetsByStageAndState(rollout_id));
  std::map<v1::TargetState, uint32_t> by_state;
  uint32_t unsettled = 0;  // not final in a started stage
  for (const auto& [key, n] : by_stage) {
    const auto& [stage, state] = key;
    by_state[state] += n;
    if (stage <= record.rollout.current_stage() && !IsFinal(state)) {
      unsettled += n;
    }
  }
  const v1::TargetCounts counts = CountTargets(by_state);
  RETURN_IF_ERROR(CheckGate(record, counts, out));
  if (record.rollout.state() != v1::ROLLOUT_STATE_RUNNING) {
    return absl::OkStatus();
  }
  // Without a max_in_flight every PENDING target of a started stage was
  // directed when the stage started or its agent said Hello; with one, a
  // finished target frees a slot for the next.
  const bool slot_freed =
      record.rollout.max_in_flight().limit_case() !=
          v1::MaxInFlight::LIMIT_NOT_SET &&
      counts.pending() > 0 &&
      DirectiveBudget(record.rollout.max_in_flight(), counts) > 0;
  if (unsettled == 0 || slot_freed) return Reconcile(record, out);
  return absl::OkStatus();
}

absl::Status ControlLoop::Reconcile(RolloutRecord& record, Output& out) {
  ASSIGN_OR_RETURN(std::vector<v1::RolloutTarget> targets,
                   store_.ListTargets(record.rollout.rollout_id()));
  return ReconcileTargets(record, targets, /*stored=*/true, out);
}

absl::Status ControlLoop::ReconcileTargets(
    RolloutRecord& record, std::vector<v1::RolloutTarget>& targets, bool stored,
    Output& out) {
  const std::string& rollout_id = record.rollout.rollout_id();
  if (record.rollout.state() == v1::ROLLOUT_STATE_RUNNING) {
    RETURN_IF_ERROR(SkipOfflineTargets(record, targets, stored));
    RETURN_IF_ERROR(CheckGate(record, CountTargets(targets), out));
  }
  const uint32_t stage_before = record.rollout.current_stage();
  if (AdvanceRollout(targets, clock_.Now(), record)) {
    RETURN_IF_ERROR(store_.UpdateRollout(record));
    if (record.rollout.current_stage() != stage_before) {
      LogInfo("rollout stage started",
              {{"rollout_id", rollout_id},
               {"stage", record.rollout.current_stage()}});
    }
    if (record.rollout.state() == v1::ROLLOUT_STATE_COMPLETED) {
      LogInfo("rollout completed", {{"rollout_id", rollout_id},
                                    {"reason", record.rollout.state_reason()}});
    }
  }
  uint32_t budget =
      DirectiveBudget(record.rollout.max_in_flight(), CountTargets(targets));
  int chunk = std::max(1, options_.directive_chunk);
  DirectiveCache directives;
  for (v1::RolloutTarget& target : targets) {
    if (budget == 0) break;
    if (!NeedsDirective(record, target)) continue;
    const std::string* platform = PlatformOf(target.agent_id());
    if (platform == nullptr) continue;  // directed when it says Hello
    if (chunk == 0) {
      // Journaled and sent with the next batch: the ones of this chunk
      // leave as soon as it commits.
      dirty_rollouts_.insert(rollout_id);
      more_directives_ = true;
      break;
    }
    --budget;
    --chunk;
    RETURN_IF_ERROR(
        SendNewDirective(record, target, *platform, out, &directives, stored));
  }
  return absl::OkStatus();
}

absl::Status ControlLoop::SkipOfflineTargets(
    const RolloutRecord& record, std::vector<v1::RolloutTarget>& targets,
    bool stored) {
  const absl::Time now = clock_.Now();
  for (v1::RolloutTarget& target : targets) {
    if (IsFinal(target.state()) ||
        target.stage() > record.rollout.current_stage() ||
        SessionOf(target.agent_id()) != 0) {
      continue;
    }
    absl::StatusOr<v1::Agent> agent = store_.GetAgent(target.agent_id());
    if (!agent.ok()) {
      if (absl::IsNotFound(agent.status())) continue;
      return agent.status();
    }
    // Nobody could reach the controller while it was down.
    const absl::Time offline_since =
        std::max(absl::FromUnixMillis(agent->last_seen_unix_ms()), loop_start_);
    if (!SkipIfOffline(record.rollout, offline_since, now, target)) continue;
    if (stored) {
      RETURN_IF_ERROR(store_.UpsertTarget(record.rollout.rollout_id(), target));
    }
    LogWarning("rollout target skipped: agent offline",
               {{"agent_id", target.agent_id()},
                {"rollout_id", record.rollout.rollout_id()},
                {"error", target.error()}});
  }
  return absl::OkStatus();
}

absl::Status ControlLoop::CheckGate(RolloutRecord& record,
                                    const v1::TargetCounts& counts,
                                    Output& out) {
  const v1::FailurePolicy& policy = record.rollout.failure_policy();
  std::optional<GateTrip> trip =
      EvaluateGate(policy, counts, record.gate_armed_samples);
  if (!trip) return absl::OkStatus();
  const std::string& rollout_id = record.rollout.rollout_id();
  ApplyGateTrip(*trip, policy, clock_.Now(), record);
  RETURN_IF_ERROR(store_.UpdateRollout(record));
  LogWarning("rollout failure gate tripped",
             {{"rollout_id", rollout_id},
              {"state", RolloutStateName(record.rollout.state())},
              {"reason", record.rollout.state_reason()}});
  if (!policy.blacklist()) return absl::OkStatus();
  ASSIGN_OR_RETURN(
      std::optional<v1::BlacklistEntry> banned,
      store_.GetBlacklist(record.rollout.product(), record.rollout.version()));
  if (banned) return absl::OkStatus();
  v1::AddBlacklistResponse added;
  RETURN_IF_ERROR(BlacklistVersion(GateBlacklistEntry(*trip, record.rollout),
                                   rollout_id, added, out));
  LogWarning(
      "version blacklisted by a failure gate",
      {{"rollout_id", rollout_id},
       {"product", record.rollout.product()},
       {"version", record.rollout.version()},
       {"led_back_agents", added.led_back_agents()},
       {"aborted_rollouts", absl::StrJoin(added.aborted_rollout_ids(), ",")}});
  return absl::OkStatus();
}

absl::StatusOr<v1::UpdateDirective> ControlLoop::DirectiveFor(
    const RolloutRecord& record, const v1::RolloutTarget& target,
    const std::string& platform, DirectiveCache* cache) {
  DirectiveCache local;
  if (cache == nullptr) cache = &local;
  auto it = cache->find(platform);
  if (it == cache->end()) {
    absl::StatusOr<v1::Release> release = store_.GetRelease(
        record.rollout.product(), record.rollout.version(), platform);
    absl::StatusOr<v1::UpdateDirective> made =
        release.ok() ? absl::StatusOr<v1::UpdateDirective>(MakeDirective(
                           "", record.rollout.rollout_id(), *release))
                     : absl::StatusOr<v1::UpdateDirective>(release.status());
    it = cache->emplace(platform, std::move(made)).first;
  }
  if (!it->second.ok()) return it->second.status();
  v1::UpdateDirective directive = *it->second;
  directive.set_directive_id(target.directive_id());
  return directive;
}

absl::Status ControlLoop::SendNewDirective(const RolloutRecord& record,
                                           v1::RolloutTarget& target,
                                           const std::string& platform,
                                           Output& out, DirectiveCache* cache,
                                           bool store_target) {
  const std::string& rollout_id = record.rollout.rollout_id();
  target.set_directive_id(NewId("dir"));
  target.set_updated_unix_ms(NowMs());
  absl::StatusOr<v1::UpdateDirective> directive =
      DirectiveFor(record, target, platform, cache);
  if (absl::IsNotFound(directive.status())) {
    // The agent moved to a platform this release does not exist for.
    target.set_directive_id("");
    target.set_state(v1::TARGET_STATE_FAILED);
    target.set_error(std::string(directive.status().message()));
    if (store_target) {
      RETURN_IF_ERROR(store_.UpsertTarget(rollout_id, target));
    }
    dirty_rollouts_.insert(rollout_id);
    return absl::OkStatus();
  }
  if (!directive.ok()) return directive.status();
  target.set_state(v1::TARGET_STATE_DIRECTED);
  if (store_target) RETURN_IF_ERROR(store_.UpsertTarget(rollout_id, target));
  const uint64_t session = SessionOf(target.agent_id());
  if (session != 0) {
    v1::ControllerMessage message;
    *message.mutable_directive() = *std::move(directive);
    out.messages.push_back({target.agent_id(), session, std::move(message)});
  }
  return absl::OkStatus();
}

int64_t ControlLoop::NowMs() const { return absl::ToUnixMillis(clock_.Now()); }

uint64_t ControlLoop::SessionOf(const std::string& agent_id) const {
  auto it = sessions_.find(agent_id);
  return it == sessions_.end() ? 0 : it->second.session;
}

const std::string* ControlLoop::PlatformOf(const std::string& agent_id) const {
  auto it = sessions_.find(agent_id);
  return it == sessions_.end() ? nullptr : &it->second.platform;
}

}  // namespace fleet::controller
