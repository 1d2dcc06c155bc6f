#include "cli/keys_commands.h"

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "common/ed25519.h"
#include "common/files.h"
#include "nlohmann/json.hpp"

namespace fleet::cli {

absl::Status KeysGenerate(const KeysGenerateOptions& options,
                          CommandContext& ctx) {
  if (options.out_dir.empty()) {
    return UsageError("--out must name a directory for the key pair");
  }
  const std::string private_path =
      JoinPath(options.out_dir, kPrivateKeyFileName);
  const std::string public_path = JoinPath(options.out_dir, kPublicKeyFileName);
  // Check both before writing either, so a refusal leaves nothing behind.
  for (const std::string& path : {private_path, public_path}) {
    if (PathExists(path)) {
      return absl::AlreadyExistsError(
          absl::StrCat(path,
                       " already exists; choose another --out or "
                       "remove it (fleetctl never overwrites a key)"));
    }
  }
  if (absl::Status s = MakeDirs(options.out_dir, 0700); !s.ok()) {
    return absl::Status(
        s.code(), absl::StrCat("cannot create key directory ", options.out_dir,
                               ": ", s.message()));
  }

  absl::StatusOr<Ed25519PrivateKey> key = Ed25519PrivateKey::Generate();
  if (!key.ok()) {
    return absl::Status(
        key.status().code(),
        absl::StrCat("cannot generate a key: ", key.status().message()));
  }
  if (absl::Status s = key->WritePemFile(private_path); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("cannot write ", private_path,
                                               ": ", s.message()));
  }
  // A private key without its public half is useless and confusing.
  absl::Cleanup remove_private = [&] { (void)RemoveFile(private_path); };
  const Ed25519PublicKey public_key = key->PublicKey();
  if (absl::Status s = public_key.WritePemFile(public_path); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("cannot write ", public_path,
                                               ": ", s.message()));
  }
  std::move(remove_private).Cancel();

  if (ctx.structured()) {
    nlohmann::json result = {{"key_id", public_key.KeyId()},
                             {"private_key", private_path},
                             {"public_key", public_path}};
    ctx.PrintDocument(result);
  } else {
    ctx.out() << "key " << public_key.KeyId() << '\n'
              << "  private: " << private_path
              << "  (signs releases: fleetctl release push --key; keep it "
                 "secret)\n"
              << "  public:  " << public_path
              << "  (give to fleet-controller and fleet-agent --trust-key)\n";
  }
  return absl::OkStatus();
}

}  // namespace fleet::cli
