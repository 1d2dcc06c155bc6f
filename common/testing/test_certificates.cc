#include "common/testing/test_certificates.h"

#include "common/files.h"
#include "gtest/gtest.h"

namespace fleet::testing {

TlsFiles IssueTlsFiles(const pki::CertificateAuthority& ca,
                       const std::string& ca_file, const std::string& dir,
                       const std::string& name,
                       const pki::IssueOptions& options, absl::Time now) {
  TlsFiles files{ca_file, dir + "/" + name + ".crt", dir + "/" + name + ".key"};
  absl::StatusOr<pki::PrivateKey> key = pki::PrivateKey::Generate();
  if (!key.ok()) {
    ADD_FAILURE() << key.status();
    return files;
  }
  absl::StatusOr<std::string> csr = pki::CreateCsr(*key);
  absl::StatusOr<std::string> cert =
      csr.ok() ? ca.Issue(*csr, options, now) : csr.status();
  if (!cert.ok()) {
    ADD_FAILURE() << "issuing " << name << ": " << cert.status();
    return files;
  }
  EXPECT_TRUE(WriteFileAtomically(files.cert_file, *cert).ok());
  EXPECT_TRUE(WriteFileAtomically(files.key_file, key->pem(), 0600).ok());
  return files;
}

}  // namespace fleet::testing
