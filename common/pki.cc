#include "common/pki.h"

#include <arpa/inet.h>
#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <time.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "common/openssl_util.h"
#include "common/status_macros.h"

namespace fleet::pki {
namespace {

using PkeyPtr = OpenSslPtr<EVP_PKEY, EVP_PKEY_free>;
using X509Ptr = OpenSslPtr<X509, X509_free>;
using ReqPtr = OpenSslPtr<X509_REQ, X509_REQ_free>;
using NamePtr = OpenSslPtr<X509_NAME, X509_NAME_free>;
using ExtPtr = OpenSslPtr<X509_EXTENSION, X509_EXTENSION_free>;
using BnPtr = OpenSslPtr<BIGNUM, BN_free>;
using StorePtr = OpenSslPtr<X509_STORE, X509_STORE_free>;
using StoreCtxPtr = OpenSslPtr<X509_STORE_CTX, X509_STORE_CTX_free>;
using NamesPtr = OpenSslPtr<GENERAL_NAMES, GENERAL_NAMES_free>;
using OctetsPtr = OpenSslPtr<ASN1_OCTET_STRING, ASN1_OCTET_STRING_free>;

constexpr char kOrganization[] = "fleet";
constexpr size_t kMaxCommonName = 64;  // RFC 5280 ub-common-name
// Certificates start an hour early so a peer whose clock is a little behind
// the issuer's does not see a certificate from the future.
constexpr absl::Duration kBackdate = absl::Hours(1);
constexpr char kLabelUriScheme[] = "fleet-label:";

// Percent-encodes everything but RFC 3986's unreserved characters, so a
// label is a valid URI whatever printable characters its value holds (and
// never a ',' that would split OpenSSL's extension list).
std::string PercentEncode(absl::string_view text) {
  std::string out;
  for (char c : text) {
    if (absl::ascii_isalnum(c) || c == '-' || c == '.' || c == '_' ||
        c == '~') {
      out.push_back(c);
    } else {
      absl::StrAppend(&out, "%",
                      absl::AsciiStrToUpper(
                          absl::BytesToHexString(absl::string_view(&c, 1))));
    }
  }
  return out;
}

// The inverse of PercentEncode; false for a malformed escape.
bool PercentDecode(absl::string_view text, std::string* out) {
  out->clear();
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out->push_back(text[i]);
      continue;
    }
    if (i + 2 >= text.size()) return false;
    const absl::string_view hex = text.substr(i + 1, 2);
    if (!absl::ascii_isxdigit(hex[0]) || !absl::ascii_isxdigit(hex[1])) {
      return false;
    }
    out->append(absl::HexStringToBytes(hex));
    i += 2;
  }
  return true;
}

absl::Status OpenSslFailure(absl::string_view what) {
  return absl::InternalError(absl::StrCat(what, ": ", OpenSslError()));
}

absl::Status CheckP256(EVP_PKEY* key, absl::string_view what) {
  if (EVP_PKEY_get_id(key) != EVP_PKEY_EC) {
    const char* name = EVP_PKEY_get0_type_name(key);
    return absl::InvalidArgumentError(
        absl::StrCat(what, " is a ", name != nullptr ? name : "unknown",
                     " key, not an ECDSA P-256 key"));
  }
  char group[64] = {0};
  size_t len = 0;
  if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group,
                                     sizeof(group), &len) != 1 ||
      absl::string_view(group, len) != "prime256v1") {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        absl::StrCat(what, " is an EC key on curve \"",
                     absl::string_view(group, len), "\", not P-256"));
  }
  return absl::OkStatus();
}

absl::StatusOr<PkeyPtr> ParsePrivateKey(absl::string_view pem) {
  BioPtr bio = ReadOnlyBio(pem);
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("not a PEM private key: ", OpenSslError()));
  }
  RETURN_IF_ERROR(CheckP256(key.get(), "the private key"));
  return key;
}

