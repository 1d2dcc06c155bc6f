#include "agent/downloader.h"

#include <stdlib.h>

#include <atomic>
#include <random>
#include <thread>

#include "absl/strings/match.h"
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

  // A downloader of the same directory with other limits.
  std::unique_ptr<Downloader> WithLimits(DownloadLimits limits) {
    return std::make_unique<Downloader>(*stub_, dir_ + "/downloads", limits);
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

TEST_F(DownloaderTest, ResumedFileWithAWrongPrefixIsFetchedAgainFromZero) {
  const std::string artifact = RandomBytes(200 * 1000, 10);
  const Digest digest = server_->Add(artifact);
  ASSERT_TRUE(MakeDirs(dir_ + "/downloads").ok());
  // Left by a transfer of other bytes (another source, a changed mirror).
  ASSERT_TRUE(
      WriteFileAtomically(downloader_->PartPath(digest), RandomBytes(12345, 11))
          .ok());
  absl::StatusOr<DownloadResult> r =
      downloader_->Fetch(digest, artifact.size(), cancel_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->resumed_from, 0u);
  EXPECT_EQ(r->fetched, artifact.size());
  EXPECT_EQ(Read(r->path), artifact);
  EXPECT_EQ(server_->requested_offsets(), (std::vector<uint64_t>{12345, 0}));
}

TEST_F(DownloaderTest, WrongBytesFromZeroAreNotFetchedAThirdTime) {
  const std::string good = RandomBytes(50 * 1000, 12);
  std::string evil = good;
  evil[40000] ^= 1;
  const Digest digest = Sha256Of(good);
  server_->AddAs(digest, evil);
  ASSERT_TRUE(MakeDirs(dir_ + "/downloads").ok());
  ASSERT_TRUE(
      WriteFileAtomically(downloader_->PartPath(digest), good.substr(0, 1000))
          .ok());
  absl::StatusOr<DownloadResult> r =
      downloader_->Fetch(digest, good.size(), cancel_);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
  EXPECT_FALSE(PathExists(downloader_->PartPath(digest)));
  EXPECT_EQ(server_->requested_offsets(), (std::vector<uint64_t>{1000, 0}));
}

TEST_F(DownloaderTest, TrickleBelowTheMinimumRateIsCutAndResumesLater) {
  const std::string artifact = RandomBytes(100 * 1000, 13);
  const Digest digest = server_->Add(artifact);
  // 100 bytes every 200 ms: 500 bytes/s, below the 1 KiB/s floor.
  server_->set_chunk_size(100);
  server_->set_chunk_delay(absl::Milliseconds(200));
  std::unique_ptr<Downloader> strict =
      WithLimits({.min_bytes_per_second = 1024,
                  .rate_window = absl::Seconds(1),
                  .transfer_deadline = absl::ZeroDuration()});
  absl::StatusOr<DownloadResult> r =
      strict->Fetch(digest, artifact.size(), cancel_);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded)
      << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "stalled")) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "1024 bytes/s"))
      << r.status();
  const uint64_t kept = strict->BytesOnDisk(digest);
  EXPECT_GT(kept, 0u);
  EXPECT_LT(kept, artifact.size());

  // The network recovers: the retry resumes from the kept bytes.
  server_->set_chunk_size(64 * 1024);
  server_->set_chunk_delay(absl::ZeroDuration());
  r = strict->Fetch(digest, artifact.size(), cancel_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->resumed_from, kept);
  EXPECT_EQ(Read(r->path), artifact);
  EXPECT_EQ(server_->requested_offsets(), (std::vector<uint64_t>{0, kept}));
}

TEST_F(DownloaderTest, TransferDeadlineEndsASteadyButEndlessTransfer) {
  const std::string artifact = RandomBytes(4 << 20, 14);
  const Digest digest = server_->Add(artifact);
  // 16 KiB every 50 ms is well above the rate floor, but 4 MiB would take
  // over 12 s: the 1 s deadline ends it first.
  server_->set_chunk_size(16 * 1024);
  server_->set_chunk_delay(absl::Milliseconds(50));
  std::unique_ptr<Downloader> strict =
      WithLimits({.min_bytes_per_second = 1024,
                  .rate_window = absl::Seconds(30),
                  .transfer_deadline = absl::Seconds(1)});
  absl::StatusOr<DownloadResult> r =
      strict->Fetch(digest, artifact.size(), cancel_);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded)
      << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "download deadline"))
      << r.status();
  const uint64_t kept = strict->BytesOnDisk(digest);
  EXPECT_GT(kept, 0u);
  EXPECT_LT(kept, artifact.size());
}

