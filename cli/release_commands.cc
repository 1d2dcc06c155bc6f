#include "cli/release_commands.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cli/human.h"
#include "cli/table.h"
#include "common/ed25519.h"
#include "common/files.h"
#include "common/manifest.h"
#include "common/names.h"
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

// Checks the flags; returns how long the manifest stays valid (zero: never).
absl::StatusOr<absl::Duration> ValidatePushOptions(
    const ReleasePushOptions& options) {
  RETURN_IF_ERROR(CheckFlag("--product", options.product,
                            ValidateProductName(options.product)));
  RETURN_IF_ERROR(CheckFlag("--version", options.version,
                            ValidateVersion(options.version)));
  RETURN_IF_ERROR(CheckFlag("--platform", options.platform,
                            ValidatePlatform(options.platform)));
  if (options.file.empty()) return UsageError("--file must name the artifact");
  if (options.key_file.empty()) {
    return UsageError("--key must name the release private key");
  }
  if (options.expires == "never") return absl::ZeroDuration();
  absl::StatusOr<absl::Duration> expires = ParseHumanDuration(options.expires);
  RETURN_IF_ERROR(CheckFlag("--expires", options.expires, expires.status()));
  return *expires;
}

absl::StatusOr<Ed25519PrivateKey> LoadSigningKey(const std::string& path) {
  absl::StatusOr<Ed25519PrivateKey> key = Ed25519PrivateKey::LoadPemFile(path);
  if (absl::IsNotFound(key.status())) {
    return absl::NotFoundError(absl::StrCat(
        "private key ", path,
        " does not exist; check --key or create one with `fleetctl keys "
        "generate --out DIR`"));
  }
  if (!key.ok()) {
    return absl::Status(key.status().code(),
                        absl::StrCat("cannot load private key ", path, ": ",
                                     key.status().message()));
  }
  return key;
}

// Sends the signed manifest, then the file in kPushChunkBytes chunks, on one
// PushRelease stream. Cancels the stream (ABORTED) if the bytes read now are
// not the ones that were hashed and signed.
absl::Status Upload(CommandContext& ctx, const ReleasePushOptions& options,
                    const std::string& what, const FileDigest& digest,
                    v1::SignedManifest signed_manifest, const RpcCall& call,
                    v1::Release& stored) {
  ASSIGN_OR_RETURN(ArtifactReader reader, ArtifactReader::Open(options.file));
  grpc::ClientContext rpc;
  ctx.SetDeadline(rpc, call.timeout - ctx.options().timeout);
  std::unique_ptr<grpc::ClientWriterInterface<v1::PushReleaseRequest>> writer =
      ctx.admin().PushRelease(&rpc, &stored);
  auto abandon = [&](absl::Status why) {
    rpc.TryCancel();
    (void)writer->Finish();
    return why;
  };

  v1::PushReleaseRequest request;
  *request.mutable_manifest() = std::move(signed_manifest);
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
        "release file ", options.file,
        " changed while it was being pushed; nothing was stored, push again")));
  }
  // A broken stream (stream_ok false) is explained by Finish's status.
  if (stream_ok) writer->WritesDone();
  grpc::Status status = writer->Finish();
  if (!status.ok()) return ExplainRpcError(status, call);
  return absl::OkStatus();
}

}  // namespace

absl::Status ReleasePush(const ReleasePushOptions& options,
                         CommandContext& ctx) {
  ASSIGN_OR_RETURN(const absl::Duration expires_after,
                   ValidatePushOptions(options));
  ASSIGN_OR_RETURN(const FileDigest digest, HashFile(options.file));
  if (digest.size == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("release file ", options.file, " is empty; check --file"));
  }
  ASSIGN_OR_RETURN(const Ed25519PrivateKey key,
                   LoadSigningKey(options.key_file));

  v1::ReleaseManifest manifest;
  manifest.set_product(options.product);
  manifest.set_version(options.version);
  manifest.set_platform(options.platform);
  manifest.set_sha256(DigestToBytes(digest.sha256));
  manifest.set_size(digest.size);
  const absl::Time now = ctx.Now();
  manifest.set_created_unix_seconds(absl::ToUnixSeconds(now));
  if (expires_after > absl::ZeroDuration()) {
    manifest.set_expires_unix_seconds(absl::ToUnixSeconds(now + expires_after));
  }
  absl::StatusOr<v1::SignedManifest> signed_manifest =
      SignManifest(manifest, key);
  if (!signed_manifest.ok()) {
    return absl::Status(signed_manifest.status().code(),
                        absl::StrCat("cannot sign the manifest: ",
                                     signed_manifest.status().message()));
  }

  const std::string what = absl::StrCat(options.product, " ", options.version,
                                        " (", options.platform, ")");
  const std::string key_id = key.PublicKey().KeyId();
  // Slow links need more than one request's timeout: allow 1 MiB/s.
  const absl::Duration timeout =
      ctx.options().timeout +
      absl::Seconds(static_cast<int64_t>(digest.size >> 20));
  const RpcCall call = ctx.Call(
      absl::StrCat("push release ", what), timeout,
      {{grpc::StatusCode::PERMISSION_DENIED,
        absl::StrCat("the controller does not trust key ", key_id, " (",
                     options.key_file, ") that signed ", what),
        absl::StrCat("start fleet-controller with --trust-key ",
                     MatchingPublicKeyPath(options.key_file),
                     ", or under --trust-root add it to the root (fleetctl "
                     "keys release-key add) and push that (fleetctl keys "
                     "root push)")},
       {grpc::StatusCode::ALREADY_EXISTS,
        absl::StrCat("release ", what, " already exists on the controller"),
        absl::StrCat("releases are immutable: ",
                     NextVersionHint(options.version)),
        /*with_detail=*/false}});

  v1::Release stored;
  RETURN_IF_ERROR(Upload(ctx, options, what, digest,
                         *std::move(signed_manifest), call, stored));
  if (ctx.structured()) return ctx.PrintResult(stored);
  PrintReleaseTable({&stored}, ctx);
  return absl::OkStatus();
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
