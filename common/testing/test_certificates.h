// Real certificates on disk for tests of TLS: a key and a certificate
// issued by a test CA, written where a server or client loads them from.
#ifndef FLEET_COMMON_TESTING_TEST_CERTIFICATES_H_
#define FLEET_COMMON_TESTING_TEST_CERTIFICATES_H_

#include <string>

#include "absl/time/time.h"
#include "common/pki.h"
#include "common/tls.h"

namespace fleet::testing {

// Generates a key, has `ca` issue a certificate for `options` at `now`, and
// writes DIR/NAME.crt and DIR/NAME.key (0600). Returns them with `ca_file`
// as the trust root. A failure is reported to GoogleTest (ADD_FAILURE).
TlsFiles IssueTlsFiles(const pki::CertificateAuthority& ca,
                       const std::string& ca_file, const std::string& dir,
                       const std::string& name,
                       const pki::IssueOptions& options, absl::Time now);

}  // namespace fleet::testing

#endif  // FLEET_COMMON_TESTING_TEST_CERTIFICATES_H_
