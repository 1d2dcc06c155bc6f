// The agent's TLS identity and how it gets one
// (proto/fleet/v1/enrollment.proto).
//
// The identity lives in STATE_DIR/identity/: agent.key (0600), agent.crt and
// ca.crt. Enroll writes the key before the certificate, each atomically, so a
// crash part-way leaves no certificate and the next start enrolls again (a
// token with uses left, or a new one); it never leaves a certificate without
// its key.
//
// RenewIdentity replaces key and certificate with a new pair from
// EnrollmentService.Renew. The pair is first written beside the current one
// (agent.key.next, agent.crt.next), then renamed into place key first; a
// crash between the two renames is finished at the next LoadIdentity (the
// new certificate matches the key already in place) and a crash before
// either leaves the old pair, so the directory always holds a key and the
// certificate for it.
//
//   ASSIGN_OR_RETURN(std::optional<AgentIdentity> id,
//                    LoadIdentity(state_dir));
//   if (!id) ASSIGN_OR_RETURN(id, Enroll(options));
//   channel = grpc::CreateChannel(target, *MakeChannelCredentials(id->files));
#ifndef FLEET_AGENT_ENROLLMENT_H_
#define FLEET_AGENT_ENROLLMENT_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/tls.h"

namespace fleet::agent {

struct AgentIdentity {
  std::string agent_id;  // the certificate's CN
  TlsFiles files;        // key, certificate and CA in the state dir
  absl::Time not_before;
  absl::Time not_after;
};

// The identity stored in `state_dir`, nullopt if there is none yet.
// FAILED_PRECONDITION: the files are incomplete or do not belong together
// (key does not match the certificate, certificate not issued by the CA,
// not an agent certificate); the message names the file to remove to
// enroll again. An expired certificate is returned as is: the controller
// refuses it with a clear error, and the agent keeps running its programs.
absl::StatusOr<std::optional<AgentIdentity>> LoadIdentity(
    const std::string& state_dir);

struct EnrollOptions {
  std::string state_dir;
  std::string controller;  // gRPC target
  std::string ca_file;     // the fleet CA certificate, shipped with the agent
  std::string token;       // one-time enrollment token
  std::string hostname;
  std::string platform;
  absl::Duration timeout = absl::Seconds(30);
};

// Generates a key pair, sends a CSR with the token, checks the returned
// certificate (issued by the CA, for this key, an agent certificate) and
// stores the identity. ALREADY_EXISTS if an identity is stored; the
// controller's status otherwise (UNAUTHENTICATED: bad or used-up token).
absl::StatusOr<AgentIdentity> Enroll(const EnrollOptions& options);

// Generates a new key pair, calls EnrollmentService.Renew at `controller`
// over mutual TLS with `current`'s certificate, checks the answer (issued by
// the CA in the identity dir, for the new key, an agent certificate for the
// same agent id) and installs it as described above. The old pair stays in
// place on any failure. The controller's status on refusal
// (PERMISSION_DENIED: revoked; UNAVAILABLE: unreachable, or the handshake
// refused an expired certificate); FAILED_PRECONDITION if the answer does
// not check out.
absl::StatusOr<AgentIdentity> RenewIdentity(
    const std::string& controller, const AgentIdentity& current,
    absl::Duration timeout = absl::Seconds(30));

}  // namespace fleet::agent

#endif  // FLEET_AGENT_ENROLLMENT_H_
