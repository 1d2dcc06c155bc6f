// `fleetctl keys ...`: release signing keys.
#ifndef FLEET_CLI_KEYS_COMMANDS_H_
#define FLEET_CLI_KEYS_COMMANDS_H_

#include <string>

#include "absl/status/status.h"
#include "cli/command_context.h"

namespace fleet::cli {

inline constexpr char kPrivateKeyFileName[] = "release.key";
inline constexpr char kPublicKeyFileName[] = "release.pub";

struct KeysGenerateOptions {
  std::string out_dir;  // --out
};

// `keys generate --out DIR`: creates DIR if missing (mode 0700), generates an
// Ed25519 key pair and writes DIR/release.key (PKCS#8 PEM, mode 0600) and
// DIR/release.pub (SubjectPublicKeyInfo PEM, mode 0644); prints the key id
// (table) or {"key_id", "private_key", "public_key"} (json).
// Errors:
//   UsageError             --out is empty.
//   ALREADY_EXISTS         either file exists; nothing is written.
//   errno-derived status   the directory or a file cannot be written; a
//                          private key written before the failure is removed.
absl::Status KeysGenerate(const KeysGenerateOptions& options,
                          CommandContext& ctx);

}  // namespace fleet::cli

#endif  // FLEET_CLI_KEYS_COMMANDS_H_
