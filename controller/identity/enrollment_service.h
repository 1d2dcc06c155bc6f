// EnrollmentService (proto/fleet/v1/enrollment.proto): turns a one-time
// token and a CSR into an agent certificate signed by the fleet CA.
//
// The CSR is checked (and the certificate issued) before the token is
// spent, so a malformed request never burns a use. The agent id is chosen
// here and written into the certificate; the agent learns it from the
// response. Attempts are limited per peer address so tokens cannot be
// guessed online (they carry 256 random bits anyway).
//
// Renew gives an enrolled agent a new certificate before its current one
// expires: same agent id, role and enrolled labels, all read from the
// verified certificate the call came with, never from the request. The
// token's labels are written into the certificate at Enroll (fleet-label:
// URI SANs, common/pki.h), so they survive every renewal without a database
// read and the hub can enforce them (Authorizer::ApplyEnrolledLabels).
#ifndef FLEET_CONTROLLER_IDENTITY_ENROLLMENT_SERVICE_H_
#define FLEET_CONTROLLER_IDENTITY_ENROLLMENT_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/pki.h"
#include "controller/identity/identity_store.h"
#include "proto/fleet/v1/enrollment.grpc.pb.h"

namespace fleet::controller {

struct EnrollmentOptions {
  // Of every agent certificate issued by Enroll and Renew (the controller's
  // --agent-cert-validity).
  absl::Duration certificate_validity = absl::Hours(24 * 365);
  // Enroll calls allowed per peer address per minute, and Renew calls per
  // agent per minute.
  int attempts_per_minute = 20;
};

// The controller's --agent-cert-validity: "90d", "36h", "15m", "8s" (days
// or anything absl::ParseDuration reads), from 1 s to 10 years.
// INVALID_ARGUMENT naming the accepted forms otherwise.
absl::StatusOr<absl::Duration> ParseCertificateValidity(absl::string_view text);

class EnrollmentServiceImpl final : public v1::EnrollmentService::Service {
 public:
  // All references must outlive the service.
  EnrollmentServiceImpl(IdentityStore& identities,
                        const pki::CertificateAuthority& ca, const Clock& clock,
                        EnrollmentOptions options = {});

  grpc::Status Enroll(grpc::ServerContext* context,
                      const v1::EnrollRequest* request,
                      v1::EnrollResponse* response) override;
  grpc::Status Renew(grpc::ServerContext* context,
                     const v1::RenewRequest* request,
                     v1::RenewResponse* response) override;

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
