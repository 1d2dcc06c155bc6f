#include "controller/admin_service.h"

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/log.h"
#include "common/names.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "controller/rollout.h"
#include "controller/version.h"

namespace fleet::controller {
namespace {

absl::Status Field(absl::string_view field, const absl::Status& cause) {
  if (cause.ok()) return cause;
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", cause.message()));
}

absl::Status OptionalProduct(absl::string_view product) {
  return product.empty() ? absl::OkStatus()
                         : Field("product", ValidateProductName(product));
}

absl::Status OptionalPlatform(absl::string_view platform) {
  return platform.empty() ? absl::OkStatus()
                          : Field("platform", ValidatePlatform(platform));
}

// An operator's free-text reason: one line, short enough to show.
absl::Status ValidateReason(absl::string_view reason) {
  constexpr size_t kMaxReason = 500;
  if (reason.size() > kMaxReason) {
    return absl::InvalidArgumentError(absl::StrCat(
        "reason: at most ", kMaxReason, " bytes, got ", reason.size()));
  }
  for (unsigned char c : reason) {
    if (c < 0x20 || c == 0x7f) {
      return absl::InvalidArgumentError(
          "reason: must be one line without control characters");
    }
  }
  return absl::OkStatus();
}

}  // namespace

AdminService::AdminService(Store& reads, ControlLoop& loop,
                           const BlobStore& blobs,
                           const TrustedKeys& trusted_keys, const Clock& clock)
    : reads_(&reads),
      loop_(loop),
      blobs_(blobs),
      trusted_keys_(trusted_keys),
      clock_(clock) {}

absl::StatusOr<PeerIdentity> AdminService::Caller(
    grpc::ServerContext* context) const {
  if (authorizer_ == nullptr) {
    return PeerIdentity{pki::CertificateRole::kAdmin, "operator", ""};
  }
  return authorizer_->Admin(*context->auth_context());
}

void AdminService::Audit(const PeerIdentity& caller, absl::string_view action,
                         absl::string_view detail) const {
  if (authorizer_ != nullptr) authorizer_->Audit(caller, action, detail);
}

// ---------------------------------------------------------------- releases

grpc::Status AdminService::PushRelease(
    grpc::ServerContext* context,
    grpc::ServerReader<v1::PushReleaseRequest>* reader, v1::Release* response) {
  absl::StatusOr<PeerIdentity> caller = Caller(context);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  absl::StatusOr<v1::Release> release = DoPushRelease(context, reader);
  if (!release.ok()) {
    LogWarning("release push refused",
               {{"peer", context->peer()},
                {"error", std::string(release.status().ToString())}});
    return ToGrpcStatus(release.status());
  }
  Audit(*caller, "PushRelease",
        absl::StrCat(release->product(), " ", release->version(), " ",
                     release->platform()));
  *response = *std::move(release);
  return grpc::Status::OK;
}

absl::StatusOr<v1::Release> AdminService::DoPushRelease(
    grpc::ServerContext* context,
    grpc::ServerReader<v1::PushReleaseRequest>* reader) {
  v1::PushReleaseRequest request;
  if (!reader->Read(&request)) {
    return absl::InvalidArgumentError(
        "PushRelease got no messages; the first must carry the signed "
        "manifest");
  }
  if (!request.has_manifest()) {
    return absl::InvalidArgumentError(
        "the first PushRelease message must carry the signed manifest, not "
        "artifact bytes");
  }
  v1::SignedManifest signed_manifest = std::move(*request.mutable_manifest());
  ASSIGN_OR_RETURN(
      v1::ReleaseManifest manifest,
      VerifyManifest(signed_manifest, trusted_keys_, clock_.Now()));
  RETURN_IF_ERROR(ValidateManifest(manifest));
  ASSIGN_OR_RETURN(Digest digest, DigestFromBytes(manifest.sha256()));
  // Refuse a duplicate before receiving a possibly large artifact.
  RETURN_IF_ERROR(CheckNotStored(manifest));

  ASSIGN_OR_RETURN(std::unique_ptr<BlobWriter> writer, blobs_.NewWriter());
  while (reader->Read(&request)) {
    if (request.body_case() != v1::PushReleaseRequest::kChunk) {
      return absl::InvalidArgumentError(
          "after the manifest, PushRelease messages must carry artifact "
          "bytes");
    }
    const std::string& chunk = request.chunk();
    if (writer->size() + chunk.size() > manifest.size()) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "upload exceeds the manifest's size of ", manifest.size(),
          " bytes (received at least ", writer->size() + chunk.size(), ")"));
    }
    RETURN_IF_ERROR(writer->Append(chunk));
  }
  if (context->IsCancelled()) {
    return absl::CancelledError("the client cancelled the upload");
  }
  RETURN_IF_ERROR(writer->Commit(digest, manifest.size()));

  v1::Release release;
  release.set_product(manifest.product());
  release.set_version(manifest.version());
  release.set_platform(manifest.platform());
  release.set_sha256(manifest.sha256());
  release.set_size(manifest.size());
  *release.mutable_signed_manifest() = std::move(signed_manifest);
  return loop_.AddRelease(std::move(release));
}

