#include "cli/info_commands.h"

#include <netdb.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <map>
#include <sstream>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "cli/errors.h"
#include "cli/human.h"
#include "common/files.h"
#include "common/manifest.h"
#include "common/openssl_util.h"
#include "common/pki.h"

namespace fleet::cli {
namespace {

// GetServerInfo with the round trip time and the client's clock at the
// midpoint of the call, to compare with server_time_unix_ms.
struct ServerProbe {
  grpc::Status status;
  v1::ServerInfo info;
  absl::Duration round_trip;
  absl::Time midpoint;
};

ServerProbe Probe(CommandContext& ctx) {
  ServerProbe probe;
  grpc::ClientContext rpc;
  ctx.SetDeadline(rpc);
  const absl::Time start = absl::Now();
  probe.status =
      ctx.admin().GetServerInfo(&rpc, v1::GetServerInfoRequest(), &probe.info);
  const absl::Time end = absl::Now();
  probe.round_trip = end - start;
  probe.midpoint = start + probe.round_trip / 2;
  return probe;
}

// Certificates closer than this to their end get a warning.
constexpr absl::Duration kExpiryWarning = absl::Hours(24 * 30);

using Report =
    std::function<void(absl::string_view verdict, absl::string_view check,
                       absl::string_view detail)>;

// "expires in 41 days (2026-12-31)"; a warning verdict when close.
std::pair<absl::string_view, std::string> Expiry(const pki::CertificateInfo& c,
                                                 absl::Time now) {
  const absl::Duration left = c.not_after - now;
  std::string text = absl::StrCat(
      "expires in ", HumanDuration(left), " (",
      absl::FormatTime("%Y-%m-%d", c.not_after, absl::UTCTimeZone()), ")");
  return {left < kExpiryWarning ? "warn" : "ok", text};
}

// The controller's HOST:PORT split; false for URI targets (unix:, dns:///).
bool SplitHostPort(absl::string_view target, std::string& host,
                   std::string& port) {
  if (target.find(":/") != absl::string_view::npos ||
      absl::StartsWith(target, "unix:")) {
    return false;
  }
  size_t colon = target.rfind(':');
  if (colon == absl::string_view::npos) return false;
  host = std::string(target.substr(0, colon));
  port = std::string(target.substr(colon + 1));
  if (absl::StartsWith(host, "[") && absl::EndsWith(host, "]")) {
    host = host.substr(1, host.size() - 2);
  }
  return true;
}

// The certificate the server at host:port presents, as PEM, from a plain
// OpenSSL handshake (no verification here: the caller checks it against
// the CA and names what is wrong more precisely than a handshake error).
absl::StatusOr<std::string> FetchServerCertificate(const std::string& host,
                                                   const std::string& port,
                                                   absl::Duration timeout) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* addresses = nullptr;
  if (int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &addresses);
      rc != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot resolve ", host, ": ", gai_strerror(rc)));
  }
  absl::Cleanup free_addresses = [addresses] { freeaddrinfo(addresses); };
  int fd = -1;
  for (addrinfo* a = addresses; a != nullptr && fd < 0; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd < 0) continue;
    timeval tv = absl::ToTimeval(timeout);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
      close(fd);
      fd = -1;
    }
  }
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot connect to ", host, ":", port));
  }
  absl::Cleanup close_fd = [fd] { close(fd); };
  OpenSslPtr<SSL_CTX, SSL_CTX_free> ssl_ctx(SSL_CTX_new(TLS_client_method()));
  OpenSslPtr<SSL, SSL_free> ssl(ssl_ctx ? SSL_new(ssl_ctx.get()) : nullptr);
  if (ssl == nullptr) return absl::InternalError(OpenSslError());
  static constexpr unsigned char kAlpnH2[] = {2, 'h', '2'};  // gRPC speaks h2
  SSL_set_alpn_protos(ssl.get(), kAlpnH2, sizeof(kAlpnH2));
  SSL_set_tlsext_host_name(ssl.get(), host.c_str());
  SSL_set_fd(ssl.get(), fd);
  if (SSL_connect(ssl.get()) != 1) {
    return absl::UnavailableError(absl::StrCat(
        "TLS handshake with ", host, ":", port, " failed: ", OpenSslError(),
        " (is the controller started with --insecure?)"));
  }
  OpenSslPtr<X509, X509_free> cert(SSL_get1_peer_certificate(ssl.get()));
  if (cert == nullptr) {
    return absl::UnavailableError("the controller presented no certificate");
  }
  BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509(bio.get(), cert.get());
  SSL_shutdown(ssl.get());
  return BioContents(bio.get());
}

