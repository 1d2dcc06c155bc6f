#include "cli/keys_commands.h"

#include <optional>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/manifest_file.h"
#include "common/ed25519.h"
#include "common/files.h"
#include "common/manifest.h"
#include "common/root.h"
#include "common/status_macros.h"
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

namespace {

// The root a signer checks their key against: it must vouch for itself (a
// threshold of its own root keys signed it), as an agent's pinned root does.
absl::StatusOr<TrustedRoot> LoadCheckRoot(const std::string& path) {
  absl::StatusOr<v1::SignedRoot> signed_root = LoadRootFile(path);
  if (!signed_root.ok()) {
    return UsageError(absl::StrCat("cannot use --root ", path, ": ",
                                   signed_root.status().message()));
  }
  absl::StatusOr<TrustedRoot> root = TrustedRoot::FromPinned(*signed_root);
  if (!root.ok()) {
    return UsageError(absl::StrCat("cannot use --root ", path,
                                   ": it is not a usable root (",
                                   root.status().message(), ")"));
  }
  return root;
}

}  // namespace

absl::Status KeysSign(const KeysSignOptions& options, CommandContext& ctx) {
  if (options.manifest.empty()) {
    return UsageError(
        "name the manifest file to sign (from `fleetctl release prepare`)");
  }
  if (options.key_files.empty()) {
    return UsageError("--key must name a release private key");
  }
  std::optional<TrustedRoot> root;
  if (!options.root.empty()) {
    ASSIGN_OR_RETURN(root, LoadCheckRoot(options.root));
  }
  ASSIGN_OR_RETURN(const std::vector<Ed25519PrivateKey> keys,
                   LoadSigningKeys("--key", options.key_files));
  if (root) {
    for (size_t i = 0; i < keys.size(); ++i) {
      const std::string id = keys[i].PublicKey().KeyId();
      if (root->release_keys().Find(id) != nullptr) continue;
      return absl::PermissionDeniedError(absl::StrCat(
          "key ", id, " (", options.key_files[i],
          ") is not a release key of root v", root->version(), " (",
          options.root, "), whose release keys are [",
          absl::StrJoin(root->release_keys().KeyIds(), ", "),
          "]; nothing was signed: sign with one of those, or first add this "
          "key to the root (fleetctl keys release-key add) and push that "
          "root (fleetctl keys root push)"));
    }
  }

  ASSIGN_OR_RETURN(ManifestFile file, LoadManifestFile(options.manifest));
  const absl::Time now = ctx.Now();
  if (!ctx.structured()) {
    ctx.out() << "signing " << DescribeRelease(file.release, now);
  }
  if (ManifestExpired(file.release, now)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "manifest file ", options.manifest, " expired at ",
        ManifestTime(file.release.expires_unix_seconds()),
        "; nothing was signed: prepare the release again (fleetctl release "
        "prepare --expires ...) and sign that"));
  }

  std::vector<std::string> notes;
  bool changed = false;
  google::protobuf::RepeatedPtrField<v1::Signature>& sigs =
      *file.signed_manifest.mutable_signatures();
  for (const Ed25519PrivateKey& key : keys) {
    const Ed25519PublicKey public_key = key.PublicKey();
    const std::string id = public_key.KeyId();
    bool already = false;
    for (int i = 0; i < sigs.size(); ++i) {
      if (sigs[i].key_id() != id) continue;
      if (!already && public_key.Verify(file.signed_manifest.manifest(),
                                        sigs[i].signature())) {
        already = true;
        continue;
      }
      // A stored signature of this key id that does not verify (or a second
      // copy): drop it, the fresh one below replaces it.
      sigs.DeleteSubrange(i, 1);
      --i;
      changed = true;
      notes.push_back(absl::StrCat("replaced a signature of key ", id,
                                   " that did not verify"));
    }
    if (already) {
      notes.push_back(
          absl::StrCat("key ", id, " had already signed; kept as is"));
      continue;
    }
    AddSignature(file.signed_manifest, key);
    changed = true;
    notes.push_back(absl::StrCat("signed with key ", id));
  }
  if (changed) {
    if (absl::Status s = WriteManifestFile(options.manifest, file,
                                           /*replace=*/true);
        !s.ok()) {
      return absl::Status(s.code(),
                          absl::StrCat("cannot write manifest file ",
                                       options.manifest, ": ", s.message()));
    }
  }

  std::vector<std::string> signed_by;
  for (const v1::Signature& sig : file.signed_manifest.signatures()) {
    signed_by.push_back(sig.key_id());
  }
  // With a root: how far the threshold is.
  std::string progress;
  int valid = 0, threshold = 0;
  if (root) {
    valid =
        CountValid(CheckSignatures(file.signed_manifest, root->release_keys()));
    threshold = static_cast<int>(root->metadata().release_threshold());
    if (valid >= threshold) {
      progress = absl::StrCat(valid, " of ", threshold, " needed by root v",
                              root->version(),
                              ": ready to push (fleetctl release push "
                              "--manifest ",
                              options.manifest, " --file ARTIFACT)");
    } else {
      std::vector<std::string> could_sign;
      for (const std::string& id : root->release_keys().KeyIds()) {
        bool has = false;
        for (const std::string& s : signed_by) has |= s == id;
        if (!has) could_sign.push_back(id);
      }
      progress =
          absl::StrCat(valid, " of ", threshold, " needed by root v",
                       root->version(), ": needs ", threshold - valid,
                       " more from [", absl::StrJoin(could_sign, ", "), "]");
    }
  }
  if (ctx.structured()) {
    nlohmann::json doc = {{"manifest", options.manifest},
                          {"changed", changed},
                          {"notes", notes},
                          {"signed_by", signed_by}};
    if (root) {
      doc["root_version"] = root->version();
      doc["threshold"] = threshold;
      doc["valid"] = valid;
    }
    ctx.PrintDocument(doc);
    return absl::OkStatus();
  }
  for (const std::string& note : notes) ctx.out() << note << '\n';
  ctx.out() << options.manifest << (changed ? " now has " : " has ")
            << signed_by.size()
            << " signature(s): " << absl::StrJoin(signed_by, ", ") << '\n';
  if (!progress.empty()) ctx.out() << progress << '\n';
  return absl::OkStatus();
}

}  // namespace fleet::cli
