// The controller's root of trust (--trust-root): the pinned root, every root
// operators pushed since (PushRoot), persisted in fleet.db (migration 7), and
// the live RootChain that verifies pushed releases and that the agent hub
// sends to agents (docs/security.md, "Release signing").
//
// A root is accepted here exactly as an agent accepts it
// (TrustedRoot::Update): version current + 1, cross-signed by a threshold of
// the current root keys and of its own. So the controller never hands agents
// a root they would refuse, and cannot adopt one a threshold of root keys
// did not sign.
//
//   ASSIGN_OR_RETURN(auto roots, TrustRoots::Open(pinned, identities, clock));
//   VerifyManifest(m, TrustedKeys::Live(&roots->chain()), now);
//   RETURN_IF_ERROR(roots->Push(next, "admin:alice").status());
#ifndef FLEET_CONTROLLER_IDENTITY_TRUST_ROOTS_H_
#define FLEET_CONTROLLER_IDENTITY_TRUST_ROOTS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/clock.h"
#include "common/root.h"
#include "controller/identity/identity_store.h"
#include "proto/fleet/v1/release.pb.h"

namespace fleet::controller {

class TrustRoots {
 public:
  // Trusts `pinned` (it must vouch for itself: TrustedRoot::FromPinned),
  // stores it if new, then applies every stored root above its version in
  // order (the pushes of earlier runs). A pinned root older than the stored
  // ones is fine: the stored chain brings it up to date. FAILED_PRECONDITION
  // when a stored root does not follow (the pinned file belongs to another
  // lineage: the message names the version). `store` and `clock` must
  // outlive the result.
  static absl::StatusOr<std::unique_ptr<TrustRoots>> Open(
      const v1::SignedRoot& pinned, IdentityStore& store, const Clock& clock);

  // Accepts `next` as the new current root: checked through
  // TrustedRoot::Update (INVALID_ARGUMENT, FAILED_PRECONDITION,
  // PERMISSION_DENIED as documented there), stored under `accepted_by`,
  // then adopted. Concurrent pushes are serialized; the second one for the
  // same version is FAILED_PRECONDITION. Returns the new current root.
  absl::StatusOr<TrustedRoot> Push(const v1::SignedRoot& next,
                                   const std::string& accepted_by);

  // Live and thread-safe; valid as long as this object.
  const RootChain& chain() const { return *chain_; }

 private:
  TrustRoots(std::unique_ptr<RootChain> chain, IdentityStore& store,
             const Clock& clock)
      : chain_(std::move(chain)), store_(store), clock_(clock) {}

  absl::Mutex push_mu_;  // one Push at a time: check, store, adopt
  std::unique_ptr<RootChain> chain_;
  IdentityStore& store_;
  const Clock& clock_;
};

}  // namespace fleet::controller

#endif  // FLEET_CONTROLLER_IDENTITY_TRUST_ROOTS_H_
