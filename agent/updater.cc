#include "agent/updater.h"

#include <sys/statvfs.h>
#include <unistd.h>

#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/failpoint.h"
#include "common/files.h"
#include "common/log.h"
#include "common/names.h"
#include "common/semver.h"
#include "common/sha256.h"

namespace fleet::agent {
namespace {

constexpr char kStoppingReason[] = "agent stopping";

// The digest a verified manifest names. Only called on manifests that went
// through VerifyManifest (before the update could reach SWAPPED), so the
// bytes parse and the digest has 32 bytes.
std::optional<Digest> ManifestDigest(const UpdateRecord& record) {
  v1::ReleaseManifest manifest;
  if (!manifest.ParseFromString(record.signed_manifest.manifest())) {
    return std::nullopt;
  }
  absl::StatusOr<Digest> digest = DigestFromBytes(manifest.sha256());
  if (!digest.ok()) return std::nullopt;
  return *digest;
}

// FAILED_PRECONDITION naming `path` if the kernel would refuse to execute
// it: its file system is mounted noexec, or it has no execute bit.
absl::Status CheckRunnable(const std::string& path) {
  struct statvfs fs;
  if (statvfs(path.c_str(), &fs) != 0) {
    return absl::ErrnoToStatus(errno, "statvfs " + path);
  }
  if (fs.f_flag & ST_NOEXEC) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot run ", path,
                     ": its file system is mounted "
                     "noexec; remount it with exec or move --exec elsewhere"));
  }
  if (access(path.c_str(), X_OK) != 0) {
    return absl::ErrnoToStatus(errno, "not executable: " + path);
  }
  return absl::OkStatus();
}

bool Retriable(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown:
      return true;
    default:
      return false;
  }
}

}  // namespace

Updater::Updater(UpdaterOptions options, UpdateJournal& journal,
                 const TrustedKeys& keys, Downloader& downloader,
                 ProgramControl& program, const Clock& clock)
    : options_(std::move(options)),
      journal_(journal),
      keys_(keys),
      downloader_(downloader),
      program_(program),
      clock_(clock),
      swap_(options_.exec_path),
      agent_swap_(options_.agent.exec_path),
      phase_started_(clock.Now()) {}

Updater::~Updater() { Stop(); }

void Updater::Start() {
  absl::MutexLock lock(&mu_);
  if (started_) return;
  started_ = true;
  busy_ = true;
  thread_ = std::thread([this] { Run(); });
}

void Updater::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (!started_) return;
    stopping_ = true;
    if (active_cancel_ != nullptr) active_cancel_->Cancel(kStoppingReason);
  }
  program_.CancelWaits();
  if (thread_.joinable()) thread_.join();
  if (options_.stop_program_on_stop) (void)program_.Stop(options_.stop_grace);
}

bool Updater::stopping() const {
  absl::MutexLock lock(&mu_);
  return stopping_;
}

void Updater::Submit(v1::UpdateDirective directive) {
  absl::MutexLock lock(&mu_);
  if (directive.directive_id() == active_id_) return;
  for (const v1::UpdateDirective& queued : queue_) {
    if (queued.directive_id() == directive.directive_id()) return;
  }
  LogInfo("directive queued", {{"directive_id", directive.directive_id()},
                               {"rollout_id", directive.rollout_id()}});
  queue_.push_back(std::move(directive));
}

void Updater::Cancel(const std::string& directive_id,
                     const std::string& reason) {
  absl::MutexLock lock(&mu_);
  const std::string why = "canceled by controller: " + reason;
  if (directive_id == active_id_ && active_cancel_ != nullptr) {
    if (active_swapped_) {
      LogWarning("cancel arrived after the swap; ignored",
                 {{"directive_id", directive_id}});
      return;
    }
    active_cancel_->Cancel(why);
    return;
  }
  for (const v1::UpdateDirective& queued : queue_) {
    if (queued.directive_id() == directive_id) {
      cancelled_[directive_id] = why;
      return;
    }
  }
  LogInfo("cancel for a directive not in flight; ignored",
          {{"directive_id", directive_id}});
}

void Updater::SetBlacklist(std::vector<v1::BlacklistedVersion> entries) {
  absl::Status stored = journal_.ReplaceBlacklist(entries);
  if (!stored.ok()) {
    LogError("storing the blacklist failed; the previous one stays",
             {{"error", stored.ToString()}});
    return;
  }
  LogInfo("blacklist updated", {{"entries", entries.size()}});
}

bool Updater::WaitIdle(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !busy_ && queue_.empty();
  };
  return mu_.AwaitWithTimeout(absl::Condition(&idle), timeout);
}

