// Bad input end to end: wrongly signed, tampered, truncated, oversized,
// mis-named and wrong-platform releases are refused with a precise status,
// nothing is stored, and agents keep running what they ran.
#include <dirent.h>
#include <grpcpp/grpcpp.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "common/files.h"
#include "common/manifest.h"
#include "common/sha256.h"
#include "gtest/gtest.h"
#include "tests/testing/fleet_harness.h"

namespace fleet::testing {
namespace {

// Every regular file below `dir`, recursively.
int CountFiles(const std::string& dir) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return 0;
  int n = 0;
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    std::string path = dir + "/" + name;
    if (e->d_type == DT_DIR) {
      n += CountFiles(path);
    } else {
      ++n;
    }
  }
  closedir(d);
  return n;
}

v1::ReleaseManifest ManifestFor(const std::string& bytes,
                                const std::string& version,
                                const std::string& platform = "linux/amd64") {
  v1::ReleaseManifest m;
  m.set_product("app");
  m.set_version(version);
  m.set_platform(platform);
  m.set_sha256(DigestToBytes(Sha256Of(bytes)));
  m.set_size(bytes.size());
  m.set_created_unix_seconds(absl::ToUnixSeconds(absl::Now()));
  return m;
}

// Pushes `signed_manifest` followed by `bytes` in 64 KiB chunks.
grpc::Status Push(v1::AdminService::Stub& admin,
                  const v1::SignedManifest& signed_manifest,
                  const std::string& bytes) {
  grpc::ClientContext ctx;
  v1::Release release;
  auto writer = admin.PushRelease(&ctx, &release);
  v1::PushReleaseRequest first;
  *first.mutable_manifest() = signed_manifest;
  bool ok = writer->Write(first);
  for (size_t off = 0; ok && off < bytes.size(); off += 65536) {
    v1::PushReleaseRequest chunk;
    chunk.set_chunk(bytes.substr(off, 65536));
    ok = writer->Write(chunk);
  }
  writer->WritesDone();
  return writer->Finish();
}

class BadReleaseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fleet_.StartController().ok()) << fleet_.DumpLogs();
    v1_ = fleet_.MakeSampleApp("1.0.0");
    ASSERT_FALSE(v1_.empty());
    absl::StatusOr<std::string> bytes = ReadFile(v1_);
    ASSERT_TRUE(bytes.ok());
    v1_bytes_ = *bytes;
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << fleet_.DumpLogs();
  }

  int ReleaseCount() {
    grpc::ClientContext ctx;
    v1::ListReleasesResponse resp;
    EXPECT_TRUE(fleet_.admin()
                    .ListReleases(&ctx, v1::ListReleasesRequest(), &resp)
                    .ok());
    return resp.releases_size();
  }
  int BlobFiles() {
    return CountFiles(fleet_.controller_data_dir() + "/blobs");
  }

  FleetHarness fleet_;
  std::string v1_, v1_bytes_;
};

TEST_F(BadReleaseTest, UntrustedKeyIsPermissionDeniedAndNothingStored) {
  absl::StatusOr<Ed25519PrivateKey> other = Ed25519PrivateKey::Generate();
  ASSERT_TRUE(other.ok());
  absl::StatusOr<v1::SignedManifest> signed_manifest =
      SignManifest(ManifestFor(v1_bytes_, "1.0.0"), *other);
  ASSERT_TRUE(signed_manifest.ok());
  grpc::Status status = Push(fleet_.admin(), *signed_manifest, v1_bytes_);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED)
      << status.error_message();
  EXPECT_EQ(ReleaseCount(), 0);
  EXPECT_EQ(BlobFiles(), 0);

  // Through fleetctl: a non-zero exit and a message that names the key.
  const std::string other_key = fleet_.dir() + "/other.key";
  ASSERT_TRUE(other->WritePemFile(other_key).ok());
  RunResult r =
      fleet_.Fleetctl({"release", "push", "--product", "app", "--version",
                       "1.0.0", "--file", v1_, "--key", other_key});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(absl::AsciiStrToLower(r.err), "key")) << r.err;
  EXPECT_EQ(ReleaseCount(), 0);
}

TEST_F(BadReleaseTest, TruncatedUploadIsRejectedAndLeavesNoFile) {
  absl::StatusOr<v1::SignedManifest> signed_manifest =
      SignManifest(ManifestFor(v1_bytes_, "1.0.0"), fleet_.release_key());
  ASSERT_TRUE(signed_manifest.ok());
  grpc::Status status = Push(fleet_.admin(), *signed_manifest,
                             v1_bytes_.substr(0, v1_bytes_.size() - 7));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << status.error_message();
  EXPECT_EQ(ReleaseCount(), 0);
  EXPECT_EQ(BlobFiles(), 0);
}

