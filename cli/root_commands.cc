#include "cli/root_commands.h"

#include <algorithm>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "cli/errors.h"
#include "cli/human.h"
#include "common/ed25519.h"
#include "common/files.h"
#include "common/root.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace fleet::cli {
namespace {

absl::StatusOr<Ed25519PublicKey> LoadPublic(absl::string_view flag,
                                            const std::string& path) {
  absl::StatusOr<Ed25519PublicKey> key = Ed25519PublicKey::LoadPemFile(path);
  if (!key.ok()) {
    return InvalidFlag(flag, path,
                       absl::StrCat(key.status().message(),
                                    " (make one with fleetctl keys generate)"));
  }
  return key;
}

absl::StatusOr<std::vector<Ed25519PrivateKey>> LoadSigners(
    absl::string_view flag, const std::vector<std::string>& paths) {
  std::vector<Ed25519PrivateKey> keys;
  for (const std::string& path : paths) {
    absl::StatusOr<Ed25519PrivateKey> key =
        Ed25519PrivateKey::LoadPemFile(path);
    if (!key.ok()) return InvalidFlag(flag, path, key.status().message());
    keys.push_back(*std::move(key));
  }
  return keys;
}

absl::StatusOr<absl::Time> Expiry(const std::string& text, absl::Time now) {
  absl::StatusOr<absl::Duration> after = ParseHumanDuration(text);
  if (!after.ok() || *after <= absl::ZeroDuration()) {
    return InvalidFlag("--expires", text,
                       "a root must expire: give a lifetime such as 365d; "
                       "re-sign before it ends (fleetctl keys root rotate)");
  }
  return now + *after;
}

std::string KeyIdOf(const std::string& raw) {
  absl::StatusOr<Ed25519PublicKey> key = Ed25519PublicKey::FromRaw(raw);
  return key.ok() ? key->KeyId() : "<bad key>";
}

// Replaces `list` with the raw keys of the PEM files `paths`.
absl::Status SetKeys(absl::string_view flag,
                     const std::vector<std::string>& paths,
                     google::protobuf::RepeatedPtrField<std::string>* list) {
  list->Clear();
  for (const std::string& path : paths) {
    absl::StatusOr<Ed25519PublicKey> key = LoadPublic(flag, path);
    if (!key.ok()) return key.status();
    *list->Add() = key->raw();
  }
  return absl::OkStatus();
}

// Which of `signed_root`'s signatures verify with a key of `keys`.
std::vector<std::string> ValidSigners(
    const v1::SignedRoot& signed_root,
    const google::protobuf::RepeatedPtrField<std::string>& keys) {
  std::vector<std::string> ids;
  for (const v1::Signature& signature : signed_root.signatures()) {
    for (const std::string& raw : keys) {
      absl::StatusOr<Ed25519PublicKey> key = Ed25519PublicKey::FromRaw(raw);
      if (key.ok() && key->KeyId() == signature.key_id() &&
          key->Verify(signed_root.root(), signature.signature())) {
        ids.push_back(signature.key_id());
      }
    }
  }
  return ids;
}

nlohmann::json RootJson(const v1::RootMetadata& root,
                        const v1::SignedRoot& signed_root) {
  nlohmann::json root_keys = nlohmann::json::array();
  for (const std::string& raw : root.root_keys())
    root_keys.push_back(KeyIdOf(raw));
  nlohmann::json release_keys = nlohmann::json::array();
  for (const std::string& raw : root.release_keys()) {
    release_keys.push_back(KeyIdOf(raw));
  }
  nlohmann::json signatures = nlohmann::json::array();
  for (const v1::Signature& signature : signed_root.signatures()) {
    signatures.push_back(signature.key_id());
  }
  return {{"version", root.version()},
          {"created_unix_seconds", root.created_unix_seconds()},
          {"expires_unix_seconds", root.expires_unix_seconds()},
          {"root_keys", root_keys},
          {"root_threshold", root.root_threshold()},
          {"release_keys", release_keys},
          {"release_threshold", root.release_threshold()},
          {"signed_by", signatures},
          {"valid_root_signatures",
           ValidSigners(signed_root, root.root_keys()).size()}};
}

void PrintRoot(CommandContext& ctx, const std::string& path,
               const v1::RootMetadata& root, const v1::SignedRoot& signed_root,
               const std::string& verdict) {
  if (ctx.structured()) {
    nlohmann::json result = RootJson(root, signed_root);
    result["file"] = path;
    result["verdict"] = verdict;
    ctx.PrintDocument(result);
    return;
  }
  std::vector<std::string> root_ids, release_ids;
  for (const std::string& raw : root.root_keys())
    root_ids.push_back(KeyIdOf(raw));
  for (const std::string& raw : root.release_keys()) {
    release_ids.push_back(KeyIdOf(raw));
  }
  std::vector<std::string> signers;
  for (const v1::Signature& signature : signed_root.signatures()) {
    signers.push_back(signature.key_id());
  }
  const absl::Time expires = absl::FromUnixSeconds(root.expires_unix_seconds());
  ctx.out() << path << ": root v" << root.version() << "\n"
            << "  expires        "
            << absl::FormatTime("%Y-%m-%d %H:%M UTC", expires,
                                absl::UTCTimeZone())
            << (ctx.Now() > expires ? " (EXPIRED)" : "") << "\n"
            << "  root keys      " << root.root_threshold() << " of ["
            << absl::StrJoin(root_ids, ", ") << "]\n"
            << "  release keys   " << root.release_threshold() << " of ["
            << absl::StrJoin(release_ids, ", ") << "]\n"
            << "  signed by      [" << absl::StrJoin(signers, ", ") << "]\n"
            << "  " << verdict << "\n";
}

// Whether agents holding the root before `next` would accept it.
std::string RotationVerdict(const v1::SignedRoot& previous,
                            const v1::SignedRoot& next) {
  absl::StatusOr<TrustedRoot> trusted = TrustedRoot::FromPinned(previous);
  if (!trusted.ok()) {
    return absl::StrCat("cannot check against the previous root: ",
                        trusted.status().message());
  }
  absl::Status accepted = trusted->Update(next);
  if (accepted.ok()) return "ready: agents on the previous root accept it";
  return absl::StrCat(
      "not ready: ", accepted.message(),
      " — add signatures with fleetctl keys root sign --root FILE --key K");
}

std::string PinnedVerdict(const v1::SignedRoot& signed_root) {
  absl::StatusOr<TrustedRoot> trusted = TrustedRoot::FromPinned(signed_root);
  if (trusted.ok()) return "ready: valid as a pinned root";
  return absl::StrCat(
      "not ready: ", trusted.status().message(),
      " — add signatures with fleetctl keys root sign --root FILE --key K");
}

absl::StatusOr<v1::SignedRoot> LoadRoot(absl::string_view flag,
                                        const std::string& path) {
  absl::StatusOr<v1::SignedRoot> signed_root = LoadRootFile(path);
  if (!signed_root.ok()) {
    return InvalidFlag(flag, path, signed_root.status().message());
  }
  return signed_root;
}

absl::Status CheckOut(const std::string& out) {
  if (out.empty()) return UsageError("--out must name the root file to write");
  if (PathExists(out)) {
    return absl::AlreadyExistsError(absl::StrCat(
        out,
        " already exists; choose another --out (root files are never "
        "overwritten: each version is kept)"));
  }
  return absl::OkStatus();
}

absl::Status Write(const std::string& path, const v1::SignedRoot& root) {
  absl::Status written = WriteRootFile(path, root);
  if (!written.ok()) {
    return absl::Status(written.code(), absl::StrCat("cannot write ", path,
                                                     ": ", written.message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::SignedRoot> SignWith(
    const v1::RootMetadata& root, const std::vector<Ed25519PrivateKey>& keys) {
  std::vector<const Ed25519PrivateKey*> signers;
  for (const Ed25519PrivateKey& key : keys) signers.push_back(&key);
  absl::StatusOr<v1::SignedRoot> signed_root = SignRoot(root, signers);
  if (!signed_root.ok()) {
    // ValidateRoot's complaints are about the flags' combination.
    return UsageError(signed_root.status().message());
  }
  return signed_root;
}

}  // namespace

absl::Status RootInit(const RootInitOptions& options, CommandContext& ctx) {
  if (absl::Status s = CheckOut(options.out); !s.ok()) return s;
  if (options.root_pubs.empty() || options.release_pubs.empty()) {
    return UsageError(
        "--root-pub and --release-pub are both required: the keys that sign "
        "future roots and the keys that sign releases");
  }
  v1::RootMetadata root;
  root.set_version(1);
  root.set_created_unix_seconds(absl::ToUnixSeconds(ctx.Now()));
  absl::StatusOr<absl::Time> expires = Expiry(options.expires, ctx.Now());
  if (!expires.ok()) return expires.status();
  root.set_expires_unix_seconds(absl::ToUnixSeconds(*expires));
  if (absl::Status s =
          SetKeys("--root-pub", options.root_pubs, root.mutable_root_keys());
      !s.ok()) {
    return s;
  }
  if (absl::Status s = SetKeys("--release-pub", options.release_pubs,
                               root.mutable_release_keys());
      !s.ok()) {
    return s;
  }
  root.set_root_threshold(options.root_threshold);
  root.set_release_threshold(options.release_threshold);
  absl::StatusOr<std::vector<Ed25519PrivateKey>> signers =
      LoadSigners("--sign-key", options.sign_keys);
  if (!signers.ok()) return signers.status();
  absl::StatusOr<v1::SignedRoot> signed_root = SignWith(root, *signers);
  if (!signed_root.ok()) return signed_root.status();
  if (absl::Status s = Write(options.out, *signed_root); !s.ok()) return s;
  PrintRoot(ctx, options.out, root, *signed_root, PinnedVerdict(*signed_root));
  return absl::OkStatus();
}

absl::Status RootRotate(const RootRotateOptions& options, CommandContext& ctx) {
  if (options.from.empty()) {
    return UsageError("--from must name the current root file");
  }
  if (absl::Status s = CheckOut(options.out); !s.ok()) return s;
  absl::StatusOr<v1::SignedRoot> previous = LoadRoot("--from", options.from);
  if (!previous.ok()) return previous.status();
  absl::StatusOr<v1::RootMetadata> current = ParseRootUnverified(*previous);
  if (!current.ok()) {
    return InvalidFlag("--from", options.from, current.status().message());
  }

  v1::RootMetadata next = *current;
  next.set_version(current->version() + 1);
  next.set_created_unix_seconds(absl::ToUnixSeconds(ctx.Now()));
  absl::StatusOr<absl::Time> expires = Expiry(options.expires, ctx.Now());
  if (!expires.ok()) return expires.status();
  next.set_expires_unix_seconds(absl::ToUnixSeconds(*expires));
  if (!options.root_pubs.empty()) {
    if (absl::Status s =
            SetKeys("--root-pub", options.root_pubs, next.mutable_root_keys());
        !s.ok()) {
      return s;
    }
  }
  if (!options.release_pubs.empty()) {
    if (absl::Status s = SetKeys("--release-pub", options.release_pubs,
                                 next.mutable_release_keys());
        !s.ok()) {
      return s;
    }
  }
  for (const std::string& path : options.add_release_pubs) {
    absl::StatusOr<Ed25519PublicKey> key = LoadPublic("--pub", path);
    if (!key.ok()) return key.status();
    const auto& keys = next.release_keys();
    if (std::find(keys.begin(), keys.end(), key->raw()) != keys.end()) {
      return InvalidFlag("--pub", path, "that release key is already trusted");
    }
    *next.add_release_keys() = key->raw();
  }
  for (const std::string& path : options.remove_release_pubs) {
    absl::StatusOr<Ed25519PublicKey> key = LoadPublic("--pub", path);
    if (!key.ok()) return key.status();
    auto* keys = next.mutable_release_keys();
    auto it = std::find(keys->begin(), keys->end(), key->raw());
    if (it == keys->end()) {
      return InvalidFlag("--pub", path, "that release key is not trusted");
    }
    keys->erase(it);
  }
  if (options.root_threshold != 0) {
    next.set_root_threshold(options.root_threshold);
  }
  if (options.release_threshold != 0) {
    next.set_release_threshold(options.release_threshold);
  } else if (next.release_threshold() >
             static_cast<uint32_t>(next.release_keys_size())) {
    next.set_release_threshold(next.release_keys_size());
  }

  absl::StatusOr<std::vector<Ed25519PrivateKey>> signers =
      LoadSigners("--sign-key", options.sign_keys);
  if (!signers.ok()) return signers.status();
  absl::StatusOr<v1::SignedRoot> signed_root = SignWith(next, *signers);
  if (!signed_root.ok()) return signed_root.status();
  if (absl::Status s = Write(options.out, *signed_root); !s.ok()) return s;
  PrintRoot(ctx, options.out, next, *signed_root,
            RotationVerdict(*previous, *signed_root));
  return absl::OkStatus();
}

absl::Status RootSign(const RootSignOptions& options, CommandContext& ctx) {
  if (options.root.empty() || options.sign_keys.empty()) {
    return UsageError("--root and at least one --key are required");
  }
  absl::StatusOr<v1::SignedRoot> signed_root = LoadRoot("--root", options.root);
  if (!signed_root.ok()) return signed_root.status();
  absl::StatusOr<v1::RootMetadata> root = ParseRootUnverified(*signed_root);
  if (!root.ok())
    return InvalidFlag("--root", options.root, root.status().message());
  absl::StatusOr<std::vector<Ed25519PrivateKey>> signers =
      LoadSigners("--key", options.sign_keys);
  if (!signers.ok()) return signers.status();
  for (const Ed25519PrivateKey& key : *signers) {
    AddRootSignature(*signed_root, key);
  }
  if (absl::Status s = Write(options.root, *signed_root); !s.ok()) return s;
  PrintRoot(ctx, options.root, *root, *signed_root,
            PinnedVerdict(*signed_root));
  return absl::OkStatus();
}

absl::Status RootShow(const std::string& path, CommandContext& ctx) {
  absl::StatusOr<v1::SignedRoot> signed_root = LoadRoot("FILE", path);
  if (!signed_root.ok()) return signed_root.status();
  absl::StatusOr<v1::RootMetadata> root = ParseRootUnverified(*signed_root);
  if (!root.ok()) return InvalidFlag("FILE", path, root.status().message());
  PrintRoot(ctx, path, *root, *signed_root, PinnedVerdict(*signed_root));
  return absl::OkStatus();
}

absl::Status RootPush(const std::string& path, CommandContext& ctx) {
  absl::StatusOr<v1::SignedRoot> signed_root = LoadRoot("FILE", path);
  if (!signed_root.ok()) return signed_root.status();
  absl::StatusOr<v1::RootMetadata> root = ParseRootUnverified(*signed_root);
  if (!root.ok()) return InvalidFlag("FILE", path, root.status().message());
  // The keys subtree runs without credentials; this one talks to the
  // controller.
  RETURN_IF_ERROR(ctx.LoadCredentials());
  const std::string what = absl::StrCat("push root v", root->version());
  const RpcCall call = ctx.Call(
      what,
      {{grpc::StatusCode::PERMISSION_DENIED,
        absl::StrCat("root v", root->version(),
                     " lacks signatures the controller needs"),
        absl::StrCat("add them with fleetctl keys root sign --root ", path,
                     " --key ROOT_KEY (fleetctl keys root show ", path,
                     " lists who signed)")},
       {grpc::StatusCode::FAILED_PRECONDITION,
        absl::StrCat("the controller cannot take root v", root->version()),
        "push each version in order, from the controller's current version "
        "plus one (fleetctl keys root show on its --trust-root file); a "
        "controller without --trust-root must be restarted with it"}});
  v1::PushRootRequest request;
  *request.mutable_root() = *std::move(signed_root);
  v1::PushRootResponse response;
  grpc::ClientContext rpc;
  ctx.SetDeadline(rpc);
  grpc::Status status = ctx.admin().PushRoot(&rpc, request, &response);
  if (!status.ok()) return ExplainRpcError(status, call);
  if (ctx.structured()) return ctx.PrintResult(response);
  ctx.out() << "root v" << response.version() << " accepted, expires "
            << absl::FormatTime(
                   "%Y-%m-%dT%H:%M:%SZ",
                   absl::FromUnixSeconds(response.expires_unix_seconds()),
                   absl::UTCTimeZone())
            << "; sent to " << response.agents_notified()
            << " connected agent(s), the others get it when they connect\n";
  return absl::OkStatus();
}

}  // namespace fleet::cli
