#include "bench/agent_simulator.h"

#include <grpcpp/grpcpp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <deque>
#include <fstream>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/sha256.h"
#include "proto/fleet/v1/agent.grpc.pb.h"

namespace fleet::bench {

struct AgentSimulator::Counters {
  std::atomic<int64_t> agents{0};
  std::atomic<int64_t> connected{0};
  std::atomic<int64_t> welcomes{0};
  std::atomic<int64_t> directives{0};
  std::atomic<int64_t> duplicate_directives{0};
  std::atomic<int64_t> healthy{0};
  std::atomic<int64_t> failed{0};
  std::atomic<int64_t> events_sent{0};
  std::atomic<int64_t> events_acked{0};
  std::atomic<int64_t> heartbeats{0};
  std::atomic<int64_t> fetch_bytes{0};
  // Reactors not yet done (streams and fetches): Shutdown waits for 0.
  std::atomic<int64_t> reactors_alive{0};
  std::atomic<int64_t> stream_ends[17] = {};
  // The first message seen per code, to tell one cause of an end from
  // another (e.g. which CANCELLED).
  absl::Mutex mu;
  std::map<int, std::string> first_end_message ABSL_GUARDED_BY(mu);
};

namespace {

using v1::AgentMessage;
using v1::ControllerMessage;

constexpr const char* kCodeNames[17] = {"OK",
                                        "CANCELLED",
                                        "UNKNOWN",
                                        "INVALID_ARGUMENT",
                                        "DEADLINE_EXCEEDED",
                                        "NOT_FOUND",
                                        "ALREADY_EXISTS",
                                        "PERMISSION_DENIED",
                                        "RESOURCE_EXHAUSTED",
                                        "FAILED_PRECONDITION",
                                        "ABORTED",
                                        "OUT_OF_RANGE",
                                        "UNIMPLEMENTED",
                                        "INTERNAL",
                                        "UNAVAILABLE",
                                        "DATA_LOSS",
                                        "UNAUTHENTICATED"};

// The phases a successful update reports after RECEIVED, in order.
constexpr v1::UpdatePhase kPhases[] = {
    v1::UPDATE_PHASE_DOWNLOADING, v1::UPDATE_PHASE_DOWNLOADED,
    v1::UPDATE_PHASE_VERIFIED,    v1::UPDATE_PHASE_STAGED,
    v1::UPDATE_PHASE_SWAPPED,     v1::UPDATE_PHASE_RESTARTED,
    v1::UPDATE_PHASE_HEALTHY};
constexpr int kNumPhases = sizeof(kPhases) / sizeof(kPhases[0]);
constexpr int kStagedIndex = 3;  // first phase after a real download

int64_t NowUnixMicros() { return absl::ToUnixMicros(absl::Now()); }

}  // namespace

class ConnectStream;
class FetchReactor;

// A write some thread queued on a stream under the agent's lock, to be
// started (StartWrite) and released (RemoveHold) after the lock is dropped:
// reactions can run inline inside StartWrite, and they take that lock.
struct PendingWrite {
  ConnectStream* stream = nullptr;
  bool start = false;
};

class SimulatedAgent {
 public:
  SimulatedAgent(AgentSimulator& sim, int index);

  // Opens a new Connect stream (first connect and every reconnect).
  void Connect();
  // Ends the stream and any download for good.
  void Stop();
  void Flood(int events);
  void ResetReceipt();
  // "" when no directive arrived since the last ResetReceipt.
  std::string ReceiptLine() const;

  // From the stream's reactions.
  void OnMessage(ConnectStream* stream, const ControllerMessage& message);
  void OnStreamDone(ConnectStream* stream, const grpc::Status& status);
  // From the fetch's reaction.
  void OnFetchDone(const std::string& directive_id, const grpc::Status& status,
                   uint64_t bytes, const Digest& digest);