absl::StatusOr<X509Ptr> ParseX509(absl::string_view pem) {
  BioPtr bio = ReadOnlyBio(pem);
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (cert == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("not a PEM certificate: ", OpenSslError()));
  }
  return cert;
}

absl::StatusOr<std::string> CertificateToPem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (PEM_write_bio_X509(bio.get(), cert) != 1) {
    return OpenSslFailure("PEM_write_bio_X509");
  }
  return BioContents(bio.get());
}

absl::Status CheckCommonName(absl::string_view name) {
  if (name.empty()) {
    return absl::InvalidArgumentError("common name is empty");
  }
  if (name.size() > kMaxCommonName) {
    return absl::InvalidArgumentError(absl::StrCat(
        "common name is ", name.size(), " bytes; at most ", kMaxCommonName));
  }
  for (char c : name) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return absl::InvalidArgumentError(
          "common name contains a control character");
    }
  }
  return absl::OkStatus();
}

// DNS names go into an OpenSSL config string ("DNS:a,DNS:b"), so only the
// characters of a host name (and a leading wildcard label) are allowed.
absl::Status CheckDnsName(absl::string_view name) {
  if (name.empty() || name.size() > 253) {
    return absl::InvalidArgumentError(
        absl::StrCat("DNS name \"", name, "\" must be 1..253 bytes"));
  }
  for (char c : name) {
    if (!absl::ascii_isalnum(c) && c != '-' && c != '.' && c != '*') {
      return absl::InvalidArgumentError(absl::StrCat(
          "DNS name \"", name, "\" may only hold letters, digits, '-', '.'"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<NamePtr> SubjectName(absl::string_view common_name,
                                    absl::string_view role) {
  NamePtr name(X509_NAME_new());
  auto add = [&](const char* field, absl::string_view value) {
    return X509_NAME_add_entry_by_txt(
               name.get(), field, MBSTRING_UTF8,
               reinterpret_cast<const unsigned char*>(value.data()),
               static_cast<int>(value.size()), -1, 0) == 1;
  };
  if (!add("O", kOrganization) || (!role.empty() && !add("OU", role)) ||
      !add("CN", common_name)) {
    return OpenSslFailure("X509_NAME_add_entry_by_txt");
  }
  return name;
}

absl::Status AddExtension(X509* cert, X509* issuer, int nid,
                          const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  ExtPtr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str()));
  if (ext == nullptr || X509_add_ext(cert, ext.get(), -1) != 1) {
    return OpenSslFailure(
        absl::StrCat("extension ", OBJ_nid2sn(nid), "=", value));
  }
  return absl::OkStatus();
}

absl::Status SetRandomSerial(X509* cert) {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) {
    return OpenSslFailure("RAND_bytes");
  }
  bytes[0] &= 0x7f;  // positive, as RFC 5280 requires
  BnPtr bn(BN_bin2bn(bytes, sizeof(bytes), nullptr));
  if (bn == nullptr ||
      BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert)) == nullptr) {
    return OpenSslFailure("serial number");
  }
  return absl::OkStatus();
}

absl::Status SetValidity(X509* cert, absl::Time not_before,
                         absl::Time not_after) {
  if (ASN1_TIME_set(X509_getm_notBefore(cert), absl::ToTimeT(not_before)) ==
          nullptr ||
      ASN1_TIME_set(X509_getm_notAfter(cert), absl::ToTimeT(not_after)) ==
          nullptr) {
    return OpenSslFailure("ASN1_TIME_set");
  }
  return absl::OkStatus();
}

absl::StatusOr<absl::Time> Asn1ToTime(const ASN1_TIME* time) {
  struct tm tm = {};
  if (ASN1_TIME_to_tm(time, &tm) != 1) {
    return OpenSslFailure("ASN1_TIME_to_tm");
  }
  return absl::FromTimeT(timegm(&tm));
}

