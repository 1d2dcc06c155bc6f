#include "cli/release_commands.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "cli/command_context.h"
#include "cli/errors.h"
#include "cli/keys_commands.h"
#include "cli/manifest_file.h"
#include "cli/testing/fake_admin_service.h"
#include "common/ed25519.h"
#include "common/files.h"
#include "common/manifest.h"
#include "common/sha256.h"
#include "common/testing/fake_clock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace fleet::cli {
namespace {

using ::fleet::cli::testing::FakeAdminServer;
using ::fleet::cli::testing::PushRecord;

std::string MakeTempDir() {
  std::string pattern = ::testing::TempDir() + "/release_test_XXXXXX";
  EXPECT_NE(mkdtemp(pattern.data()), nullptr);
  return pattern;
}

void WriteFile(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary);
  out << content;
}

// Bytes that differ at every offset, so a reordered chunk changes the digest.
std::string Artifact(size_t size) {
  std::string data(size, '\0');
  for (size_t i = 0; i < size; ++i)
    data[i] = static_cast<char>(i * 7 + i / 251);
  return data;
}

class ReleaseCommandsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeTempDir();
    GlobalOptions options;
    CommandContext ctx(options, io_);
    ASSERT_TRUE(KeysGenerate({.out_dir = dir_ + "/keys"}, ctx).ok());
    out_.str("");
    key_file_ = dir_ + "/keys/release.key";
    artifact_ = Artifact(2 * kPushChunkBytes + kPushChunkBytes / 2);
    WriteFile(dir_ + "/web", artifact_);
  }

  ReleasePushOptions PushOptions() {
    ReleasePushOptions options;
    options.product = "web";
    options.version = "1.2.0";
    options.platform = "linux/amd64";
    options.file = dir_ + "/web";
    options.key_files = {key_file_};
    return options;
  }

  absl::Status Push(const ReleasePushOptions& push,
                    OutputFormat format = OutputFormat::kTable) {
    GlobalOptions options;
    options.controller = server_.address();
    options.output = format;
    CommandContext ctx(options, io_);
    return ReleasePush(push, ctx);
  }

  absl::Status List(const ReleaseListOptions& list,
                    OutputFormat format = OutputFormat::kTable) {
    GlobalOptions options;
    options.controller = server_.address();
    options.output = format;
    CommandContext ctx(options, io_);
    return ReleaseList(list, ctx);
  }

  FakeAdminServer server_;
  std::string dir_;
  std::string key_file_;
  std::string artifact_;
  std::ostringstream out_;
  std::ostringstream err_;
  FakeClock clock_;
  Io io_{out_, err_, false, clock_};
};

TEST_F(ReleaseCommandsTest, InvalidFlagsFailAsUsageErrorsBeforeAnyRpc) {
  struct Case {
    const char* flag;
    void (*mutate)(ReleasePushOptions&);
  };
  const Case cases[] = {
      {"--product", [](ReleasePushOptions& o) { o.product = "Web/../x"; }},
      {"--version", [](ReleasePushOptions& o) { o.version = "1.0"; }},
      {"--version", [](ReleasePushOptions& o) { o.version = "v1.0.0"; }},
      {"--platform", [](ReleasePushOptions& o) { o.platform = "linux/sparc"; }},
      {"--platform", [](ReleasePushOptions& o) { o.platform = "amd64"; }},
      {"--expires", [](ReleasePushOptions& o) { o.expires = "soon"; }},
      {"--file", [](ReleasePushOptions& o) { o.file = ""; }},
      {"--key", [](ReleasePushOptions& o) { o.key_files.clear(); }},
  };
  for (const Case& c : cases) {
    ReleasePushOptions options = PushOptions();
    c.mutate(options);
    absl::Status s = Push(options);
    EXPECT_TRUE(IsUsageError(s)) << c.flag << ": " << s;
    EXPECT_NE(s.message().find(c.flag), std::string::npos) << s.message();
  }
  EXPECT_EQ(server_.service().calls(), 0);
}

