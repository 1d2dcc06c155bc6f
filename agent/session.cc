#include "agent/session.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "agent/platform/process.h"
#include "common/backoff.h"
#include "common/files.h"
#include "common/grpc_status.h"
#include "common/log.h"
#include "common/names.h"
#include "common/sha256.h"

namespace fleet::agent {
namespace {

constexpr int kEventBatch = 64;

std::string Hostname() {
  char name[256] = {0};
  if (gethostname(name, sizeof(name) - 1) != 0) return "";
  return name;
}

}  // namespace

grpc::ChannelArguments AgentChannelArguments() {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 20'000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10'000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 500);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 500);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 30'000);
  return args;
}

Session::Session(SessionOptions options, v1::AgentService::StubInterface& stub,
                 UpdateJournal& journal, DirectiveHandler& handler,
                 ProgramStatsFn program_stats, const Clock& clock)
    : options_(std::move(options)),
      stub_(stub),
      journal_(journal),
      handler_(handler),
      program_stats_(std::move(program_stats)),
      clock_(clock),
      started_(clock.Now()) {}

bool Session::shutting_down() const {
  absl::MutexLock lock(&mu_);
  return shutdown_;
}

uint64_t Session::welcomes() const {
  absl::MutexLock lock(&mu_);
  return welcomes_;
}

bool Session::connected() const {
  absl::MutexLock lock(&mu_);
  return connected_;
}

void Session::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    shutdown_ = true;
    if (context_ != nullptr) context_->TryCancel();
  }
  journal_.Interrupt();
}

void Session::Run() {
  // Full jitter: a controller restart must not bring every agent back at
  // the same instant.
  Backoff backoff(options_.backoff_base, options_.backoff_cap);
  while (!shutting_down()) {
    const uint64_t welcomes_before = welcomes();
    absl::Status ended = Serve();
    if (shutting_down()) break;
    if (welcomes() != welcomes_before) backoff.Reset();
    const absl::Duration delay = backoff.NextDelay();
    const int failures = backoff.failures();
    // A controller restarting is routine (UNAVAILABLE a few times); a
    // refusal, or unavailability that persists, is worth a warning.
    const nlohmann::json fields = {
        {"error", ended.ToString()},
        {"retry_in_ms", absl::ToInt64Milliseconds(delay)}};
    if (absl::IsUnavailable(ended) && failures <= 3) {
      LogInfo("controller stream ended; reconnecting", fields);
    } else {
      LogWarning("controller stream ended; reconnecting", fields);
    }
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&shutdown_), delay);
  }
  LogInfo("session stopped");
}

v1::Hello Session::BuildHello() {
  v1::Hello hello;
  hello.set_agent_id(options_.agent_id);
  hello.set_agent_version(options_.agent_version);
  hello.set_platform(HostPlatform());
  hello.set_hostname(Hostname());
  for (const auto& [key, value] : options_.labels) {
    (*hello.mutable_labels())[key] = value;
  }
  v1::InstalledProduct* installed = hello.add_installed();
  installed->set_product(options_.product);
  absl::StatusOr<Digest> digest = Sha256OfFile(options_.exec_path);
  if (digest.ok()) {
    installed->set_sha256(DigestToBytes(*digest));
    absl::StatusOr<std::optional<InstalledRecord>> record =
        journal_.FindInstalled(options_.product);
    // The journal's version only if the file on disk is what fleet put
    // there; otherwise the controller resolves the version by digest.
    if (record.ok() && record->has_value() &&
        (*record)->sha256 == installed->sha256()) {
      installed->set_version((*record)->version);
    }
  }
  // What the controller leads this agent back to if its version is
  // blacklisted.
  absl::StatusOr<std::vector<std::string>> previous =
      journal_.PreviousVersions(options_.product, installed->version());
  if (previous.ok()) {
    for (std::string& version : *previous) {
      installed->add_previous_versions(std::move(version));
    }
  }
  if (!options_.agent_product.empty()) {
    v1::InstalledProduct* self = hello.add_installed();
    self->set_product(options_.agent_product);
    self->set_version(options_.agent_version);
    absl::StatusOr<Digest> self_digest = Sha256OfFile(options_.agent_exec_path);
    if (self_digest.ok()) {
      self->set_sha256(DigestToBytes(*self_digest));
      absl::StatusOr<std::optional<InstalledRecord>> record =
          journal_.FindInstalled(options_.agent_product);
      // A self-update's signed version outranks the built-in one (a
      // release may carry the same code under a new version).
      if (record.ok() && record->has_value() &&
          (*record)->sha256 == self->sha256()) {
        self->set_version((*record)->version);
      }
    }
    absl::StatusOr<std::vector<std::string>> before =
        journal_.PreviousVersions(options_.agent_product, self->version());
    if (before.ok()) {
      for (std::string& version : *before) {
        self->add_previous_versions(std::move(version));
      }
    }
  }
  absl::StatusOr<std::string> last = journal_.LastDirectiveId();
  if (last.ok()) hello.set_last_directive_id(*last);
  absl::StatusOr<std::optional<UpdateRecord>> active = journal_.ActiveUpdate();
  if (active.ok() && active->has_value()) {
    hello.set_active_directive_id((*active)->directive_id);
  }
  if (trust_ != nullptr) hello.set_root_version(trust_->version());
  return hello;
}

