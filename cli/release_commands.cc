#include "cli/release_commands.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cli/human.h"
#include "cli/manifest_file.h"
#include "cli/table.h"
#include "common/ed25519.h"
#include "common/files.h"
#include "common/manifest.h"
#include "common/names.h"
#include "common/root.h"
#include "common/semver.h"
#include "common/sha256.h"
#include "common/status_macros.h"

namespace fleet::cli {

namespace {

// The artifact file, read front to back in chunks.
class ArtifactReader {
 public:
  // NOT_FOUND naming the path if it does not exist, the errno status else.
  static absl::StatusOr<ArtifactReader> Open(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT) {
        return absl::NotFoundError(absl::StrCat(
            "release file ", path, " does not exist; check --file"));
      }
      return absl::ErrnoToStatus(
          errno, absl::StrCat("cannot open release file ", path));
    }
    return ArtifactReader(path, fd);
  }

  ArtifactReader(ArtifactReader&& other) noexcept
      : path_(std::move(other.path_)), fd_(std::exchange(other.fd_, -1)) {}
  ArtifactReader& operator=(ArtifactReader&&) = delete;
  ~ArtifactReader() {
    if (fd_ >= 0) ::close(fd_);
  }

  // Fills `buffer` (resized to the bytes read) with up to `max` bytes; an
  // empty buffer means end of file.
  absl::Status Read(size_t max, std::string& buffer) {
    buffer.resize(max);
    size_t filled = 0;
    while (filled < max) {
      ssize_t n = ::read(fd_, buffer.data() + filled, max - filled);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        return absl::ErrnoToStatus(
            errno, absl::StrCat("cannot read release file ", path_));
      }
      if (n == 0) break;
      filled += static_cast<size_t>(n);
    }
    buffer.resize(filled);
    return absl::OkStatus();
  }

 private:
  ArtifactReader(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  std::string path_;
  int fd_;
};

struct FileDigest {
  Digest sha256;
  uint64_t size = 0;
};

absl::StatusOr<FileDigest> HashFile(const std::string& path) {
  ASSIGN_OR_RETURN(ArtifactReader reader, ArtifactReader::Open(path));
  Sha256 hasher;
  FileDigest result;
  std::string buffer;
  while (true) {
    RETURN_IF_ERROR(reader.Read(kPushChunkBytes, buffer));
    if (buffer.empty()) break;
    hasher.Update(buffer);
    result.size += buffer.size();
  }
  result.sha256 = hasher.Finish();
  return result;
}

// "--key keys/release.key" is conventionally paired with keys/release.pub.
std::string MatchingPublicKeyPath(const std::string& key_file) {
  if (absl::EndsWith(key_file, ".key")) {
    return absl::StrCat(key_file.substr(0, key_file.size() - 4), ".pub");
  }
  return absl::StrCat("the .pub file made with ", key_file);
}

// Suggests the next patch version for a plain X.Y.Z; for pre-release and
// build versions the right successor is the operator's call.
std::string NextVersionHint(absl::string_view version) {
  absl::StatusOr<SemVer> v = SemVer::Parse(version);
  if (!v.ok() || !v->prerelease().empty() || !v->build().empty()) {
    return "bump --version";
  }
  return absl::StrFormat("bump --version (e.g. %d.%d.%d)", v->major(),
                         v->minor(), v->patch() + 1);
}

std::string ShortDigest(absl::string_view raw) {
  absl::StatusOr<Digest> d = DigestFromBytes(raw);
  if (!d.ok()) return "-";
  return DigestToHex(*d).substr(0, 12);
}

void PrintReleaseTable(const std::vector<const v1::Release*>& releases,
                       const CommandContext& ctx) {
  Table table({{"PRODUCT"},
               {"VERSION"},
               {"PLATFORM"},
               {"SIZE", Table::Align::kRight},
               {"SHA256"},
               {"SIGNED BY"},
               {"STORED"}});
  for (const v1::Release* r : releases) {
    std::vector<std::string> keys;
    for (const v1::Signature& sig : r->signed_manifest().signatures()) {
      keys.push_back(sig.key_id());
    }
    table.AddRow(
        {r->product(), r->version(), r->platform(), HumanSize(r->size()),
         ShortDigest(r->sha256()),
         keys.empty() ? "-" : absl::StrJoin(keys, ","),
         HumanAgo(absl::FromUnixMillis(r->created_unix_ms()), ctx.Now())});
  }
  table.Print(ctx.out());
}

