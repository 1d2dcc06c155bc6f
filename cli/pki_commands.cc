#include "cli/pki_commands.h"

#include <arpa/inet.h>

#include <string>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "common/pki.h"
#include "nlohmann/json.hpp"

namespace fleet::cli {
namespace {

bool IsIpAddress(const std::string& host) {
  unsigned char buf[16];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 ||
         inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

// Splits --host values into the server certificate's DNS and IP SANs.
absl::Status SplitHosts(const std::vector<std::string>& hosts,
                        pki::IssueOptions& options) {
  if (hosts.empty()) {
    return UsageError(
        "--host is required for a controller certificate: give each name or "
        "address agents and operators dial, e.g. --host fleet.example.com "
        "--host 10.0.0.5");
  }
  for (const std::string& host : hosts) {
    if (IsIpAddress(host)) {
      options.ip_addresses.push_back(host);
    } else {
      options.dns_names.push_back(host);
    }
  }
  return absl::OkStatus();
}

struct PemFile {
  std::string path;
  std::string data;
  int mode;
};

// Writes every file or none: existing files are refused before anything is
// written, and a failure part-way removes what was written.
absl::Status WriteAll(const std::string& dir,
                      const std::vector<PemFile>& files) {
  for (const PemFile& file : files) {
    if (PathExists(file.path)) {
      return absl::AlreadyExistsError(absl::StrCat(
          file.path,
          " already exists; choose another --out or remove it (fleetctl "
          "never overwrites a key or certificate)"));
    }
  }
  if (absl::Status s = MakeDirs(dir, 0700); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("cannot create directory ", dir,
                                               ": ", s.message()));
  }
  std::vector<std::string> written;
  absl::Cleanup undo = [&] {
    for (const std::string& path : written) (void)RemoveFile(path);
  };
  for (const PemFile& file : files) {
    if (absl::Status s = WriteNewFile(file.path, file.data, file.mode);
        !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("cannot write ", file.path,
                                                 ": ", s.message()));
    }
    written.push_back(file.path);
  }
  std::move(undo).Cancel();
  return absl::OkStatus();
}

struct IssuedPair {
  std::string cert_pem;
  std::string key_pem;
};

absl::StatusOr<IssuedPair> IssuePair(const pki::CertificateAuthority& ca,
                                     const pki::IssueOptions& options,
                                     absl::Time now) {
  absl::StatusOr<pki::PrivateKey> key = pki::PrivateKey::Generate();
  if (!key.ok()) return key.status();
  absl::StatusOr<std::string> csr = pki::CreateCsr(*key);
  if (!csr.ok()) return csr.status();
  absl::StatusOr<std::string> cert = ca.Issue(*csr, options, now);
  if (!cert.ok()) {
    // Everything Issue refuses comes from the operator's flags.
    return UsageError(std::string(cert.status().message()));
  }
  return IssuedPair{*std::move(cert), key->pem()};
}

absl::StatusOr<pki::CertificateRole> ParseRole(const std::string& role) {
  if (role == "admin") return pki::CertificateRole::kAdmin;
  if (role == "server") return pki::CertificateRole::kServer;
  if (role == "agent") return pki::CertificateRole::kAgent;
  return UsageError(
      absl::StrCat("--role \"", role, "\" is not admin, server or agent"));
}

}  // namespace