TEST_F(ReleaseCommandsTest, MissingFileFailsBeforeAnyRpcNamingThePath) {
  ReleasePushOptions options = PushOptions();
  options.file = dir_ + "/no-such-binary";
  absl::Status s = Push(options);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ExitCodeFor(s), kExitFailed);
  EXPECT_EQ(s.message(), absl::StrCat("release file ", dir_,
                                      "/no-such-binary does not exist; check "
                                      "--file"));
  EXPECT_EQ(server_.service().calls(), 0);
}

TEST_F(ReleaseCommandsTest, MissingKeyFailsBeforeAnyRpcSayingHowToMakeOne) {
  ReleasePushOptions options = PushOptions();
  options.key_files = {dir_ + "/missing.key"};
  absl::Status s = Push(options);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(s.message().find(dir_ + "/missing.key"), std::string::npos);
  EXPECT_NE(s.message().find("fleetctl keys generate"), std::string::npos);
  EXPECT_EQ(server_.service().calls(), 0);
}

TEST_F(ReleaseCommandsTest, PublicKeyGivenAsKeyIsRefusedBeforeAnyRpc) {
  ReleasePushOptions options = PushOptions();
  options.key_files = {dir_ + "/keys/release.pub"};
  absl::Status s = Push(options);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("cannot load private key"), std::string::npos);
  EXPECT_EQ(server_.service().calls(), 0);
}

TEST_F(ReleaseCommandsTest, EmptyFileFailsBeforeAnyRpc) {
  WriteFile(dir_ + "/empty", "");
  ReleasePushOptions options = PushOptions();
  options.file = dir_ + "/empty";
  absl::Status s = Push(options);
  EXPECT_NE(s.message().find("is empty"), std::string::npos) << s;
  EXPECT_EQ(server_.service().calls(), 0);
}

TEST_F(ReleaseCommandsTest, PushSendsSignedManifestThenTheFileInChunks) {
  server_.service().SetStoredAtMs(absl::ToUnixMillis(clock_.Now()));
  ASSERT_TRUE(Push(PushOptions()).ok()) << err_.str();

  std::optional<PushRecord> push = server_.service().last_push();
  ASSERT_TRUE(push.has_value());
  EXPECT_TRUE(push->manifest_first);
  EXPECT_EQ(push->manifests, 1);
  EXPECT_EQ(push->chunk_sizes,
            (std::vector<size_t>{kPushChunkBytes, kPushChunkBytes,
                                 kPushChunkBytes / 2}));
  EXPECT_TRUE(push->artifact == artifact_);

  // The controller (and every agent) can verify it with the public key.
  TrustedKeys keys;
  ASSERT_TRUE(keys.AddPemFile(dir_ + "/keys/release.pub").ok());
  absl::StatusOr<v1::ReleaseManifest> manifest =
      VerifyManifest(push->manifest, keys, clock_.Now());
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  EXPECT_EQ(manifest->product(), "web");
  EXPECT_EQ(manifest->version(), "1.2.0");
  EXPECT_EQ(manifest->platform(), "linux/amd64");
  EXPECT_EQ(manifest->size(), artifact_.size());
  EXPECT_EQ(manifest->sha256(), DigestToBytes(Sha256Of(artifact_)));
  EXPECT_EQ(manifest->created_unix_seconds(),
            absl::ToUnixSeconds(clock_.Now()));
  EXPECT_EQ(manifest->expires_unix_seconds(),
            absl::ToUnixSeconds(clock_.Now() + absl::Hours(90 * 24)));

  const std::string digest_prefix =
      DigestToHex(Sha256Of(artifact_)).substr(0, 12);
  EXPECT_EQ(out_.str(),
            absl::StrCat(
                "PRODUCT   VERSION   PLATFORM         SIZE   SHA256  "
                "       SIGNED BY          STORED\n",
                "web       1.2.0     linux/amd64   2.5 MiB   ", digest_prefix,
                "   ", push->manifest.signatures(0).key_id(), "   just now\n"));
  EXPECT_EQ(err_.str(), "");  // not a terminal: no progress line
}

