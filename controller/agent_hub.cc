#include "controller/agent_hub.h"

#include <algorithm>
#include <deque>
#include <limits>
#include <memory>
#include <optional>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/log.h"
#include "common/names.h"
#include "common/sha256.h"
#include "controller/artifact_stream.h"

namespace fleet::controller {
namespace {

constexpr size_t kMaxHostname = 255;
constexpr size_t kMaxAgentVersion = 128;
constexpr int kMaxLabels = 64;
constexpr int kMaxInstalled = 64;
constexpr int kMaxPreviousVersions = 16;
constexpr size_t kMaxError = 4096;
constexpr size_t kMaxErrorClass = 64;
// Messages queued for an agent that does not read them; past this the
// stream is ended rather than growing without bound.
constexpr size_t kMaxQueuedMessages = 1024;

bool Printable(absl::string_view s) {
  for (char c : s) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

absl::Status Field(absl::string_view field, const absl::Status& cause) {
  if (cause.ok()) return cause;
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", cause.message()));
}

absl::Status Invalid(absl::string_view field, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", why));
}

absl::Status OptionalVersion(absl::string_view field,
                             absl::string_view version) {
  return version.empty() ? absl::OkStatus()
                         : Field(field, ValidateVersion(version));
}

absl::Status OptionalId(absl::string_view field, absl::string_view id) {
  return id.empty() ? absl::OkStatus() : ValidateId(id, field);
}

}  // namespace

absl::Status ValidateHello(const v1::Hello& hello) {
  absl::Status s = ValidateId(hello.agent_id(), "hello.agent_id");
  if (!s.ok()) return s;
  s = Field("hello.platform", ValidatePlatform(hello.platform()));
  if (!s.ok()) return s;
  if (hello.hostname().size() > kMaxHostname || !Printable(hello.hostname())) {
    return Invalid("hello.hostname",
                   absl::StrCat("must be printable ASCII of at most ",
                                kMaxHostname, " bytes"));
  }
  if (hello.agent_version().size() > kMaxAgentVersion ||
      !Printable(hello.agent_version())) {
    return Invalid("hello.agent_version",
                   absl::StrCat("must be printable ASCII of at most ",
                                kMaxAgentVersion, " bytes"));
  }
  if (hello.labels_size() > kMaxLabels) {
    return Invalid("hello.labels",
                   absl::StrCat("at most ", kMaxLabels, " labels, got ",
                                hello.labels_size()));
  }
  for (const auto& [key, value] : hello.labels()) {
    s = Field("hello.labels", ValidateLabel(key, value));
    if (!s.ok()) return s;
  }
  if (hello.installed_size() > kMaxInstalled) {
    return Invalid("hello.installed",
                   absl::StrCat("at most ", kMaxInstalled, " products, got ",
                                hello.installed_size()));
  }
  absl::flat_hash_set<std::string> seen;
  for (const v1::InstalledProduct& p : hello.installed()) {
    s = Field("hello.installed.product", ValidateProductName(p.product()));
    if (!s.ok()) return s;
    if (!seen.insert(p.product()).second) {
      return Invalid("hello.installed",
                     absl::StrCat("product ", p.product(), " listed twice"));
    }
    s = OptionalVersion("hello.installed.version", p.version());
    if (!s.ok()) return s;
    if (!p.sha256().empty() && p.sha256().size() != 32) {
      return Invalid(
          "hello.installed.sha256",
          absl::StrCat("must be empty or 32 bytes, got ", p.sha256().size()));
    }
    if (p.previous_versions_size() > kMaxPreviousVersions) {
      return Invalid("hello.installed.previous_versions",
                     absl::StrCat("at most ", kMaxPreviousVersions));
    }
    for (const std::string& v : p.previous_versions()) {
      s = Field("hello.installed.previous_versions", ValidateVersion(v));
      if (!s.ok()) return s;
    }
  }
  s = OptionalId("hello.last_directive_id", hello.last_directive_id());
  if (!s.ok()) return s;
  return OptionalId("hello.active_directive_id", hello.active_directive_id());
}

absl::Status ValidateEvent(const v1::UpdateEvent& event) {
  if (event.seq() == 0 ||
      event.seq() >
          static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return Invalid("event.seq",
                   absl::StrCat("must be 1..2^63-1, got ", event.seq()));
  }
  if (event.phase() == v1::UPDATE_PHASE_UNSPECIFIED ||
      !v1::UpdatePhase_IsValid(event.phase())) {
    return Invalid("event.phase",
                   absl::StrCat("unknown phase ", event.phase()));
  }
  absl::Status s = OptionalId("event.directive_id", event.directive_id());
  if (!s.ok()) return s;
  s = OptionalId("event.rollout_id", event.rollout_id());
  if (!s.ok()) return s;
  if (!event.product().empty()) {
    s = Field("event.product", ValidateProductName(event.product()));
    if (!s.ok()) return s;
  }
  s = OptionalVersion("event.from_version", event.from_version());
  if (!s.ok()) return s;
  s = OptionalVersion("event.to_version", event.to_version());
  if (!s.ok()) return s;
  if (event.error().size() > kMaxError) {
    return Invalid("event.error",
                   absl::StrCat("at most ", kMaxError, " bytes, got ",
                                event.error().size()));
  }
  if (event.error_class().size() > kMaxErrorClass ||
      !Printable(event.error_class())) {
    return Invalid("event.error_class",
                   absl::StrCat("must be printable ASCII of at most ",
                                kMaxErrorClass, " bytes"));
  }
  return absl::OkStatus();
}

// ------------------------------------------------------------ AgentStream

// One Connect stream. Reads are started only from its own read reactions
// (one at a time); writes come from the control loop thread through Send()
// and continue from OnWriteDone, one in flight, the rest queued.
//
// Server reactors have no AddHold/RemoveHold: a write started off-reaction is
// safe because the loop reaches a stream only through the hub's registry,
// under the hub's mutex, and OnDone takes that mutex to unregister before
// the reactor is deleted. StartWrite and Finish may be called with mu_ held:
// gRPC 1.51 never runs OnWriteDone or OnDone inline from them.
class AgentStream
    : public grpc::ServerBidiReactor<v1::AgentMessage, v1::ControllerMessage> {
 public:
  AgentStream(AgentHub& hub, uint64_t session, std::string peer,
              std::shared_ptr<const grpc::AuthContext> auth)
      : hub_(hub),
        session_(session),
        peer_(std::move(peer)),
        auth_(std::move(auth)) {
    StartRead(&in_);
  }

  uint64_t session() const { return session_; }
  // Set once, before the stream is registered with the hub.
  const std::string& agent_id() const { return agent_id_; }
  // Roots: the newest version this agent has or was sent, and whether its
  // Welcome went out (roots may only follow it). Guarded by the hub's mu_.
  uint64_t root_version_ = 0;
  bool welcomed_ = false;

  // Queues `message`; false if the stream is ending.
  bool Send(v1::ControllerMessage message) {
    absl::MutexLock lock(&mu_);
    if (finishing_) return false;
    if (outbox_.size() >= kMaxQueuedMessages) {
      LogWarning("agent does not read its stream; ending it",
                 {{"agent_id", agent_id_}, {"queued", outbox_.size()}});
      outbox_.resize(1);  // keep only the write in flight
      FinishLocked(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                "too many unread messages"));
      return false;
    }
    outbox_.push_back(std::move(message));
    if (!writing_) {
      writing_ = true;
      StartWrite(&outbox_.front());
    }
    return true;
  }