std::string NameEntry(X509_NAME* name, int nid) {
  int index = X509_NAME_get_index_by_NID(name, nid, -1);
  if (index < 0) return "";
  ASN1_STRING* data =
      X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, index));
  unsigned char* utf8 = nullptr;
  int len = ASN1_STRING_to_UTF8(&utf8, data);
  if (len < 0) {
    ERR_clear_error();
    return "";
  }
  std::string text(reinterpret_cast<char*>(utf8), static_cast<size_t>(len));
  OPENSSL_free(utf8);
  return text;
}

absl::StatusOr<std::string> SignAndEncode(X509* cert, EVP_PKEY* signer) {
  if (X509_sign(cert, signer, EVP_sha256()) <= 0) {
    return OpenSslFailure("X509_sign");
  }
  return CertificateToPem(cert);
}

}  // namespace

absl::string_view RoleName(CertificateRole role) {
  switch (role) {
    case CertificateRole::kServer:
      return "fleet-server";
    case CertificateRole::kAdmin:
      return "fleet-admin";
    case CertificateRole::kAgent:
      return "fleet-agent";
  }
  return "";
}

absl::StatusOr<PrivateKey> PrivateKey::Generate() {
  PkeyPtr key(EVP_EC_gen("P-256"));
  if (key == nullptr) return OpenSslFailure("EVP_EC_gen(P-256)");
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (PEM_write_bio_PrivateKey(bio.get(), key.get(), nullptr, nullptr, 0,
                               nullptr, nullptr) != 1) {
    return OpenSslFailure("PEM_write_bio_PrivateKey");
  }
  return PrivateKey(BioContents(bio.get()));
}

absl::StatusOr<PrivateKey> PrivateKey::FromPem(absl::string_view pem) {
  ASSIGN_OR_RETURN(PkeyPtr key, ParsePrivateKey(pem));
  // Re-encode so pem() is always PKCS#8 whatever the input was.
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (PEM_write_bio_PrivateKey(bio.get(), key.get(), nullptr, nullptr, 0,
                               nullptr, nullptr) != 1) {
    return OpenSslFailure("PEM_write_bio_PrivateKey");
  }
  return PrivateKey(BioContents(bio.get()));
}

absl::StatusOr<PrivateKey> PrivateKey::LoadPemFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string pem, ReadFile(path));
  absl::StatusOr<PrivateKey> key = FromPem(pem);
  if (!key.ok()) {
    return absl::Status(key.status().code(),
                        absl::StrCat(path, ": ", key.status().message()));
  }
  return key;
}

absl::Status PrivateKey::WritePemFile(const std::string& path) const {
  return WriteNewFile(path, pem_, 0600);
}

absl::StatusOr<std::string> CreateCsr(const PrivateKey& key,
                                      absl::string_view common_name) {
  ASSIGN_OR_RETURN(PkeyPtr pkey, ParsePrivateKey(key.pem()));
  ReqPtr req(X509_REQ_new());
  if (req == nullptr || X509_REQ_set_version(req.get(), 0) != 1 ||
      X509_REQ_set_pubkey(req.get(), pkey.get()) != 1) {
    return OpenSslFailure("X509_REQ");
  }
  if (!common_name.empty()) {
    RETURN_IF_ERROR(CheckCommonName(common_name));
    ASSIGN_OR_RETURN(NamePtr name, SubjectName(common_name, ""));
    if (X509_REQ_set_subject_name(req.get(), name.get()) != 1) {
      return OpenSslFailure("X509_REQ_set_subject_name");
    }
  }
  if (X509_REQ_sign(req.get(), pkey.get(), EVP_sha256()) <= 0) {
    return OpenSslFailure("X509_REQ_sign");
  }
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (PEM_write_bio_X509_REQ(bio.get(), req.get()) != 1) {
    return OpenSslFailure("PEM_write_bio_X509_REQ");
  }
  return BioContents(bio.get());
}