// Writes `content` to the FIFO at `path` once a reader opens it; gives up
// after 10 s without a reader.
void ServeFifoOnce(const std::string& path, const std::string& content) {
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  int fd = -1;
  while ((fd = open(path.c_str(), O_WRONLY | O_NONBLOCK)) < 0 &&
         errno == ENXIO && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  if (fd < 0) return;
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  for (size_t done = 0; done < content.size();) {
    ssize_t n = write(fd, content.data() + done, content.size() - done);
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  close(fd);
}

// True while some descriptor of this process refers to `path`.
bool OpenInThisProcess(const std::string& path) {
  const std::filesystem::path target = std::filesystem::canonical(path);
  std::error_code ec;
  for (const auto& entry :
       std::filesystem::directory_iterator("/proc/self/fd", ec)) {
    if (std::filesystem::read_symlink(entry.path(), ec) == target) return true;
  }
  return false;
}

TEST_F(ReleaseCommandsTest, FileChangedAfterSigningIsNeverOfferedAsTheRelease) {
  // fleetctl reads the file twice: to hash and sign it, then to upload it.
  // A FIFO hands each pass different bytes of the same size.
  const std::string fifo = dir_ + "/changing";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  const std::string signed_bytes(3 * kPushChunkBytes / 2, 'a');
  const std::string uploaded_bytes(3 * kPushChunkBytes / 2, 'b');
  std::thread writer([&] {
    ServeFifoOnce(fifo, signed_bytes);
    // Reopening before the hashing pass has closed its end would extend
    // that pass instead of starting the next.
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (OpenInThisProcess(fifo) && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(1));
    }
    ServeFifoOnce(fifo, uploaded_bytes);
  });
  ReleasePushOptions options = PushOptions();
  options.file = fifo;
  absl::Status s = Push(options);
  writer.join();

  EXPECT_EQ(s.code(), absl::StatusCode::kAborted) << s;
  EXPECT_EQ(s.message(), absl::StrCat("release file ", fifo,
                                      " changed while it was being pushed; "
                                      "nothing was stored, push again"));
  EXPECT_EQ(out_.str(), "");
}

TEST_F(ReleaseCommandsTest, ExpiresNeverLeavesExpiryUnset) {
  ReleasePushOptions options = PushOptions();
  options.expires = "never";
  ASSERT_TRUE(Push(options).ok());
  v1::ReleaseManifest manifest;
  ASSERT_TRUE(manifest.ParseFromString(
      server_.service().last_push()->manifest.manifest()));
  EXPECT_EQ(manifest.expires_unix_seconds(), 0);
}

TEST_F(ReleaseCommandsTest, ProgressLineOnlyWhenStderrIsATerminal) {
  Io terminal{out_, err_, true, clock_};
  GlobalOptions options;
  options.controller = server_.address();
  CommandContext ctx(options, terminal);
  ASSERT_TRUE(ReleasePush(PushOptions(), ctx).ok());
  EXPECT_NE(err_.str().find("pushing web 1.2.0 (linux/amd64)"),
            std::string::npos);
  EXPECT_NE(err_.str().find("2.5 MiB / 2.5 MiB  100%"), std::string::npos)
      << err_.str();
  EXPECT_EQ(out_.str().find("pushing"), std::string::npos);
}

TEST_F(ReleaseCommandsTest, JsonPrintsTheStoredReleaseWithProtoFieldNames) {
  ASSERT_TRUE(Push(PushOptions(), OutputFormat::kJson).ok());
  nlohmann::json release = nlohmann::json::parse(out_.str());
  EXPECT_EQ(release["product"], "web");
  EXPECT_EQ(release["version"], "1.2.0");
  EXPECT_EQ(release["size"], std::to_string(artifact_.size()));
  EXPECT_TRUE(release.contains("signed_manifest"));
  EXPECT_TRUE(release.contains("created_unix_ms"));  // defaults included
}

TEST_F(ReleaseCommandsTest, UntrustedKeyNamesKeyIdAndTrustKeyFix) {
  server_.service().FailWith(grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                                          "no trusted signature"));
  absl::Status s = Push(PushOptions());
  absl::StatusOr<Ed25519PublicKey> pub =
      Ed25519PublicKey::LoadPemFile(dir_ + "/keys/release.pub");
  ASSERT_TRUE(pub.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ExitCodeFor(s), kExitFailed);
  EXPECT_EQ(s.message(),
            absl::StrCat("the controller does not trust key ", pub->KeyId(),
                         " (", key_file_,
                         ") that signed web 1.2.0 (linux/amd64) (no trusted "
                         "signature); start fleet-controller with "
                         "--trust-key ",
                         dir_,
                         "/keys/release.pub, or under --trust-root add it to "
                         "the root (fleetctl keys release-key add) and push "
                         "that (fleetctl keys root push)"));
}

