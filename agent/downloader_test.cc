#include "agent/downloader.h"

#include <stdlib.h>

#include <random>
#include <thread>

#include "agent/testing/artifact_server.h"
#include "common/files.h"
#include "common/sha256.h"
#include "gtest/gtest.h"

namespace fleet::agent {
namespace {

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

class DownloaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = JoinPath(
        getenv("TEST_TMPDIR"),
        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    ASSERT_TRUE(RemoveTree(dir_).ok());
    server_ = testing::ArtifactServer::Start();
    ASSERT_NE(server_, nullptr);
    channel_ = server_->NewChannel();
    stub_ = v1::AgentService::NewStub(channel_);
    downloader_ = std::make_unique<Downloader>(*stub_, dir_ + "/downloads");
  }

  std::string Read(const std::string& path) {
    absl::StatusOr<std::string> data = ReadFile(path);
    return data.ok() ? *data : "";
  }

  std::string dir_;
  std::unique_ptr<testing::ArtifactServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::AgentService::Stub> stub_;
  std::unique_ptr<Downloader> downloader_;
  Cancellation cancel_;
};

TEST_F(DownloaderTest, FetchesWholeArtifact) {
  const std::string artifact = RandomBytes(1 << 20, 1);
  const Digest digest = server_->Add(artifact);
  absl::StatusOr<DownloadResult> r =
      downloader_->Fetch(digest, artifact.size(), cancel_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->path, downloader_->PartPath(digest));
  EXPECT_EQ(Read(r->path), artifact);
  EXPECT_EQ(r->digest, digest);
  EXPECT_EQ(r->size, artifact.size());
  EXPECT_EQ(r->fetched, artifact.size());
  EXPECT_EQ(r->resumed_from, 0u);
}

TEST_F(DownloaderTest, ResumesFromPartialFileWithoutRefetching) {
  const std::string artifact = RandomBytes(1000 * 1000, 2);
  const Digest digest = server_->Add(artifact);
  server_->set_bytes_per_stream(300 * 1000);

  absl::StatusOr<DownloadResult> r =
      downloader_->Fetch(digest, artifact.size(), cancel_);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_EQ(downloader_->BytesOnDisk(digest), 300u * 1000);

  uint64_t fetched = 300 * 1000;
  for (int i = 0; i < 10 && !r.ok(); ++i) {
    r = downloader_->Fetch(digest, artifact.size(), cancel_);
    if (r.ok())
      fetched += r->fetched;
    else
      fetched = downloader_->BytesOnDisk(digest);
  }
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->resumed_from, 900u * 1000);
  EXPECT_EQ(r->fetched, 100u * 1000);
  EXPECT_EQ(Read(r->path), artifact);
  EXPECT_EQ(server_->requested_offsets(),
            (std::vector<uint64_t>{0, 300000, 600000, 900000}));
}

TEST_F(DownloaderTest, ResumesFromAPartialFileLeftByAnEarlierRun) {
  const std::string artifact = RandomBytes(200 * 1000, 3);
  const Digest digest = server_->Add(artifact);
  ASSERT_TRUE(MakeDirs(dir_ + "/downloads").ok());
  ASSERT_TRUE(WriteFileAtomically(downloader_->PartPath(digest),
                                  artifact.substr(0, 12345))
                  .ok());
  absl::StatusOr<DownloadResult> r =
      downloader_->Fetch(digest, artifact.size(), cancel_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->resumed_from, 12345u);
  EXPECT_EQ(Read(r->path), artifact);
  EXPECT_EQ(server_->requested_offsets(), (std::vector<uint64_t>{12345}));
}

TEST_F(DownloaderTest, CompleteFileIsVerifiedWithoutAnRpc) {
  const std::string artifact = RandomBytes(5000, 4);
  const Digest digest = server_->Add(artifact);
  ASSERT_TRUE(downloader_->Fetch(digest, artifact.size(), cancel_).ok());
  absl::StatusOr<DownloadResult> again =
      downloader_->Fetch(digest, artifact.size(), cancel_);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->fetched, 0u);
  EXPECT_EQ(again->digest, digest);
  EXPECT_EQ(server_->requested_offsets().size(), 1u);
}

TEST_F(DownloaderTest, TamperedArtifactFailsAndIsRemoved) {
  const std::string good = RandomBytes(100 * 1000, 5);
  std::string evil = good;
  evil[50000] ^= 1;
  const Digest digest = Sha256Of(good);
  server_->AddAs(digest, evil);
  absl::StatusOr<DownloadResult> r =
      downloader_->Fetch(digest, good.size(), cancel_);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
  EXPECT_NE(r.status().message().find(DigestToHex(digest)),
            absl::string_view::npos);
  EXPECT_FALSE(PathExists(downloader_->PartPath(digest)));
}

TEST_F(DownloaderTest, SizeMismatchFailsAndIsRemoved) {
  const std::string good = RandomBytes(100 * 1000, 6);
  const Digest digest = Sha256Of(good);
  server_->AddAs(digest, good + "trailing bytes");
  absl::StatusOr<DownloadResult> r =
      downloader_->Fetch(digest, good.size(), cancel_);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
  EXPECT_FALSE(PathExists(downloader_->PartPath(digest)));
}

TEST_F(DownloaderTest, DiscardAllRemovesEveryDownload) {
  EXPECT_TRUE(downloader_->DiscardAll().ok());  // no directory yet
  const std::string a = RandomBytes(1000, 8), b = RandomBytes(1000, 9);
  const Digest da = server_->Add(a), db = server_->Add(b);
  ASSERT_TRUE(downloader_->Fetch(da, a.size(), cancel_).ok());
  ASSERT_TRUE(downloader_->Fetch(db, b.size(), cancel_).ok());
  ASSERT_TRUE(downloader_->DiscardAll().ok());
  EXPECT_FALSE(PathExists(downloader_->PartPath(da)));
  EXPECT_FALSE(PathExists(downloader_->PartPath(db)));
}

TEST_F(DownloaderTest, UnknownArtifactIsNotFound) {
  const Digest digest = Sha256Of("nobody has this");
  absl::StatusOr<DownloadResult> r = downloader_->Fetch(digest, 15, cancel_);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound) << r.status();
}

TEST_F(DownloaderTest, CancelStopsATransferAndKeepsThePartialFile) {
  const std::string artifact = RandomBytes(2 << 20, 7);
  const Digest digest = server_->Add(artifact);
  server_->set_chunk_size(16 * 1024);
  server_->set_chunk_delay(absl::Milliseconds(20));
  std::thread canceller([&] {
    absl::SleepFor(absl::Milliseconds(300));
    cancel_.Cancel("operator said stop");
  });
  const absl::Time start = absl::Now();
  absl::StatusOr<DownloadResult> r =
      downloader_->Fetch(digest, artifact.size(), cancel_);
  canceller.join();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled) << r.status();
  EXPECT_EQ(r.status().message(), "operator said stop");
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  const uint64_t kept = downloader_->BytesOnDisk(digest);
  EXPECT_GT(kept, 0u);
  EXPECT_LT(kept, artifact.size());
}

}  // namespace
}  // namespace fleet::agent