absl::StatusOr<CertificateAuthority> CertificateAuthority::Create(
    absl::string_view common_name, absl::Duration validity, absl::Time now) {
  RETURN_IF_ERROR(CheckCommonName(common_name));
  if (validity <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("CA validity must be positive");
  }
  ASSIGN_OR_RETURN(PrivateKey key, PrivateKey::Generate());
  ASSIGN_OR_RETURN(PkeyPtr pkey, ParsePrivateKey(key.pem()));
  X509Ptr cert(X509_new());
  if (cert == nullptr || X509_set_version(cert.get(), X509_VERSION_3) != 1) {
    return OpenSslFailure("X509_new");
  }
  RETURN_IF_ERROR(SetRandomSerial(cert.get()));
  RETURN_IF_ERROR(SetValidity(cert.get(), now - kBackdate, now + validity));
  ASSIGN_OR_RETURN(NamePtr name, SubjectName(common_name, "fleet-ca"));
  if (X509_set_subject_name(cert.get(), name.get()) != 1 ||
      X509_set_issuer_name(cert.get(), name.get()) != 1 ||
      X509_set_pubkey(cert.get(), pkey.get()) != 1) {
    return OpenSslFailure("CA subject");
  }
  // pathlen:0: the CA signs leaf certificates only, never another CA.
  RETURN_IF_ERROR(AddExtension(cert.get(), cert.get(), NID_basic_constraints,
                               "critical,CA:TRUE,pathlen:0"));
  RETURN_IF_ERROR(AddExtension(cert.get(), cert.get(), NID_key_usage,
                               "critical,keyCertSign,cRLSign"));
  RETURN_IF_ERROR(
      AddExtension(cert.get(), cert.get(), NID_subject_key_identifier, "hash"));
  ASSIGN_OR_RETURN(std::string pem, SignAndEncode(cert.get(), pkey.get()));
  return CertificateAuthority(std::move(pem), std::move(key));
}

absl::StatusOr<CertificateAuthority> CertificateAuthority::Load(
    absl::string_view cert_pem, absl::string_view key_pem) {
  ASSIGN_OR_RETURN(X509Ptr cert, ParseX509(cert_pem));
  ASSIGN_OR_RETURN(PrivateKey key, PrivateKey::FromPem(key_pem));
  if (X509_check_ca(cert.get()) != 1) {
    return absl::InvalidArgumentError(
        "the certificate is not a CA certificate (basicConstraints CA:TRUE)");
  }
  if (!CheckKeyMatchesCertificate(key, cert_pem).ok()) {
    return absl::InvalidArgumentError(
        "the private key does not belong to the CA certificate");
  }
  ASSIGN_OR_RETURN(std::string pem, CertificateToPem(cert.get()));
  return CertificateAuthority(std::move(pem), std::move(key));
}