TEST_F(ReleaseCommandsTest, ExistingReleaseSaysToBumpTheVersion) {
  server_.service().FailWith(
      grpc::Status(grpc::StatusCode::ALREADY_EXISTS, "stored"));
  absl::Status s = Push(PushOptions());
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(s.message(),
            "release web 1.2.0 (linux/amd64) already exists on the "
            "controller; releases are immutable: bump --version (e.g. 1.2.1)");
}

TEST_F(ReleaseCommandsTest, ListPrintsAlignedTableAndSendsFilters) {
  v1::ListReleasesResponse response;
  const int64_t now_ms = absl::ToUnixMillis(clock_.Now());
  v1::Release* a = response.add_releases();
  a->set_product("web");
  a->set_version("1.10.0");
  a->set_platform("linux/amd64");
  a->set_size(12'897'485);
  a->set_sha256(DigestToBytes(Sha256Of("a")));
  a->mutable_signed_manifest()->add_signatures()->set_key_id(
      "00112233aabbccdd");
  a->set_created_unix_ms(now_ms - 180'000);
  v1::Release* b = response.add_releases();
  b->set_product("web");
  b->set_version("1.9.0");
  b->set_platform("linux/amd64");
  b->set_size(900);
  b->set_sha256(DigestToBytes(Sha256Of("b")));
  b->set_created_unix_ms(now_ms - 12'000);
  server_.service().SetReleases(response);

  ASSERT_TRUE(List({.product = "web", .platform = "linux/amd64"}).ok());
  EXPECT_EQ(out_.str(),
            absl::StrCat(
                "PRODUCT   VERSION   PLATFORM          SIZE   SHA256         "
                "SIGNED BY          STORED\n"
                "web       1.10.0    linux/amd64   12.3 MiB   ",
                DigestToHex(Sha256Of("a")).substr(0, 12),
                "   00112233aabbccdd   3m ago\n"
                "web       1.9.0     linux/amd64      900 B   ",
                DigestToHex(Sha256Of("b")).substr(0, 12),
                "   -                  12s ago\n"));
  ASSERT_TRUE(server_.service().last_list_releases().has_value());
  EXPECT_EQ(server_.service().last_list_releases()->product(), "web");
  EXPECT_EQ(server_.service().last_list_releases()->platform(), "linux/amd64");
}

TEST_F(ReleaseCommandsTest, EmptyListPrintsANoteOnStderrOnly) {
  ASSERT_TRUE(List({}).ok());
  EXPECT_EQ(out_.str(), "");
  EXPECT_NE(err_.str().find("no releases found"), std::string::npos);
}

TEST_F(ReleaseCommandsTest, ListJsonIsTheResponse) {
  v1::ListReleasesResponse response;
  response.add_releases()->set_product("web");
  server_.service().SetReleases(response);
  ASSERT_TRUE(List({}, OutputFormat::kJson).ok());
  nlohmann::json json = nlohmann::json::parse(out_.str());
  ASSERT_EQ(json["releases"].size(), 1u);
  EXPECT_EQ(json["releases"][0]["product"], "web");
}

TEST_F(ReleaseCommandsTest, ListWithBadFilterIsAUsageError) {
  EXPECT_TRUE(IsUsageError(List({.product = "", .platform = "plan9/amd64"})));
  EXPECT_EQ(server_.service().calls(), 0);
}

// Offline signing: prepare, then push --manifest. The recording server
// shows what reached the wire, and that refusals happen before any RPC.
class OfflineSigningTest : public ReleaseCommandsTest {
 protected:
  void SetUp() override {
    ReleaseCommandsTest::SetUp();
    GlobalOptions options;
    CommandContext ctx(options, io_);
    ASSERT_TRUE(KeysGenerate({.out_dir = dir_ + "/keys-b"}, ctx).ok());
    manifest_ = dir_ + "/web.manifest.json";
  }

  absl::Status Prepare(ReleasePrepareOptions prepare = {}) {
    if (prepare.product.empty()) prepare.product = "web";
    if (prepare.version.empty()) prepare.version = "1.2.0";
    if (prepare.platform.empty()) prepare.platform = "linux/amd64";
    if (prepare.file.empty()) prepare.file = dir_ + "/web";
    if (prepare.out.empty()) prepare.out = manifest_;
    GlobalOptions options;
    CommandContext ctx(options, io_);
    return ReleasePrepare(prepare, ctx);
  }

  absl::Status Sign(const std::string& key) {
    GlobalOptions options;
    CommandContext ctx(options, io_);
    return KeysSign({.key_files = {key}, .manifest = manifest_}, ctx);
  }

  ReleasePushOptions ManifestPush() {
    ReleasePushOptions push;
    push.manifest = manifest_;
    push.file = dir_ + "/web";
    push.expires = "";
    return push;
  }

  std::string manifest_;
};

TEST_F(OfflineSigningTest, PreparedAndSignedManifestIsPushedByteForByte) {
  ASSERT_TRUE(Prepare({.allows_downgrade = true}).ok());
  EXPECT_NE(out_.str().find("prepared " + manifest_ + " (unsigned)"),
            std::string::npos)
      << out_.str();
  ASSERT_TRUE(Sign(key_file_).ok());
  ASSERT_TRUE(Sign(dir_ + "/keys-b/release.key").ok());
  const ManifestFile file = *LoadManifestFile(manifest_);

  ASSERT_TRUE(Push(ManifestPush()).ok());
  std::optional<PushRecord> push = server_.service().last_push();
  ASSERT_TRUE(push.has_value());
  EXPECT_TRUE(push->manifest_first);
  EXPECT_EQ(push->manifest.manifest(), file.signed_manifest.manifest());
  ASSERT_EQ(push->manifest.signatures_size(), 2);
  EXPECT_EQ(push->artifact, artifact_);
  v1::ReleaseManifest sent;
  ASSERT_TRUE(sent.ParseFromString(push->manifest.manifest()));
  EXPECT_TRUE(sent.allows_downgrade());
  EXPECT_EQ(sent.size(), artifact_.size());
}

TEST_F(OfflineSigningTest, ADifferentFileIsRefusedBeforeAnyUpload) {
  ASSERT_TRUE(Prepare().ok());
  ASSERT_TRUE(Sign(key_file_).ok());
  std::string other = artifact_;
  other[100] ^= 1;  // same size, another digest
  WriteFile(dir_ + "/other", other);
  ReleasePushOptions push = ManifestPush();
  push.file = dir_ + "/other";
  absl::Status s = Push(push);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("is not the artifact manifest"), std::string::npos)
      << s;
  EXPECT_NE(s.message().find("nothing was uploaded"), std::string::npos);
  WriteFile(dir_ + "/short", artifact_.substr(1));
  push.file = dir_ + "/short";
  EXPECT_EQ(Push(push).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(server_.service().calls(), 0);
}

TEST_F(OfflineSigningTest,
       UnsignedExpiredOrEditedManifestsAreRefusedBeforeAnyRpc) {
  ASSERT_TRUE(Prepare({.expires = "1h"}).ok());
  absl::Status unsigned_push = Push(ManifestPush());
  EXPECT_EQ(unsigned_push.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(unsigned_push.message().find("has no signatures"),
            std::string::npos)
      << unsigned_push;
  EXPECT_NE(unsigned_push.message().find("fleetctl keys sign --key KEY"),
            std::string::npos);

  ASSERT_TRUE(Sign(key_file_).ok());
  clock_.Advance(absl::Hours(2));
  absl::Status expired = Push(ManifestPush());
  EXPECT_EQ(expired.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(expired.message().find("expired at"), std::string::npos) << expired;

  std::ifstream in(manifest_);
  std::string text((std::istreambuf_iterator<char>(in)),
                   std::istreambuf_iterator<char>());
  text.replace(text.find("\"web\""), 5, "\"api\"");
  WriteFile(manifest_, text);
  EXPECT_EQ(Push(ManifestPush()).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(server_.service().calls(), 0);
}

TEST_F(OfflineSigningTest, ManifestModeRefusesOneStepFlags) {
  const std::pair<const char*, void (*)(ReleasePushOptions&)> cases[] = {
      {"--product", [](ReleasePushOptions& o) { o.product = "web"; }},
      {"--version", [](ReleasePushOptions& o) { o.version = "1.2.0"; }},
      {"--platform", [](ReleasePushOptions& o) { o.platform = "linux/amd64"; }},
      {"--key", [](ReleasePushOptions& o) { o.key_files = {"k"}; }},
      {"--allows-downgrade",
       [](ReleasePushOptions& o) { o.allows_downgrade = true; }},
  };
  for (const auto& [flag, mutate] : cases) {
    ReleasePushOptions push = ManifestPush();
    mutate(push);
    absl::Status s = Push(push);
    EXPECT_TRUE(IsUsageError(s)) << flag << ": " << s;
    EXPECT_NE(s.message().find(flag), std::string::npos) << s;
  }
  EXPECT_EQ(server_.service().calls(), 0);
}

TEST_F(OfflineSigningTest, PrepareNeverOverwritesWithoutForce) {
  ASSERT_TRUE(Prepare().ok());
  ASSERT_TRUE(Sign(key_file_).ok());
  const std::string signed_text = *ReadFile(manifest_);
  absl::Status again = Prepare({.version = "1.3.0"});
  EXPECT_EQ(again.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_NE(again.message().find("--force"), std::string::npos) << again;
  EXPECT_EQ(*ReadFile(manifest_), signed_text);

  ASSERT_TRUE(Prepare({.version = "1.3.0", .force = true}).ok());
  const ManifestFile file = *LoadManifestFile(manifest_);
  EXPECT_EQ(file.release.version(), "1.3.0");
  EXPECT_EQ(file.signed_manifest.signatures_size(), 0);
}

TEST_F(OfflineSigningTest, PrepareBadFlagsAreUsageErrorsNamingTheFlag) {
  const std::pair<const char*, ReleasePrepareOptions> cases[] = {
      {"--product", {.product = "Web!"}},
      {"--version", {.version = "1.2"}},
      {"--platform", {.platform = "plan9/amd64"}},
      {"--expires", {.expires = "soon"}},
  };
  for (const auto& [flag, options] : cases) {
    absl::Status s = Prepare(options);
    EXPECT_TRUE(IsUsageError(s)) << flag << ": " << s;
    EXPECT_NE(s.message().find(flag), std::string::npos) << s;
  }
  EXPECT_FALSE(PathExists(manifest_));
}

TEST_F(OfflineSigningTest, RepeatedKeysSignOnceEach) {
  ReleasePushOptions push = PushOptions();
  push.key_files = {key_file_, dir_ + "/keys-b/release.key"};
  push.allows_downgrade = true;
  ASSERT_TRUE(Push(push).ok());
  std::optional<PushRecord> record = server_.service().last_push();
  ASSERT_TRUE(record.has_value());
  TrustedKeys keys;
  ASSERT_TRUE(keys.AddPemFile(dir_ + "/keys/release.pub").ok());
  ASSERT_TRUE(keys.AddPemFile(dir_ + "/keys-b/release.pub").ok());
  absl::StatusOr<v1::ReleaseManifest> verified =
      VerifyManifest(record->manifest, keys, clock_.Now(), /*threshold=*/2);
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_TRUE(verified->allows_downgrade());

  push.key_files = {key_file_, key_file_};
  absl::Status twice = Push(push);
  EXPECT_TRUE(IsUsageError(twice)) << twice;
  EXPECT_NE(twice.message().find("same key"), std::string::npos);
}

TEST_F(OfflineSigningTest, ThresholdRefusalSaysNeededAndValid) {
  server_.service().FailWith(grpc::Status(
      grpc::StatusCode::PERMISSION_DENIED,
      "release manifest needs valid signatures from 2 distinct trusted "
      "release keys, has 1 (1 signature(s), signed by key ids [ab])"));
  ASSERT_TRUE(Prepare().ok());
  ASSERT_TRUE(Sign(key_file_).ok());
  absl::Status s = Push(ManifestPush());
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(s.message().find("not enough valid signatures on web 1.2.0 "
                             "(linux/amd64): 2 needed, 1 valid"),
            std::string::npos)
      << s;
  EXPECT_NE(s.message().find("fleetctl keys sign --key KEY " + manifest_),
            std::string::npos)
      << s;
}

}  // namespace
}  // namespace fleet::cli