absl::Status AdminService::CheckNotStored(const v1::ReleaseManifest& manifest) {
  absl::MutexLock lock(&reads_mu_);
  absl::StatusOr<v1::Release> existing = reads_->GetRelease(
      manifest.product(), manifest.version(), manifest.platform());
  if (existing.ok()) {
    return absl::AlreadyExistsError(
        absl::StrCat("release ", manifest.product(), " ", manifest.version(),
                     " for ", manifest.platform(), " already exists"));
  }
  return absl::IsNotFound(existing.status()) ? absl::OkStatus()
                                             : existing.status();
}

grpc::Status AdminService::ListReleases(grpc::ServerContext* context,
                                        const v1::ListReleasesRequest* request,
                                        v1::ListReleasesResponse* response) {
  absl::StatusOr<PeerIdentity> caller = Caller(context);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  absl::Status valid = OptionalProduct(request->product());
  if (valid.ok()) valid = OptionalPlatform(request->platform());
  if (!valid.ok()) return ToGrpcStatus(valid);
  absl::MutexLock lock(&reads_mu_);
  absl::StatusOr<std::vector<v1::Release>> releases =
      reads_->ListReleases(request->product(), request->platform());
  if (!releases.ok()) return ToGrpcStatus(releases.status());
  for (v1::Release& r : *releases) *response->add_releases() = std::move(r);
  return grpc::Status::OK;
}

grpc::Status AdminService::GetRelease(grpc::ServerContext* context,
                                      const v1::GetReleaseRequest* request,
                                      v1::Release* response) {
  absl::StatusOr<PeerIdentity> caller = Caller(context);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  absl::Status valid =
      Field("product", ValidateProductName(request->product()));
  if (valid.ok()) valid = Field("version", ValidateVersion(request->version()));
  if (valid.ok()) {
    valid = Field("platform", ValidatePlatform(request->platform()));
  }
  if (!valid.ok()) return ToGrpcStatus(valid);
  absl::MutexLock lock(&reads_mu_);
  absl::StatusOr<v1::Release> release = reads_->GetRelease(
      request->product(), request->version(), request->platform());
  if (!release.ok()) return ToGrpcStatus(release.status());
  *response = *std::move(release);
  return grpc::Status::OK;
}

// ------------------------------------------------------------------ agents

grpc::Status AdminService::ListAgents(grpc::ServerContext* context,
                                      const v1::ListAgentsRequest* request,
                                      v1::ListAgentsResponse* response) {
  absl::StatusOr<PeerIdentity> caller = Caller(context);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  absl::Status valid = OptionalProduct(request->product());
  if (!valid.ok()) return ToGrpcStatus(valid);
  absl::MutexLock lock(&reads_mu_);
  absl::StatusOr<std::vector<v1::Agent>> agents =
      reads_->ListAgents(request->product());
  if (!agents.ok()) return ToGrpcStatus(agents.status());
  for (v1::Agent& a : *agents) {
    if (hub_ != nullptr) {
      if (std::optional<AgentRootStatus> root = hub_->RootStatus(a.agent_id());
          root && root->version > 0) {
        a.set_root_version(root->version);
        a.set_root_expires_unix_seconds(absl::ToUnixSeconds(root->expires));
      }
    }
    *response->add_agents() = std::move(a);
  }
  return grpc::Status::OK;
}

// -------------------------------------------------------------------- roots

