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
  absl::StatusOr<ArtifactReader> reader = ArtifactReader::Open(path);
  if (!reader.ok()) return reader.status();
  Sha256 hasher;
  FileDigest result;
  std::string buffer;
  while (true) {
    if (absl::Status s = reader->Read(kPushChunkBytes, buffer); !s.ok()) {
      return s;
    }
    if (buffer.empty()) break;
    hasher.Update(buffer);
    result.size += buffer.size();
  }
  result.sha256 = hasher.Finish();
  return result;
}

absl::Status CheckFlag(absl::string_view flag, absl::string_view value,
                       const absl::Status& valid) {
  if (valid.ok()) return valid;
  return UsageError(
      absl::StrCat("invalid ", flag, " \"", value, "\": ", valid.message()));
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

}  // namespace

absl::Status ReleasePush(const ReleasePushOptions& options,
                         CommandContext& ctx) {
  if (absl::Status s = CheckFlag("--product", options.product,
                                 ValidateProductName(options.product));
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckFlag("--version", options.version,
                                 ValidateVersion(options.version));
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckFlag("--platform", options.platform,
                                 ValidatePlatform(options.platform));
      !s.ok()) {
    return s;
  }
  absl::Duration expires_after = absl::ZeroDuration();
  if (options.expires != "never") {
    absl::StatusOr<absl::Duration> d = ParseHumanDuration(options.expires);
    if (!d.ok()) return CheckFlag("--expires", options.expires, d.status());
    expires_after = *d;
  }
  if (options.file.empty()) return UsageError("--file must name the artifact");
  if (options.key_file.empty()) {
    return UsageError("--key must name the release private key");
  }

  absl::StatusOr<FileDigest> digest = HashFile(options.file);
  if (!digest.ok()) return digest.status();
  if (digest->size == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("release file ", options.file, " is empty; check --file"));
  }
  absl::StatusOr<Ed25519PrivateKey> key =
      Ed25519PrivateKey::LoadPemFile(options.key_file);
  if (absl::IsNotFound(key.status())) {
    return absl::NotFoundError(absl::StrCat(
        "private key ", options.key_file,
        " does not exist; check --key or create one with `fleetctl keys "
        "generate --out DIR`"));
  }
  if (!key.ok()) {
    return absl::Status(
        key.status().code(),
        absl::StrCat("cannot load private key ", options.key_file, ": ",
                     key.status().message()));
  }
  const std::string key_id = key->PublicKey().KeyId();

  v1::ReleaseManifest manifest;
  manifest.set_product(options.product);
  manifest.set_version(options.version);
  manifest.set_platform(options.platform);
  manifest.set_sha256(DigestToBytes(digest->sha256));
  manifest.set_size(digest->size);
  const absl::Time now = ctx.Now();
  manifest.set_created_unix_seconds(absl::ToUnixSeconds(now));
  if (expires_after > absl::ZeroDuration()) {
    manifest.set_expires_unix_seconds(absl::ToUnixSeconds(now + expires_after));
  }
  absl::StatusOr<v1::SignedManifest> signed_manifest =
      SignManifest(manifest, *key);
  if (!signed_manifest.ok()) {
    return absl::Status(signed_manifest.status().code(),
                        absl::StrCat("cannot sign the manifest: ",
                                     signed_manifest.status().message()));
  }

  const std::string what = absl::StrCat(options.product, " ", options.version,
                                        " (", options.platform, ")");
  const absl::Duration timeout =
      ctx.options().timeout +
      absl::Seconds(static_cast<int64_t>(digest->size / (1 << 20)));
  RpcCall call = ctx.Call(
      absl::StrCat("push release ", what), timeout,
      {{grpc::StatusCode::PERMISSION_DENIED,
        absl::StrCat("the controller does not trust key ", key_id, " (",
                     options.key_file, ") that signed ", what),
        absl::StrCat("start fleet-controller with --trust-key ",
                     MatchingPublicKeyPath(options.key_file))},
       {grpc::StatusCode::ALREADY_EXISTS,
        absl::StrCat("release ", what, " already exists on the controller"),
        absl::StrCat("releases are immutable: ",
                     NextVersionHint(options.version)),
        /*with_detail=*/false}});

  grpc::ClientContext rpc;
  rpc.set_deadline(std::chrono::system_clock::now() +
                   absl::ToChronoMilliseconds(timeout));
  v1::Release stored;
  std::unique_ptr<grpc::ClientWriterInterface<v1::PushReleaseRequest>> writer =
      ctx.admin().PushRelease(&rpc, &stored);

  v1::PushReleaseRequest request;
  *request.mutable_manifest() = *std::move(signed_manifest);
  bool stream_ok = writer->Write(request);

  // Hash what is sent too: a file changed since it was signed must not be
  // offered to the controller as this release.
  absl::StatusOr<ArtifactReader> reader = ArtifactReader::Open(options.file);
  if (!reader.ok()) {
    rpc.TryCancel();
    return reader.status();
  }
  Sha256 sent_hasher;
  uint64_t sent = 0;
  const bool progress = ctx.err_is_terminal();
  while (stream_ok) {
    std::string* chunk = request.mutable_chunk();
    if (absl::Status s = reader->Read(kPushChunkBytes, *chunk); !s.ok()) {
      rpc.TryCancel();
      return s;
    }
    if (chunk->empty()) break;
    sent_hasher.Update(*chunk);
    sent += chunk->size();
    if (sent > digest->size) break;
    stream_ok = writer->Write(request);
    if (progress) DrawProgress(ctx, what, sent, digest->size);
  }
  if (progress) ctx.err() << '\n';
  if (stream_ok &&
      (sent != digest->size || sent_hasher.Finish() != digest->sha256)) {
    rpc.TryCancel();
    (void)writer->Finish();
    return absl::AbortedError(absl::StrCat(
        "release file ", options.file,
        " changed while it was being pushed; nothing was stored, push again"));
  }
  if (stream_ok) writer->WritesDone();
  grpc::Status status = writer->Finish();
  if (!status.ok()) return ExplainRpcError(status, call);

  if (ctx.json()) return ctx.PrintJson(stored);
  PrintReleaseTable({&stored}, ctx);
  return absl::OkStatus();
}

absl::Status ReleaseList(const ReleaseListOptions& options,
                         CommandContext& ctx) {
  if (!options.product.empty()) {
    if (absl::Status s = CheckFlag("--product", options.product,
                                   ValidateProductName(options.product));
        !s.ok()) {
      return s;
    }
  }
  if (!options.platform.empty()) {
    if (absl::Status s = CheckFlag("--platform", options.platform,
                                   ValidatePlatform(options.platform));
        !s.ok()) {
      return s;
    }
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

  if (ctx.json()) return ctx.PrintJson(response);
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