absl::Status PkiInit(const PkiInitOptions& options, CommandContext& ctx) {
  if (options.out_dir.empty()) {
    return UsageError(
        "--out must name a directory for the CA and certificates");
  }
  const absl::Time now = ctx.Now();
  pki::IssueOptions server{.common_name = "fleet-controller",
                           .role = pki::CertificateRole::kServer,
                           .validity = options.cert_validity};
  if (absl::Status s = SplitHosts(options.hosts, server); !s.ok()) return s;
  pki::IssueOptions admin{.common_name = options.admin_name,
                          .role = pki::CertificateRole::kAdmin,
                          .validity = options.cert_validity};

  absl::StatusOr<pki::CertificateAuthority> ca =
      pki::CertificateAuthority::Create("fleet CA", options.ca_validity, now);
  if (!ca.ok()) return ca.status();
  absl::StatusOr<IssuedPair> controller = IssuePair(*ca, server, now);
  if (!controller.ok()) return controller.status();
  absl::StatusOr<IssuedPair> operator_pair = IssuePair(*ca, admin, now);
  if (!operator_pair.ok()) return operator_pair.status();

  const std::string& dir = options.out_dir;
  const std::vector<PemFile> files = {
      {JoinPath(dir, kCaCertFile), ca->certificate_pem(), 0644},
      {JoinPath(dir, kCaKeyFile), ca->key().pem(), 0600},
      {JoinPath(dir, kControllerCertFile), controller->cert_pem, 0644},
      {JoinPath(dir, kControllerKeyFile), controller->key_pem, 0600},
      {JoinPath(dir, kAdminCertFile), operator_pair->cert_pem, 0644},
      {JoinPath(dir, kAdminKeyFile), operator_pair->key_pem, 0600},
  };
  if (absl::Status s = WriteAll(dir, files); !s.ok()) return s;

  if (ctx.structured()) {
    nlohmann::json result = nlohmann::json::object();
    for (const PemFile& file : files) {
      result[file.path.substr(dir.size() + 1)] = file.path;
    }
    ctx.PrintDocument(result);
    return absl::OkStatus();
  }
  ctx.out() << "fleet CA and certificates in " << dir << "\n"
            << "  " << kCaCertFile << "          the CA: every controller, "
            << "agent and operator trusts it\n"
            << "  " << kCaKeyFile << "          signs certificates; keep it "
            << "offline once agents are enrolled\n"
            << "  " << kControllerCertFile << "  server certificate for "
            << absl::StrJoin(options.hosts, ", ") << "\n"
            << "  " << kAdminCertFile << "       operator \""
            << options.admin_name << "\"\n";
  return absl::OkStatus();
}

absl::Status PkiIssue(const PkiIssueOptions& options, CommandContext& ctx) {
  if (options.ca_dir.empty() || options.out_dir.empty()) {
    return UsageError("--ca and --out must both name directories");
  }
  absl::StatusOr<pki::CertificateRole> role = ParseRole(options.role);
  if (!role.ok()) return role.status();
  pki::IssueOptions issue{
      .common_name = options.name, .role = *role, .validity = options.validity};
  if (*role == pki::CertificateRole::kServer) {
    if (absl::Status s = SplitHosts(options.hosts, issue); !s.ok()) return s;
  } else if (!options.hosts.empty()) {
    return UsageError("--host applies to --role server only");
  }
  // The name becomes a file name: keep it to the characters of an id.
  for (char c : options.name) {
    if (!absl::ascii_isalnum(c) && c != '-' && c != '_' && c != '.') {
      return UsageError(
          absl::StrCat("--name \"", options.name,
                       "\" may only hold letters, digits, '-', '_' and '.'"));
    }
  }
  if (options.name.empty() || options.name[0] == '.') {
    return UsageError("--name must be a non-empty identity, e.g. alice");
  }

  auto read = [](const std::string& path) -> absl::StatusOr<std::string> {
    absl::StatusOr<std::string> data = ReadFile(path);
    if (!data.ok()) {
      return absl::Status(
          data.status().code(),
          absl::StrCat("cannot read ", path, ": ", data.status().message(),
                       " (create a CA with fleetctl pki init)"));
    }
    return data;
  };
  absl::StatusOr<std::string> ca_cert =
      read(JoinPath(options.ca_dir, kCaCertFile));
  if (!ca_cert.ok()) return ca_cert.status();
  absl::StatusOr<std::string> ca_key =
      read(JoinPath(options.ca_dir, kCaKeyFile));
  if (!ca_key.ok()) return ca_key.status();
  absl::StatusOr<pki::CertificateAuthority> ca =
      pki::CertificateAuthority::Load(*ca_cert, *ca_key);
  if (!ca.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the CA in ", options.ca_dir, " is unusable: ", ca.status().message()));
  }
  absl::StatusOr<IssuedPair> pair = IssuePair(*ca, issue, ctx.Now());
  if (!pair.ok()) return pair.status();
  const std::string cert_path =
      JoinPath(options.out_dir, options.name + ".crt");
  const std::string key_path = JoinPath(options.out_dir, options.name + ".key");
  if (absl::Status s = WriteAll(
          options.out_dir,
          {{cert_path, pair->cert_pem, 0644}, {key_path, pair->key_pem, 0600}});
      !s.ok()) {
    return s;
  }
  if (ctx.structured()) {
    ctx.PrintDocument({{"certificate", cert_path}, {"key", key_path}});
  } else {
    ctx.out() << options.role << " certificate for \"" << options.name
              << "\"\n  " << cert_path << "\n  " << key_path << "\n";
  }
  return absl::OkStatus();
}

}  // namespace fleet::cli