absl::StatusOr<std::string> CertificateAuthority::Issue(
    absl::string_view csr_pem, const IssueOptions& options,
    absl::Time now) const {
  RETURN_IF_ERROR(CheckCommonName(options.common_name));
  if (options.validity <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("certificate validity must be positive");
  }
  std::vector<std::string> alt_names;
  for (const std::string& dns : options.dns_names) {
    RETURN_IF_ERROR(CheckDnsName(dns));
    alt_names.push_back(absl::StrCat("DNS:", dns));
  }
  for (const std::string& ip : options.ip_addresses) {
    OctetsPtr parsed(a2i_IPADDRESS(ip.c_str()));
    if (parsed == nullptr) {
      ERR_clear_error();
      return absl::InvalidArgumentError(
          absl::StrCat("\"", ip, "\" is not an IPv4 or IPv6 address"));
    }
    alt_names.push_back(absl::StrCat("IP:", ip));
  }
  for (const auto& [key, value] : options.labels) {
    if (key.empty()) return absl::InvalidArgumentError("label key is empty");
    alt_names.push_back(absl::StrCat("URI:", kLabelUriScheme,
                                     PercentEncode(key), "=",
                                     PercentEncode(value)));
  }
  if (options.role == CertificateRole::kServer && alt_names.empty()) {
    return absl::InvalidArgumentError(
        "a server certificate needs at least one DNS name or IP address");
  }

  BioPtr bio = ReadOnlyBio(csr_pem);
  ReqPtr req(PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr));
  if (req == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "not a PEM certificate signing request: ", OpenSslError()));
  }
  EVP_PKEY* subject_key = X509_REQ_get0_pubkey(req.get());
  if (subject_key == nullptr) {
    return absl::InvalidArgumentError("the CSR holds no public key");
  }
  RETURN_IF_ERROR(CheckP256(subject_key, "the CSR's key"));
  // Proof of possession: whoever sent the CSR holds its private key.
  if (X509_REQ_verify(req.get(), subject_key) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        "the CSR's signature does not verify with its own key");
  }

  ASSIGN_OR_RETURN(X509Ptr ca, ParseX509(cert_pem_));
  ASSIGN_OR_RETURN(PkeyPtr ca_key, ParsePrivateKey(key_.pem()));
  ASSIGN_OR_RETURN(absl::Time ca_not_after,
                   Asn1ToTime(X509_get0_notAfter(ca.get())));

  X509Ptr cert(X509_new());
  if (cert == nullptr || X509_set_version(cert.get(), X509_VERSION_3) != 1) {
    return OpenSslFailure("X509_new");
  }
  RETURN_IF_ERROR(SetRandomSerial(cert.get()));
  RETURN_IF_ERROR(SetValidity(cert.get(),
                              now - std::min(kBackdate, options.validity / 4),
                              std::min(now + options.validity, ca_not_after)));
  ASSIGN_OR_RETURN(NamePtr name,
                   SubjectName(options.common_name, RoleName(options.role)));
  if (X509_set_subject_name(cert.get(), name.get()) != 1 ||
      X509_set_issuer_name(cert.get(), X509_get_subject_name(ca.get())) != 1 ||
      X509_set_pubkey(cert.get(), subject_key) != 1) {
    return OpenSslFailure("certificate subject");
  }
  RETURN_IF_ERROR(AddExtension(cert.get(), ca.get(), NID_basic_constraints,
                               "critical,CA:FALSE"));
  RETURN_IF_ERROR(AddExtension(cert.get(), ca.get(), NID_key_usage,
                               "critical,digitalSignature"));
  RETURN_IF_ERROR(AddExtension(
      cert.get(), ca.get(), NID_ext_key_usage,
      options.role == CertificateRole::kServer ? "serverAuth" : "clientAuth"));
  RETURN_IF_ERROR(
      AddExtension(cert.get(), ca.get(), NID_subject_key_identifier, "hash"));
  RETURN_IF_ERROR(AddExtension(cert.get(), ca.get(),
                               NID_authority_key_identifier, "keyid:always"));
  if (!alt_names.empty()) {
    RETURN_IF_ERROR(AddExtension(cert.get(), ca.get(), NID_subject_alt_name,
                                 absl::StrJoin(alt_names, ",")));
  }
  return SignAndEncode(cert.get(), ca_key.get());
}

absl::Status CheckKeyMatchesCertificate(const PrivateKey& key,
                                        absl::string_view cert_pem) {
  ASSIGN_OR_RETURN(X509Ptr cert, ParseX509(cert_pem));
  ASSIGN_OR_RETURN(PkeyPtr pkey, ParsePrivateKey(key.pem()));
  if (X509_check_private_key(cert.get(), pkey.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        "the private key does not belong to the certificate");
  }
  return absl::OkStatus();
}

