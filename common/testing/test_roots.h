// Root metadata for tests: one root key and one release key (thresholds 1),
// signed by whoever the test names, so rotation tests say only what differs
// between versions.
//
//   v1::SignedRoot v2 = MakeTestRoot(2, root_b, release, {&root_a, &root_b});
#ifndef FLEET_COMMON_TESTING_TEST_ROOTS_H_
#define FLEET_COMMON_TESTING_TEST_ROOTS_H_

#include <cstdint>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/ed25519.h"
#include "proto/fleet/v1/release.pb.h"

namespace fleet {

// Root `version` trusting `root_key` and `release_key`, created an hour
// before the earlier of now and `expires`, expiring at `expires`, signed by
// `signers`. Fails the test (and returns an empty root) if signing fails.
v1::SignedRoot MakeTestRoot(
    uint64_t version, const Ed25519PrivateKey& root_key,
    const Ed25519PrivateKey& release_key,
    const std::vector<const Ed25519PrivateKey*>& signers,
    absl::Time expires = absl::Now() + absl::Hours(24));

}  // namespace fleet

#endif  // FLEET_COMMON_TESTING_TEST_ROOTS_H_