void Updater::Run() {
  std::optional<UpdateRecord> resume = Recover();
  EnsureProgramRunning();
  if (resume) Execute(*std::move(resume));
  for (;;) {
    v1::UpdateDirective directive;
    {
      absl::MutexLock lock(&mu_);
      busy_ = false;
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !queue_.empty();
      };
      mu_.Await(absl::Condition(&ready));
      if (stopping_) return;
      directive = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
    }
    Process(directive);
  }
}

std::string Updater::InstalledVersion(const std::string& product) {
  absl::StatusOr<std::optional<InstalledRecord>> installed =
      journal_.FindInstalled(product);
  if (!installed.ok()) {
    LogError("journal read failed", {{"error", installed.status().ToString()}});
    return "";
  }
  if (installed->has_value()) return (*installed)->version;
  // The agent binary fleet did not install itself: the version built in.
  return SelfUpdateEnabled() && product == options_.agent.product
             ? options_.agent.version
             : "";
}

void Updater::EnsureProgramRunning() {
  if (stopping() || program_.state().wanted) return;
  if (!PathExists(options_.exec_path)) {
    LogInfo("nothing installed yet; waiting for a first install",
            {{"exec", options_.exec_path}});
    return;
  }
  program_.SetEnv("FLEET_VERSION", InstalledVersion(options_.product));
  absl::Status started = program_.Start();
  if (!started.ok()) {
    LogError("program start failed", {{"error", started.ToString()}});
  }
}

std::optional<UpdateRecord> Updater::Recover() {
  absl::StatusOr<std::optional<UpdateRecord>> active = journal_.ActiveUpdate();
  if (!active.ok()) {
    LogError("journal read failed", {{"error", active.status().ToString()}});
    return std::nullopt;
  }
  if (!active->has_value()) {
    // Leftovers of updates that ended just before a crash.
    if (swap_.HasBackup() || PathExists(swap_.staged_path())) {
      absl::Status cleaned = swap_.Commit();
      if (!cleaned.ok()) {
        LogWarning("cleanup failed", {{"error", cleaned.ToString()}});
      }
    }
    if (absl::Status cleaned = downloader_.DiscardAll(); !cleaned.ok()) {
      LogWarning("cleanup failed", {{"error", cleaned.ToString()}});
    }
    if (SelfUpdateEnabled()) {
      // The agent's backup belongs to the supervisor, which resolved any
      // trial before this worker started; only a staged leftover is ours.
      (void)RemoveFile(agent_swap_.staged_path());
      if (absl::Status cleaned = options_.agent.downloader->DiscardAll();
          !cleaned.ok()) {
        LogWarning("cleanup failed", {{"error", cleaned.ToString()}});
      }
    }
    return std::nullopt;
  }
  UpdateRecord record = **std::move(active);
  LogInfo("recovering interrupted update",
          {{"directive_id", record.directive_id},
           {"state", std::string(ToString(record.state))},
           {"attempt", record.attempt}});
  if (MayBeSwapped(record.state) && IsAgentUpdate(record)) {
    ResolveAgentTrial(record);
    return std::nullopt;
  }
  if (MayBeSwapped(record.state)) {
    RollBack(record, error_class::kInterrupted,
             absl::StrCat("agent restarted during the update (at ",
                          ToString(record.state), ")"));
    return std::nullopt;
  }
  ++record.attempt;
  if (record.attempt > options_.max_resumes + 1) {
    Fail(record, error_class::kInterrupted,
         absl::AbortedError(absl::StrCat("interrupted ", record.attempt - 1,
                                         " times; giving up")));
    return std::nullopt;
  }
  absl::StatusOr<uint64_t> saved =
      journal_.SaveUpdate(record, nullptr, nullptr);
  if (!saved.ok()) {
    LogError("journal write failed", {{"error", saved.status().ToString()}});
    return std::nullopt;
  }
  return record;
}

bool Updater::ResolveOpenUpdate() {
  absl::StatusOr<std::optional<UpdateRecord>> active = journal_.ActiveUpdate();
  if (!active.ok()) return false;
  if (!active->has_value()) return true;
  std::optional<UpdateRecord> resume = Recover();
  if (resume) Execute(*std::move(resume));
  active = journal_.ActiveUpdate();
  return active.ok() && !active->has_value();
}