 private:
  v1::Hello BuildHelloLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Journals (queues) an event with the next seq and sends it if welcomed.
  void EmitLocked(v1::UpdateEvent event, PendingWrite& pending)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SendLocked(AgentMessage message, PendingWrite& pending)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::UpdateEvent PhaseEventLocked(v1::UpdatePhase phase)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnDirectiveLocked(const v1::UpdateDirective& directive,
                         PendingWrite& pending, FetchReactor** fetch)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Reports kPhases[index] of `directive_id` and schedules the next one.
  void AdvancePhase(const std::string& directive_id, int index);
  void AdvancePhaseLocked(const std::string& directive_id, int index,
                          PendingWrite& pending)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FinishLocked(bool healthy) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void TopUpFloodLocked(PendingWrite& pending)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Heartbeat(uint64_t generation);
  static void Kick(PendingWrite& pending);

  AgentSimulator& sim_;
  AgentSimulator::Counters& counters_;
  const std::string agent_id_;
  const absl::Time started_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::AgentService::Stub> stub_;

  mutable absl::Mutex mu_;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  ConnectStream* stream_ ABSL_GUARDED_BY(mu_) = nullptr;
  FetchReactor* fetch_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool welcomed_ ABSL_GUARDED_BY(mu_) = false;
  // Bumped at every Welcome and stream end: stale heartbeat timers stop.
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Duration heartbeat_interval_ ABSL_GUARDED_BY(mu_) = absl::Seconds(10);
  int failures_ ABSL_GUARDED_BY(mu_) = 0;  // streams ended since a Welcome
  std::mt19937_64 rng_ ABSL_GUARDED_BY(mu_);
  uint64_t next_seq_ ABSL_GUARDED_BY(mu_) = 1;
  std::deque<v1::UpdateEvent> unacked_ ABSL_GUARDED_BY(mu_);
  std::string installed_version_ ABSL_GUARDED_BY(mu_);
  std::string last_directive_id_ ABSL_GUARDED_BY(mu_);
  // The update in progress ("" if none) and what it installs.
  std::string active_directive_id_ ABSL_GUARDED_BY(mu_);
  std::string active_rollout_id_ ABSL_GUARDED_BY(mu_);
  std::string active_version_ ABSL_GUARDED_BY(mu_);
  std::string active_sha256_ ABSL_GUARDED_BY(mu_);  // download mode
  uint64_t active_size_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time phase_started_ ABSL_GUARDED_BY(mu_);
  int64_t flood_remaining_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t receipt_micros_ ABSL_GUARDED_BY(mu_) = 0;
  std::string receipt_directive_ ABSL_GUARDED_BY(mu_);
};

// ------------------------------------------------------------ ConnectStream

// One Connect stream of one agent. One write in flight, the rest queued.
// Writes queued from outside a reaction hold the call (AddHold) until they
// are started, so OnDone cannot run (and delete the reactor) in between.
class ConnectStream
    : public grpc::ClientBidiReactor<AgentMessage, ControllerMessage> {
 public:
  ConnectStream(SimulatedAgent& agent, AgentSimulator::Counters& counters,
                v1::AgentService::Stub& stub, AgentMessage hello)
      : agent_(agent), counters_(counters) {
    ++counters_.reactors_alive;
    stub.async()->Connect(&context_, this);
    current_ = std::move(hello);
    writing_ = true;
  }

  // Call without the agent's lock (StartCall may run reactions inline).
  void Start() {
    StartWrite(&current_);
    StartRead(&in_);
    StartCall();
  }

  // Queues `message`; takes a hold the first time for `pending`. False if
  // the stream is ending (the message is dropped: it is resent, if it must
  // be, on the next stream).
  bool Enqueue(AgentMessage message, PendingWrite& pending) {
    absl::MutexLock lock(&mu_);
    if (closing_) return false;
    if (pending.stream == nullptr) {
      AddHold();
      pending.stream = this;
    }
    if (!writing_) {
      writing_ = true;
      current_ = std::move(message);
      pending.start = true;
    } else {
      queue_.push_back(std::move(message));
    }
    return true;
  }

  void StartPending() { StartWrite(&current_); }

  // From the Welcome: events queued behind the write in flight leave
  // together in one AgentMessage.events of at most `n` (0 or 1: one per
  // message, as to an older controller).
  void SetMaxBatch(uint32_t n) {
    absl::MutexLock lock(&mu_);
    max_batch_ = n;
  }

  // TryCancel on a live stream; safe from any thread.
  bool HoldForCancel() {
    absl::MutexLock lock(&mu_);
    if (closing_) return false;
    AddHold();
    return true;
  }
  void CancelHeld() {
    context_.TryCancel();
    RemoveHold();
  }

  void OnWriteDone(bool ok) override {
    bool start = false;
    {
      absl::MutexLock lock(&mu_);
      if (!ok || queue_.empty()) {
        writing_ = false;
        if (!ok) queue_.clear();
      } else {
        current_ = TakeNextLocked();
        start = true;
      }
    }
    if (start) StartWrite(&current_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      absl::MutexLock lock(&mu_);
      closing_ = true;
      return;
    }
    agent_.OnMessage(this, in_);
    StartRead(&in_);
  }

  void OnDone(const grpc::Status& status) override {
    agent_.OnStreamDone(this, status);
    --counters_.reactors_alive;
    delete this;
  }

 private:
  // The next message to write: the queue's head, or, when it is an event
  // and batches are allowed, it and the events queued right behind it.
  AgentMessage TakeNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    AgentMessage next = std::move(queue_.front());
    queue_.pop_front();
    if (max_batch_ <= 1 || !next.has_event() || queue_.empty() ||
        !queue_.front().has_event()) {
      return next;
    }
    AgentMessage batch;
    v1::UpdateEventBatch* events = batch.mutable_events();
    *events->add_events() = std::move(*next.mutable_event());
    while (!queue_.empty() && queue_.front().has_event() &&
           static_cast<uint32_t>(events->events_size()) < max_batch_) {
      *events->add_events() = std::move(*queue_.front().mutable_event());
      queue_.pop_front();
    }
    return batch;
  }

