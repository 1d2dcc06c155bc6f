// `fleetctl pki ...`: the private certificate authority that secures the
// controller's gRPC endpoints (TLS for the server, mTLS for agents and
// operators). See common/pki.h for what the certificates contain.
#ifndef FLEET_CLI_PKI_COMMANDS_H_
#define FLEET_CLI_PKI_COMMANDS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "cli/command_context.h"

namespace fleet::cli {

// File names in a PKI directory.
inline constexpr char kCaCertFile[] = "ca.crt";
inline constexpr char kCaKeyFile[] = "ca.key";
inline constexpr char kControllerCertFile[] = "controller.crt";
inline constexpr char kControllerKeyFile[] = "controller.key";
inline constexpr char kAdminCertFile[] = "admin.crt";
inline constexpr char kAdminKeyFile[] = "admin.key";

struct PkiInitOptions {
  std::string out_dir;  // --out
  // --host: the controller's names and addresses, as agents and operators
  // dial them (each an IP address or a DNS name).
  std::vector<std::string> hosts = {"localhost", "127.0.0.1"};
  std::string admin_name = "admin";  // --admin
  absl::Duration ca_validity = absl::Hours(24 * 3650);
  absl::Duration cert_validity = absl::Hours(24 * 365);
};

// `pki init --out DIR`: creates DIR (0700) with a new CA (ca.crt, ca.key),
// the controller's server certificate for --host (controller.crt/.key) and
// an operator's admin client certificate (admin.crt/.key). Private keys are
// 0600. Prints the files and the flags that use them (table) or their paths
// (json).
// Errors:
//   UsageError      --out empty, no --host, a bad host name or address.
//   ALREADY_EXISTS  any of the files exists; nothing is written.
//   errno status    a file cannot be written; files written before are
//                   removed.
absl::Status PkiInit(const PkiInitOptions& options, CommandContext& ctx);

struct PkiIssueOptions {
  std::string ca_dir;              // --ca: directory holding ca.crt and ca.key
  std::string role;                // --role: admin, server or agent
  std::string name;                // --name: the certificate's identity (CN)
  std::vector<std::string> hosts;  // --host, for a server certificate
  std::string out_dir;             // --out
  absl::Duration validity = absl::Hours(24 * 365);
};

// `pki issue --ca DIR --role ROLE --name NAME --out DIR`: a new key and a
// certificate signed by the CA, written as OUT/NAME.crt and OUT/NAME.key
// (0600). For a second operator, a replacement controller certificate, or
// an agent enrolled by hand.
// Errors: UsageError for a bad role, name or host; NOT_FOUND /
// INVALID_ARGUMENT for a missing or broken CA; ALREADY_EXISTS as above.
absl::Status PkiIssue(const PkiIssueOptions& options, CommandContext& ctx);

}  // namespace fleet::cli

#endif  // FLEET_CLI_PKI_COMMANDS_H_