void Updater::Process(const v1::UpdateDirective& directive) {
  // Not journaled: the controller sends it again after the restart.
  if (stopping()) return;
  const std::string& id = directive.directive_id();
  absl::Status valid_id = ValidateId(id, "directive id");
  if (!valid_id.ok()) {
    LogError("directive dropped", {{"error", valid_id.ToString()}});
    return;
  }
  absl::StatusOr<std::optional<UpdateRecord>> existing =
      journal_.FindUpdate(id);
  if (!existing.ok()) {
    LogError("journal read failed", {{"error", existing.status().ToString()}});
    return;
  }
  if (existing->has_value()) {
    LogInfo("directive already journaled; ignored",
            {{"directive_id", id},
             {"state", std::string(ToString((*existing)->state))}});
    return;
  }

  // One update at a time, also across failures: a swap must never replace
  // the backup an unresolved update still needs.
  const bool no_open_update = ResolveOpenUpdate();

  UpdateRecord record;
  record.directive_id = id;
  record.rollout_id = directive.rollout_id();
  record.product = options_.product;
  if (SelfUpdateEnabled()) {
    // Which executable the directive is for decides everything after; the
    // product is checked again, signed, in CheckManifest.
    v1::ReleaseManifest unverified;
    if (unverified.ParseFromString(directive.manifest().manifest()) &&
        unverified.product() == options_.agent.product) {
      record.product = options_.agent.product;
    }
  }
  record.from_version = InstalledVersion(record.product);
  record.kind = directive.kind() == v1::DIRECTIVE_KIND_ROLLBACK
                    ? v1::DIRECTIVE_KIND_ROLLBACK
                    : v1::DIRECTIVE_KIND_UPDATE;
  record.signed_manifest = directive.manifest();
  record.deadline_ms = directive.deadline_unix_ms();
  record.state = UpdateState::kReceived;
  phase_started_ = clock_.Now();
  v1::UpdateEvent received =
      MakeEvent(record, UpdateState::kReceived, "", "", 0);
  absl::StatusOr<uint64_t> inserted = journal_.InsertUpdate(record, &received);
  if (!inserted.ok()) {
    LogError("journal write failed",
             {{"directive_id", id}, {"error", inserted.status().ToString()}});
    return;
  }
  LogInfo("update phase", {{"directive_id", id}, {"phase", "RECEIVED"}});
  if (!no_open_update) {
    Fail(record, error_class::kBusy,
         absl::UnavailableError("an earlier update is still unresolved"));
    return;
  }
  Execute(std::move(record));
}

absl::StatusOr<v1::ReleaseManifest> Updater::CheckManifest(
    const UpdateRecord& record, std::string* error_class) {
  const bool rollback = record.kind == v1::DIRECTIVE_KIND_ROLLBACK;
  // An explicit rollback may go back to a release whose metadata expired;
  // new installs may not (freeze attacks).
  absl::StatusOr<v1::ReleaseManifest> manifest = VerifyManifest(
      record.signed_manifest, keys_, clock_.Now(), /*threshold=*/1,
      /*check_expiry=*/!rollback);
  if (!manifest.ok()) {
    *error_class =
        manifest.status().code() == absl::StatusCode::kFailedPrecondition
            ? error_class::kExpired
            : error_class::kSignature;
    return manifest.status();
  }
  if (manifest->product() != record.product) {
    *error_class = error_class::kProduct;
    return absl::InvalidArgumentError(absl::StrCat(
        "release is for product ", manifest->product(), ", this agent manages ",
        options_.product,
        SelfUpdateEnabled() ? " and is " + options_.agent.product : ""));
  }
  if (manifest->platform() != HostPlatform()) {
    *error_class = error_class::kPlatform;
    return absl::InvalidArgumentError(
        absl::StrCat("release is for platform ", manifest->platform(),
                     ", this agent runs on ", HostPlatform()));
  }
  absl::StatusOr<bool> banned =
      journal_.IsBlacklisted(manifest->product(), manifest->version());
  if (!banned.ok() || *banned) {
    *error_class = error_class::kBlacklisted;
    if (!banned.ok()) return banned.status();
    return absl::FailedPreconditionError(absl::StrCat(
        "version ", manifest->version(), " of ", manifest->product(),
        " is blacklisted; refusing to install it"));
  }
  if (!record.from_version.empty() && SemVer::Parse(record.from_version).ok() &&
      CompareVersions(manifest->version(), record.from_version) < 0) {
    *error_class = error_class::kDowngrade;
    if (!rollback) {
      return absl::FailedPreconditionError(
          absl::StrCat("refusing downgrade from ", record.from_version, " to ",
                       manifest->version(), " without a rollback directive"));
    }
    // A rollback goes back to what ran here before, or to a release whose
    // signed manifest allows downgrades: a controller alone cannot walk an
    // agent down to any old signed release with known holes.
    if (!manifest->allows_downgrade()) {
      absl::StatusOr<bool> ran =
          journal_.RanHere(manifest->product(), manifest->sha256());
      if (!ran.ok()) return ran.status();
      if (!*ran) {
        absl::StatusOr<Digest> digest = DigestFromBytes(manifest->sha256());
        return absl::FailedPreconditionError(absl::StrCat(
            "refusing rollback from ", record.from_version, " to ",
            manifest->version(), ": that release (sha256 ",
            digest.ok() ? DigestToHex(*digest) : "?",
            ") never ran here and its manifest does not allow downgrades; "
            "sign it with allows_downgrade to permit this"));
      }
    }
    error_class->clear();
  }
  return manifest;
}

