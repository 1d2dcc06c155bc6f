// `fleetctl keys ...`: release signing keys, and signing prepared release
// manifests offline.
#ifndef FLEET_CLI_KEYS_COMMANDS_H_
#define FLEET_CLI_KEYS_COMMANDS_H_

#include <string>
#include <vector>

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

struct KeysSignOptions {
  std::vector<std::string> key_files;  // --key, PKCS#8 PEM; repeatable
  std::string manifest;                // the manifest file, signed in place
  std::string root;  // --root: refuse keys this root does not trust
};

// `keys sign --key KEY FILE`: adds each key's Ed25519 signature over the
// manifest bytes of a file from `release prepare`, replacing the file
// atomically (temp, fsync, rename). Runs offline on the signer's machine;
// several signers run it in turn for a k-of-n root. It first shows what is
// signed (product, version, platform, sha256, size, created, expires,
// downgrade) and afterwards who has signed; with --root, also how many of
// the root's threshold are met and which release keys could still sign.
// Signing is idempotent: Ed25519 signatures are deterministic, so a key
// that already signed (validly) leaves the file unchanged and says so; a
// stored signature of that key id that does not verify is replaced.
// Errors (the file is left unchanged on each):
//   UsageError           no --key, no FILE, the same key twice, an unusable
//                        --root file.
//   NOT_FOUND            the key or the manifest file does not exist.
//   INVALID_ARGUMENT     not an Ed25519 private key; a malformed manifest.
//   FAILED_PRECONDITION  the file's review fields do not match its signed
//                        bytes (edited); the manifest expired.
//   PERMISSION_DENIED    with --root: a key is not one of its release keys.
absl::Status KeysSign(const KeysSignOptions& options, CommandContext& ctx);

}  // namespace fleet::cli

#endif  // FLEET_CLI_KEYS_COMMANDS_H_