  SimulatedAgent& agent_;
  AgentSimulator::Counters& counters_;
  grpc::ClientContext context_;
  ControllerMessage in_;
  absl::Mutex mu_;
  AgentMessage current_;  // owned by whoever set writing_
  std::deque<AgentMessage> queue_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  uint32_t max_batch_ ABSL_GUARDED_BY(mu_) = 0;
};

// ------------------------------------------------------------- FetchReactor

// One FetchArtifact call: hashes chunks as they arrive and hands the size
// and digest to the agent when the call ends.
class FetchReactor : public grpc::ClientReadReactor<v1::ArtifactChunk> {
 public:
  FetchReactor(SimulatedAgent& agent, AgentSimulator::Counters& counters,
               v1::AgentService::Stub& stub, std::string directive_id,
               std::string sha256)
      : agent_(agent),
        counters_(counters),
        directive_id_(std::move(directive_id)) {
    ++counters_.reactors_alive;
    request_.set_sha256(std::move(sha256));
    stub.async()->FetchArtifact(&context_, &request_, this);
  }
  void Start() {
    StartRead(&chunk_);
    StartCall();
  }
  // As ConnectStream: hold while a read is pending, cancel without locks.
  bool HoldForCancel() {
    absl::MutexLock lock(&mu_);
    if (closing_) return false;
    AddHold();
    return true;
  }
  void CancelHeld() {
    context_.TryCancel();
    RemoveHold();
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      absl::MutexLock lock(&mu_);
      closing_ = true;
      return;
    }
    if (chunk_.offset() != bytes_) {
      context_.TryCancel();  // a gap or overlap: the digest will not match
    }
    hasher_.Update(chunk_.data());
    bytes_ += chunk_.data().size();
    counters_.fetch_bytes += chunk_.data().size();
    StartRead(&chunk_);
  }

  void OnDone(const grpc::Status& status) override {
    agent_.OnFetchDone(directive_id_, status, bytes_, hasher_.Finish());
    --counters_.reactors_alive;
    delete this;
  }

 private:
  SimulatedAgent& agent_;
  AgentSimulator::Counters& counters_;
  const std::string directive_id_;
  grpc::ClientContext context_;
  v1::FetchArtifactRequest request_;
  v1::ArtifactChunk chunk_;
  Sha256 hasher_;
  uint64_t bytes_ = 0;
  absl::Mutex mu_;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
};

// ----------------------------------------------------------- SimulatedAgent