v1::UpdateEvent Updater::MakeEvent(const UpdateRecord& record,
                                   UpdateState phase, const std::string& error,
                                   const std::string& error_class,
                                   uint64_t bytes) {
  const absl::Time now = clock_.Now();
  v1::UpdateEvent e;
  e.set_directive_id(record.directive_id);
  e.set_rollout_id(record.rollout_id);
  e.set_product(record.product);
  e.set_from_version(record.from_version);
  e.set_to_version(record.to_version);
  e.set_phase(ToPhase(phase));
  e.set_error(error);
  e.set_error_class(error_class);
  e.set_duration_ms(absl::ToInt64Milliseconds(now - phase_started_));
  e.set_bytes(bytes);
  e.set_time_unix_ms(absl::ToUnixMillis(now));
  phase_started_ = now;
  return e;
}

absl::Status Updater::Advance(UpdateRecord& record, UpdateState to,
                              const std::string& error,
                              const std::string& error_class, uint64_t bytes,
                              bool event, const InstalledRecord* installed) {
  absl::Status allowed = CheckTransition(record.state, to);
  if (!allowed.ok()) {
    LogError("update state machine bug", {{"error", allowed.ToString()}});
    return allowed;
  }
  UpdateRecord next = record;
  next.state = to;
  next.error = error;
  next.error_class = error_class;
  v1::UpdateEvent e;
  if (event) e = MakeEvent(next, to, error, error_class, bytes);
  absl::StatusOr<uint64_t> saved =
      journal_.SaveUpdate(next, event ? &e : nullptr, installed);
  if (!saved.ok()) {
    LogError("journal write failed", {{"directive_id", record.directive_id},
                                      {"state", std::string(ToString(to))},
                                      {"error", saved.status().ToString()}});
    return saved.status();
  }
  Failpoint(absl::StrCat("journaled.", ToString(to)));
  record = std::move(next);
  nlohmann::json fields = {{"directive_id", record.directive_id},
                           {"phase", std::string(ToString(to))},
                           {"to_version", record.to_version}};
  if (!error.empty()) {
    fields["error"] = error;
    fields["error_class"] = error_class;
  }
  if (bytes != 0) fields["bytes"] = bytes;
  if (!event) fields["journaled_before_action"] = true;
  if (to == UpdateState::kFailed || to == UpdateState::kRolledBack) {
    LogWarning("update phase", fields);
  } else {
    LogInfo("update phase", fields);
  }
  return absl::OkStatus();
}

void Updater::Fail(UpdateRecord& record, const std::string& error_class,
                   const absl::Status& error) {
  std::optional<Digest> digest = ManifestDigest(record);
  (void)Advance(record, UpdateState::kFailed, std::string(error.message()),
                error_class);
  // Only classes that come after the signature check may name a download
  // to delete; a forged manifest must not make us delete files by name.
  const bool verified = error_class == error_class::kDownload ||
                        error_class == error_class::kVerify ||
                        error_class == error_class::kDisk ||
                        error_class == error_class::kCanceled ||
                        error_class == error_class::kDeadline ||
                        error_class == error_class::kSwap ||
                        error_class == error_class::kInterrupted;
  if (digest && verified) (void)DownloaderFor(record).Discard(*digest);
}

void Updater::RollBack(UpdateRecord& record, const std::string& error_class,
                       const std::string& error) {
  std::optional<Digest> digest = ManifestDigest(record);
  if (!digest) {
    LogError("journaled manifest unreadable; cannot roll back",
             {{"directive_id", record.directive_id}});
    return;
  }
  (void)program_.Stop(options_.stop_grace);
  absl::Status restored = swap_.Rollback(*digest);
  if (restored.ok()) Failpoint("rollback.restored");
  if (!restored.ok()) {
    // The journal still says SWAPPED/RESTARTED, so the next start retries;
    // meanwhile run whatever EXEC holds rather than nothing.
    LogError("rollback failed; will retry at next start",
             {{"directive_id", record.directive_id},
              {"error", restored.ToString()}});
    EnsureProgramRunning();
    return;
  }
  if (!Advance(record, UpdateState::kRolledBack, error, error_class).ok()) {
    EnsureProgramRunning();
    return;
  }
  (void)downloader_.Discard(*digest);
  EnsureProgramRunning();
}