// The TLS part of doctor: the files fleetctl would use and the certificate
// the controller presents, each with the fix. Prints nothing for
// --insecure but a warning.
void CheckTls(CommandContext& ctx, const Report& report) {
  const GlobalOptions& options = ctx.options();
  if (options.insecure) {
    report("warn", "tls",
           "--insecure: plaintext and no authentication; a production "
           "controller refuses it");
    return;
  }
  const TlsFiles& tls = options.tls;
  if (tls.ca_file.empty()) {
    report("FAIL", "tls",
           "no TLS files: give --pki DIR (from fleetctl pki init) or "
           "--tls-ca, --tls-cert and --tls-key");
    return;
  }
  const absl::Time now = ctx.Now();
  absl::StatusOr<std::string> ca_pem = ReadFile(tls.ca_file);
  absl::StatusOr<pki::CertificateInfo> ca =
      ca_pem.ok() ? pki::ParseCertificate(*ca_pem) : ca_pem.status();
  if (!ca.ok()) {
    report("FAIL", "ca",
           absl::StrCat(tls.ca_file, ": ", ca.status().message(),
                        "; give ca.crt from fleetctl pki init"));
    return;
  }
  if (!ca->is_ca) {
    report("FAIL", "ca",
           absl::StrCat(tls.ca_file,
                        " is not a CA certificate; give ca.crt from "
                        "fleetctl pki init, not a host's certificate"));
    return;
  }
  {
    auto [verdict, expiry] = Expiry(*ca, now);
    report(ca->not_after <= now ? "FAIL" : verdict, "ca",
           absl::StrCat(tls.ca_file, " (", ca->common_name, ") ", expiry,
                        ca->not_after <= now
                            ? "; create a new CA and reissue every "
                              "certificate (docs/security.md)"
                            : ""));
  }

  if (!tls.cert_file.empty() && !tls.key_file.empty()) {
    absl::StatusOr<std::string> cert_pem = ReadFile(tls.cert_file);
    absl::StatusOr<pki::CertificateInfo> cert =
        cert_pem.ok() ? pki::ParseCertificate(*cert_pem) : cert_pem.status();
    absl::StatusOr<pki::PrivateKey> key =
        pki::PrivateKey::LoadPemFile(tls.key_file);
    const std::string reissue = absl::StrCat(
        "; issue a new one: fleetctl pki issue --ca PKI_DIR --role admin "
        "--name ",
        cert.ok() ? cert->common_name : "NAME", " --out DIR");
    if (!cert.ok()) {
      report(
          "FAIL", "client cert",
          absl::StrCat(tls.cert_file, ": ", cert.status().message(), reissue));
    } else if (!key.ok()) {
      report("FAIL", "client cert",
             absl::StrCat(tls.key_file, ": ", key.status().message(), reissue));
    } else if (absl::Status match =
                   pki::CheckKeyMatchesCertificate(*key, *cert_pem);
               !match.ok()) {
      report("FAIL", "client cert",
             absl::StrCat(tls.key_file, " is not the key of ", tls.cert_file,
                          "; give the pair written together", reissue));
    } else if (absl::Status verified =
                   pki::VerifyCertificate(*cert_pem, *ca_pem, now);
               !verified.ok()) {
      report("FAIL", "client cert",
             absl::StrCat(tls.cert_file, " does not verify against ",
                          tls.ca_file, ": ", verified.message(), reissue));
    } else if (cert->role_name != pki::RoleName(pki::CertificateRole::kAdmin)) {
      report("FAIL", "client cert",
             absl::StrCat(tls.cert_file, " has role \"", cert->role_name,
                          "\", admin commands need fleet-admin", reissue));
    } else {
      auto [verdict, expiry] = Expiry(*cert, now);
      report(verdict, "client cert",
             absl::StrCat(tls.cert_file, " (", cert->common_name,
                          ", fleet-admin) matches its key, issued by the CA, ",
                          expiry, verdict == "ok" ? "" : reissue));
    }
  } else {
    report("warn", "client cert",
           "none given: only commands that need no identity work; add "
           "--tls-cert and --tls-key, or --pki");
  }

  std::string host, port;
  if (!SplitHostPort(options.controller, host, port)) return;
  absl::StatusOr<std::string> server_pem =
      FetchServerCertificate(host, port, options.timeout);
  if (!server_pem.ok()) {
    report("FAIL", "server cert", server_pem.status().message());
    return;
  }
  absl::StatusOr<pki::CertificateInfo> server =
      pki::ParseCertificate(*server_pem);
  if (!server.ok()) {
    report("FAIL", "server cert", server.status().message());
    return;
  }
  const std::string reissue_server = absl::StrCat(
      "; issue the controller a certificate from this CA naming it: "
      "fleetctl pki issue --ca PKI_DIR --role server --name ",
      host, " --host ", host, " --out DIR");
  if (absl::Status verified = pki::VerifyCertificate(*server_pem, *ca_pem, now);
      !verified.ok()) {
    report("FAIL", "server cert",
           absl::StrCat("the controller's certificate (", server->common_name,
                        ") does not verify against ", tls.ca_file, ": ",
                        verified.message(),
                        "; check --tls-ca is this fleet's CA, or",
                        reissue_server.substr(1)));
    return;
  }
  const bool names_host =
      std::find(server->dns_names.begin(), server->dns_names.end(), host) !=
          server->dns_names.end() ||
      std::find(server->ip_addresses.begin(), server->ip_addresses.end(),
                host) != server->ip_addresses.end();
  if (!names_host) {
    std::vector<std::string> names = server->dns_names;
    names.insert(names.end(), server->ip_addresses.begin(),
                 server->ip_addresses.end());
    report("FAIL", "server cert",
           absl::StrCat("the controller's certificate names ",
                        absl::StrJoin(names, ", "), ", not ", host,
                        "; connect with --controller to one of those names, "
                        "or",
                        reissue_server.substr(1)));
    return;
  }
  auto [verdict, expiry] = Expiry(*server, now);
  report(verdict, "server cert",
         absl::StrCat("the controller's certificate names ", host,
                      ", issued by the CA, ", expiry,
                      verdict == "ok" ? "" : reissue_server));
}