TEST_F(BadReleaseTest, TamperedUploadIsRejectedAndLeavesNoFile) {
  absl::StatusOr<v1::SignedManifest> signed_manifest =
      SignManifest(ManifestFor(v1_bytes_, "1.0.0"), fleet_.release_key());
  ASSERT_TRUE(signed_manifest.ok());
  std::string tampered = v1_bytes_;
  tampered[0] ^= 0x20;
  grpc::Status status = Push(fleet_.admin(), *signed_manifest, tampered);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << status.error_message();
  EXPECT_EQ(ReleaseCount(), 0);
  EXPECT_EQ(BlobFiles(), 0);
}

TEST_F(BadReleaseTest, OversizedUploadIsRejectedAndLeavesNoFile) {
  absl::StatusOr<v1::SignedManifest> signed_manifest =
      SignManifest(ManifestFor(v1_bytes_, "1.0.0"), fleet_.release_key());
  ASSERT_TRUE(signed_manifest.ok());
  grpc::Status status = Push(fleet_.admin(), *signed_manifest,
                             v1_bytes_ + std::string(1 << 20, 'x'));
  EXPECT_TRUE(status.error_code() == grpc::StatusCode::INVALID_ARGUMENT ||
              status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED)
      << status.error_code() << " " << status.error_message();
  EXPECT_EQ(ReleaseCount(), 0);
  EXPECT_EQ(BlobFiles(), 0);
}

TEST_F(BadReleaseTest, PathTraversalInProductNameIsInvalidArgument) {
  v1::ReleaseManifest m = ManifestFor(v1_bytes_, "1.0.0");
  m.set_product("../../etc");
  // Signed by the trusted key: the name itself must be refused.
  v1::SignedManifest signed_manifest;
  signed_manifest.set_manifest(m.SerializeAsString());
  v1::Signature* sig = signed_manifest.add_signatures();
  sig->set_key_id(fleet_.release_key().PublicKey().KeyId());
  sig->set_signature(fleet_.release_key().Sign(signed_manifest.manifest()));
  grpc::Status status = Push(fleet_.admin(), signed_manifest, v1_bytes_);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << status.error_message();
  EXPECT_EQ(ReleaseCount(), 0);
  EXPECT_EQ(BlobFiles(), 0);

  RunResult r = fleet_.Fleetctl({"release", "push", "--product", "../x",
                                 "--version", "1.0.0", "--file", v1_, "--key",
                                 fleet_.private_key_path()});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_FALSE(r.err.empty());
}

TEST_F(BadReleaseTest, MalformedVersionIsRefusedBeforeUpload) {
  RunResult r = fleet_.Fleetctl({"release", "push", "--product", "app",
                                 "--version", "1.0", "--file", v1_, "--key",
                                 fleet_.private_key_path()});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(r.err, "1.0")) << r.err;
  EXPECT_EQ(ReleaseCount(), 0);
}

TEST_F(BadReleaseTest, DuplicateReleaseIsAlreadyExists) {
  ASSERT_EQ(fleet_.PushRelease("app", "1.0.0", v1_).exit_code, 0);
  absl::StatusOr<v1::SignedManifest> signed_manifest =
      SignManifest(ManifestFor(v1_bytes_, "1.0.0"), fleet_.release_key());
  ASSERT_TRUE(signed_manifest.ok());
  grpc::Status status = Push(fleet_.admin(), *signed_manifest, v1_bytes_);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::ALREADY_EXISTS)
      << status.error_message();
  EXPECT_EQ(ReleaseCount(), 1);
}

TEST_F(BadReleaseTest, ReleaseForAnotherPlatformNeverReachesAgents) {
  ASSERT_EQ(fleet_.PushRelease("app", "1.0.0", v1_).exit_code, 0);
  AgentHandle* agent = fleet_.StartAgent("linux-agent");
  ASSERT_TRUE(fleet_.Preinstall(agent, v1_).ok());
  ASSERT_TRUE(agent->process->Start().ok());
  ASSERT_TRUE(WaitFor([&] { return agent->Runs("1.0.0"); }, absl::Seconds(30)));

  std::string other = fleet_.MakeSampleApp("2.0.0");
  ASSERT_EQ(fleet_.PushRelease("app", "2.0.0", other, "darwin/arm64").exit_code,
            0);
  grpc::ClientContext ctx;
  v1::CreateRolloutRequest req;
  req.set_product("app");
  req.set_version("2.0.0");
  v1::Rollout rollout;
  grpc::Status status = fleet_.admin().CreateRollout(&ctx, req, &rollout);
  if (status.ok()) {
    // A rollout of a darwin-only release targets no linux agent.
    EXPECT_EQ(rollout.counts().total(), 0);
  } else {
    EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
        << status.error_message();
  }
  absl::SleepFor(absl::Seconds(2));
  EXPECT_EQ(Sha256OfFile(agent->exec_path).value(), Sha256OfFile(v1_).value());
  EXPECT_TRUE(agent->Runs("1.0.0"));
}

}  // namespace
}  // namespace fleet::testing