absl::StatusOr<DownloadResult> Updater::DownloadWithRetry(
    UpdateRecord& record, const v1::ReleaseManifest& manifest,
    Cancellation& cancel) {
  Downloader& dl = DownloaderFor(record);
  const Digest digest = *DigestFromBytes(manifest.sha256());
  absl::Duration delay = options_.download_retry_initial;
  for (int attempt = 1;; ++attempt) {
    const uint64_t before = dl.BytesOnDisk(digest);
    absl::StatusOr<DownloadResult> result =
        dl.Fetch(digest, manifest.size(), cancel);
    if (!result.ok() && dl.BytesOnDisk(digest) > before) {
      // A transfer that makes progress is flaky, not broken: the attempt
      // budget counts failures in a row without progress.
      attempt = 1;
      delay = options_.download_retry_initial;
    }
    const bool disk_error =
        !result.ok() && absl::StrContains(result.status().message(), dl.dir());
    if (result.ok() || disk_error || !Retriable(result.status()) ||
        attempt >= options_.download_attempts) {
      return result;
    }
    LogWarning("download interrupted; will resume",
               {{"directive_id", record.directive_id},
                {"attempt", attempt},
                {"retry_in_ms", absl::ToInt64Milliseconds(delay)},
                {"error", result.status().ToString()}});
    if (cancel.WaitFor(delay)) return absl::CancelledError(cancel.reason());
    delay = std::min(delay * 2, options_.download_retry_max);
    // DOWNLOADING again: the transfer resumes from what is on disk.
    absl::StatusOr<uint64_t> seq = journal_.AppendEvent(MakeEvent(
        record, UpdateState::kDownloading, "", "", dl.BytesOnDisk(digest)));
    if (!seq.ok()) return seq.status();
  }
}