// One line, redrawn in place: "pushing web 1.2.0 (linux/amd64)  3.0 MiB /
// 12.3 MiB  24%".
void DrawProgress(CommandContext& ctx, absl::string_view what, uint64_t sent,
                  uint64_t total) {
  int percent = total == 0 ? 100 : static_cast<int>(sent * 100 / total);
  ctx.err() << "\r\033[K"
            << "pushing " << what << "  " << HumanSize(sent) << " / "
            << HumanSize(total) << "  " << percent << "%" << std::flush;
}

absl::Status ValidateNames(const std::string& product,
                           const std::string& version,
                           const std::string& platform) {
  RETURN_IF_ERROR(
      CheckFlag("--product", product, ValidateProductName(product)));
  RETURN_IF_ERROR(CheckFlag("--version", version, ValidateVersion(version)));
  return CheckFlag("--platform", platform, ValidatePlatform(platform));
}

// How long a manifest stays valid; zero: never.
absl::StatusOr<absl::Duration> ParseExpires(const std::string& expires) {
  if (expires == "never") return absl::ZeroDuration();
  absl::StatusOr<absl::Duration> after = ParseHumanDuration(expires);
  RETURN_IF_ERROR(CheckFlag("--expires", expires, after.status()));
  return *after;
}

// The manifest `release prepare` and the one-step push sign: created now.
v1::ReleaseManifest BuildManifest(const std::string& product,
                                  const std::string& version,
                                  const std::string& platform,
                                  const FileDigest& digest, absl::Time now,
                                  absl::Duration expires_after,
                                  bool allows_downgrade) {
  v1::ReleaseManifest manifest;
  manifest.set_product(product);
  manifest.set_version(version);
  manifest.set_platform(platform);
  manifest.set_sha256(DigestToBytes(digest.sha256));
  manifest.set_size(digest.size);
  manifest.set_created_unix_seconds(absl::ToUnixSeconds(now));
  if (expires_after > absl::ZeroDuration()) {
    manifest.set_expires_unix_seconds(absl::ToUnixSeconds(now + expires_after));
  }
  manifest.set_allows_downgrade(allows_downgrade);
  return manifest;
}

// Hashes the artifact; INVALID_ARGUMENT for an empty one.
absl::StatusOr<FileDigest> HashArtifact(const std::string& path) {
  ASSIGN_OR_RETURN(FileDigest digest, HashFile(path));
  if (digest.size == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("release file ", path, " is empty; check --file"));
  }
  return digest;
}

// FAILED_PRECONDITION unless `digest` is the artifact `release` describes.
absl::Status CheckArtifactMatches(const std::string& file,
                                  const FileDigest& digest,
                                  const v1::ReleaseManifest& release,
                                  absl::string_view manifest_path) {
  const std::string want_hex = DigestToHex(*DigestFromBytes(release.sha256()));
  if (digest.size == release.size() && DigestToHex(digest.sha256) == want_hex) {
    return absl::OkStatus();
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "release file ", file, " is not the artifact manifest ", manifest_path,
      " was prepared for (file: ", digest.size, " bytes, sha256 ",
      DigestToHex(digest.sha256).substr(0, 16), "...; manifest: ",
      release.size(), " bytes, sha256 ", want_hex.substr(0, 16),
      "...); nothing was uploaded: give --file the artifact that was "
      "prepared, or prepare and sign the new one"));
}

