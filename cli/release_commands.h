// `fleetctl release ...`: signing and uploading releases, listing them.
#ifndef FLEET_CLI_RELEASE_COMMANDS_H_
#define FLEET_CLI_RELEASE_COMMANDS_H_

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "cli/command_context.h"

namespace fleet::cli {

// Artifact bytes per PushReleaseRequest.
inline constexpr size_t kPushChunkBytes = 1 << 20;

struct ReleasePushOptions {
  std::string product;
  std::string version;
  std::string platform;         // os/arch; the caller fills in the host's
  std::string file;             // the artifact
  std::string key_file;         // PKCS#8 PEM private key
  std::string expires = "90d";  // a ParseHumanDuration; "0"/"never": never
};

// `release push`: validates every name locally, hashes the file (streaming),
// signs a ReleaseManifest {created: now, expires: now + expires, size,
// sha256} with the key, which never leaves this process, then sends the
// SignedManifest and the file in kPushChunkBytes chunks on one
// AdminService.PushRelease stream and prints the stored release. A progress
// line goes to err only when err is a terminal. The upload's deadline is
// --timeout plus one second per MiB.
// Errors:
//   UsageError        bad product, version, platform or --expires (before
//                     anything is read).
//   NOT_FOUND         the file or the key does not exist (before any RPC).
//   INVALID_ARGUMENT  the file is empty or the key file is not an Ed25519
//                     private key (before any RPC).
//   ABORTED           the file changed while it was being uploaded (the
//                     stream is cancelled, nothing is stored).
//   any RPC code      ExplainRpcError; PERMISSION_DENIED names the key id
//                     and the --trust-key fix, ALREADY_EXISTS suggests the
//                     next version.
absl::Status ReleasePush(const ReleasePushOptions& options,
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