grpc::Status AdminService::PushRoot(grpc::ServerContext* context,
                                    const v1::PushRootRequest* request,
                                    v1::PushRootResponse* response) {
  absl::StatusOr<PeerIdentity> caller = Caller(context);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  if (!request->has_root() || request->root().root().empty()) {
    return ToGrpcStatus(absl::InvalidArgumentError(
        "root: missing; pass the signed root file (fleetctl keys root push "
        "FILE)"));
  }
  if (roots_ == nullptr) {
    return ToGrpcStatus(absl::FailedPreconditionError(
        "this controller trusts a flat key list (--trust-key); start it with "
        "--trust-root FILE to use root metadata"));
  }
  const std::string actor = Authorizer::Actor(*caller);
  absl::StatusOr<TrustedRoot> accepted = roots_->Push(request->root(), actor);
  if (!accepted.ok()) {
    LogWarning("root push refused", {{"peer", context->peer()},
                                     {"error", accepted.status().ToString()}});
    return ToGrpcStatus(accepted.status());
  }
  const size_t notified = hub_ != nullptr ? hub_->BroadcastRoots() : 0;
  Audit(*caller, "PushRoot",
        absl::StrCat("v", accepted->version(), " expires ",
                     absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", accepted->expires(),
                                      absl::UTCTimeZone()),
                     ", sent to ", notified, " agents"));
  response->set_version(accepted->version());
  response->set_expires_unix_seconds(absl::ToUnixSeconds(accepted->expires()));
  response->set_agents_notified(static_cast<uint32_t>(notified));
  return grpc::Status::OK;
}

grpc::Status AdminService::GetRoot(grpc::ServerContext* context,
                                   const v1::GetRootRequest* request,
                                   v1::GetRootResponse* response) {
  absl::StatusOr<PeerIdentity> caller = Caller(context);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  if (roots_ == nullptr) {
    return ToGrpcStatus(absl::FailedPreconditionError(
        "this controller trusts a flat key list (--trust-key), not root "
        "metadata (--trust-root)"));
  }
  const TrustedRoot current = roots_->chain().Current();
  *response->mutable_root() = current.signed_root();
  response->set_version(current.version());
  response->set_expires_unix_seconds(absl::ToUnixSeconds(current.expires()));
  return grpc::Status::OK;
}

// ---------------------------------------------------------------- rollouts

grpc::Status AdminService::CreateRollout(
    grpc::ServerContext* context, const v1::CreateRolloutRequest* request,
    v1::Rollout* response) {
  absl::StatusOr<PeerIdentity> caller = Caller(context);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  absl::Status valid =
      Field("product", ValidateProductName(request->product()));
  if (valid.ok()) valid = Field("version", ValidateVersion(request->version()));
  if (valid.ok()) valid = ValidateSelector(request->selector());
  if (valid.ok()) valid = NormalizeStages(request->stages()).status();
  if (valid.ok()) valid = ValidateMaxInFlight(request->max_in_flight());
  if (valid.ok()) valid = ValidateFailurePolicy(request->failure_policy());
  if (valid.ok()) {
    valid = ValidateOfflineTimeout(request->offline_timeout_seconds());
  }
  if (!valid.ok()) return ToGrpcStatus(valid);
  absl::StatusOr<v1::Rollout> rollout = loop_.CreateRollout(*request);
  if (!rollout.ok()) return ToGrpcStatus(rollout.status());
  Audit(*caller, "CreateRollout",
        absl::StrCat(rollout->rollout_id(), " ", rollout->product(), " ",
                     rollout->version()));
  *response = *std::move(rollout);
  return grpc::Status::OK;
}

grpc::Status AdminService::GetRollout(grpc::ServerContext* context,
                                      const v1::GetRolloutRequest* request,
                                      v1::Rollout* response) {
  absl::StatusOr<PeerIdentity> caller = Caller(context);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  absl::Status valid = ValidateId(request->rollout_id(), "rollout_id");
  if (!valid.ok()) return ToGrpcStatus(valid);
  absl::MutexLock lock(&reads_mu_);
  absl::StatusOr<RolloutRecord> record =
      reads_->GetRollout(request->rollout_id());
  if (!record.ok()) return ToGrpcStatus(record.status());
  absl::StatusOr<v1::Rollout> view = View(*record, /*with_targets=*/true);
  if (!view.ok()) return ToGrpcStatus(view.status());
  *response = *std::move(view);
  return grpc::Status::OK;
}