// The hint for the controller refusing a push's signatures: how many it
// needs and has when its message says ("... needs valid signatures from 2
// distinct trusted release keys, has 1 ..."), or which key it does not
// trust. Nullopt for a PERMISSION_DENIED about something else (the caller's
// certificate), which ExplainRpcError words itself.
std::optional<RpcHint> SignatureRefusalHint(
    const grpc::Status& status, const ReleasePushOptions& options,
    const v1::SignedManifest& signed_manifest, absl::string_view what) {
  if (status.error_code() != grpc::StatusCode::PERMISSION_DENIED) {
    return std::nullopt;
  }
  const std::string msg_copy = status.error_message();
  const absl::string_view msg = msg_copy;
  constexpr absl::string_view kNeeds = "needs valid signatures from ";
  size_t at = msg.find(kNeeds);
  if (at != absl::string_view::npos) {
    int needed = 0, valid = 0;
    absl::string_view rest = msg.substr(at + kNeeds.size());
    size_t space = rest.find(' ');
    size_t has = rest.find(", has ");
    if (space != absl::string_view::npos && has != absl::string_view::npos &&
        absl::SimpleAtoi(rest.substr(0, space), &needed)) {
      absl::string_view count = rest.substr(has + 6);
      (void)absl::SimpleAtoi(count.substr(0, count.find(' ')), &valid);
    }
    std::string fix =
        options.manifest.empty()
            ? absl::StrCat(
                  "give --key once for each release key needed, or prepare "
                  "the release and collect signatures offline (fleetctl "
                  "release prepare, then fleetctl keys sign --key KEY FILE "
                  "on each signer's machine)")
            : absl::StrCat(
                  "collect more signatures from the root's release "
                  "keys (fleetctl keys sign --key KEY ",
                  options.manifest,
                  ", once per signer), then push "
                  "again");
    return RpcHint{grpc::StatusCode::PERMISSION_DENIED,
                   absl::StrCat("not enough valid signatures on ", what, ": ",
                                needed, " needed, ", valid, " valid"),
                   std::move(fix)};
  }
  if (!absl::StrContains(msg, "signature") &&
      !absl::StrContains(msg, "trusted release keys")) {
    return std::nullopt;
  }
  std::vector<std::string> key_ids;
  for (const v1::Signature& sig : signed_manifest.signatures()) {
    key_ids.push_back(sig.key_id());
  }
  const std::string key_file =
      options.key_files.size() == 1 ? options.key_files[0] : "";
  return RpcHint{
      grpc::StatusCode::PERMISSION_DENIED,
      absl::StrCat("the controller does not trust key",
                   key_ids.size() == 1 ? " " : "s ",
                   absl::StrJoin(key_ids, ", "),
                   key_file.empty() ? "" : absl::StrCat(" (", key_file, ")"),
                   " that signed ", what),
      absl::StrCat("start fleet-controller with --trust-key ",
                   key_file.empty() ? "the matching .pub file"
                                    : MatchingPublicKeyPath(key_file),
                   ", or under --trust-root add it to the root (fleetctl keys "
                   "release-key add) and push that (fleetctl keys root push)")};
}

// Sends the signed manifest, then the file in kPushChunkBytes chunks, on one
// PushRelease stream. Cancels the stream (ABORTED) if the bytes read now are
// not the ones that were hashed and signed. `rpc_status` gets the stream's
// status when it was finished normally.
absl::Status Upload(CommandContext& ctx, const std::string& file,
                    const std::string& what, const FileDigest& digest,
                    const v1::SignedManifest& signed_manifest,
                    absl::Duration timeout, v1::Release& stored,
                    grpc::Status& rpc_status) {
  ASSIGN_OR_RETURN(ArtifactReader reader, ArtifactReader::Open(file));
  grpc::ClientContext rpc;
  ctx.SetDeadline(rpc, timeout - ctx.options().timeout);
  std::unique_ptr<grpc::ClientWriterInterface<v1::PushReleaseRequest>> writer =
      ctx.admin().PushRelease(&rpc, &stored);
  auto abandon = [&](absl::Status why) {
    rpc.TryCancel();
    (void)writer->Finish();
    return why;
  };

  v1::PushReleaseRequest request;
  *request.mutable_manifest() = signed_manifest;
  bool stream_ok = writer->Write(request);
  Sha256 sent_hasher;
  uint64_t sent = 0;
  const bool progress = ctx.err_is_terminal();
  while (stream_ok && sent <= digest.size) {
    std::string* chunk = request.mutable_chunk();
    if (absl::Status s = reader.Read(kPushChunkBytes, *chunk); !s.ok()) {
      if (progress) ctx.err() << '\n';
      return abandon(s);
    }
    if (chunk->empty()) break;
    sent_hasher.Update(*chunk);
    sent += chunk->size();
    if (sent > digest.size) break;  // grew since hashing: never send it
    stream_ok = writer->Write(request);
    if (progress) DrawProgress(ctx, what, sent, digest.size);
  }
  if (progress) ctx.err() << '\n';
  if (stream_ok &&
      (sent != digest.size || sent_hasher.Finish() != digest.sha256)) {
    return abandon(absl::AbortedError(absl::StrCat(
        "release file ", file,
        " changed while it was being pushed; nothing was stored, push again")));
  }
  // A broken stream (stream_ok false) is explained by Finish's status.
  if (stream_ok) writer->WritesDone();
  rpc_status = writer->Finish();
  return absl::OkStatus();
}