  // Ends the stream with `status` once the queued messages are written.
  void End(const grpc::Status& status) {
    absl::MutexLock lock(&mu_);
    FinishLocked(status);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the agent closed its side or the call was cancelled
      End(grpc::Status::OK);
      return;
    }
    absl::Status handled = TakeTokens(
        in_.has_events() ? std::max(1, in_.events().events_size()) : 1);
    if (handled.ok()) handled = Handle();
    if (!handled.ok()) {
      LogWarning("agent stream refused",
                 {{"peer", peer_},
                  {"agent_id", agent_id_},
                  {"error", std::string(handled.message())}});
      End(ToGrpcStatus(handled));
      return;
    }
    in_.Clear();
    StartRead(&in_);
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    outbox_.pop_front();
    if (!ok) {  // the call is broken; nothing more will be delivered
      outbox_.clear();
      writing_ = false;
      FinishLocked(
          grpc::Status(grpc::StatusCode::UNAVAILABLE, "write to agent failed"));
      return;
    }
    if (!outbox_.empty()) {
      StartWrite(&outbox_.front());
      return;
    }
    writing_ = false;
    MaybeFinishLocked();
  }

  void OnDone() override {
    if (registered_) {
      hub_.Unregister(this);
      hub_.loop_.PostDisconnect(agent_id_, session_);
    }
    delete this;
  }