void Updater::Execute(UpdateRecord record) {
  Cancellation cancel;
  {
    absl::MutexLock lock(&mu_);
    active_id_ = record.directive_id;
    active_swapped_ = MayBeSwapped(record.state);
    active_cancel_ = &cancel;
    auto it = cancelled_.find(record.directive_id);
    if (it != cancelled_.end()) {
      cancel.Cancel(it->second);
      cancelled_.erase(it);
    }
    if (stopping_) cancel.Cancel(kStoppingReason);
  }
  absl::Cleanup clear_active = [this] {
    absl::MutexLock lock(&mu_);
    active_id_.clear();
    active_swapped_ = false;
    active_cancel_ = nullptr;
  };

  // The agent's own binary or the managed program.
  const bool agent = IsAgentUpdate(record);
  Downloader& dl = DownloaderFor(record);
  ExecutableSwap& swap = agent ? agent_swap_ : swap_;
  const std::string& exec =
      agent ? options_.agent.exec_path : options_.exec_path;

  std::string klass;
  absl::StatusOr<v1::ReleaseManifest> manifest = CheckManifest(record, &klass);
  if (!manifest.ok()) {
    Fail(record, klass, manifest.status());
    return;
  }
  record.to_version = manifest->version();
  const Digest digest = *DigestFromBytes(manifest->sha256());
  std::optional<DownloadResult> download;

  // Classifies a failed download/verification step.
  auto fail_download = [&](const absl::Status& status) {
    if (status.code() == absl::StatusCode::kDataLoss) {
      Fail(record, error_class::kVerify, status);
    } else if (status.code() == absl::StatusCode::kCancelled) {
      Fail(record, error_class::kCanceled, status);
    } else if (absl::StrContains(status.message(), dl.dir())) {
      Fail(record, error_class::kDisk, status);
    } else {
      Fail(record, error_class::kDownload, status);
    }
  };

  while (!IsFinal(record.state)) {
    // Stopping leaves the update journaled where it is: resumed (before the
    // swap) or rolled back (after it) by the next start.
    if (stopping()) return;
    if (!MayBeSwapped(record.state)) {
      if (cancel.cancelled()) {
        Fail(record, error_class::kCanceled,
             absl::CancelledError(cancel.reason()));
        return;
      }
      if (record.deadline_ms != 0 &&
          absl::ToUnixMillis(clock_.Now()) > record.deadline_ms) {
        Fail(record, error_class::kDeadline,
             absl::DeadlineExceededError("directive deadline passed"));
        return;
      }
    }
    switch (record.state) {
      case UpdateState::kReceived: {
        absl::StatusOr<Digest> current = Sha256OfFile(exec);
        if (current.ok()) {
          // What runs now is a release a later rollback may return to.
          absl::Status noted =
              journal_.RecordRanHere(record.product, DigestToBytes(*current));
          if (!noted.ok()) {
            LogWarning("journal write failed", {{"error", noted.ToString()}});
          }
        }
        if (current.ok() && *current == digest) {
          InstalledRecord installed{record.product, manifest->version(),
                                    DigestToBytes(digest), exec, 0};
          if (!Advance(record, UpdateState::kHealthy, "", "", 0, true,
                       &installed)
                   .ok()) {
            return;
          }
          if (!program_.state().wanted) EnsureProgramRunning();
          return;
        }
        if (!Advance(record, UpdateState::kDownloading, "", "",
                     dl.BytesOnDisk(digest))
                 .ok()) {
          return;
        }
        break;
      }
      case UpdateState::kDownloading: {
        absl::StatusOr<DownloadResult> result =
            DownloadWithRetry(record, *manifest, cancel);
        if (!result.ok()) {
          if (stopping()) return;
          fail_download(result.status());
          return;
        }
        download = *result;
        if (!Advance(record, UpdateState::kDownloaded, "", "", result->fetched)
                 .ok()) {
          return;
        }
        break;
      }
      case UpdateState::kDownloaded: {
        if (!download) {
          // Resumed after a restart: re-hash what is on disk (no transfer
          // unless the file went missing).
          absl::StatusOr<DownloadResult> result =
              DownloadWithRetry(record, *manifest, cancel);
          if (!result.ok()) {
            if (stopping()) return;
            fail_download(result.status());
            return;
          }
          download = *result;
        }
        if (download->size != manifest->size() || download->digest != digest) {
          (void)dl.Discard(digest);
          Fail(record, error_class::kVerify,
               absl::DataLossError(absl::StrCat(
                   "artifact has ", download->size, " bytes and sha256 ",
                   DigestToHex(download->digest), "; manifest says ",
                   manifest->size(), " and ", DigestToHex(digest))));
          return;
        }
        if (!Advance(record, UpdateState::kVerified).ok()) return;
        break;
      }
      case UpdateState::kVerified: {
        absl::Status staged = swap.Stage(dl.PartPath(digest), digest);
        if (!staged.ok()) {
          if (staged.code() == absl::StatusCode::kNotFound) {
            // The download vanished (cleaned up by hand?): fetch it again.
            download.reset();
            absl::StatusOr<DownloadResult> result =
                DownloadWithRetry(record, *manifest, cancel);
            if (result.ok()) {
              staged = swap.Stage(result->path, digest);
            } else {
              staged = result.status();
            }
          }
          if (!staged.ok()) {
            if (stopping()) return;
            Fail(record,
                 staged.code() == absl::StatusCode::kDataLoss
                     ? error_class::kVerify
                     : error_class::kDisk,
                 staged);
            return;
          }
        }
        // A staged file that could never run (a noexec mount, a mode the
        // file system refuses) must fail here, while the old program still
        // runs, not after the swap.
        if (absl::Status runnable = CheckRunnable(swap.staged_path());
            !runnable.ok()) {
          (void)RemoveFile(swap.staged_path());
          Fail(record, error_class::kDisk, runnable);
          return;
        }
        if (!Advance(record, UpdateState::kStaged).ok()) return;
        break;
      }
      case UpdateState::kStaged: {
        {
          absl::MutexLock lock(&mu_);
          if (stopping_) return;
          active_swapped_ = true;  // from here on a Cancel is too late
        }
        if (agent) {
          BeginAgentTrial(record, digest);
          return;
        }
        // Journaled before the rename: after a crash from here on, the next
        // start rolls back.
        if (!Advance(record, UpdateState::kSwapped, "", "", 0,
                     /*event=*/false)
                 .ok()) {
          return;
        }
        absl::Status swapped = swap.Swap();
        if (swapped.ok()) Failpoint("swap.renamed");
        if (!swapped.ok()) {
          // Swap() leaves EXEC as it was; Rollback only drops the backup
          // link and staged file.
          (void)swap.Rollback(digest);
          (void)Advance(record, UpdateState::kFailed,
                        std::string(swapped.message()), error_class::kSwap);
          return;
        }
        absl::StatusOr<uint64_t> seq = journal_.AppendEvent(
            MakeEvent(record, UpdateState::kSwapped, "", "", 0));
        if (!seq.ok()) {
          RollBack(record, error_class::kDisk, seq.status().ToString());
          return;
        }
        LogInfo("update phase", {{"directive_id", record.directive_id},
                                 {"phase", "SWAPPED"},
                                 {"exec", exec}});
        break;
      }
      case UpdateState::kSwapped: {
        absl::Status stopped = program_.Stop(options_.stop_grace);
        if (!stopped.ok()) {
          RollBack(record, error_class::kRestart, stopped.ToString());
          return;
        }
        program_.SetEnv("FLEET_VERSION", record.to_version);
        absl::Status started = program_.Start();
        if (!started.ok()) {
          RollBack(record, error_class::kRestart,
                   std::string(started.message()));
          return;
        }
        if (!Advance(record, UpdateState::kRestarted).ok()) {
          RollBack(record, error_class::kDisk, "journal write failed");
          return;
        }
        break;
      }
      case UpdateState::kRestarted: {
        HealthCheckOptions checks = options_.health;
        checks.env["FLEET_PRODUCT"] = record.product;
        checks.env["FLEET_VERSION"] = record.to_version;
        const HealthChecker checker(std::move(checks));
        if (checker.enabled()) {
          absl::Time started = program_.state().started;
          if (started == absl::UnixEpoch()) started = clock_.Now();
          absl::Status passed = checker.WaitHealthy(
              started + options_.health_window, [this] { return stopping(); });
          if (!passed.ok()) {
            if (stopping()) return;
            RollBack(record, error_class::kHealth,
                     absl::StrCat("health check failed: ", passed.message()));
            return;
          }
        }
        absl::Status health = program_.WaitStaysUp(options_.health_window);
        if (!health.ok()) {
          if (stopping()) return;
          RollBack(record, error_class::kHealth,
                   absl::StrCat("health check failed: ", health.message()));
          return;
        }
        InstalledRecord installed{record.product, manifest->version(),
                                  DigestToBytes(digest), exec, 0};
        if (!Advance(record, UpdateState::kHealthy, "", "", 0, true, &installed)
                 .ok()) {
          RollBack(record, error_class::kDisk, "journal write failed");
          return;
        }
        absl::Status committed = swap.Commit();
        if (!committed.ok()) {
          LogWarning("backup cleanup failed",
                     {{"error", committed.ToString()}});
        }
        (void)dl.Discard(digest);
        break;
      }
      default:
        LogError("update in unexpected state",
                 {{"directive_id", record.directive_id},
                  {"state", std::string(ToString(record.state))}});
        return;
    }
  }
}

