// X.509 for fleet's transport security, on OpenSSL 3: a private certificate
// authority, the keys, CSRs and certificates it issues, and the checks a
// server makes on a peer's certificate.
//
// Keys are ECDSA P-256: every TLS stack (gRPC's included) accepts them for
// server and client authentication, and they are small and fast to sign.
// Each certificate names one identity and one role:
//   - subject CN: the identity (a host name for the controller, the agent id
//     for an agent, the operator's name for an admin);
//   - subject OU: the role, "fleet-server", "fleet-admin" or "fleet-agent";
//   - extendedKeyUsage: serverAuth for the controller, clientAuth otherwise;
//   - enrolled labels (agents): one subjectAltName URI per label,
//     "fleet-label:KEY=VALUE" with KEY and VALUE percent-encoded. The
//     controller enforces them over the labels an agent reports, and a
//     renewal copies them into the new certificate (docs/security.md).
// The CA is the only source of roles: a CSR's subject is ignored and the
// issuer writes CN and OU itself, so a client cannot ask for another
// identity or a stronger role.
//
//   ASSIGN_OR_RETURN(CertificateAuthority ca,
//                    CertificateAuthority::Create("fleet CA", kTenYears, now));
//   ASSIGN_OR_RETURN(PrivateKey key, PrivateKey::Generate());
//   ASSIGN_OR_RETURN(std::string csr, CreateCsr(key));
//   ASSIGN_OR_RETURN(std::string cert,
//                    ca.Issue(csr, {.common_name = agent_id,
//                                   .role = CertificateRole::kAgent}, now));
#ifndef FLEET_COMMON_PKI_H_
#define FLEET_COMMON_PKI_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace fleet::pki {

enum class CertificateRole { kServer, kAdmin, kAgent };

// "fleet-server", "fleet-admin", "fleet-agent": the subject OU of the role.
absl::string_view RoleName(CertificateRole role);

// An ECDSA P-256 private key.
class PrivateKey {
 public:
  static absl::StatusOr<PrivateKey> Generate();
  // INVALID_ARGUMENT unless `pem` is a PKCS#8 "PRIVATE KEY" (or SEC1 "EC
  // PRIVATE KEY") holding a P-256 key.
  static absl::StatusOr<PrivateKey> FromPem(absl::string_view pem);
  // NOT_FOUND if the file does not exist.
  static absl::StatusOr<PrivateKey> LoadPemFile(const std::string& path);

  // PKCS#8 PEM.
  const std::string& pem() const { return pem_; }
  // Writes the PEM new with mode 0600; ALREADY_EXISTS if the file exists.
  absl::Status WritePemFile(const std::string& path) const;

 private:
  explicit PrivateKey(std::string pem) : pem_(std::move(pem)) {}
  std::string pem_;
};

// A PEM certificate signing request for `key` (proof of possession: it is
// signed by `key`). The subject CN is informational only; see above.
absl::StatusOr<std::string> CreateCsr(const PrivateKey& key,
                                      absl::string_view common_name = "");

struct IssueOptions {
  std::string common_name;  // required, at most 64 bytes
  CertificateRole role = CertificateRole::kAgent;
  // subjectAltName entries; a server certificate needs at least one.
  std::vector<std::string> dns_names;
  std::vector<std::string> ip_addresses;  // textual IPv4 or IPv6
  // Labels the CA vouches for (an agent's enrolled labels); each becomes a
  // "fleet-label:" URI subjectAltName. Keys must be non-empty.
  std::map<std::string, std::string> labels;
  absl::Duration validity = absl::Hours(24 * 365);
};

class CertificateAuthority {
 public:
  // A new self-signed CA (basicConstraints CA:TRUE, pathlen 0) valid from an
  // hour before `now` (tolerating clock skew) for `validity`.
  static absl::StatusOr<CertificateAuthority> Create(
      absl::string_view common_name, absl::Duration validity, absl::Time now);
  // INVALID_ARGUMENT if the certificate is not a CA or `key_pem` is not its
  // key.
  static absl::StatusOr<CertificateAuthority> Load(absl::string_view cert_pem,
                                                   absl::string_view key_pem);

  const std::string& certificate_pem() const { return cert_pem_; }
  const PrivateKey& key() const { return key_; }

  // Issues a certificate for the key that signed `csr_pem`, with the
  // identity and role of `options` (the CSR's subject is ignored). Valid
  // from a little before `now` (an hour, or a quarter of the validity if
  // that is shorter, so that a short-lived certificate's lifetime is mostly
  // ahead of it) until now + validity, never past the CA's own expiry.
  // INVALID_ARGUMENT: not a CSR, a CSR whose signature does not verify, an
  // empty or over-long common name, a server certificate without SANs, a
  // malformed IP address, a validity <= 0.
  absl::StatusOr<std::string> Issue(absl::string_view csr_pem,
                                    const IssueOptions& options,
                                    absl::Time now) const;

 private:
  CertificateAuthority(std::string cert_pem, PrivateKey key)
      : cert_pem_(std::move(cert_pem)), key_(std::move(key)) {}
  std::string cert_pem_;
  PrivateKey key_;
};

// What fleet reads from a certificate.
struct CertificateInfo {
  std::string common_name;
  std::string role_name;  // subject OU, "" if none
  std::string serial_hex;
  std::string sha256_fingerprint_hex;
  absl::Time not_before;
  absl::Time not_after;
  bool is_ca = false;
  std::vector<std::string> dns_names;
  std::vector<std::string> ip_addresses;
  // From "fleet-label:" URI subjectAltNames (see IssueOptions::labels).
  std::map<std::string, std::string> labels;
};

// INVALID_ARGUMENT unless `cert_pem` is a certificate for `key`'s public key.
absl::Status CheckKeyMatchesCertificate(const PrivateKey& key,
                                        absl::string_view cert_pem);

// INVALID_ARGUMENT unless `pem` holds an X.509 certificate.
absl::StatusOr<CertificateInfo> ParseCertificate(absl::string_view pem);

// OK iff `cert_pem` was issued by the CA `ca_pem` and is valid at `now`.
// UNAUTHENTICATED otherwise, with OpenSSL's reason ("certificate has
// expired", "unable to get local issuer certificate", ...).
absl::Status VerifyCertificate(absl::string_view cert_pem,
                               absl::string_view ca_pem, absl::Time now);

}  // namespace fleet::pki

#endif  // FLEET_COMMON_PKI_H_