 private:
  // `cost` tokens of the stream's bucket per message read (one per event
  // of a batch); RESOURCE_EXHAUSTED when it is empty. A batch may take the
  // bucket below zero: the agent then waits for the refill, and a batch
  // larger than the burst is still admissible once.
  absl::Status TakeTokens(int cost) {
    const StreamRateLimit& limit = hub_.rate_limit_;
    if (limit.messages_per_second <= 0) return absl::OkStatus();
    const absl::Time now = absl::Now();
    if (last_refill_ == absl::InfinitePast()) {
      tokens_ = limit.burst;
    } else {
      tokens_ = std::min(limit.burst,
                         tokens_ + absl::ToDoubleSeconds(now - last_refill_) *
                                       limit.messages_per_second);
    }
    last_refill_ = now;
    if (tokens_ < 1) {
      return absl::ResourceExhaustedError(
          absl::StrCat("agent sends more than ", limit.messages_per_second,
                       " messages/s (burst ", limit.burst,
                       "); reconnect later and send less often"));
    }
    tokens_ -= cost;
    return absl::OkStatus();
  }

  // Validates and forwards the message in in_; an error ends the stream.
  absl::Status Handle() {
    if (!registered_) {
      if (!in_.has_hello()) {
        return absl::InvalidArgumentError(
            "the first message on a Connect stream must be Hello");
      }
      // After CloseAll (shutdown) a reconnecting agent is told to come
      // back later rather than registered on a server about to stop.
      if (hub_.closing_.load()) {
        return absl::UnavailableError("the controller is shutting down");
      }
      absl::Status valid = ValidateHello(in_.hello());
      if (!valid.ok()) return valid;
      // The agent id is the certificate's: a Hello naming another agent is
      // refused, so no agent can speak for (or steal the stream of) another.
      if (hub_.authorizer_ != nullptr) {
        absl::StatusOr<PeerIdentity> caller =
            hub_.authorizer_->Agent(*auth_, in_.hello().agent_id());
        if (!caller.ok()) {
          LogWarning("agent stream refused",
                     {{"peer", peer_},
                      {"agent_id", in_.hello().agent_id()},
                      {"error", std::string(caller.status().message())}});
          return caller.status();
        }
        // Labels enrolled in the certificate win over the Hello's, so
        // rollout selectors can trust them (docs/security.md).
        hub_.authorizer_->ApplyEnrolledLabels(
            *auth_, *in_.mutable_hello()->mutable_labels());
      }
      agent_id_ = in_.hello().agent_id();
      root_version_ = in_.hello().root_version();
      hub_.Register(this);
      registered_ = true;
      if (hub_.observer_ != nullptr) hub_.observer_->OnHello(in_.hello());
      hub_.loop_.PostHello(agent_id_, session_,
                           std::move(*in_.mutable_hello()));
      return absl::OkStatus();
    }
    switch (in_.body_case()) {
      case v1::AgentMessage::kHeartbeat:
        hub_.NoteRootStatus(agent_id_, in_.heartbeat());
        if (hub_.observer_ != nullptr) {
          hub_.observer_->OnHeartbeat(agent_id_, in_.heartbeat());
        }
        hub_.loop_.PostHeartbeat(agent_id_, session_);
        return absl::OkStatus();
      case v1::AgentMessage::kEvent: {
        absl::Status valid = ValidateEvent(in_.event());
        if (!valid.ok()) return valid;
        hub_.loop_.PostEvent(agent_id_, session_,
                             std::move(*in_.mutable_event()));
        return absl::OkStatus();
      }
      case v1::AgentMessage::kEvents: {
        const int n = in_.events().events_size();
        if (n == 0 || n > static_cast<int>(kMaxEventsPerBatch)) {
          return absl::InvalidArgumentError(
              absl::StrCat("events: a batch holds 1..", kMaxEventsPerBatch,
                           " events (Welcome.max_events_per_batch), got ", n));
        }
        for (const v1::UpdateEvent& event : in_.events().events()) {
          absl::Status valid = ValidateEvent(event);
          if (!valid.ok()) return valid;
        }
        std::vector<v1::UpdateEvent> events;
        events.reserve(n);
        for (v1::UpdateEvent& event : *in_.mutable_events()->mutable_events()) {
          events.push_back(std::move(event));
        }
        hub_.loop_.PostEvents(agent_id_, session_, std::move(events));
        return absl::OkStatus();
      }
      case v1::AgentMessage::kHello:
        return absl::InvalidArgumentError(
            "Hello may be sent only once per Connect stream");
      default:
        return absl::InvalidArgumentError("empty AgentMessage");
    }
  }