absl::StatusOr<CertificateInfo> ParseCertificate(absl::string_view pem) {
  ASSIGN_OR_RETURN(X509Ptr cert, ParseX509(pem));
  CertificateInfo info;
  X509_NAME* subject = X509_get_subject_name(cert.get());
  info.common_name = NameEntry(subject, NID_commonName);
  info.role_name = NameEntry(subject, NID_organizationalUnitName);
  BnPtr serial(ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert.get()), nullptr));
  if (serial != nullptr) {
    char* hex = BN_bn2hex(serial.get());
    info.serial_hex = absl::AsciiStrToLower(hex);
    OPENSSL_free(hex);
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  if (X509_digest(cert.get(), EVP_sha256(), digest, &digest_len) != 1) {
    return OpenSslFailure("X509_digest");
  }
  info.sha256_fingerprint_hex = absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), digest_len));
  ASSIGN_OR_RETURN(info.not_before,
                   Asn1ToTime(X509_get0_notBefore(cert.get())));
  ASSIGN_OR_RETURN(info.not_after, Asn1ToTime(X509_get0_notAfter(cert.get())));
  info.is_ca = X509_check_ca(cert.get()) == 1;

  NamesPtr names(static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(cert.get(), NID_subject_alt_name, nullptr, nullptr)));
  for (int i = 0; names != nullptr && i < sk_GENERAL_NAME_num(names.get());
       ++i) {
    const GENERAL_NAME* entry = sk_GENERAL_NAME_value(names.get(), i);
    if (entry->type == GEN_DNS) {
      const ASN1_IA5STRING* dns = entry->d.dNSName;
      info.dns_names.emplace_back(
          reinterpret_cast<const char*>(ASN1_STRING_get0_data(dns)),
          static_cast<size_t>(ASN1_STRING_length(dns)));
    } else if (entry->type == GEN_IPADD) {
      const ASN1_OCTET_STRING* ip = entry->d.iPAddress;
      int len = ASN1_STRING_length(ip);
      char text[INET6_ADDRSTRLEN] = {0};
      int family = len == 4 ? AF_INET : len == 16 ? AF_INET6 : -1;
      if (family != -1 && inet_ntop(family, ASN1_STRING_get0_data(ip), text,
                                    sizeof(text)) != nullptr) {
        info.ip_addresses.emplace_back(text);
      }
    } else if (entry->type == GEN_URI) {
      const ASN1_IA5STRING* uri = entry->d.uniformResourceIdentifier;
      const absl::string_view text(
          reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri)),
          static_cast<size_t>(ASN1_STRING_length(uri)));
      if (!absl::StartsWith(text, kLabelUriScheme)) continue;
      const absl::string_view pair = text.substr(strlen(kLabelUriScheme));
      const size_t eq = pair.find('=');
      std::string key, value;
      if (eq == absl::string_view::npos ||
          !PercentDecode(pair.substr(0, eq), &key) ||
          !PercentDecode(pair.substr(eq + 1), &value) || key.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("malformed label in certificate: ", text));
      }
      info.labels[key] = value;
    }
  }
  return info;
}

absl::Status VerifyCertificate(absl::string_view cert_pem,
                               absl::string_view ca_pem, absl::Time now) {
  ASSIGN_OR_RETURN(X509Ptr cert, ParseX509(cert_pem));
  ASSIGN_OR_RETURN(X509Ptr ca, ParseX509(ca_pem));
  StorePtr store(X509_STORE_new());
  StoreCtxPtr ctx(X509_STORE_CTX_new());
  if (store == nullptr || ctx == nullptr ||
      X509_STORE_add_cert(store.get(), ca.get()) != 1 ||
      X509_STORE_CTX_init(ctx.get(), store.get(), cert.get(), nullptr) != 1) {
    return OpenSslFailure("X509_STORE");
  }
  X509_STORE_CTX_set_time(ctx.get(), 0, absl::ToTimeT(now));
  if (X509_verify_cert(ctx.get()) != 1) {
    int error = X509_STORE_CTX_get_error(ctx.get());
    ERR_clear_error();
    return absl::UnauthenticatedError(absl::StrCat(
        "certificate rejected: ", X509_verify_cert_error_string(error)));
  }
  return absl::OkStatus();
}

}  // namespace fleet::pki
