#include "common/tls.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/status_macros.h"

namespace fleet {
namespace {

absl::StatusOr<std::string> ReadPem(const std::string& path,
                                    absl::string_view what) {
  if (path.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("no ", what, " file given"));
  }
  absl::StatusOr<std::string> pem = ReadFile(path);
  if (!pem.ok()) {
    return absl::Status(
        pem.status().code(),
        absl::StrCat(what, " ", path, ": ", pem.status().message()));
  }
  return pem;
}

struct KeyCertPair {
  std::string key_pem;
  std::string cert_pem;
};

// Reads and cross-checks a certificate and its key so a mismatch is a clear
// error at startup instead of a handshake failure on the first call.
absl::StatusOr<KeyCertPair> ReadKeyCertPair(const TlsFiles& files) {
  KeyCertPair pair;
  ASSIGN_OR_RETURN(pair.cert_pem, ReadPem(files.cert_file, "certificate"));
  ASSIGN_OR_RETURN(pair.key_pem, ReadPem(files.key_file, "private key"));
  absl::StatusOr<pki::CertificateInfo> info =
      pki::ParseCertificate(pair.cert_pem);
  if (!info.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "certificate ", files.cert_file, ": ", info.status().message()));
  }
  absl::StatusOr<pki::PrivateKey> key = pki::PrivateKey::FromPem(pair.key_pem);
  if (!key.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "private key ", files.key_file, ": ", key.status().message()));
  }
  absl::Status match = pki::CheckKeyMatchesCertificate(*key, pair.cert_pem);
  if (!match.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("private key ", files.key_file, " does not belong to ",
                     files.cert_file));
  }
  return pair;
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsFiles& files) {
  ASSIGN_OR_RETURN(std::string ca_pem,
                   ReadPem(files.ca_file, "CA certificate"));
  ASSIGN_OR_RETURN(KeyCertPair pair, ReadKeyCertPair(files));
  grpc::SslServerCredentialsOptions options(
      GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
  options.pem_root_certs = std::move(ca_pem);
  options.pem_key_cert_pairs.push_back(
      {std::move(pair.key_pem), std::move(pair.cert_pem)});
  return grpc::SslServerCredentials(options);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>>
MakeChannelCredentials(const TlsFiles& files) {
  grpc::SslCredentialsOptions options;
  ASSIGN_OR_RETURN(options.pem_root_certs,
                   ReadPem(files.ca_file, "CA certificate"));
  if (!files.cert_file.empty() || !files.key_file.empty()) {
    ASSIGN_OR_RETURN(KeyCertPair pair, ReadKeyCertPair(files));
    options.pem_private_key = std::move(pair.key_pem);
    options.pem_cert_chain = std::move(pair.cert_pem);
  }
  return grpc::SslCredentials(options);
}

absl::StatusOr<pki::CertificateInfo> PeerCertificateOf(
    const grpc::AuthContext& auth) {
  // gRPC fills x509_pem_cert only for a certificate the handshake verified
  // against the CA (REQUEST_CLIENT_CERTIFICATE_AND_VERIFY).
  std::vector<grpc::string_ref> pems = auth.FindPropertyValues("x509_pem_cert");
  if (!auth.IsPeerAuthenticated() || pems.empty()) {
    return absl::UnauthenticatedError(
        "no client certificate: connect with a certificate issued by the "
        "fleet CA");
  }
  absl::StatusOr<pki::CertificateInfo> info = pki::ParseCertificate(
      absl::string_view(pems.front().data(), pems.front().size()));
  if (!info.ok()) {
    return absl::UnauthenticatedError(absl::StrCat(
        "unreadable client certificate: ", info.status().message()));
  }
  return info;
}

absl::StatusOr<PeerIdentity> PeerIdentityOf(const grpc::AuthContext& auth) {
  ASSIGN_OR_RETURN(pki::CertificateInfo info, PeerCertificateOf(auth));
  PeerIdentity peer;
  peer.name = info.common_name;
  peer.certificate_sha256 = info.sha256_fingerprint_hex;
  if (info.role_name == pki::RoleName(pki::CertificateRole::kAgent)) {
    peer.role = pki::CertificateRole::kAgent;
  } else if (info.role_name == pki::RoleName(pki::CertificateRole::kAdmin)) {
    peer.role = pki::CertificateRole::kAdmin;
  } else if (info.role_name == pki::RoleName(pki::CertificateRole::kServer)) {
    peer.role = pki::CertificateRole::kServer;
  } else {
    return absl::PermissionDeniedError(absl::StrCat(
        "client certificate \"", info.common_name,
        "\" carries no fleet role (subject OU \"", info.role_name, "\")"));
  }
  if (peer.name.empty()) {
    return absl::PermissionDeniedError("client certificate has no common name");
  }
  return peer;
}

}  // namespace fleet
