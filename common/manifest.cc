#include "common/manifest.h"

#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/names.h"
#include "common/semver.h"
#include "common/status_macros.h"

namespace fleet {

void TrustedKeys::Add(Ed25519PublicKey key) {
  if (Find(key.KeyId()) != nullptr) return;
  keys_.push_back(std::move(key));
}

absl::Status TrustedKeys::AddPemFile(const std::string& path) {
  ASSIGN_OR_RETURN(Ed25519PublicKey key, Ed25519PublicKey::LoadPemFile(path));
  Add(std::move(key));
  return absl::OkStatus();
}

std::vector<std::string> TrustedKeys::KeyIds() const {
  std::vector<std::string> ids;
  ids.reserve(keys_.size());
  for (const Ed25519PublicKey& key : keys_) ids.push_back(key.KeyId());
  return ids;
}

const Ed25519PublicKey* TrustedKeys::Find(absl::string_view key_id) const {
  for (const Ed25519PublicKey& key : keys_) {
    if (key.KeyId() == key_id) return &key;
  }
  return nullptr;
}

namespace {

// absl::RFC3339_sec renders UTC as "+00:00"; operators expect "Z".
constexpr char kRfc3339Utc[] = "%Y-%m-%dT%H:%M:%SZ";

absl::Status FieldError(absl::string_view field, const absl::Status& cause) {
  return absl::InvalidArgumentError(
      absl::StrCat("manifest field ", field, ": ", cause.message()));
}

// Key ids come from an untrusted peer; keep them short and printable in
// messages.
std::string PrintableKeyId(absl::string_view id) {
  std::string out;
  for (char c : id.substr(0, 32)) {
    out.push_back((c >= 0x21 && c <= 0x7e) ? c : '?');
  }
  if (id.size() > 32) out += "...";
  if (out.empty()) out = "<empty>";
  return out;
}

}  // namespace

absl::Status ValidateManifest(const v1::ReleaseManifest& manifest) {
  absl::Status s = ValidateProductName(manifest.product());
  if (!s.ok()) return FieldError("product", s);
  s = ValidateVersion(manifest.version());
  if (!s.ok()) return FieldError("version", s);
  s = ValidatePlatform(manifest.platform());
  if (!s.ok()) return FieldError("platform", s);
  if (manifest.sha256().size() != 32) {
    return absl::InvalidArgumentError(
        absl::StrCat("manifest field sha256: must be 32 raw bytes, got ",
                     manifest.sha256().size()));
  }
  if (manifest.size() == 0) {
    return absl::InvalidArgumentError(
        "manifest field size: must be greater than 0");
  }
  if (manifest.expires_unix_seconds() != 0 &&
      manifest.expires_unix_seconds() < manifest.created_unix_seconds()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "manifest field expires_unix_seconds: ",
        manifest.expires_unix_seconds(), " is before created_unix_seconds ",
        manifest.created_unix_seconds()));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::SignedManifest> SignManifest(
    const v1::ReleaseManifest& manifest, const Ed25519PrivateKey& key) {
  RETURN_IF_ERROR(ValidateManifest(manifest));
  v1::SignedManifest signed_manifest;
  if (!manifest.SerializeToString(signed_manifest.mutable_manifest())) {
    return absl::InternalError("cannot serialize release manifest");
  }
  AddSignature(signed_manifest, key);
  return signed_manifest;
}

void AddSignature(v1::SignedManifest& signed_manifest,
                  const Ed25519PrivateKey& key) {
  v1::Signature* sig = signed_manifest.add_signatures();
  sig->set_key_id(key.PublicKey().KeyId());
  sig->set_signature(key.Sign(signed_manifest.manifest()));
}

absl::Status CheckSignatureThreshold(
    absl::string_view subject, absl::string_view key_kind,
    absl::string_view bytes,
    const google::protobuf::RepeatedPtrField<v1::Signature>& signatures,
    const TrustedKeys& keys, int threshold) {
  if (threshold < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "signature threshold must be at least 1, got ", threshold));
  }
  if (keys.empty()) {
    return absl::PermissionDeniedError(
        absl::StrCat("no trusted ", key_kind, " keys are configured"));
  }
  std::set<std::string> valid;    // trusted key ids with a good signature
  std::set<std::string> invalid;  // trusted key ids whose signature failed
  std::set<std::string> unknown;  // key ids not in the trust set
  for (const v1::Signature& sig : signatures) {
    const Ed25519PublicKey* key = keys.Find(sig.key_id());
    if (key == nullptr) {
      unknown.insert(PrintableKeyId(sig.key_id()));
    } else if (key->Verify(bytes, sig.signature())) {
      valid.insert(sig.key_id());
    } else {
      invalid.insert(sig.key_id());
    }
  }
  if (static_cast<int>(valid.size()) >= threshold) return absl::OkStatus();

  std::vector<std::string> signed_by;
  for (const v1::Signature& sig : signatures) {
    signed_by.push_back(PrintableKeyId(sig.key_id()));
  }
  std::string message;
  if (threshold == 1) {
    message =
        absl::StrCat("no valid signature from a trusted ", key_kind, " key");
  } else {
    message = absl::StrCat(subject, " needs valid signatures from ", threshold,
                           " distinct trusted ", key_kind, " keys, has ",
                           valid.size());
  }
  absl::StrAppend(&message, " (", signatures.size(),
                  " signature(s), signed by key ids [",
                  absl::StrJoin(signed_by, ", "), "]");
  if (!valid.empty()) {
    absl::StrAppend(&message, "; valid: [", absl::StrJoin(valid, ", "), "]");
  }
  if (!invalid.empty()) {
    absl::StrAppend(&message, "; bad signature from trusted key ids [",
                    absl::StrJoin(invalid, ", "), "]");
  }
  if (!unknown.empty()) {
    absl::StrAppend(&message, "; unknown key ids [",
                    absl::StrJoin(unknown, ", "), "]");
  }
  absl::StrAppend(&message, "; trusted: [", absl::StrJoin(keys.KeyIds(), ", "),
                  "])");
  return absl::PermissionDeniedError(message);
}

absl::StatusOr<v1::ReleaseManifest> VerifyManifest(
    const v1::SignedManifest& signed_manifest, const TrustedKeys& keys,
    absl::Time now, int threshold, bool check_expiry) {
  if (keys.live_source() != nullptr) {
    return keys.live_source()->VerifyRelease(signed_manifest, now, threshold,
                                             check_expiry);
  }
  RETURN_IF_ERROR(CheckSignatureThreshold(
      "release manifest", "release", signed_manifest.manifest(),
      signed_manifest.signatures(), keys, threshold));

  v1::ReleaseManifest manifest;
  if (!manifest.ParseFromString(signed_manifest.manifest())) {
    return absl::InvalidArgumentError(
        "signed release manifest bytes do not parse as a ReleaseManifest");
  }
  RETURN_IF_ERROR(ValidateManifest(manifest));
  if (check_expiry && manifest.expires_unix_seconds() != 0 &&
      now > absl::FromUnixSeconds(manifest.expires_unix_seconds())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "release manifest ", manifest.product(), " ", manifest.version(), " ",
        manifest.platform(), " expired at ",
        absl::FormatTime(kRfc3339Utc,
                         absl::FromUnixSeconds(manifest.expires_unix_seconds()),
                         absl::UTCTimeZone()),
        " (now ", absl::FormatTime(kRfc3339Utc, now, absl::UTCTimeZone()),
        ")"));
  }
  return manifest;
}

}  // namespace fleet