SimulatedAgent::SimulatedAgent(AgentSimulator& sim, int index)
    : sim_(sim),
      counters_(sim.counters()),
      agent_id_(absl::StrFormat("%s-%06d", sim.options().id_prefix, index)),
      started_(absl::Now()),
      rng_(sim.options().seed * 1000003 + index),
      installed_version_(sim.options().installed_version) {
  grpc::ChannelArguments args;
  // Each agent its own TCP connection, like separate machines; without this
  // channels with equal arguments share one subchannel (one connection).
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  // As fleet-agent (agent/session.cc AgentChannelArguments).
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 20'000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10'000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 500);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 500);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 30'000);
  channel_ = grpc::CreateCustomChannel(
      sim.options().controller, grpc::InsecureChannelCredentials(), args);
  stub_ = v1::AgentService::NewStub(channel_);
  ++counters_.agents;
}

v1::Hello SimulatedAgent::BuildHelloLocked() {
  const SimulatorOptions& o = sim_.options();
  v1::Hello hello;
  hello.set_agent_id(agent_id_);
  hello.set_agent_version("0.1.0-sim");
  hello.set_platform(o.platform);
  hello.set_hostname(agent_id_);
  for (const auto& [key, value] : o.labels)
    (*hello.mutable_labels())[key] = value;
  v1::InstalledProduct* product = hello.add_installed();
  product->set_product(o.product);
  product->set_version(installed_version_);
  hello.set_last_directive_id(last_directive_id_);
  hello.set_active_directive_id(active_directive_id_);
  return hello;
}

void SimulatedAgent::Connect() {
  ConnectStream* stream = nullptr;
  {
    absl::MutexLock lock(&mu_);
    if (stopped_ || stream_ != nullptr) return;
    AgentMessage hello;
    *hello.mutable_hello() = BuildHelloLocked();
    stream = new ConnectStream(*this, counters_, *stub_, std::move(hello));
    stream_ = stream;
    welcomed_ = false;
  }
  stream->Start();
}

void SimulatedAgent::Stop() {
  ConnectStream* stream = nullptr;
  FetchReactor* fetch = nullptr;
  {
    absl::MutexLock lock(&mu_);
    stopped_ = true;
    // Reactors clear their pointer under mu_ before deleting themselves, so
    // they are alive here; the hold keeps them alive until TryCancel, which
    // must run without mu_ (its reactions may run inline and take it).
    if (stream_ != nullptr && stream_->HoldForCancel()) stream = stream_;
    if (fetch_ != nullptr && fetch_->HoldForCancel()) fetch = fetch_;
  }
  if (stream != nullptr) stream->CancelHeld();
  if (fetch != nullptr) fetch->CancelHeld();
}

void SimulatedAgent::Kick(PendingWrite& pending) {
  if (pending.stream == nullptr) return;
  if (pending.start) pending.stream->StartPending();
  pending.stream->RemoveHold();
  pending = PendingWrite{};
}

void SimulatedAgent::SendLocked(AgentMessage message, PendingWrite& pending) {
  if (stream_ == nullptr) return;
  stream_->Enqueue(std::move(message), pending);
}

void SimulatedAgent::EmitLocked(v1::UpdateEvent event, PendingWrite& pending) {
  event.set_seq(next_seq_++);
  event.set_time_unix_ms(absl::ToUnixMillis(absl::Now()));
  unacked_.push_back(event);
  if (!welcomed_) return;  // sent after the next Welcome
  AgentMessage message;
  *message.mutable_event() = std::move(event);
  ++counters_.events_sent;
  SendLocked(std::move(message), pending);
}

v1::UpdateEvent SimulatedAgent::PhaseEventLocked(v1::UpdatePhase phase) {
  v1::UpdateEvent event;
  event.set_directive_id(active_directive_id_);
  event.set_rollout_id(active_rollout_id_);
  event.set_product(sim_.options().product);
  event.set_from_version(installed_version_);
  event.set_to_version(active_version_);
  event.set_phase(phase);
  const absl::Time now = absl::Now();
  event.set_duration_ms(absl::ToInt64Milliseconds(now - phase_started_));
  phase_started_ = now;
  return event;
}

