// Transport security for fleet's gRPC endpoints: credentials from PEM files
// issued by fleet's CA (common/pki.h), and the identity of an authenticated
// peer.
//
// The controller asks every client for a certificate and verifies it against
// the CA when one is presented, but does not require one at the handshake:
// a new agent enrolls over TLS with a one-time token before it has a
// certificate. Each RPC then decides what it needs with PeerIdentityOf
// (AgentService.Connect: an agent; AdminService: an admin).
//
//   ASSIGN_OR_RETURN(auto creds, MakeServerCredentials(files));
//   builder.AddListeningPort(address, creds, &port);
//   ...
//   absl::StatusOr<PeerIdentity> peer = PeerIdentityOf(*ctx->auth_context());
#ifndef FLEET_COMMON_TLS_H_
#define FLEET_COMMON_TLS_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/pki.h"

namespace fleet {

// Paths of PEM files. ca_file is the fleet CA's certificate: the roots a
// server checks clients against and a client checks the server against.
struct TlsFiles {
  std::string ca_file;
  std::string cert_file;  // this endpoint's certificate
  std::string key_file;   // its private key
};

// Server credentials presenting cert_file/key_file and verifying client
// certificates against ca_file when a client presents one.
// NOT_FOUND / INVALID_ARGUMENT naming the file that is missing or is not PEM
// of the right kind, or a key that does not match the certificate.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsFiles& files);

// Channel credentials verifying the server against ca_file, presenting
// cert_file/key_file when both are set (an enrolled agent, an operator);
// without them only RPCs that need no identity succeed (enrollment).
// Errors as for MakeServerCredentials.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>>
MakeChannelCredentials(const TlsFiles& files);

// Who is on the other end of a call, from its verified client certificate.
struct PeerIdentity {
  pki::CertificateRole role;
  std::string name;  // the certificate's CN: agent id, operator, host
  std::string certificate_sha256;  // hex fingerprint, for audit and revocation
};

// UNAUTHENTICATED: the call is not over TLS or presented no certificate.
// PERMISSION_DENIED: the certificate carries no fleet role (OU).
absl::StatusOr<PeerIdentity> PeerIdentityOf(const grpc::AuthContext& auth);

// The verified client certificate of a call, parsed (its enrolled labels
// included). UNAUTHENTICATED: not over TLS, no certificate, or unreadable.
absl::StatusOr<pki::CertificateInfo> PeerCertificateOf(
    const grpc::AuthContext& auth);

}  // namespace fleet

#endif  // FLEET_COMMON_TLS_H_