  // Decides the final status; Finish() itself waits for the write in
  // flight (a reactor may not finish with a write outstanding).
  void FinishLocked(const grpc::Status& status)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finishing_) {
      MaybeFinishLocked();
      return;
    }
    finishing_ = true;
    pending_finish_ = status;
    MaybeFinishLocked();
  }

  void MaybeFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finishing_ && !writing_ && pending_finish_) {
      Finish(*pending_finish_);
      pending_finish_.reset();
    }
  }

  AgentHub& hub_;
  const uint64_t session_;
  const std::string peer_;
  const std::shared_ptr<const grpc::AuthContext> auth_;

  // Touched only by read reactions (serialized by gRPC) and OnDone.
  double tokens_ = 0;
  absl::Time last_refill_ = absl::InfinitePast();
  v1::AgentMessage in_;
  std::string agent_id_;
  bool registered_ = false;

  absl::Mutex mu_;
  std::deque<v1::ControllerMessage> outbox_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<grpc::Status> pending_finish_ ABSL_GUARDED_BY(mu_);
};

// --------------------------------------------------------------- AgentHub

AgentHub::AgentHub(ControlLoop& loop, const BlobStore& blobs)
    : loop_(loop), blobs_(blobs) {}

AgentHub::~AgentHub() = default;

grpc::ServerBidiReactor<v1::AgentMessage, v1::ControllerMessage>*
AgentHub::Connect(grpc::CallbackServerContext* context) {
  return new AgentStream(*this, next_session_.fetch_add(1), context->peer(),
                         context->auth_context());
}

grpc::ServerWriteReactor<v1::ArtifactChunk>* AgentHub::FetchArtifact(
    grpc::CallbackServerContext* context,
    const v1::FetchArtifactRequest* request) {
  absl::Status admitted = absl::OkStatus();
  if (authorizer_ != nullptr && !authorizer_->insecure()) {
    absl::StatusOr<PeerIdentity> caller =
        PeerIdentityOf(*context->auth_context());
    if (!caller.ok()) {
      admitted = caller.status();
    } else if (caller->role == pki::CertificateRole::kAgent &&
               authorizer_->IsRevoked(caller->name)) {
      admitted = absl::PermissionDeniedError(
          absl::StrCat("agent ", caller->name, " is revoked"));
    } else if (caller->role == pki::CertificateRole::kServer) {
      admitted = absl::PermissionDeniedError(
          "artifacts are served to agents and admins only");
    }
  }
  return NewArtifactStream(blobs_, *request, admitted);
}

bool AgentHub::Send(absl::string_view agent_id, uint64_t session,
                    v1::ControllerMessage message) {
  absl::MutexLock lock(&mu_);
  auto it = streams_.find(agent_id);
  if (it == streams_.end() || it->second->session() != session) return false;
  AgentStream* stream = it->second;
  if (observer_ != nullptr && message.has_directive()) {
    observer_->OnDirectiveSent(message.directive());
  }
  if (message.has_welcome()) {
    // Under mu_, as BroadcastRoots: a root pushed before this point is in
    // the Welcome, one pushed after goes out as a RootUpdate.
    stream->welcomed_ = true;
    message.mutable_welcome()->set_max_events_per_batch(kMaxEventsPerBatch);
    if (roots_ != nullptr && stream->root_version_ > 0) {
      for (v1::SignedRoot& root : roots_->After(stream->root_version_)) {
        *message.mutable_welcome()->add_roots() = std::move(root);
      }
      stream->root_version_ =
          std::max(stream->root_version_, roots_->version());
    }
  }
  return stream->Send(std::move(message));
}

