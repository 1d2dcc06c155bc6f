#include "agent/enrollment.h"

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/grpc_status.h"
#include "common/pki.h"
#include "common/status_macros.h"
#include "proto/fleet/v1/enrollment.grpc.pb.h"

namespace fleet::agent {
namespace {

constexpr char kIdentityDir[] = "identity";
constexpr char kKeyFile[] = "agent.key";
constexpr char kCertFile[] = "agent.crt";
constexpr char kCaFile[] = "ca.crt";
// A renewal's new pair, written before it replaces the current one.
constexpr char kNextSuffix[] = ".next";

TlsFiles FilesIn(const std::string& state_dir) {
  const std::string dir = JoinPath(state_dir, kIdentityDir);
  return TlsFiles{JoinPath(dir, kCaFile), JoinPath(dir, kCertFile),
                  JoinPath(dir, kKeyFile)};
}

// Checks that key, certificate and CA belong together and that the
// certificate is an agent's. FAILED_PRECONDITION naming `fix` otherwise.
absl::StatusOr<AgentIdentity> Check(const TlsFiles& files,
                                    const std::string& key_pem,
                                    const std::string& cert_pem,
                                    const std::string& ca_pem,
                                    absl::string_view fix) {
  auto broken = [&](absl::string_view why) {
    return absl::FailedPreconditionError(absl::StrCat(
        "agent identity in ", files.cert_file, ": ", why, "; ", fix));
  };
  absl::StatusOr<pki::CertificateInfo> info = pki::ParseCertificate(cert_pem);
  if (!info.ok()) return broken(info.status().message());
  absl::StatusOr<pki::PrivateKey> key = pki::PrivateKey::FromPem(key_pem);
  if (!key.ok()) return broken(key.status().message());
  if (!pki::CheckKeyMatchesCertificate(*key, cert_pem).ok()) {
    return broken("the key does not belong to the certificate");
  }
  if (info->role_name != pki::RoleName(pki::CertificateRole::kAgent)) {
    return broken(absl::StrCat("not an agent certificate (role \"",
                               info->role_name, "\")"));
  }
  // Verify at a time inside the validity window: expiry is reported by the
  // controller, not treated as a broken identity here.
  if (absl::Status issued =
          pki::VerifyCertificate(cert_pem, ca_pem, info->not_before);
      !issued.ok()) {
    return broken(issued.message());
  }
  return AgentIdentity{info->common_name, files, info->not_before,
                       info->not_after};
}

// Finishes or undoes a renewal a crash interrupted (see the header): the
// key is renamed into place first, so a pending certificate that matches
// the key in place is the renewal's and goes in; otherwise the pending
// files are dropped and the old pair stays.
absl::Status RecoverInterruptedRenewal(const TlsFiles& files) {
  const std::string next_key = files.key_file + kNextSuffix;
  const std::string next_cert = files.cert_file + kNextSuffix;
  if (PathExists(next_key)) {
    RETURN_IF_ERROR(RemoveFile(next_key));
    if (PathExists(next_cert)) RETURN_IF_ERROR(RemoveFile(next_cert));
    return absl::OkStatus();
  }
  if (!PathExists(next_cert)) return absl::OkStatus();
  absl::StatusOr<std::string> cert_pem = ReadFile(next_cert);
  absl::StatusOr<std::string> key_pem = ReadFile(files.key_file);
  if (cert_pem.ok() && key_pem.ok()) {
    absl::StatusOr<pki::PrivateKey> key = pki::PrivateKey::FromPem(*key_pem);
    if (key.ok() && pki::CheckKeyMatchesCertificate(*key, *cert_pem).ok()) {
      return DurableRename(next_cert, files.cert_file);
    }
  }
  return RemoveFile(next_cert);
}

}  // namespace

absl::StatusOr<std::optional<AgentIdentity>> LoadIdentity(
    const std::string& state_dir) {
  const TlsFiles files = FilesIn(state_dir);
  RETURN_IF_ERROR(RecoverInterruptedRenewal(files));
  if (!PathExists(files.cert_file)) return std::nullopt;
  const std::string fix = absl::StrCat(
      "remove ", JoinPath(state_dir, kIdentityDir),
      " and enroll again with a new token (fleetctl enroll-token create)");
  ASSIGN_OR_RETURN(std::string cert_pem, ReadFile(files.cert_file));
  absl::StatusOr<std::string> key_pem = ReadFile(files.key_file);
  absl::StatusOr<std::string> ca_pem = ReadFile(files.ca_file);
  if (!key_pem.ok() || !ca_pem.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("agent identity in ", JoinPath(state_dir, kIdentityDir),
                     " is incomplete (", !key_pem.ok() ? kKeyFile : kCaFile,
                     " missing); ", fix));
  }
  ASSIGN_OR_RETURN(AgentIdentity identity,
                   Check(files, *key_pem, cert_pem, *ca_pem, fix));
  return identity;
}