void SimulatedAgent::OnMessage(ConnectStream* stream,
                               const ControllerMessage& message) {
  PendingWrite pending;
  FetchReactor* fetch = nullptr;
  {
    absl::MutexLock lock(&mu_);
    if (stream != stream_ || stopped_) return;
    switch (message.body_case()) {
      case ControllerMessage::kWelcome: {
        const v1::Welcome& welcome = message.welcome();
        if (sim_.options().event_batches) {
          stream->SetMaxBatch(welcome.max_events_per_batch());
        }
        welcomed_ = true;
        failures_ = 0;
        ++counters_.welcomes;
        ++counters_.connected;
        while (!unacked_.empty() &&
               unacked_.front().seq() <= welcome.acked_event_seq()) {
          unacked_.pop_front();
          ++counters_.events_acked;
        }
        for (const v1::UpdateEvent& event : unacked_) {
          AgentMessage resend;
          *resend.mutable_event() = event;
          ++counters_.events_sent;
          SendLocked(std::move(resend), pending);
        }
        if (welcome.heartbeat_interval_seconds() > 0) {
          heartbeat_interval_ =
              absl::Seconds(welcome.heartbeat_interval_seconds());
        }
        const uint64_t generation = ++generation_;
        sim_.timers().At(absl::Now() + heartbeat_interval_,
                         [this, generation] { Heartbeat(generation); });
        TopUpFloodLocked(pending);
        break;
      }
      case ControllerMessage::kDirective:
        OnDirectiveLocked(message.directive(), pending, &fetch);
        break;
      case ControllerMessage::kAck:
        while (!unacked_.empty() &&
               unacked_.front().seq() <= message.ack().acked_seq()) {
          unacked_.pop_front();
          ++counters_.events_acked;
        }
        TopUpFloodLocked(pending);
        break;
      case ControllerMessage::kCancel:
        if (message.cancel().directive_id() == active_directive_id_ &&
            !active_directive_id_.empty()) {
          v1::UpdateEvent event = PhaseEventLocked(v1::UPDATE_PHASE_FAILED);
          event.set_error_class("canceled");
          event.set_error(message.cancel().reason());
          EmitLocked(std::move(event), pending);
          FinishLocked(false);
        }
        break;
      default:
        break;  // blacklist: nothing installs a blacklisted version here
    }
  }
  Kick(pending);
  if (fetch != nullptr) fetch->Start();
}

void SimulatedAgent::OnDirectiveLocked(const v1::UpdateDirective& directive,
                                       PendingWrite& pending,
                                       FetchReactor** fetch) {
  ++counters_.directives;
  if (receipt_micros_ == 0) {
    receipt_micros_ = NowUnixMicros();
    receipt_directive_ = directive.directive_id();
  }
  if (directive.directive_id() == last_directive_id_ ||
      directive.directive_id() == active_directive_id_) {
    ++counters_.duplicate_directives;
    return;
  }
  if (!active_directive_id_.empty()) return;  // busy: the real agent refuses
  const SimulatorOptions& o = sim_.options();
  last_directive_id_ = directive.directive_id();
  active_directive_id_ = directive.directive_id();
  active_rollout_id_ = directive.rollout_id();
  phase_started_ = absl::Now();

  v1::ReleaseManifest manifest;
  absl::Status verified = absl::OkStatus();
  if (o.download) {
    // Signature first, as the agent does: a forged manifest is never read.
    absl::StatusOr<v1::ReleaseManifest> checked =
        VerifyManifest(directive.manifest(), o.trust_keys, absl::Now());
    if (checked.ok()) {
      manifest = *std::move(checked);
    } else {
      verified = checked.status();
    }
  } else if (!manifest.ParseFromString(directive.manifest().manifest())) {
    verified = absl::InvalidArgumentError("manifest does not parse");
  }
  active_version_ = manifest.version();
  active_sha256_ = manifest.sha256();
  active_size_ = manifest.size();
  EmitLocked(PhaseEventLocked(v1::UPDATE_PHASE_RECEIVED), pending);
  if (!verified.ok()) {
    v1::UpdateEvent event = PhaseEventLocked(v1::UPDATE_PHASE_FAILED);
    event.set_error_class("signature");
    event.set_error(std::string(verified.message()));
    EmitLocked(std::move(event), pending);
    FinishLocked(false);
    return;
  }
  if (o.download) {
    EmitLocked(PhaseEventLocked(v1::UPDATE_PHASE_DOWNLOADING), pending);
    fetch_ = new FetchReactor(*this, counters_, *stub_, active_directive_id_,
                              manifest.sha256());
    *fetch = fetch_;
    return;
  }
  const std::string id = active_directive_id_;
  sim_.timers().At(absl::Now() + o.phase_delay,
                   [this, id] { AdvancePhase(id, 0); });
}