// The manifest a one-step push signs, with every --key's signature.
absl::StatusOr<v1::SignedManifest> SignHere(const ReleasePushOptions& options,
                                            const std::string& platform,
                                            const FileDigest& digest,
                                            CommandContext& ctx) {
  ASSIGN_OR_RETURN(const absl::Duration expires_after,
                   ParseExpires(options.expires));
  ASSIGN_OR_RETURN(const std::vector<Ed25519PrivateKey> keys,
                   LoadSigningKeys("--key", options.key_files));
  const v1::ReleaseManifest manifest =
      BuildManifest(options.product, options.version, platform, digest,
                    ctx.Now(), expires_after, options.allows_downgrade);
  absl::StatusOr<v1::SignedManifest> signed_manifest =
      SignManifest(manifest, keys.front());
  if (!signed_manifest.ok()) {
    return absl::Status(signed_manifest.status().code(),
                        absl::StrCat("cannot sign the manifest: ",
                                     signed_manifest.status().message()));
  }
  for (size_t i = 1; i < keys.size(); ++i) {
    AddSignature(*signed_manifest, keys[i]);
  }
  return signed_manifest;
}

// Loads a prepared manifest file and checks it against the artifact before
// anything is sent.
absl::StatusOr<ManifestFile> LoadForPush(const ReleasePushOptions& options,
                                         const FileDigest& digest,
                                         absl::Time now) {
  ASSIGN_OR_RETURN(ManifestFile file, LoadManifestFile(options.manifest));
  if (file.signed_manifest.signatures().empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "manifest file ", options.manifest,
        " has no signatures; nothing was uploaded: sign it first with "
        "`fleetctl keys sign --key KEY ",
        options.manifest, "` (as many signers as the root's threshold)"));
  }
  if (ManifestExpired(file.release, now)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "manifest file ", options.manifest, " expired at ",
        ManifestTime(file.release.expires_unix_seconds()),
        "; nothing was uploaded: prepare the release again (fleetctl release "
        "prepare) and have it signed again"));
  }
  RETURN_IF_ERROR(CheckArtifactMatches(options.file, digest, file.release,
                                       options.manifest));
  return file;
}