bool Updater::SelfUpdateEnabled() const {
  return options_.agent.trial != nullptr &&
         options_.agent.downloader != nullptr &&
         !options_.agent.product.empty() && !options_.agent.exec_path.empty();
}

bool Updater::IsAgentUpdate(const UpdateRecord& record) const {
  return SelfUpdateEnabled() && record.product == options_.agent.product;
}

Downloader& Updater::DownloaderFor(const UpdateRecord& record) {
  return IsAgentUpdate(record) ? *options_.agent.downloader : downloader_;
}

void Updater::WaitUntilStopped() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(&stopping_));
}

void Updater::BeginAgentTrial(UpdateRecord& record, const Digest& digest) {
  // Journaled before the supervisor renames: after a crash from here on,
  // the next worker resolves the trial by what AGENT_EXEC holds.
  if (!Advance(record, UpdateState::kSwapped, "", "", 0, /*event=*/false)
           .ok()) {
    return;
  }
  absl::Status begun = options_.agent.trial->BeginAgentTrial(
      record.directive_id, DigestToHex(digest));
  if (!begun.ok() && !absl::IsUnavailable(begun) &&
      !absl::IsDeadlineExceeded(begun)) {
    // The supervisor refused or its rename failed: nothing was swapped.
    (void)RemoveFile(agent_swap_.staged_path());
    (void)options_.agent.downloader->Discard(digest);
    (void)Advance(record, UpdateState::kFailed, std::string(begun.message()),
                  error_class::kSwap);
    return;
  }
  if (!begun.ok()) {
    // No answer: the rename may have happened. The next worker decides by
    // what AGENT_EXEC holds.
    LogError(
        "agent trial request unanswered",
        {{"directive_id", record.directive_id}, {"error", begun.ToString()}});
  } else {
    LogInfo("agent trial begun; the supervisor replaces this worker",
            {{"directive_id", record.directive_id},
             {"to_version", record.to_version}});
  }
  // This binary is no longer the agent's: take no more directives.
  WaitUntilStopped();
}