void SimulatedAgent::AdvancePhase(const std::string& directive_id, int index) {
  PendingWrite pending;
  {
    absl::MutexLock lock(&mu_);
    AdvancePhaseLocked(directive_id, index, pending);
  }
  Kick(pending);
}

void SimulatedAgent::AdvancePhaseLocked(const std::string& directive_id,
                                        int index, PendingWrite& pending) {
  if (stopped_ || directive_id != active_directive_id_) return;
  const SimulatorOptions& o = sim_.options();
  if (index == 0 && o.failure_rate > 0 &&
      std::uniform_real_distribution<double>(0, 1)(rng_) < o.failure_rate) {
    EmitLocked(PhaseEventLocked(kPhases[0]), pending);
    v1::UpdateEvent event = PhaseEventLocked(v1::UPDATE_PHASE_FAILED);
    event.set_error_class("download");
    event.set_error("simulated failure (--failure-rate)");
    EmitLocked(std::move(event), pending);
    FinishLocked(false);
    return;
  }
  EmitLocked(PhaseEventLocked(kPhases[index]), pending);
  if (index + 1 == kNumPhases) {
    installed_version_ = active_version_;
    FinishLocked(true);
    return;
  }
  if (o.phase_delay <= absl::ZeroDuration()) {
    AdvancePhaseLocked(directive_id, index + 1, pending);
    return;
  }
  sim_.timers().At(absl::Now() + o.phase_delay, [this, directive_id, index] {
    AdvancePhase(directive_id, index + 1);
  });
}

void SimulatedAgent::FinishLocked(bool healthy) {
  ++(healthy ? counters_.healthy : counters_.failed);
  active_directive_id_.clear();
  active_rollout_id_.clear();
  active_version_.clear();
}

void SimulatedAgent::OnFetchDone(const std::string& directive_id,
                                 const grpc::Status& status, uint64_t bytes,
                                 const Digest& digest) {
  PendingWrite pending;
  {
    absl::MutexLock lock(&mu_);
    fetch_ = nullptr;
    if (stopped_ || directive_id != active_directive_id_) return;
    if (!status.ok()) {
      v1::UpdateEvent event = PhaseEventLocked(v1::UPDATE_PHASE_FAILED);
      event.set_error_class("download");
      event.set_error(status.error_message());
      EmitLocked(std::move(event), pending);
      FinishLocked(false);
    } else {
      v1::UpdateEvent downloaded =
          PhaseEventLocked(v1::UPDATE_PHASE_DOWNLOADED);
      downloaded.set_bytes(bytes);
      EmitLocked(std::move(downloaded), pending);
      if (bytes != active_size_ || DigestToBytes(digest) != active_sha256_) {
        v1::UpdateEvent event = PhaseEventLocked(v1::UPDATE_PHASE_FAILED);
        event.set_error_class("verify");
        event.set_error(absl::StrCat("got ", bytes, " bytes with sha256 ",
                                     DigestToHex(digest), "; manifest says ",
                                     active_size_));
        EmitLocked(std::move(event), pending);
        FinishLocked(false);
      } else {
        EmitLocked(PhaseEventLocked(v1::UPDATE_PHASE_VERIFIED), pending);
        const std::string id = active_directive_id_;
        sim_.timers().At(absl::Now() + sim_.options().phase_delay,
                         [this, id] { AdvancePhase(id, kStagedIndex); });
      }
    }
  }
  Kick(pending);
}