// UsageError for the one-step flags given together with --manifest.
absl::Status CheckManifestModeFlags(const ReleasePushOptions& options) {
  const std::pair<const char*, bool> given[] = {
      {"--product", !options.product.empty()},
      {"--version", !options.version.empty()},
      {"--platform", !options.platform.empty()},
      {"--key", !options.key_files.empty()},
      {"--allows-downgrade", options.allows_downgrade},
  };
  for (const auto& [flag, set] : given) {
    if (set) {
      return UsageError(absl::StrCat(
          flag,
          " cannot be used with --manifest: the manifest file already "
          "says it (and its signatures cover it); drop ",
          flag));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ReleasePush(const ReleasePushOptions& options,
                         CommandContext& ctx) {
  if (options.file.empty()) return UsageError("--file must name the artifact");
  const bool prepared = !options.manifest.empty();
  std::string platform = options.platform;
  if (prepared) {
    RETURN_IF_ERROR(CheckManifestModeFlags(options));
  } else {
    if (options.product.empty() || options.version.empty()) {
      return UsageError(
          absl::StrCat(options.product.empty() ? "--product" : "--version",
                       " is required (or push a prepared, signed --manifest)"));
    }
    if (platform.empty()) platform = HostPlatform();
    RETURN_IF_ERROR(ValidateNames(options.product, options.version, platform));
    RETURN_IF_ERROR(ParseExpires(options.expires).status());
    if (options.key_files.empty()) {
      return UsageError(
          "--key must name a release private key (repeat it to sign with "
          "several), or push a prepared, signed --manifest");
    }
  }
  ASSIGN_OR_RETURN(const FileDigest digest, HashArtifact(options.file));

  v1::SignedManifest signed_manifest;
  v1::ReleaseManifest release;
  if (prepared) {
    ASSIGN_OR_RETURN(ManifestFile file,
                     LoadForPush(options, digest, ctx.Now()));
    signed_manifest = std::move(file.signed_manifest);
    release = std::move(file.release);
  } else {
    ASSIGN_OR_RETURN(signed_manifest, SignHere(options, platform, digest, ctx));
    // Serialized just above by SignManifest, so it parses.
    (void)release.ParseFromString(signed_manifest.manifest());
  }

  const std::string what = absl::StrCat(
      release.product(), " ", release.version(), " (", release.platform(), ")");
  // Slow links need more than one request's timeout: allow 1 MiB/s.
  const absl::Duration timeout =
      ctx.options().timeout +
      absl::Seconds(static_cast<int64_t>(digest.size >> 20));
  v1::Release stored;
  grpc::Status rpc_status;
  RETURN_IF_ERROR(Upload(ctx, options.file, what, digest, signed_manifest,
                         timeout, stored, rpc_status));
  if (!rpc_status.ok()) {
    std::vector<RpcHint> hints = {
        {grpc::StatusCode::ALREADY_EXISTS,
         absl::StrCat("release ", what, " already exists on the controller"),
         absl::StrCat("releases are immutable: ",
                      prepared ? "prepare and sign a new version"
                               : NextVersionHint(release.version())),
         /*with_detail=*/false}};
    if (std::optional<RpcHint> hint =
            SignatureRefusalHint(rpc_status, options, signed_manifest, what)) {
      hints.push_back(*std::move(hint));
    }
    return ExplainRpcError(
        rpc_status, ctx.Call(absl::StrCat("push release ", what), timeout,
                             std::move(hints)));
  }
  if (ctx.structured()) return ctx.PrintResult(stored);
  PrintReleaseTable({&stored}, ctx);
  return absl::OkStatus();
}

absl::Status ReleasePrepare(const ReleasePrepareOptions& options,
                            CommandContext& ctx) {
  const std::string platform =
      options.platform.empty() ? HostPlatform() : options.platform;
  RETURN_IF_ERROR(ValidateNames(options.product, options.version, platform));
  ASSIGN_OR_RETURN(const absl::Duration expires_after,
                   ParseExpires(options.expires));
  if (options.file.empty()) return UsageError("--file must name the artifact");
  if (options.out.empty()) {
    return UsageError("--out must name the manifest file to write");
  }
  if (!options.force && PathExists(options.out)) {
    return absl::AlreadyExistsError(absl::StrCat(
        "manifest file ", options.out,
        " already exists; choose another --out, or give --force to replace "
        "it (its signatures are lost)"));
  }
  ASSIGN_OR_RETURN(const FileDigest digest, HashArtifact(options.file));

  ManifestFile file;
  file.release =
      BuildManifest(options.product, options.version, platform, digest,
                    ctx.Now(), expires_after, options.allows_downgrade);
  RETURN_IF_ERROR(ValidateManifest(file.release));
  if (!file.release.SerializeToString(
          file.signed_manifest.mutable_manifest())) {
    return absl::InternalError("cannot serialize the release manifest");
  }
  if (absl::Status s = WriteManifestFile(options.out, file, options.force);
      !s.ok()) {
    if (absl::IsAlreadyExists(s)) {
      return absl::AlreadyExistsError(
          absl::StrCat("manifest file ", options.out,
                       " already exists; choose another --out, or give "
                       "--force to replace it"));
    }
    return absl::Status(s.code(), absl::StrCat("cannot write manifest file ",
                                               options.out, ": ", s.message()));
  }

  if (ctx.structured()) {
    ctx.PrintDocument(ManifestFileDocument(file));
    return absl::OkStatus();
  }
  ctx.out() << "prepared " << options.out << " (unsigned)\n"
            << DescribeRelease(file.release, ctx.Now()) << "next:\n"
            << "  1. each signer reviews it and runs `fleetctl keys sign --key "
               "KEY "
            << options.out << "` (as many as the root's threshold)\n"
            << "  2. `fleetctl release push --manifest " << options.out
            << " --file " << options.file << "`\n";
  return absl::OkStatus();
}

absl::Status ReleaseVerify(const ReleaseVerifyOptions& options,
                           CommandContext& ctx) {
  if (options.manifest.empty()) {
    return UsageError("--manifest must name the manifest file to verify");
  }
  if (options.root.empty() == options.trust_keys.empty()) {
    return UsageError(
        "give either --root ROOT_FILE (the root agents trust) or --trust-key "
        "PUB (repeatable), not both and not neither");
  }
  ASSIGN_OR_RETURN(const ManifestFile file, LoadManifestFile(options.manifest));
  const absl::Time now = ctx.Now();

  // What to verify with: the root's release keys and threshold, or the
  // --trust-key keys with a threshold of 1 (fleet-controller --trust-key).
  std::optional<TrustedRoot> root;
  TrustedKeys keys;
  int threshold = 1;
  std::string trust_name = "the --trust-key files";
  if (!options.root.empty()) {
    absl::StatusOr<v1::SignedRoot> signed_root = LoadRootFile(options.root);
    if (!signed_root.ok()) {
      return UsageError(absl::StrCat("cannot use --root ", options.root, ": ",
                                     signed_root.status().message()));
    }
    absl::StatusOr<TrustedRoot> trusted = TrustedRoot::FromPinned(*signed_root);
    if (!trusted.ok()) {
      return absl::Status(
          trusted.status().code(),
          absl::StrCat("root file ", options.root,
                       " is not a usable root: ", trusted.status().message(),
                       "; sign it with `fleetctl keys root sign`"));
    }
    root = *std::move(trusted);
    keys = root->release_keys();
    threshold = static_cast<int>(root->metadata().release_threshold());
    trust_name = absl::StrCat("root v", root->version());
  } else {
    for (const std::string& path : options.trust_keys) {
      absl::StatusOr<Ed25519PublicKey> key =
          Ed25519PublicKey::LoadPemFile(path);
      if (!key.ok()) {
        return UsageError(absl::StrCat("cannot use --trust-key ", path, ": ",
                                       key.status().message()));
      }
      keys.Add(*std::move(key));
    }
  }

  const std::vector<SignatureVerdict> verdicts =
      CheckSignatures(file.signed_manifest, keys);
  const int valid = CountValid(verdicts);
  std::vector<std::string> missing;  // trusted keys that have not signed
  for (const std::string& id : keys.KeyIds()) {
    bool signed_it = false;
    for (const SignatureVerdict& v : verdicts) {
      signed_it |= v.key_id == id && v.state == SignatureVerdict::State::kValid;
    }
    if (!signed_it) missing.push_back(id);
  }

  std::optional<FileDigest> digest;
  if (!options.file.empty()) {
    ASSIGN_OR_RETURN(digest, HashArtifact(options.file));
  }

  // The verdict, in the order an agent would refuse.
  absl::Status verdict = absl::OkStatus();
  if (valid < threshold) {
    verdict = absl::PermissionDeniedError(absl::StrCat(
        "manifest file ", options.manifest, " has ", valid,
        " valid signature(s) trusted by ", trust_name, ", ", threshold,
        " needed; sign it with ", threshold - valid, " more of [",
        absl::StrJoin(missing, ", "), "] (fleetctl keys sign --key KEY ",
        options.manifest, ")"));
  } else if (root && root->Expired(now)) {
    verdict = absl::FailedPreconditionError(absl::StrCat(
        trust_name, " (", options.root, ") expired at ",
        ManifestTime(absl::ToUnixSeconds(root->expires())),
        "; agents refuse new installs until a new root is signed and pushed "
        "(fleetctl keys root rotate, fleetctl keys root push)"));
  } else if (ManifestExpired(file.release, now)) {
    verdict = absl::FailedPreconditionError(
        absl::StrCat("manifest file ", options.manifest, " expired at ",
                     ManifestTime(file.release.expires_unix_seconds()),
                     "; prepare the release again and have it signed again"));
  } else if (digest) {
    verdict = CheckArtifactMatches(options.file, *digest, file.release,
                                   options.manifest);
  }
  if (verdict.ok()) {
    // The library check agents run, so this command cannot drift from it.
    absl::StatusOr<v1::ReleaseManifest> checked =
        root ? root->VerifyRelease(file.signed_manifest, now)
             : VerifyManifest(file.signed_manifest, keys, now, threshold);
    if (!checked.ok()) verdict = checked.status();
  }

  if (ctx.structured()) {
    nlohmann::json doc = ManifestFileDocument(file);
    nlohmann::json checks = nlohmann::json::array();
    for (const SignatureVerdict& v : verdicts) {
      checks.push_back(
          {{"key_id", v.key_id},
           {"state", v.state == SignatureVerdict::State::kValid ? "valid"
                     : v.state == SignatureVerdict::State::kBadSignature
                         ? "bad_signature"
                         : "unknown_key"}});
    }
    doc["verification"] = {
        {"trusted_by", trust_name}, {"threshold", threshold},
        {"valid", valid},           {"signatures", checks},
        {"verified", verdict.ok()}, {"error", std::string(verdict.message())}};
    ctx.PrintDocument(doc);
  } else {
    ctx.out() << DescribeRelease(file.release, now) << "signatures ("
              << trust_name << ", " << threshold << " needed):\n";
    if (verdicts.empty()) ctx.out() << "  none\n";
    for (const SignatureVerdict& v : verdicts) {
      ctx.out() << "  " << v.key_id << "  "
                << (v.state == SignatureVerdict::State::kValid ? "valid"
                    : v.state == SignatureVerdict::State::kBadSignature
                        ? "BAD SIGNATURE"
                        : absl::StrCat("not a release key of ", trust_name))
                << '\n';
    }
    if (verdict.ok()) {
      ctx.out() << "verified: " << valid << " of " << threshold
                << " needed valid signatures"
                << (digest ? ", and the file matches" : "") << '\n';
    }
  }
  return verdict;
}

absl::Status ReleaseList(const ReleaseListOptions& options,
                         CommandContext& ctx) {
  if (!options.product.empty()) {
    RETURN_IF_ERROR(CheckFlag("--product", options.product,
                              ValidateProductName(options.product)));
  }
  if (!options.platform.empty()) {
    RETURN_IF_ERROR(CheckFlag("--platform", options.platform,
                              ValidatePlatform(options.platform)));
  }
  v1::ListReleasesRequest request;
  request.set_product(options.product);
  request.set_platform(options.platform);
  v1::ListReleasesResponse response;
  grpc::ClientContext rpc;
  ctx.SetDeadline(rpc);
  grpc::Status status = ctx.admin().ListReleases(&rpc, request, &response);
  if (!status.ok()) {
    return ExplainRpcError(status, ctx.Call("list releases"));
  }

  if (ctx.structured()) return ctx.PrintResult(response);
  if (response.releases().empty()) {
    ctx.err() << "no releases found; push one with `fleetctl release push`\n";
    return absl::OkStatus();
  }
  std::vector<const v1::Release*> releases;
  for (const v1::Release& r : response.releases()) releases.push_back(&r);
  PrintReleaseTable(releases, ctx);
  return absl::OkStatus();
}

}  // namespace fleet::cli