absl::StatusOr<AgentIdentity> Enroll(const EnrollOptions& options) {
  const TlsFiles files = FilesIn(options.state_dir);
  if (PathExists(files.cert_file)) {
    return absl::AlreadyExistsError(absl::StrCat(
        "already enrolled: ", files.cert_file,
        " exists (remove the identity directory to enroll again)"));
  }
  if (options.token.empty()) {
    return absl::FailedPreconditionError(
        "not enrolled: start the agent once with an enrollment token "
        "(fleetctl enroll-token create)");
  }
  ASSIGN_OR_RETURN(std::string ca_pem, ReadFile(options.ca_file));
  ASSIGN_OR_RETURN(pki::PrivateKey key, pki::PrivateKey::Generate());
  ASSIGN_OR_RETURN(std::string csr, pki::CreateCsr(key));

  // The server is verified against the CA; no client certificate yet.
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ChannelCredentials> credentials,
                   MakeChannelCredentials(TlsFiles{options.ca_file, "", ""}));
  auto stub = v1::EnrollmentService::NewStub(
      grpc::CreateChannel(options.controller, credentials));
  v1::EnrollRequest request;
  request.set_token(options.token);
  request.set_csr_pem(csr);
  request.set_hostname(options.hostname);
  request.set_platform(options.platform);
  v1::EnrollResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       absl::ToChronoSeconds(options.timeout));
  grpc::Status status = stub->Enroll(&context, request, &response);
  if (!status.ok()) {
    return absl::Status(FromGrpcStatus(status).code(),
                        absl::StrCat("enrollment with ", options.controller,
                                     " failed: ", status.error_message()));
  }

  // Trust what came back only as far as it checks out against the CA the
  // agent was installed with.
  const std::string fix =
      "the controller answered with a certificate this "
      "agent cannot use; check its --tls-ca";
  ASSIGN_OR_RETURN(
      AgentIdentity identity,
      Check(files, key.pem(), response.certificate_pem(), ca_pem, fix));
  RETURN_IF_ERROR(MakeDirs(JoinPath(options.state_dir, kIdentityDir), 0700));
  RETURN_IF_ERROR(WriteFileAtomically(files.key_file, key.pem(), 0600));
  RETURN_IF_ERROR(WriteFileAtomically(files.ca_file, ca_pem, 0644));
  RETURN_IF_ERROR(
      WriteFileAtomically(files.cert_file, response.certificate_pem(), 0644));
  return identity;
}

absl::StatusOr<AgentIdentity> RenewIdentity(const std::string& controller,
                                            const AgentIdentity& current,
                                            absl::Duration timeout) {
  const TlsFiles& files = current.files;
  // A renewal that failed between its two renames is finished first, so
  // the pair this call authenticates with belongs together.
  RETURN_IF_ERROR(RecoverInterruptedRenewal(files));
  ASSIGN_OR_RETURN(std::string ca_pem, ReadFile(files.ca_file));
  ASSIGN_OR_RETURN(pki::PrivateKey key, pki::PrivateKey::Generate());
  ASSIGN_OR_RETURN(std::string csr, pki::CreateCsr(key));

  // The current pair authenticates the call; the controller takes the
  // agent id from it.
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ChannelCredentials> credentials,
                   MakeChannelCredentials(files));
  auto stub = v1::EnrollmentService::NewStub(
      grpc::CreateChannel(controller, credentials));
  v1::RenewRequest request;
  request.set_csr_pem(csr);
  v1::RenewResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       absl::ToChronoSeconds(timeout));
  grpc::Status status = stub->Renew(&context, request, &response);
  if (!status.ok()) {
    return absl::Status(FromGrpcStatus(status).code(),
                        absl::StrCat("certificate renewal with ", controller,
                                     " failed: ", status.error_message()));
  }

  const std::string fix =
      "the controller answered the renewal with a certificate this agent "
      "cannot use; the current one stays";
  const TlsFiles next{files.ca_file, files.cert_file + kNextSuffix,
                      files.key_file + kNextSuffix};
  ASSIGN_OR_RETURN(
      AgentIdentity renewed,
      Check(next, key.pem(), response.certificate_pem(), ca_pem, fix));
  if (renewed.agent_id != current.agent_id) {
    return absl::FailedPreconditionError(
        absl::StrCat("renewal returned a certificate for ", renewed.agent_id,
                     ", not for this agent (", current.agent_id, "); ", fix));
  }
  RETURN_IF_ERROR(WriteFileAtomically(next.key_file, key.pem(), 0600));
  RETURN_IF_ERROR(
      WriteFileAtomically(next.cert_file, response.certificate_pem(), 0644));
  RETURN_IF_ERROR(DurableRename(next.key_file, files.key_file));
  RETURN_IF_ERROR(DurableRename(next.cert_file, files.cert_file));
  renewed.files = files;
  return renewed;
}

}  // namespace fleet::agent