void SimulatedAgent::Heartbeat(uint64_t generation) {
  PendingWrite pending;
  {
    absl::MutexLock lock(&mu_);
    if (stopped_ || generation != generation_ || !welcomed_) return;
    AgentMessage message;
    v1::Heartbeat* heartbeat = message.mutable_heartbeat();
    heartbeat->set_uptime_seconds(absl::ToInt64Seconds(absl::Now() - started_));
    ++counters_.heartbeats;
    SendLocked(std::move(message), pending);
    sim_.timers().At(absl::Now() + heartbeat_interval_,
                     [this, generation] { Heartbeat(generation); });
  }
  Kick(pending);
}

void SimulatedAgent::TopUpFloodLocked(PendingWrite& pending) {
  if (!welcomed_) return;
  const int window = sim_.options().flood_window;
  while (flood_remaining_ > 0 && static_cast<int>(unacked_.size()) < window) {
    --flood_remaining_;
    v1::UpdateEvent event;
    event.set_product(sim_.options().product);
    event.set_to_version(installed_version_);
    event.set_phase(v1::UPDATE_PHASE_DOWNLOADING);
    event.set_bytes(next_seq_ * 65536);
    event.set_duration_ms(1);
    EmitLocked(std::move(event), pending);
  }
}

void SimulatedAgent::Flood(int events) {
  PendingWrite pending;
  {
    absl::MutexLock lock(&mu_);
    if (stopped_) return;
    flood_remaining_ += events;
    TopUpFloodLocked(pending);
  }
  Kick(pending);
}

void SimulatedAgent::OnStreamDone(ConnectStream* stream,
                                  const grpc::Status& status) {
  const int code = static_cast<int>(status.error_code());
  if (code >= 0 && code < 17) {
    if (++counters_.stream_ends[code] == 1) {
      absl::MutexLock lock(&counters_.mu);
      counters_.first_end_message[code] = status.error_message();
    }
  }
  absl::MutexLock lock(&mu_);
  if (stream != stream_) return;
  stream_ = nullptr;
  if (welcomed_) --counters_.connected;
  welcomed_ = false;
  ++generation_;
  if (stopped_) return;
  ++failures_;
  // Full jitter over an exponential cap, as fleet-agent's session.
  const absl::Duration cap = std::min(
      sim_.options().backoff_cap,
      sim_.options().backoff_base * (1LL << std::min(failures_ - 1, 20)));
  const int64_t delay_ms = std::uniform_int_distribution<int64_t>(
      0, absl::ToInt64Milliseconds(cap))(rng_);
  sim_.timers().At(absl::Now() + absl::Milliseconds(delay_ms),
                   [this] { Connect(); });
}

void SimulatedAgent::ResetReceipt() {
  absl::MutexLock lock(&mu_);
  receipt_micros_ = 0;
  receipt_directive_.clear();
}

std::string SimulatedAgent::ReceiptLine() const {
  absl::MutexLock lock(&mu_);
  if (receipt_micros_ == 0) return "";
  return absl::StrCat(agent_id_, " ", receipt_micros_, " ", receipt_directive_,
                      "\n");
}

// --------------------------------------------------------------- TimerQueue

TimerQueue::TimerQueue() : thread_([this] { Loop(); }) {}

TimerQueue::~TimerQueue() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    wake_.Signal();
  }
  thread_.join();
}

void TimerQueue::At(absl::Time when, std::function<void()> callback) {
  absl::MutexLock lock(&mu_);
  const bool earliest = queue_.empty() || when < queue_.top().when;
  queue_.push(Entry{when, next_order_++, std::move(callback)});
  if (earliest) wake_.Signal();
}

void TimerQueue::Loop() {
  absl::MutexLock lock(&mu_);
  while (!stop_) {
    if (queue_.empty()) {
      wake_.Wait(&mu_);
      continue;
    }
    const absl::Time now = absl::Now();
    if (queue_.top().when > now) {
      wake_.WaitWithDeadline(&mu_, queue_.top().when);
      continue;
    }
    std::function<void()> callback = queue_.top().callback;
    queue_.pop();
    mu_.Unlock();
    callback();
    mu_.Lock();
  }
}

