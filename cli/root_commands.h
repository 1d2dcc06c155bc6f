// `fleetctl keys root ...` and `fleetctl keys release-key ...`: the signed
// root metadata that tells agents which release keys to trust (see
// common/root.h). Root private keys stay offline; these commands run where
// they are, and produce root files (JSON) that travel to the controller and
// agents.
//
// (each command is one line, wrapped here)
//   fleetctl keys generate --out root-a          # one per root key holder
//   fleetctl keys root init --root-pub root-a/release.pub
//       --release-pub signing/release.pub --sign-key root-a/release.key
//       --out root.json
//   fleetctl keys release-key add --root root.json --pub new/release.pub
//       --sign-key root-a/release.key --out root-v2.json
#ifndef FLEET_CLI_ROOT_COMMANDS_H_
#define FLEET_CLI_ROOT_COMMANDS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "cli/command_context.h"

namespace fleet::cli {

struct RootInitOptions {
  std::vector<std::string> root_pubs;     // --root-pub, PEM public keys
  uint32_t root_threshold = 1;            // --root-threshold
  std::vector<std::string> release_pubs;  // --release-pub
  uint32_t release_threshold = 1;         // --release-threshold
  std::string expires = "365d";           // --expires
  std::vector<std::string> sign_keys;     // --sign-key, PEM private keys
  std::string out;                        // --out, the root file to create
};

// `keys root init`: root metadata version 1, signed by --sign-key (add the
// other holders' signatures with `keys root sign`). Refuses to overwrite
// --out. Prints a summary (table) or the root as JSON.
// Errors: UsageError for missing or bad flags (a threshold above the number
// of keys, a bad --expires, a key file that is not an Ed25519 key);
// ALREADY_EXISTS for an existing --out.
absl::Status RootInit(const RootInitOptions& options, CommandContext& ctx);

struct RootRotateOptions {
  std::string from;  // --from, the current root file
  // Replace a list when given; otherwise keep the current one.
  std::vector<std::string> root_pubs;
  std::vector<std::string> release_pubs;
  // Incremental edits, applied after any replacement.
  std::vector<std::string> add_release_pubs;
  std::vector<std::string> remove_release_pubs;
  uint32_t root_threshold = 0;     // 0: keep
  uint32_t release_threshold = 0;  // 0: keep (lowered to fit if keys shrink)
  std::string expires = "365d";
  std::vector<std::string> sign_keys;
  std::string out;
};

// `keys root rotate` (and `keys release-key add|remove`): the next root
// version with the given changes. It must end up signed by a threshold of
// the current root keys and of its own root keys before agents accept it;
// the command says which signatures are still missing.
absl::Status RootRotate(const RootRotateOptions& options, CommandContext& ctx);

struct RootSignOptions {
  std::string root;                    // --root, signed in place
  std::vector<std::string> sign_keys;  // --key
};

// `keys root sign`: adds signatures to a root file (atomically replaced).
absl::Status RootSign(const RootSignOptions& options, CommandContext& ctx);

// `keys root show FILE`: version, expiry, keys, thresholds and who signed.
absl::Status RootShow(const std::string& path, CommandContext& ctx);

// `keys root push FILE`: hands a new root to the controller (AdminService.
// PushRoot, admin credentials), which accepts it only as the next version
// cross-signed by a threshold of the current and of its own root keys,
// stores it and sends it to every connected agent. Prints the version, the
// expiry and how many agents were sent it. Errors: UsageError for a missing
// or unreadable file; the controller's refusal explained (which signatures
// are missing, which version it expected).
absl::Status RootPush(const std::string& path, CommandContext& ctx);

}  // namespace fleet::cli

#endif  // FLEET_CLI_ROOT_COMMANDS_H_
