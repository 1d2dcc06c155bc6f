// EnrollmentService (proto/fleet/v1/enrollment.proto): turns a one-time
// token and a CSR into an agent certificate signed by the fleet CA.
//
// The CSR is checked (and the certificate issued) before the token is
// spent, so a malformed request never burns a use. The agent id is chosen
// here and written into the certificate; the agent learns it from the
// response. Attempts are limited per peer address so tokens cannot be
// guessed online (they carry 256 random bits anyway).
#ifndef FLEET_CONTROLLER_IDENTITY_ENROLLMENT_SERVICE_H_
#define FLEET_CONTROLLER_IDENTITY_ENROLLMENT_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/pki.h"
#include "controller/identity/identity_store.h"
#include "proto/fleet/v1/enrollment.grpc.pb.h"

namespace fleet::controller {

struct EnrollmentOptions {
  absl::Duration certificate_validity = absl::Hours(24 * 365);
  // Enroll calls allowed per peer address per minute.
  int attempts_per_minute = 20;
};

class EnrollmentServiceImpl final : public v1::EnrollmentService::Service {
 public:
  // All references must outlive the service.
  EnrollmentServiceImpl(IdentityStore& identities,
                        const pki::CertificateAuthority& ca, const Clock& clock,
                        EnrollmentOptions options = {});

  grpc::Status Enroll(grpc::ServerContext* context,
                      const v1::EnrollRequest* request,
                      v1::EnrollResponse* response) override;

 private:
  // False when `peer` used up its attempts for the current minute.
  bool AllowAttempt(const std::string& peer, absl::Time now);

  IdentityStore& identities_;
  const pki::CertificateAuthority& ca_;
  const Clock& clock_;
  const EnrollmentOptions options_;

  struct Window {
    absl::Time start;
    int attempts = 0;
  };
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Window> attempts_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fleet::controller

#endif  // FLEET_CONTROLLER_IDENTITY_ENROLLMENT_SERVICE_H_