v1::Heartbeat Session::BuildHeartbeat() {
  v1::Heartbeat hb;
  hb.set_uptime_seconds(absl::ToInt64Seconds(clock_.Now() - started_));
  if (absl::StatusOr<uint64_t> rss = ResidentBytes(getpid()); rss.ok()) {
    hb.set_agent_rss_bytes(*rss);
  }
  if (absl::StatusOr<uint64_t> cpu = CpuMillis(getpid()); cpu.ok()) {
    hb.set_agent_cpu_ms(*cpu);
  }
  if (absl::StatusOr<uint64_t> free = FreeBytes(options_.state_dir);
      free.ok()) {
    hb.set_state_dir_free_bytes(*free);
  }
  if (program_stats_) program_stats_(hb);
  if (trust_ != nullptr) {
    trust_->NoteExpiry();
    hb.set_root_version(trust_->version());
    hb.set_root_expires_unix_seconds(absl::ToUnixSeconds(trust_->expires()));
  }
  return hb;
}

absl::Status Session::Serve() {
  grpc::ClientContext ctx;
  {
    absl::MutexLock lock(&mu_);
    if (shutdown_) return absl::CancelledError("shutting down");
    context_ = &ctx;
  }
  absl::Cleanup forget_context = [this] {
    absl::MutexLock lock(&mu_);
    context_ = nullptr;
    connected_ = false;
  };
  std::unique_ptr<grpc::ClientReaderWriterInterface<v1::AgentMessage,
                                                    v1::ControllerMessage>>
      stream = stub_.Connect(&ctx);

  // Ends the call and returns why, with the controller's status when it
  // gave one. `cancel` is for endings this side chose: when the controller
  // ended the stream (a read or write failed), cancelling first would
  // replace its status (UNAVAILABLE at a planned shutdown) by CANCELLED.
  auto finish = [&](absl::string_view what, bool cancel) {
    if (cancel) ctx.TryCancel();
    absl::Status status = FromGrpcStatus(stream->Finish());
    if (status.ok()) return absl::UnavailableError(what);
    return absl::Status(status.code(),
                        absl::StrCat(what, ": ", status.message()));
  };

  v1::AgentMessage hello;
  *hello.mutable_hello() = BuildHello();
  if (!stream->Write(hello)) return finish("Hello not sent", false);
  v1::ControllerMessage first;
  if (!stream->Read(&first)) {
    return finish("stream ended before Welcome", false);
  }
  if (!first.has_welcome()) {
    return finish("first message was not a Welcome", true);
  }
  const v1::Welcome& welcome = first.welcome();
  const uint64_t acked = welcome.acked_event_seq();
  if (acked > journal_.LastEventSeq()) {
    LogWarning(
        "controller holds newer events than this journal; skipping "
        "their seqs",
        {{"acked_event_seq", acked}, {"journal_seq", journal_.LastEventSeq()}});
    if (absl::Status raised = journal_.EnsureSeqAbove(acked); !raised.ok()) {
      return finish(raised.ToString(), true);
    }
  }
  if (absl::Status dropped = journal_.AckEvents(acked); !dropped.ok()) {
    LogError("journal ack failed", {{"error", dropped.ToString()}});
  }
  handler_.SetBlacklist(
      {welcome.blacklist().begin(), welcome.blacklist().end()});
  // A refused root is logged by Apply and the current one stays: the
  // stream goes on (trust only ever moves forward through Update).
  if (trust_ != nullptr && !welcome.roots().empty()) {
    (void)trust_->Apply(welcome.roots());
  }
  const absl::Duration interval =
      welcome.heartbeat_interval_seconds() > 0
          ? absl::Seconds(welcome.heartbeat_interval_seconds())
          : options_.heartbeat_interval;
  {
    absl::MutexLock lock(&mu_);
    connected_ = true;
    ++welcomes_;
  }
  LogInfo("connected to controller",
          {{"agent_id", options_.agent_id},
           {"acked_event_seq", acked},
           {"heartbeat_interval_s", absl::ToInt64Seconds(interval)}});

  std::atomic<bool> reader_done{false};
  std::thread reader([&] {
    v1::ControllerMessage msg;
    while (stream->Read(&msg)) {
      switch (msg.body_case()) {
        case v1::ControllerMessage::kDirective:
          LogInfo("directive received",
                  {{"directive_id", msg.directive().directive_id()},
                   {"rollout_id", msg.directive().rollout_id()}});
          handler_.Submit(msg.directive());
          break;
        case v1::ControllerMessage::kCancel:
          LogInfo("cancel received",
                  {{"directive_id", msg.cancel().directive_id()},
                   {"reason", msg.cancel().reason()}});
          handler_.Cancel(msg.cancel().directive_id(), msg.cancel().reason());
          break;
        case v1::ControllerMessage::kAck:
          if (absl::Status s = journal_.AckEvents(msg.ack().acked_seq());
              !s.ok()) {
            LogError("journal ack failed", {{"error", s.ToString()}});
          }
          break;
        case v1::ControllerMessage::kBlacklist:
          LogInfo("blacklist update received",
                  {{"entries", msg.blacklist().entries_size()}});
          handler_.SetBlacklist({msg.blacklist().entries().begin(),
                                 msg.blacklist().entries().end()});
          break;
        case v1::ControllerMessage::kRoot:
          LogInfo("root update received", {{"roots", msg.root().roots_size()}});
          if (trust_ != nullptr) (void)trust_->Apply(msg.root().roots());
          break;
        case v1::ControllerMessage::kWelcome:
          LogWarning("unexpected Welcome on an open stream");
          break;
        default:
          LogWarning("unknown controller message");
          break;
      }
    }
    reader_done = true;
    journal_.Interrupt();
  });

  // 0 (an older controller): one event per message.
  const size_t max_batch = welcome.max_events_per_batch();
  uint64_t sent = acked;
  absl::Time next_heartbeat = absl::Now() + interval;
  std::string why = "stream ended";
  while (!reader_done && !shutting_down()) {
    absl::StatusOr<std::vector<v1::UpdateEvent>> pending =
        journal_.PendingEvents(sent, kEventBatch);
    if (!pending.ok()) {
      why = "journal read failed: " + pending.status().ToString();
      break;
    }
    bool write_failed = false;
    if (max_batch > 1 && pending->size() > 1) {
      // A backlog (resends after a reconnect, a burst of phases) goes in
      // batches: each message costs both sides far more than an event.
      for (size_t i = 0; i < pending->size() && !write_failed; i += max_batch) {
        const size_t end = std::min(pending->size(), i + max_batch);
        v1::AgentMessage msg;
        for (size_t j = i; j < end; ++j) {
          *msg.mutable_events()->add_events() = std::move((*pending)[j]);
        }
        const uint64_t last = msg.events().events(end - i - 1).seq();
        if (!stream->Write(msg)) {
          write_failed = true;
        } else {
          sent = last;
        }
      }
    } else {
      for (v1::UpdateEvent& event : *pending) {
        const uint64_t seq = event.seq();
        v1::AgentMessage msg;
        *msg.mutable_event() = std::move(event);
        if (!stream->Write(msg)) {
          write_failed = true;
          break;
        }
        sent = seq;
      }
    }
    if (write_failed) {
      why = "event write failed";
      break;
    }
    if (absl::Now() >= next_heartbeat) {
      v1::AgentMessage msg;
      *msg.mutable_heartbeat() = BuildHeartbeat();
      if (!stream->Write(msg)) {
        why = "heartbeat write failed";
        break;
      }
      next_heartbeat = absl::Now() + interval;
    }
    if (pending->size() == kEventBatch) continue;
    // The 1 s bound covers an Interrupt() that raced with this call.
    journal_.WaitForEventAfter(
        sent, std::min(next_heartbeat, absl::Now() + absl::Seconds(1)));
  }
  // The reader ending first means the controller closed the stream: its
  // status is worth reading. Otherwise this side is leaving and cancels,
  // which also unblocks the reader.
  if (!reader_done) ctx.TryCancel();
  reader.join();
  absl::Status status = FromGrpcStatus(stream->Finish());
  if (status.ok()) return absl::UnavailableError(why);
  return absl::Status(status.code(), absl::StrCat(why, ": ", status.message()));
}

}  // namespace fleet::agent