// Streams the artifact's bytes and then zeros for ever, never stating a
// total size: an endless-data attack.
class EndlessService final : public v1::AgentService::Service {
 public:
  explicit EndlessService(std::string prefix) : prefix_(std::move(prefix)) {}

  grpc::Status FetchArtifact(
      grpc::ServerContext* context, const v1::FetchArtifactRequest* request,
      grpc::ServerWriter<v1::ArtifactChunk>* writer) override {
    uint64_t offset = request->offset();
    const std::string zeros(64 * 1024, '\0');
    while (!context->IsCancelled()) {
      v1::ArtifactChunk chunk;
      chunk.set_offset(offset);
      if (offset < prefix_.size()) {
        chunk.set_data(prefix_.substr(offset, 64 * 1024));
      } else {
        chunk.set_data(zeros);
      }
      offset += chunk.data().size();
      if (!writer->Write(chunk)) break;
      sent_ = offset;
    }
    return grpc::Status::OK;
  }

  uint64_t sent() const { return sent_.load(); }

 private:
  const std::string prefix_;
  std::atomic<uint64_t> sent_{0};
};

TEST_F(DownloaderTest, EndlessDataStopsAtTheManifestSize) {
  const std::string artifact = RandomBytes(300 * 1000, 15);
  const Digest digest = Sha256Of(artifact);
  EndlessService endless(artifact);
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(&endless);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  auto stub = v1::AgentService::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
  Downloader downloader(*stub, dir_ + "/endless");

  absl::StatusOr<DownloadResult> r =
      downloader.Fetch(digest, artifact.size(), cancel_);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "longer than"))
      << r.status();
  // Never a byte past the manifest's size on disk, and the stream was ended
  // (the server's writes failed) instead of read for ever.
  EXPECT_EQ(downloader.BytesOnDisk(digest), artifact.size());
  server->Shutdown();
  EXPECT_GT(endless.sent(), artifact.size());

  // The kept bytes are exactly the artifact: the next call verifies them
  // without a transfer.
  r = downloader.Fetch(digest, artifact.size(), cancel_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->fetched, 0u);
  EXPECT_EQ(Read(r->path), artifact);
}

TEST_F(DownloaderTest, CachedVersionNeedsNoTransfer) {
  ArtifactCache cache(dir_ + "/versions", 3);
  Downloader cached(*stub_, dir_ + "/downloads", {}, &cache);
  const std::string artifact = RandomBytes(300 * 1000, 16);
  const Digest digest = server_->Add(artifact);
  absl::StatusOr<DownloadResult> r =
      cached.Fetch(digest, artifact.size(), cancel_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->from_cache);
  EXPECT_TRUE(cache.Contains(digest, artifact.size()));
  // The update ends (its download is discarded); later a rollback to this
  // version needs it again.
  ASSERT_TRUE(cached.Discard(digest).ok());
  r = cached.Fetch(digest, artifact.size(), cancel_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->from_cache);
  EXPECT_EQ(r->fetched, 0u);
  EXPECT_EQ(Read(r->path), artifact);
  EXPECT_EQ(server_->requested_offsets(), (std::vector<uint64_t>{0}));
}

TEST_F(DownloaderTest, DamagedCacheEntryIsDroppedAndFetchedAgain) {
  ArtifactCache cache(dir_ + "/versions", 3);
  Downloader cached(*stub_, dir_ + "/downloads", {}, &cache);
  const std::string artifact = RandomBytes(100 * 1000, 17);
  const Digest digest = server_->Add(artifact);
  ASSERT_TRUE(cached.Fetch(digest, artifact.size(), cancel_).ok());
  ASSERT_TRUE(cached.Discard(digest).ok());
  std::string damaged = artifact;
  damaged[5] ^= 1;
  ASSERT_TRUE(WriteFileAtomically(cache.EntryPath(digest), damaged).ok());

  absl::StatusOr<DownloadResult> r =
      cached.Fetch(digest, artifact.size(), cancel_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->from_cache);
  EXPECT_EQ(Read(r->path), artifact);
  EXPECT_EQ(server_->requested_offsets(), (std::vector<uint64_t>{0, 0}));
  // The good bytes replaced the damaged entry.
  EXPECT_EQ(Read(cache.EntryPath(digest)), artifact);
}

}  // namespace
}  // namespace fleet::agent
