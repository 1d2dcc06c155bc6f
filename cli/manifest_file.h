// Manifest files: a release manifest prepared on one machine, reviewed and
// signed offline on others, then pushed with its artifact (TUF's offline
// signing, docs/security.md "Signing offline").
//
//   fleetctl release prepare ... --out web-1.2.0.manifest.json
//   fleetctl keys sign --key alice/release.key web-1.2.0.manifest.json
//   fleetctl keys sign --key bob/release.key web-1.2.0.manifest.json
//   fleetctl release push --manifest web-1.2.0.manifest.json --file web
//
// The file is JSON (not YAML): the root files next to it are JSON, JSON has
// one reading of every value (YAML's `no`, `1.10` or `0755` do not), and
// signing tools on any machine can read it without a YAML library.
//
//   {
//     "kind": "fleet.release-manifest",
//     "format_version": 1,
//     "note": "...",
//     "release": {            // for humans: a copy of the signed fields
//       "product": "web", "version": "1.2.0", "platform": "linux/amd64",
//       "sha256": "<hex>", "size": 12893, "created": "2026-11-23T18:00:00Z",
//       "expires": "2027-02-21T18:00:00Z" | "never",
//       "allows_downgrade": false
//     },
//     "manifest": "<base64>", // the serialized ReleaseManifest: what is signed
//     "signatures": [{"key_id": "<16 hex>", "signature": "<base64>"}]
//   }
//
// Only `manifest` is signed. `release` exists so a reviewer can read what
// they sign; loading refuses a file whose `release` does not say exactly
// what the bytes say, so an edited review copy can never trick a signer.
#ifndef FLEET_CLI_MANIFEST_FILE_H_
#define FLEET_CLI_MANIFEST_FILE_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/ed25519.h"
#include "common/manifest.h"
#include "nlohmann/json.hpp"
#include "proto/fleet/v1/release.pb.h"

namespace fleet::cli {

inline constexpr char kManifestFileKind[] = "fleet.release-manifest";
inline constexpr int kManifestFileFormatVersion = 1;

// A loaded manifest file: the signed bytes with their signatures, and the
// ReleaseManifest they decode to (validated).
struct ManifestFile {
  v1::SignedManifest signed_manifest;
  v1::ReleaseManifest release;
};

// The file's text: the JSON document above, fields in that order, 2-space
// indented, ending with a newline; the review fields are rendered from
// `file.release`, which must be what `file.signed_manifest` decodes to.
std::string RenderManifestFile(const ManifestFile& file);
// The same document, for -o json / -o yaml output.
nlohmann::json ManifestFileDocument(const ManifestFile& file);

// Parses a manifest file's text. `path` only names the file in messages.
//   INVALID_ARGUMENT     not JSON, another kind or format version, a
//                        missing or unknown field, bad base64, bytes that do
//                        not decode to a valid ReleaseManifest.
//   FAILED_PRECONDITION  the review fields differ from the signed bytes (the
//                        message names the first differing field).
absl::StatusOr<ManifestFile> ParseManifestFile(absl::string_view text,
                                               absl::string_view path);

// ReadFile + ParseManifestFile. NOT_FOUND if the file does not exist.
absl::StatusOr<ManifestFile> LoadManifestFile(const std::string& path);

// Writes RenderManifestFile(file), mode 0644.
// `replace`: atomically replaces an existing file (temp, fsync, rename);
// otherwise the file is created new and ALREADY_EXISTS if it exists.
absl::Status WriteManifestFile(const std::string& path,
                               const ManifestFile& file, bool replace);

// "2027-02-21T18:00:00Z"; "never" for 0 (the wire's "no expiry").
std::string ManifestTime(int64_t unix_seconds);

// True when the manifest has an expiry and `now` is past it.
bool ManifestExpired(const v1::ReleaseManifest& release, absl::Time now);

// What an operator about to sign or push reads, one field a line:
//   web 1.2.0 (linux/amd64)
//     sha256     9f86d081884c7d65...
//     size       12.3 MiB (12893000 bytes)
//     created    2026-11-23T18:00:00Z
//     expires    2027-02-21T18:00:00Z (in 89d) | never | ... (EXPIRED)
//     downgrade  not allowed | allowed
std::string DescribeRelease(const v1::ReleaseManifest& release, absl::Time now);

// Loads the Ed25519 private keys `paths`, each given with `flag` ("--key"),
// in order. NOT_FOUND naming the flag and `fleetctl keys generate`; the
// loader's code with the path otherwise; a UsageError when two paths hold
// the same key (a k-of-n threshold needs k distinct keys).
absl::StatusOr<std::vector<Ed25519PrivateKey>> LoadSigningKeys(
    absl::string_view flag, const std::vector<std::string>& paths);

// How one signature fares against a set of trusted keys.
struct SignatureVerdict {
  enum class State { kValid, kBadSignature, kUnknownKey };
  std::string key_id;
  State state;
};

// One verdict per signature, in file order.
std::vector<SignatureVerdict> CheckSignatures(
    const v1::SignedManifest& signed_manifest, const TrustedKeys& keys);

// The distinct key ids with a valid signature.
int CountValid(const std::vector<SignatureVerdict>& verdicts);

}  // namespace fleet::cli

#endif  // FLEET_CLI_MANIFEST_FILE_H_