void Updater::ResolveAgentTrial(UpdateRecord& record) {
  std::optional<Digest> digest = ManifestDigest(record);
  if (!digest) {
    LogError("journaled manifest unreadable; cannot resolve the agent trial",
             {{"directive_id", record.directive_id}});
    return;
  }
  // The journal keeps to_version empty (it is known only once the
  // manifest was checked); the events need it.
  v1::ReleaseManifest manifest;
  if (manifest.ParseFromString(record.signed_manifest.manifest())) {
    record.to_version = manifest.version();
  }
  const bool trial = options_.agent.trial_directive_id == record.directive_id;
  absl::StatusOr<Digest> current = Sha256OfFile(options_.agent.exec_path);
  const bool new_in_place = current.ok() && *current == *digest;
  if (trial && new_in_place) {
    RunAgentTrial(record, *digest);
    return;
  }
  if (new_in_place) {
    // Committed by the supervisor (it removes the backup and keeps the new
    // binary only then); the trial worker died before journaling HEALTHY.
    if (record.state == UpdateState::kSwapped &&
        !Advance(record, UpdateState::kRestarted).ok()) {
      return;
    }
    CommitAgentUpdate(record, *digest);
    return;
  }
  // The supervisor put the old binary back before starting this worker.
  std::string reason = absl::StrCat(
      "the agent restarted during its self-update (at ", ToString(record.state),
      ") and the old agent binary is in place");
  const std::string& failed = options_.agent.trial_failed;
  if (absl::StartsWith(failed, record.directive_id + " ")) {
    reason = failed.substr(record.directive_id.size() + 1);
  }
  (void)RemoveFile(agent_swap_.staged_path());
  if (!Advance(record, UpdateState::kRolledBack, reason,
               error_class::kAgentTrial)
           .ok()) {
    return;
  }
  (void)options_.agent.downloader->Discard(*digest);
}

void Updater::RunAgentTrial(UpdateRecord& record, const Digest& digest) {
  LogInfo("agent trial: this worker runs the new binary",
          {{"directive_id", record.directive_id},
           {"to_version", record.to_version}});
  if (record.state == UpdateState::kSwapped) {
    // The rename happened (this binary runs): its event, then RESTARTED.
    absl::StatusOr<uint64_t> seq = journal_.AppendEvent(
        MakeEvent(record, UpdateState::kSwapped, "", "", 0));
    if (!seq.ok()) return;  // no commit: the supervisor rolls back
    if (!Advance(record, UpdateState::kRestarted).ok()) return;
  }
  // Commit only once the controller acknowledged RESTARTED: the new agent
  // connected, and its journal and stream work end to end.
  const uint64_t restarted_seq = journal_.LastEventSeq();
  for (;;) {
    absl::StatusOr<std::vector<v1::UpdateEvent>> pending =
        journal_.PendingEvents(restarted_seq - 1, 1);
    if (pending.ok() &&
        (pending->empty() || pending->front().seq() > restarted_seq)) {
      break;
    }
    absl::MutexLock lock(&mu_);
    if (mu_.AwaitWithTimeout(absl::Condition(&stopping_),
                             absl::Milliseconds(100))) {
      return;
    }
  }
  Failpoint("agent-trial.acked");
  absl::Status committed =
      options_.agent.trial->CommitAgentTrial(record.directive_id);
  if (!committed.ok()) {
    // Too late (the window closed): the supervisor is rolling back and
    // ends this worker; the old one journals the outcome.
    LogError("agent trial commit refused",
             {{"directive_id", record.directive_id},
              {"error", committed.ToString()}});
    WaitUntilStopped();
    return;
  }
  CommitAgentUpdate(record, digest);
}

void Updater::CommitAgentUpdate(UpdateRecord& record, const Digest& digest) {
  InstalledRecord installed{options_.agent.product, record.to_version,
                            DigestToBytes(digest), options_.agent.exec_path, 0};
  if (!Advance(record, UpdateState::kHealthy, "", "", 0, true, &installed)
           .ok()) {
    return;
  }
  // The supervisor removes the backup at the commit; a supervisor killed
  // right after the commit point leaves it behind.
  if (absl::Status cleaned = agent_swap_.Commit(); !cleaned.ok()) {
    LogWarning("agent backup cleanup failed", {{"error", cleaned.ToString()}});
  }
  (void)options_.agent.downloader->Discard(digest);
}

}  // namespace fleet::agent
