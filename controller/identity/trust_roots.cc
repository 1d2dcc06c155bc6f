#include "controller/identity/trust_roots.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace fleet::controller {

absl::StatusOr<std::unique_ptr<TrustRoots>> TrustRoots::Open(
    const v1::SignedRoot& pinned, IdentityStore& store, const Clock& clock) {
  ASSIGN_OR_RETURN(TrustedRoot first, TrustedRoot::FromPinned(pinned));
  const uint64_t pinned_version = first.version();
  const absl::Time pinned_expires = first.expires();
  auto chain = std::make_unique<RootChain>(std::move(first));
  ASSIGN_OR_RETURN(std::vector<std::string> stored, store.ListRoots());
  bool pinned_stored = false;
  for (const std::string& bytes : stored) {
    v1::SignedRoot root;
    if (!root.ParseFromString(bytes)) {
      return absl::DataLossError("a stored root does not parse");
    }
    ASSIGN_OR_RETURN(v1::RootMetadata metadata, ParseRootUnverified(root));
    if (metadata.version() < pinned_version) continue;
    if (metadata.version() == pinned_version) {
      pinned_stored = true;
      continue;
    }
    absl::Status next = chain->Accept(root);
    if (!next.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "stored root v", metadata.version(),
          " does not follow the pinned root (--trust-root v", pinned_version,
          "): ", next.message(),
          "; pin a root of this fleet's chain (fleetctl keys root show)"));
    }
  }
  if (!pinned_stored) {
    RETURN_IF_ERROR(store.InsertRoot(pinned_version, pinned.SerializeAsString(),
                                     pinned_expires, "--trust-root",
                                     clock.Now()));
  }
  LogInfo("root of trust loaded", {{"pinned_version", pinned_version},
                                   {"current_version", chain->version()}});
  return std::unique_ptr<TrustRoots>(
      new TrustRoots(std::move(chain), store, clock));
}

absl::StatusOr<TrustedRoot> TrustRoots::Push(const v1::SignedRoot& next,
                                             const std::string& accepted_by) {
  absl::MutexLock lock(&push_mu_);
  // Checked before anything is stored; Accept below cannot then fail, as
  // pushes are serialized by push_mu_.
  TrustedRoot updated = chain_->Current();
  RETURN_IF_ERROR(updated.Update(next));
  RETURN_IF_ERROR(store_.InsertRoot(updated.version(), next.SerializeAsString(),
                                    updated.expires(), accepted_by,
                                    clock_.Now()));
  RETURN_IF_ERROR(chain_->Accept(next));
  LogInfo("root of trust rotated",
          {{"version", updated.version()}, {"accepted_by", accepted_by}});
  return updated;
}

}  // namespace fleet::controller