std::string FormatMillis(absl::Duration d) {
  return absl::StrCat(absl::ToInt64Milliseconds(d), " ms");
}

// Every option name of `command` as typed (--long, -s), for completion.
std::vector<std::string> OptionWords(const CLI::App& command) {
  std::vector<std::string> words;
  for (const CLI::Option* option : command.get_options()) {
    for (const std::string& name : option->get_lnames()) {
      words.push_back("--" + name);
    }
    for (const std::string& name : option->get_snames()) {
      words.push_back("-" + name);
    }
  }
  return words;
}

void CollectCompletions(const CLI::App& command, const std::string& path,
                        const std::vector<std::string>& global_words,
                        std::map<std::string, std::string>& children,
                        std::map<std::string, std::string>& words) {
  std::vector<std::string> subcommands;
  for (const CLI::App* sub :
       command.get_subcommands([](const CLI::App*) { return true; })) {
    subcommands.push_back(sub->get_name());
    CollectCompletions(*sub, absl::StrCat(path, " ", sub->get_name()),
                       global_words, children, words);
  }
  std::vector<std::string> all = subcommands;
  for (const std::vector<std::string>& more :
       {OptionWords(command), global_words}) {
    for (const std::string& word : more) {
      if (std::find(all.begin(), all.end(), word) == all.end()) {
        all.push_back(word);
      }
    }
  }
  children[path] = absl::StrJoin(subcommands, " ");
  words[path] = absl::StrJoin(all, " ");
}

}  // namespace

absl::Status Version(absl::string_view client_version, CommandContext& ctx) {
  ServerProbe probe = Probe(ctx);
  if (ctx.structured()) {
    nlohmann::json doc = {{"client", {{"version", client_version}}},
                          {"server", nullptr}};
    if (probe.status.ok()) {
      absl::StatusOr<nlohmann::json> server =
          CommandContext::MessageDocument(probe.info);
      if (server.ok()) doc["server"] = *std::move(server);
    }
    ctx.PrintDocument(doc);
  } else {
    ctx.out() << "fleetctl " << client_version << "\n";
    if (probe.status.ok()) {
      ctx.out() << "fleet-controller " << probe.info.version() << " (schema "
                << probe.info.schema_version() << ") at "
                << ctx.options().controller << "\n";
    }
  }
  if (!probe.status.ok()) {
    return ExplainRpcError(probe.status, ctx.Call("get the controller's "
                                                  "version"));
  }
  return absl::OkStatus();
}

