#include "agent/trust.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace fleet::agent {
namespace {

constexpr char kRootFile[] = "root.json";

std::string Rfc3339(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t, absl::UTCTimeZone());
}

absl::Status InFile(const std::string& path, const absl::Status& status) {
  return absl::Status(status.code(),
                      absl::StrCat(path, ": ", status.message()));
}

}  // namespace

AgentTrust::AgentTrust(TrustedRoot root, std::string state_path,
                       const Clock& clock)
    : chain_(std::move(root)),
      keys_(TrustedKeys::Live(&chain_)),
      state_path_(std::move(state_path)),
      clock_(clock) {}

absl::StatusOr<std::unique_ptr<AgentTrust>> AgentTrust::Open(
    const std::string& pinned_path, const std::string& state_dir,
    const Clock& clock) {
  absl::StatusOr<v1::SignedRoot> pinned = LoadRootFile(pinned_path);
  if (!pinned.ok()) return pinned.status();
  absl::StatusOr<TrustedRoot> root = TrustedRoot::FromPinned(*pinned);
  if (!root.ok()) return InFile(pinned_path, root.status());
  const std::string state_path = JoinPath(state_dir, kRootFile);
  const std::string* source = &pinned_path;
  absl::StatusOr<v1::SignedRoot> stored = LoadRootFile(state_path);
  if (stored.ok()) {
    absl::StatusOr<TrustedRoot> rotated = TrustedRoot::FromPinned(*stored);
    if (!rotated.ok()) return InFile(state_path, rotated.status());
    if (rotated->version() > root->version()) {
      root = *std::move(rotated);
      source = &state_path;
    }
  } else if (!absl::IsNotFound(stored.status())) {
    return stored.status();
  }
  auto trust = std::unique_ptr<AgentTrust>(
      new AgentTrust(*std::move(root), state_path, clock));
  LogInfo("root of trust loaded", {{"file", *source},
                                   {"root_version", trust->version()},
                                   {"expires", Rfc3339(trust->expires())}});
  trust->NoteExpiry();
  return trust;
}

absl::Status AgentTrust::Apply(
    const google::protobuf::RepeatedPtrField<v1::SignedRoot>& roots) {
  bool changed = false;
  absl::Status result = absl::OkStatus();
  for (const v1::SignedRoot& next : roots) {
    absl::StatusOr<v1::RootMetadata> metadata = ParseRootUnverified(next);
    if (metadata.ok() && metadata->version() <= chain_.version()) continue;
    absl::Status accepted = chain_.Accept(next);
    if (!accepted.ok()) {
      LogError(
          "root from the controller refused; keeping the current one",
          {{"root_version", chain_.version()}, {"error", accepted.ToString()}});
      result = accepted;
      break;
    }
    changed = true;
    LogInfo("root of trust rotated", {{"root_version", chain_.version()},
                                      {"expires", Rfc3339(chain_.expires())}});
  }
  if (changed) {
    absl::Status written =
        WriteRootFile(state_path_, chain_.Current().signed_root());
    if (!written.ok()) {
      LogError("cannot persist the new root; it is lost at restart",
               {{"file", state_path_}, {"error", written.ToString()}});
      if (result.ok()) result = written;
    }
    NoteExpiry();
  }
  return result;
}

bool AgentTrust::NoteExpiry() {
  const absl::Time expires = chain_.expires();
  if (clock_.Now() <= expires) return false;
  const uint64_t version = chain_.version();
  absl::MutexLock lock(&mu_);
  if (warned_expired_version_ != version) {
    warned_expired_version_ = version;
    LogWarning(
        "root of trust expired: new installs are refused until operators "
        "push a re-signed root; the agent keeps running and reporting",
        {{"root_version", version}, {"expired_at", Rfc3339(expires)}});
  }
  return true;
}

absl::StatusOr<std::unique_ptr<AgentTrust>> UseTrustRoot(
    const std::string& root_path, const std::string& state_dir,
    TrustedKeys& keys) {
  if (root_path.empty()) {
    if (keys.empty()) {
      return absl::InvalidArgumentError(
          "release trust is required: --trust-root FILE (root metadata from "
          "fleetctl keys root init) or --trust-key FILE");
    }
    return nullptr;
  }
  if (!keys.empty()) {
    LogWarning("--trust-root is set; --trust-key is ignored");
  }
  ASSIGN_OR_RETURN(std::unique_ptr<AgentTrust> trust,
                   AgentTrust::Open(root_path, state_dir));
  keys = trust->keys();
  return trust;
}

}  // namespace fleet::agent
