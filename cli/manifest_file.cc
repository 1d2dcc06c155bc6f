#include "cli/manifest_file.h"

#include <set>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/errors.h"
#include "cli/human.h"
#include "common/files.h"
#include "common/manifest.h"
#include "common/sha256.h"

namespace fleet::cli {

namespace {

constexpr char kNote[] =
    "Review the fields under \"release\", then sign with `fleetctl keys sign "
    "--key KEY THIS_FILE`. Only \"manifest\" (the exact bytes) is signed; "
    "fleetctl refuses this file if \"release\" does not say what those bytes "
    "say.";

// The review copy of every signed field, in the order the file shows them.
nlohmann::ordered_json ReviewFields(const v1::ReleaseManifest& release) {
  std::string sha256_hex = "-";
  if (absl::StatusOr<Digest> d = DigestFromBytes(release.sha256()); d.ok()) {
    sha256_hex = DigestToHex(*d);
  }
  nlohmann::ordered_json fields;
  fields["product"] = release.product();
  fields["version"] = release.version();
  fields["platform"] = release.platform();
  fields["sha256"] = sha256_hex;
  fields["size"] = release.size();
  fields["created"] = ManifestTime(release.created_unix_seconds());
  fields["expires"] = ManifestTime(release.expires_unix_seconds());
  fields["allows_downgrade"] = release.allows_downgrade();
  return fields;
}

nlohmann::ordered_json Document(const ManifestFile& file) {
  nlohmann::ordered_json doc;
  doc["kind"] = kManifestFileKind;
  doc["format_version"] = kManifestFileFormatVersion;
  doc["note"] = kNote;
  doc["release"] = ReviewFields(file.release);
  doc["manifest"] = absl::Base64Escape(file.signed_manifest.manifest());
  nlohmann::ordered_json signatures = nlohmann::ordered_json::array();
  for (const v1::Signature& sig : file.signed_manifest.signatures()) {
    nlohmann::ordered_json entry;
    entry["key_id"] = sig.key_id();
    entry["signature"] = absl::Base64Escape(sig.signature());
    signatures.push_back(std::move(entry));
  }
  doc["signatures"] = std::move(signatures);
  return doc;
}

absl::Status Invalid(absl::string_view path, absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("manifest file ", path, " ", why,
                   "; make it again with `fleetctl release prepare`"));
}

// OK when `object` has exactly the keys `expected`; names the first
// missing or unknown one otherwise.
absl::Status CheckKeys(const nlohmann::json& object,
                       const std::vector<std::string>& expected,
                       absl::string_view where, absl::string_view path) {
  if (!object.is_object()) {
    return Invalid(path, absl::StrCat(where, " is not a JSON object"));
  }
  const std::set<std::string> wanted(expected.begin(), expected.end());
  for (const std::string& key : expected) {
    if (!object.contains(key)) {
      return Invalid(path, absl::StrCat(where, " lacks \"", key, "\""));
    }
  }
  for (const auto& [key, value] : object.items()) {
    if (wanted.count(key) == 0) {
      return Invalid(
          path, absl::StrCat(where, " has an unknown field \"", key, "\""));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Base64Field(const nlohmann::json& value,
                                        absl::string_view what,
                                        absl::string_view path) {
  std::string decoded;
  if (!value.is_string() ||
      !absl::Base64Unescape(value.get<std::string>(), &decoded)) {
    return Invalid(path, absl::StrCat(what, " is not base64"));
  }
  return decoded;
}

}  // namespace

std::string ManifestTime(int64_t unix_seconds) {
  if (unix_seconds == 0) return "never";
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ",
                          absl::FromUnixSeconds(unix_seconds),
                          absl::UTCTimeZone());
}

bool ManifestExpired(const v1::ReleaseManifest& release, absl::Time now) {
  return release.expires_unix_seconds() != 0 &&
         now > absl::FromUnixSeconds(release.expires_unix_seconds());
}

std::string DescribeRelease(const v1::ReleaseManifest& release,
                            absl::Time now) {
  std::string sha256_hex = "-";
  if (absl::StatusOr<Digest> d = DigestFromBytes(release.sha256()); d.ok()) {
    sha256_hex = DigestToHex(*d);
  }
  std::string expires = ManifestTime(release.expires_unix_seconds());
  if (release.expires_unix_seconds() != 0) {
    const absl::Time at = absl::FromUnixSeconds(release.expires_unix_seconds());
    absl::StrAppend(&expires,
                    ManifestExpired(release, now)
                        ? " (EXPIRED)"
                        : absl::StrCat(" (in ", HumanDuration(at - now), ")"));
  }
  return absl::StrCat(
      release.product(), " ", release.version(), " (", release.platform(),
      ")\n", "  sha256     ", sha256_hex, "\n", "  size       ",
      HumanSize(release.size()), " (", release.size(), " bytes)\n",
      "  created    ", ManifestTime(release.created_unix_seconds()), "\n",
      "  expires    ", expires, "\n", "  downgrade  ",
      release.allows_downgrade() ? "allowed" : "not allowed", "\n");
}

absl::StatusOr<std::vector<Ed25519PrivateKey>> LoadSigningKeys(
    absl::string_view flag, const std::vector<std::string>& paths) {
  std::vector<Ed25519PrivateKey> keys;
  for (size_t i = 0; i < paths.size(); ++i) {
    absl::StatusOr<Ed25519PrivateKey> key =
        Ed25519PrivateKey::LoadPemFile(paths[i]);
    if (absl::IsNotFound(key.status())) {
      return absl::NotFoundError(absl::StrCat(
          "private key ", paths[i], " does not exist; check ", flag,
          " or create one with `fleetctl keys generate --out DIR`"));
    }
    if (!key.ok()) {
      return absl::Status(
          key.status().code(),
          absl::StrCat("cannot load private key ", paths[i], " (", flag,
                       "): ", key.status().message()));
    }
    const std::string id = key->PublicKey().KeyId();
    for (size_t j = 0; j < keys.size(); ++j) {
      if (keys[j].PublicKey().KeyId() == id) {
        return UsageError(absl::StrCat(flag, " ", paths[j], " and ", flag, " ",
                                       paths[i], " are the same key (id ", id,
                                       "); give each key once"));
      }
    }
    keys.push_back(*std::move(key));
  }
  return keys;
}

std::vector<SignatureVerdict> CheckSignatures(
    const v1::SignedManifest& signed_manifest, const TrustedKeys& keys) {
  std::vector<SignatureVerdict> verdicts;
  for (const v1::Signature& sig : signed_manifest.signatures()) {
    const Ed25519PublicKey* key = keys.Find(sig.key_id());
    SignatureVerdict::State state = SignatureVerdict::State::kUnknownKey;
    if (key != nullptr) {
      state = key->Verify(signed_manifest.manifest(), sig.signature())
                  ? SignatureVerdict::State::kValid
                  : SignatureVerdict::State::kBadSignature;
    }
    verdicts.push_back({sig.key_id(), state});
  }
  return verdicts;
}

int CountValid(const std::vector<SignatureVerdict>& verdicts) {
  std::set<std::string> valid;
  for (const SignatureVerdict& v : verdicts) {
    if (v.state == SignatureVerdict::State::kValid) valid.insert(v.key_id);
  }
  return static_cast<int>(valid.size());
}

std::string RenderManifestFile(const ManifestFile& file) {
  return Document(file).dump(2) + "\n";
}

nlohmann::json ManifestFileDocument(const ManifestFile& file) {
  return nlohmann::json::parse(Document(file).dump());
}

absl::StatusOr<ManifestFile> ParseManifestFile(absl::string_view text,
                                               absl::string_view path) {
  nlohmann::json doc = nlohmann::json::parse(text, /*cb=*/nullptr,
                                             /*allow_exceptions=*/false);
  if (doc.is_discarded()) return Invalid(path, "is not JSON");
  if (!doc.is_object() || !doc.contains("kind") ||
      doc["kind"] != kManifestFileKind) {
    return Invalid(path, absl::StrCat("is not a release manifest (its \"kind\""
                                      " is not \"",
                                      kManifestFileKind, "\")"));
  }
  if (!doc["format_version"].is_number_integer() ||
      doc["format_version"].get<int>() != kManifestFileFormatVersion) {
    return Invalid(
        path, absl::StrCat("has format_version ", doc["format_version"].dump(),
                           "; this fleetctl reads only version ",
                           kManifestFileFormatVersion));
  }
  if (absl::Status s = CheckKeys(doc,
                                 {"kind", "format_version", "note", "release",
                                  "manifest", "signatures"},
                                 "the document", path);
      !s.ok()) {
    return s;
  }

  ManifestFile file;
  absl::StatusOr<std::string> bytes =
      Base64Field(doc["manifest"], "\"manifest\"", path);
  if (!bytes.ok()) return bytes.status();
  if (!file.release.ParseFromString(*bytes)) {
    return Invalid(path, "\"manifest\" does not decode to a ReleaseManifest");
  }
  if (absl::Status s = ValidateManifest(file.release); !s.ok()) {
    return Invalid(
        path, absl::StrCat("holds an invalid manifest (", s.message(), ")"));
  }
  // Re-serializing must give the same bytes, or the review fields could not
  // show everything that is signed (unknown fields, duplicate fields).
  v1::ReleaseManifest known = file.release;
  known.DiscardUnknownFields();
  std::string reserialized;
  if (!known.SerializeToString(&reserialized) || reserialized != *bytes) {
    return Invalid(path,
                   "\"manifest\" holds fields this fleetctl cannot show for "
                   "review");
  }
  file.signed_manifest.set_manifest(*std::move(bytes));

  const nlohmann::json& signatures = doc["signatures"];
  if (!signatures.is_array()) {
    return Invalid(path, "\"signatures\" is not a list");
  }
  for (const nlohmann::json& entry : signatures) {
    if (absl::Status s = CheckKeys(entry, {"key_id", "signature"},
                                   "a signature entry", path);
        !s.ok()) {
      return s;
    }
    if (!entry["key_id"].is_string()) {
      return Invalid(path, "has a signature whose key_id is not a string");
    }
    absl::StatusOr<std::string> sig =
        Base64Field(entry["signature"], "a signature", path);
    if (!sig.ok()) return sig.status();
    v1::Signature* out = file.signed_manifest.add_signatures();
    out->set_key_id(entry["key_id"].get<std::string>());
    out->set_signature(*std::move(sig));
  }

  // The review copy must say exactly what the signed bytes say.
  const nlohmann::json expected =
      nlohmann::json::parse(ReviewFields(file.release).dump());
  const nlohmann::json& review = doc["release"];
  if (!review.is_object()) {
    return Invalid(path, "\"release\" is not a JSON object");
  }
  for (const auto& [field, value] : expected.items()) {
    const std::string shown =
        review.contains(field) ? review[field].dump() : "nothing";
    if (!review.contains(field) || review[field] != value) {
      return absl::FailedPreconditionError(absl::StrCat(
          "manifest file ", path, " was edited: its review field \"", field,
          "\" says ", shown, " but the signed bytes say ", value.dump(),
          "; do not sign or push it: prepare the release again with "
          "`fleetctl release prepare` and review that file"));
    }
  }
  for (const auto& [field, value] : review.items()) {
    if (!expected.contains(field)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "manifest file ", path, " was edited: its review has a field \"",
          field,
          "\" the signed bytes do not have; prepare the release again with "
          "`fleetctl release prepare`"));
    }
  }
  return file;
}

absl::StatusOr<ManifestFile> LoadManifestFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (absl::IsNotFound(text.status())) {
    return absl::NotFoundError(absl::StrCat(
        "manifest file ", path,
        " does not exist; check the path or create it with `fleetctl "
        "release prepare --out`"));
  }
  if (!text.ok()) {
    return absl::Status(text.status().code(),
                        absl::StrCat("cannot read manifest file ", path, ": ",
                                     text.status().message()));
  }
  return ParseManifestFile(*text, path);
}

absl::Status WriteManifestFile(const std::string& path,
                               const ManifestFile& file, bool replace) {
  const std::string text = RenderManifestFile(file);
  return replace ? WriteFileAtomically(path, text, 0644)
                 : WriteNewFile(path, text, 0644);
}

}  // namespace fleet::cli