absl::Status Doctor(const DoctorOptions& options,
                    absl::string_view client_version, CommandContext& ctx) {
  int failures = 0;
  Report report = [&ctx, &failures](absl::string_view verdict,
                                    absl::string_view check,
                                    absl::string_view detail) {
    Color color = Color::kGreen;
    if (verdict == "FAIL") {
      ++failures;
      color = Color::kRed;
    } else if (verdict == "warn") {
      color = Color::kYellow;
    }
    ctx.out() << absl::StrCat(ctx.Paint(verdict, color),
                              std::string(6 - verdict.size(), ' '), check,
                              std::string(12 - check.size(), ' '), detail)
              << "\n";
  };

  // Before the first RPC, so a broken file is named instead of showing up
  // as an unexplained handshake failure.
  CheckTls(ctx, report);
  absl::Status credentials =
      ctx.options().insecure || !ctx.options().tls.ca_file.empty()
          ? ctx.LoadCredentials()
          : absl::OkStatus();
  ServerProbe probe;
  if (!credentials.ok()) {
    probe.status = grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                                std::string(credentials.message()));
  } else {
    probe = Probe(ctx);
  }
  if (!probe.status.ok()) {
    absl::Status explained =
        ExplainRpcError(probe.status, ctx.Call("reach the controller"));
    report("FAIL", "controller", explained.message());
  } else {
    report("ok", "controller",
           absl::StrCat(
               "reached ", ctx.options().controller, " in ",
               FormatMillis(probe.round_trip), "; ",
               probe.info.connected_agents(), " agents connected, up ",
               HumanDuration(
                   absl::FromUnixMillis(probe.info.server_time_unix_ms()) -
                   absl::FromUnixMillis(probe.info.started_unix_ms()))));
    const std::string versions = absl::StrCat(
        "fleet-controller ", probe.info.version(), " (schema ",
        probe.info.schema_version(), "), fleetctl ", client_version);
    if (probe.info.version() == client_version) {
      report("ok", "version", versions);
    } else {
      report("warn", "version",
             versions + "; use a fleetctl of the controller's version");
    }
    // The server read its clock somewhere inside the round trip: the skew
    // is known to +/- half of it.
    const absl::Duration skew =
        absl::FromUnixMillis(probe.info.server_time_unix_ms()) - probe.midpoint;
    const absl::Duration size = absl::AbsDuration(skew);
    const std::string detail =
        absl::StrCat("controller clock is ", FormatMillis(size),
                     skew >= absl::ZeroDuration() ? " ahead" : " behind",
                     " (+/- ", FormatMillis(probe.round_trip / 2), ")");
    if (size > options.max_clock_skew) {
      report("FAIL", "clock",
             detail +
                 "; run NTP (systemd-timesyncd or chrony) on both "
                 "machines: signed metadata and certificates expire");
    } else if (size > options.max_clock_skew / 10) {
      report("warn", "clock", detail);
    } else {
      report("ok", "clock", detail);
    }
  }

  for (const std::string& path : options.trust_keys) {
    TrustedKeys keys;
    absl::Status loaded = keys.AddPemFile(path);
    if (loaded.ok()) {
      report("ok", "trust key", path + " is an Ed25519 public key");
    } else {
      report("FAIL", "trust key",
             absl::StrCat(loaded.message(),
                          "; give the release public key (PEM) written by "
                          "`fleetctl keys generate`"));
    }
  }
  if (failures > 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(failures, " check(s) failed; see the FAIL lines above"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> CompletionScript(const CLI::App& root,
                                             absl::string_view shell) {
  if (shell != "bash" && shell != "zsh") {
    return UsageError(absl::StrCat("no completion for shell \"", shell,
                                   "\"; choose bash or zsh"));
  }
  const std::vector<std::string> global_words = OptionWords(root);
  std::map<std::string, std::string> children, words;
  CollectCompletions(root, root.get_name(), global_words, children, words);

  std::ostringstream out;
  out << "# fleetctl completion for " << shell
      << ". Load it with: source <(fleetctl completion " << shell << ")\n";
  if (shell == "zsh") {
    out << "autoload -U +X compinit && compinit\n"
           "autoload -U +X bashcompinit && bashcompinit\n";
  }
  out << "_fleetctl_children() {\n  case \"$1\" in\n";
  for (const auto& [path, names] : children) {
    out << "    \"" << path << "\") echo \"" << names << "\" ;;\n";
  }
  out << "  esac\n}\n_fleetctl_words() {\n  case \"$1\" in\n";
  for (const auto& [path, list] : words) {
    out << "    \"" << path << "\") echo \"" << list << "\" ;;\n";
  }
  out << "  esac\n}\n"
         "_fleetctl() {\n"
         "  local path=fleetctl cur=${COMP_WORDS[COMP_CWORD]} i w\n"
         "  for ((i = 1; i < COMP_CWORD; i++)); do\n"
         "    w=${COMP_WORDS[i]}\n"
         "    for c in $(_fleetctl_children \"$path\"); do\n"
         "      if [[ $c == \"$w\" ]]; then path=\"$path $w\"; break; fi\n"
         "    done\n"
         "  done\n"
         "  COMPREPLY=($(compgen -W \"$(_fleetctl_words \"$path\")\" -- "
         "\"$cur\"))\n"
         "}\n"
         "complete -o default -F _fleetctl fleetctl\n";
  return out.str();
}

}  // namespace fleet::cli