grpc::Status AdminService::ListRollouts(grpc::ServerContext* context,
                                        const v1::ListRolloutsRequest* request,
                                        v1::ListRolloutsResponse* response) {
  absl::StatusOr<PeerIdentity> caller = Caller(context);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  absl::Status valid = OptionalProduct(request->product());
  if (!valid.ok()) return ToGrpcStatus(valid);
  absl::MutexLock lock(&reads_mu_);
  absl::StatusOr<std::vector<RolloutRecord>> records =
      reads_->ListRollouts(request->product(), /*active_only=*/false);
  if (!records.ok()) return ToGrpcStatus(records.status());
  for (const RolloutRecord& record : *records) {
    absl::StatusOr<v1::Rollout> view = View(record, /*with_targets=*/false);
    if (!view.ok()) return ToGrpcStatus(view.status());
    *response->add_rollouts() = *std::move(view);
  }
  return grpc::Status::OK;
}

grpc::Status AdminService::PauseRollout(grpc::ServerContext* context,
                                        const v1::PauseRolloutRequest* request,
                                        v1::Rollout* response) {
  absl::StatusOr<PeerIdentity> caller = Caller(context);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  grpc::Status status =
      ChangeRollout(request->rollout_id(), RolloutCommand::kPause,
                    request->reason(), response);
  if (status.ok()) {
    Audit(*caller, "PauseRollout",
          absl::StrCat(request->rollout_id(), " ", request->reason()));
  }
  return status;
}

grpc::Status AdminService::ResumeRollout(
    grpc::ServerContext* context, const v1::ResumeRolloutRequest* request,
    v1::Rollout* response) {
  absl::StatusOr<PeerIdentity> caller = Caller(context);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  grpc::Status status = ChangeRollout(request->rollout_id(),
                                      RolloutCommand::kResume, "", response);
  if (status.ok()) {
    Audit(*caller, "ResumeRollout", absl::StrCat(request->rollout_id()));
  }
  return status;
}

grpc::Status AdminService::AbortRollout(grpc::ServerContext* context,
                                        const v1::AbortRolloutRequest* request,
                                        v1::Rollout* response) {
  absl::StatusOr<PeerIdentity> caller = Caller(context);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  grpc::Status status =
      ChangeRollout(request->rollout_id(), RolloutCommand::kAbort,
                    request->reason(), response, request->rollback());
  if (status.ok()) {
    Audit(*caller, "AbortRollout",
          absl::StrCat(request->rollout_id(), " ", request->reason(),
                       request->rollback() ? " (rollback)" : ""));
  }
  return status;
}

grpc::Status AdminService::ChangeRollout(const std::string& rollout_id,
                                         RolloutCommand command,
                                         const std::string& reason,
                                         v1::Rollout* response, bool rollback) {
  absl::Status valid = ValidateId(rollout_id, "rollout_id");
  if (valid.ok()) valid = ValidateReason(reason);
  if (!valid.ok()) return ToGrpcStatus(valid);
  absl::StatusOr<v1::Rollout> rollout =
      loop_.ChangeRollout(rollout_id, command, reason, rollback);
  if (!rollout.ok()) return ToGrpcStatus(rollout.status());
  *response = *std::move(rollout);
  return grpc::Status::OK;
}

// --------------------------------------------------------------- blacklist

grpc::Status AdminService::AddBlacklist(grpc::ServerContext* context,
                                        const v1::AddBlacklistRequest* request,
                                        v1::AddBlacklistResponse* response) {
  absl::StatusOr<PeerIdentity> caller = Caller(context);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  absl::Status valid =
      Field("product", ValidateProductName(request->product()));
  if (valid.ok()) valid = Field("version", ValidateVersion(request->version()));
  if (valid.ok() && request->reason().empty()) {
    valid = absl::InvalidArgumentError(
        "reason: required; say why the version is bad");
  }
  if (valid.ok()) valid = ValidateReason(request->reason());
  if (!valid.ok()) return ToGrpcStatus(valid);
  v1::BlacklistEntry entry;
  entry.set_product(request->product());
  entry.set_version(request->version());
  entry.set_reason(request->reason());
  entry.set_created_by(Authorizer::Actor(*caller));
  absl::StatusOr<v1::AddBlacklistResponse> added =
      loop_.AddBlacklist(std::move(entry));
  if (!added.ok()) return ToGrpcStatus(added.status());
  Audit(*caller, "AddBlacklist",
        absl::StrCat(request->product(), " ", request->version(), ": ",
                     request->reason()));
  *response = *std::move(added);
  return grpc::Status::OK;
}