size_t AgentHub::BroadcastRoots() {
  if (roots_ == nullptr) return 0;
  absl::MutexLock lock(&mu_);
  size_t sent = 0;
  for (auto& [agent_id, stream] : streams_) {
    if (!stream->welcomed_ || stream->root_version_ == 0) continue;
    std::vector<v1::SignedRoot> missing = roots_->After(stream->root_version_);
    if (missing.empty()) continue;
    v1::ControllerMessage message;
    for (v1::SignedRoot& root : missing) {
      *message.mutable_root()->add_roots() = std::move(root);
    }
    stream->root_version_ = roots_->version();
    if (stream->Send(std::move(message))) ++sent;
  }
  return sent;
}

void AgentHub::NoteRootStatus(absl::string_view agent_id,
                              const v1::Heartbeat& heartbeat) {
  AgentRootStatus status;
  status.version = heartbeat.root_version();
  if (status.version > 0) {
    status.expires =
        absl::FromUnixSeconds(heartbeat.root_expires_unix_seconds());
    status.expired = absl::Now() > status.expires;
  }
  bool newly_expired = false;
  {
    absl::MutexLock lock(&root_status_mu_);
    AgentRootStatus& known = root_status_[agent_id];
    newly_expired =
        status.expired && (!known.expired || known.version != status.version);
    known = status;
  }
  // Once per change, not per heartbeat.
  if (newly_expired) {
    LogWarning(
        "agent's root of trust expired: it refuses new installs until "
        "operators push a re-signed root (fleetctl keys root rotate, then "
        "fleetctl keys root push)",
        {{"agent_id", std::string(agent_id)},
         {"root_version", status.version},
         {"root_expired_at", absl::FormatTime(status.expires)}});
  }
}

std::optional<AgentRootStatus> AgentHub::RootStatus(
    absl::string_view agent_id) const {
  absl::MutexLock lock(&root_status_mu_);
  auto it = root_status_.find(agent_id);
  if (it == root_status_.end()) return std::nullopt;
  return it->second;
}

std::vector<std::pair<std::string, AgentRootStatus>> AgentHub::RootStatuses()
    const {
  absl::MutexLock lock(&root_status_mu_);
  return {root_status_.begin(), root_status_.end()};
}

void AgentHub::Close(absl::string_view agent_id, uint64_t session,
                     const absl::Status& status) {
  absl::MutexLock lock(&mu_);
  auto it = streams_.find(agent_id);
  if (it == streams_.end() || it->second->session() != session) return;
  it->second->End(ToGrpcStatus(status));
}

bool AgentHub::CloseAgent(absl::string_view agent_id,
                          const absl::Status& status) {
  absl::MutexLock lock(&mu_);
  auto it = streams_.find(agent_id);
  if (it == streams_.end()) return false;
  it->second->End(ToGrpcStatus(status));
  return true;
}

void AgentHub::CloseAll(const absl::Status& status) {
  closing_.store(true);
  absl::MutexLock lock(&mu_);
  for (auto& [agent_id, stream] : streams_) stream->End(ToGrpcStatus(status));
}

size_t AgentHub::ConnectedCount() const {
  absl::MutexLock lock(&mu_);
  return streams_.size();
}

void AgentHub::Register(AgentStream* stream) {
  absl::MutexLock lock(&mu_);
  auto [it, inserted] = streams_.try_emplace(stream->agent_id(), stream);
  if (inserted) return;
  AgentStream* old = it->second;
  it->second = stream;
  LogInfo("agent reconnected; ending its older stream",
          {{"agent_id", stream->agent_id()}});
  old->End(grpc::Status(
      grpc::StatusCode::ABORTED,
      "replaced by a newer Connect stream of agent " + stream->agent_id()));
}

void AgentHub::Unregister(AgentStream* stream) {
  absl::MutexLock lock(&mu_);
  auto it = streams_.find(stream->agent_id());
  if (it == streams_.end() || it->second != stream) return;
  streams_.erase(it);
  // Root statuses describe connected agents (metrics, fleetctl agents).
  absl::MutexLock status_lock(&root_status_mu_);
  root_status_.erase(stream->agent_id());
}

}  // namespace fleet::controller
