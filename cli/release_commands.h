// `fleetctl release ...`: preparing, signing and uploading releases,
// verifying manifest files, listing releases.
#ifndef FLEET_CLI_RELEASE_COMMANDS_H_
#define FLEET_CLI_RELEASE_COMMANDS_H_

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "cli/command_context.h"

namespace fleet::cli {

// Artifact bytes per PushReleaseRequest.
inline constexpr size_t kPushChunkBytes = 1 << 20;

struct ReleasePushOptions {
  // Either the one-step mode: build and sign the manifest here...
  std::string product;
  std::string version;
  std::string platform;                // os/arch; "" = this host's
  std::vector<std::string> key_files;  // PKCS#8 PEM private keys, 1 or more
  std::string expires = "90d";  // a ParseHumanDuration; "0"/"never": never
  bool allows_downgrade = false;
  // ...or a manifest file prepared and signed offline (release prepare,
  // keys sign), which carries all of the above; giving both is a
  // UsageError.
  std::string manifest;
  std::string file;  // the artifact (both modes)
};

// `release push`: uploads an artifact with its signed manifest on one
// AdminService.PushRelease stream (the manifest, then the file in
// kPushChunkBytes chunks) and prints the stored release. A progress line
// goes to err only when err is a terminal. The upload's deadline is
// --timeout plus one second per MiB.
//   One-step (--key, repeatable): validates every name locally, hashes the
//   file (streaming), builds a ReleaseManifest {created: now, expires: now +
//   expires, size, sha256, allows_downgrade} and signs it with each key,
//   which never leaves this process (one operator holding k keys of a k-of-n
//   root pushes in one command).
//   --manifest: loads the file (refusing an edited review copy), and before
//   any RPC refuses a manifest without signatures, an expired one, and an
//   artifact whose size or sha256 is not the manifest's.
// The controller's signature check is the authority: its PERMISSION_DENIED
// is shown with how many valid signatures it needs and found, and the fix.
// Errors:
//   UsageError          bad product, version, platform or --expires, no
//                       --key, the same key twice, --manifest mixed with
//                       --product/--version/--platform/--expires/--key/
//                       --allows-downgrade (before anything is read).
//   NOT_FOUND           the file, the key or the manifest does not exist.
//   INVALID_ARGUMENT    the file is empty, a key is not an Ed25519 private
//                       key, the manifest file is malformed.
//   FAILED_PRECONDITION the manifest file was edited, has no signatures,
//                       expired, or does not describe the file.
//   ABORTED             the file changed while it was being uploaded (the
//                       stream is cancelled, nothing is stored).
//   any RPC code        ExplainRpcError; PERMISSION_DENIED names the
//                       threshold or the untrusted key and the fix,
//                       ALREADY_EXISTS suggests the next version.
absl::Status ReleasePush(const ReleasePushOptions& options,
                         CommandContext& ctx);

struct ReleasePrepareOptions {
  std::string product;
  std::string version;
  std::string platform;  // os/arch; "" = this host's
  std::string file;      // the artifact
  std::string expires = "90d";
  bool allows_downgrade = false;
  std::string out;     // the manifest file to write
  bool force = false;  // replace an existing --out
};

// `release prepare`: hashes the file and writes an UNSIGNED manifest file
// (cli/manifest_file.h) for `keys sign`, created now and expiring after
// --expires. Prints what it holds and the next steps (table) or the file's
// document (json/yaml). Needs no controller and no key.
// Errors: UsageError for bad names, --expires or a missing --out/--file;
// NOT_FOUND / INVALID_ARGUMENT for a missing or empty file; ALREADY_EXISTS
// when --out exists and --force is not given (nothing written).
absl::Status ReleasePrepare(const ReleasePrepareOptions& options,
                            CommandContext& ctx);

struct ReleaseVerifyOptions {
  std::string manifest;                 // --manifest
  std::string root;                     // --root: a root file, or
  std::vector<std::string> trust_keys;  // --trust-key PEM files (threshold 1)
  std::string file;                     // --file: also check the artifact
};

// `release verify`: checks a manifest file as an agent would, offline: each
// signature against the root's release keys (or the --trust-key keys) and
// its threshold, the manifest's and the root's expiry, and with --file the
// artifact's size and sha256. Prints one line per signature (valid, bad,
// not a release key) and the verdict.
// Errors: UsageError without --manifest or without --root/--trust-key (or
// with both); the load errors of LoadManifestFile and root/key files;
// PERMISSION_DENIED for too few valid signatures (naming how many are
// needed and which keys could add one); FAILED_PRECONDITION for an expired
// manifest or root, or an artifact that is not the manifest's.
absl::Status ReleaseVerify(const ReleaseVerifyOptions& options,
                           CommandContext& ctx);

struct ReleaseListOptions {
  std::string product;   // "" = all
  std::string platform;  // "" = all
};

// `release list`: AdminService.ListReleases, printed as a table (product,
// version, platform, size, sha256 prefix, key ids, age) or as the JSON of the
// ListReleasesResponse. An empty table prints a note on err instead.
// UsageError for a malformed filter; ExplainRpcError otherwise.
absl::Status ReleaseList(const ReleaseListOptions& options,
                         CommandContext& ctx);

}  // namespace fleet::cli

#endif  // FLEET_CLI_RELEASE_COMMANDS_H_