grpc::Status AdminService::RemoveBlacklist(
    grpc::ServerContext* context, const v1::RemoveBlacklistRequest* request,
    v1::RemoveBlacklistResponse* response) {
  absl::StatusOr<PeerIdentity> caller = Caller(context);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  absl::Status valid =
      Field("product", ValidateProductName(request->product()));
  if (valid.ok()) valid = Field("version", ValidateVersion(request->version()));
  if (valid.ok()) {
    valid = loop_.RemoveBlacklist(request->product(), request->version());
  }
  if (valid.ok()) {
    Audit(*caller, "RemoveBlacklist",
          absl::StrCat(request->product(), " ", request->version()));
  }
  return ToGrpcStatus(valid);
}

grpc::Status AdminService::ListBlacklist(
    grpc::ServerContext* context, const v1::ListBlacklistRequest* request,
    v1::ListBlacklistResponse* response) {
  absl::StatusOr<PeerIdentity> caller = Caller(context);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  absl::Status valid = OptionalProduct(request->product());
  if (!valid.ok()) return ToGrpcStatus(valid);
  absl::MutexLock lock(&reads_mu_);
  absl::StatusOr<std::vector<v1::BlacklistEntry>> entries =
      reads_->ListBlacklist(request->product());
  if (!entries.ok()) return ToGrpcStatus(entries.status());
  for (v1::BlacklistEntry& e : *entries) {
    *response->add_entries() = std::move(e);
  }
  return grpc::Status::OK;
}

grpc::Status AdminService::GetServerInfo(
    grpc::ServerContext* context, const v1::GetServerInfoRequest* request,
    v1::ServerInfo* response) {
  absl::StatusOr<PeerIdentity> caller = Caller(context);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  response->set_version(kControllerVersion);
  response->set_schema_version(Store::LatestSchemaVersion());
  response->set_server_time_unix_ms(absl::ToUnixMillis(clock_.Now()));
  response->set_started_unix_ms(absl::ToUnixMillis(started_));
  absl::MutexLock lock(&reads_mu_);
  absl::StatusOr<std::vector<v1::Agent>> agents = reads_->ListAgents("");
  if (!agents.ok()) return ToGrpcStatus(agents.status());
  uint32_t connected = 0;
  for (const v1::Agent& agent : *agents) connected += agent.connected();
  response->set_connected_agents(connected);
  return grpc::Status::OK;
}

grpc::Status AdminService::QueryTelemetry(
    grpc::ServerContext* context, const v1::QueryTelemetryRequest* request,
    v1::QueryTelemetryResponse* response) {
  absl::StatusOr<PeerIdentity> caller = Caller(context);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  if (telemetry_ == nullptr) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        "telemetry is not enabled on this controller");
  }
  absl::StatusOr<v1::QueryTelemetryResponse> result = telemetry_->Run(*request);
  if (!result.ok()) return ToGrpcStatus(result.status());
  *response = *std::move(result);
  return grpc::Status::OK;
}

absl::StatusOr<v1::Rollout> AdminService::View(const RolloutRecord& record,
                                               bool with_targets) {
  v1::Rollout rollout = record.rollout;
  const std::string& id = rollout.rollout_id();
  if (with_targets) {
    ASSIGN_OR_RETURN(std::vector<v1::RolloutTarget> targets,
                     reads_->ListTargets(id));
    *rollout.mutable_counts() = CountTargets(targets);
    for (v1::RolloutTarget& t : targets) {
      *rollout.add_targets() = std::move(t);
    }
  } else {
    ASSIGN_OR_RETURN(auto by_state, reads_->CountTargetsByState(id));
    ASSIGN_OR_RETURN(auto by_revert, reads_->CountRevertsByState(id));
    *rollout.mutable_counts() = CountTargets(by_state);
    AddRevertCounts(by_revert, *rollout.mutable_counts());
  }
  return rollout;
}

}  // namespace fleet::controller