// ----------------------------------------------------------- AgentSimulator

AgentSimulator::AgentSimulator(SimulatorOptions options)
    : options_(std::move(options)),
      counters_(std::make_unique<Counters>()),
      timers_(std::make_unique<TimerQueue>()) {}

AgentSimulator::~AgentSimulator() {
  Shutdown();
  timers_.reset();  // no timer may run once agents go
  absl::MutexLock lock(&mu_);
  if (counters_->reactors_alive.load() != 0) {
    // A reactor that did not end in time still points at its agent.
    for (auto& agent : agents_) agent.release();
  }
}

void AgentSimulator::AddAgents(int count, double per_second) {
  absl::MutexLock lock(&mu_);
  if (shut_down_) return;
  const absl::Time start = absl::Now();
  for (int i = 0; i < count; ++i) {
    agents_.push_back(std::make_unique<SimulatedAgent>(
        *this, static_cast<int>(agents_.size()) + 1));
    SimulatedAgent* agent = agents_.back().get();
    const absl::Duration offset =
        per_second > 0 ? absl::Seconds(i / per_second) : absl::ZeroDuration();
    timers_->At(start + offset, [agent] { agent->Connect(); });
  }
}

void AgentSimulator::Flood(int events_per_agent) {
  absl::MutexLock lock(&mu_);
  for (auto& agent : agents_) agent->Flood(events_per_agent);
}

void AgentSimulator::ResetReceipts() {
  absl::MutexLock lock(&mu_);
  for (auto& agent : agents_) agent->ResetReceipt();
}

absl::Status AgentSimulator::WriteReceipts(const std::string& path) const {
  std::string text;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& agent : agents_) text += agent->ReceiptLine();
  }
  const std::string temp = path + ".tmp";
  FILE* f = std::fopen(temp.c_str(), "w");
  if (f == nullptr) return absl::ErrnoToStatus(errno, "open " + temp);
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  if (std::fclose(f) != 0 || !ok) {
    return absl::ErrnoToStatus(errno, "write " + temp);
  }
  if (std::rename(temp.c_str(), path.c_str()) != 0) {
    return absl::ErrnoToStatus(errno, "rename " + temp);
  }
  return absl::OkStatus();
}

SimulatorStats AgentSimulator::Stats() const {
  Counters& c = *counters_;
  SimulatorStats s;
  s.agents = c.agents;
  s.connected = c.connected;
  s.welcomes = c.welcomes;
  s.directives = c.directives;
  s.duplicate_directives = c.duplicate_directives;
  s.healthy = c.healthy;
  s.failed = c.failed;
  s.events_sent = c.events_sent;
  s.events_acked = c.events_acked;
  s.heartbeats = c.heartbeats;
  s.fetch_bytes = c.fetch_bytes;
  {
    absl::MutexLock lock(&c.mu);
    for (const auto& [code, message] : c.first_end_message) {
      s.first_end_message[kCodeNames[code]] = message;
    }
  }
  for (int code = 0; code < 17; ++code) {
    if (c.stream_ends[code] != 0)
      s.stream_ends[kCodeNames[code]] = c.stream_ends[code];
  }
  s.cpu_seconds = ProcessCpuSeconds();
  s.rss_kib = ProcessRssKib();
  return s;
}

void AgentSimulator::Shutdown(absl::Duration timeout) {
  std::vector<SimulatedAgent*> agents;
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return;
    shut_down_ = true;
    for (auto& agent : agents_) agents.push_back(agent.get());
  }
  for (SimulatedAgent* agent : agents) agent->Stop();
  const absl::Time deadline = absl::Now() + timeout;
  while (counters_->reactors_alive.load() > 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
}

double ProcessCpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_utime.tv_sec + usage.ru_stime.tv_sec +
         (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

int64_t ProcessRssKib() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return -1;
  long pages_total = 0, pages_resident = 0;
  const int n = std::fscanf(f, "%ld %ld", &pages_total, &pages_resident);
  std::fclose(f);
  if (n != 2) return -1;
  return pages_resident * (sysconf(_SC_PAGESIZE) / 1024);
}

}  // namespace fleet::bench
