#include "controller/blob_store.h"

#include <dirent.h>

#include <string>
#include <thread>
#include <vector>

#include "common/files.h"
#include "common/sha256.h"
#include "controller/testing/temp_dir.h"
#include "gtest/gtest.h"

namespace fleet::controller {
namespace {

// Regular files below `dir`, recursively.
int CountFiles(const std::string& dir) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return 0;
  int n = 0;
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    n += e->d_type == DT_DIR ? CountFiles(dir + "/" + name) : 1;
  }
  closedir(d);
  return n;
}

std::string Artifact(size_t size) {
  std::string out(size, '\0');
  for (size_t i = 0; i < size; ++i) out[i] = static_cast<char>(i * 131 + 7);
  return out;
}

class BlobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<BlobStore>> blobs =
        BlobStore::Open(dir_.path());
    ASSERT_TRUE(blobs.ok()) << blobs.status();
    blobs_ = *std::move(blobs);
  }

  absl::Status Upload(const std::string& bytes, const Digest& digest,
                      uint64_t size) {
    absl::StatusOr<std::unique_ptr<BlobWriter>> w = blobs_->NewWriter();
    if (!w.ok()) return w.status();
    for (size_t off = 0; off < bytes.size(); off += 1000) {
      absl::Status s = (*w)->Append(absl::string_view(bytes).substr(off, 1000));
      if (!s.ok()) return s;
    }
    return (*w)->Commit(digest, size);
  }

  int Files() { return CountFiles(dir_.Join("blobs")); }

  testing::TempDir dir_;
  std::unique_ptr<BlobStore> blobs_;
};

TEST_F(BlobStoreTest, GoodUploadIsStoredUnderItsDigestAndReadable) {
  const std::string bytes = Artifact(150'000);
  const Digest digest = Sha256Of(bytes);
  ASSERT_TRUE(Upload(bytes, digest, bytes.size()).ok());

  const std::string hex = DigestToHex(digest);
  EXPECT_EQ(blobs_->PathFor(digest),
            dir_.Join("blobs/sha256/" + hex.substr(0, 2) + "/" + hex));
  EXPECT_EQ(ReadFile(blobs_->PathFor(digest)).value(), bytes);
  EXPECT_EQ(Files(), 1);  // the blob, and no temp file

  absl::StatusOr<BlobReader> reader = blobs_->OpenForRead(digest);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ(reader->size(), bytes.size());
  EXPECT_EQ(reader->ReadAt(0, 10).value(), bytes.substr(0, 10));
  EXPECT_EQ(reader->ReadAt(149'995, 100).value(), bytes.substr(149'995));
  EXPECT_EQ(reader->ReadAt(150'000, 100).value(), "");
}

TEST_F(BlobStoreTest, MismatchLeavesNoBlobAndNoTempFile) {
  const std::string bytes = Artifact(70'000);
  const Digest digest = Sha256Of(bytes);
  struct Case {
    std::string name;
    std::string uploaded;
    uint64_t expected_size;
  };
  std::string tampered = bytes;
  tampered[100] ^= 1;
  const std::vector<Case> cases = {
      {"truncated", bytes.substr(0, bytes.size() - 7), bytes.size()},
      {"oversized", bytes + "x", bytes.size()},
      {"tampered", tampered, bytes.size()},
      {"wrong declared size", bytes, bytes.size() + 1},
  };
  for (const Case& c : cases) {
    absl::Status status = Upload(c.uploaded, digest, c.expected_size);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument)
        << c.name << ": " << status;
    EXPECT_NE(status.message().find("mismatch"), std::string::npos) << status;
    EXPECT_EQ(Files(), 0) << c.name;
    EXPECT_FALSE(blobs_->Contains(digest)) << c.name;
  }
}

TEST_F(BlobStoreTest, AbandonedUploadRemovesItsTempFile) {
  {
    absl::StatusOr<std::unique_ptr<BlobWriter>> w = blobs_->NewWriter();
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->Append("partial").ok());
    EXPECT_EQ(Files(), 1);
  }
  EXPECT_EQ(Files(), 0);
}

TEST_F(BlobStoreTest, ReopenRemovesTempFilesOfACrashedUpload) {
  ASSERT_TRUE(
      WriteFileAtomically(dir_.Join("blobs/tmp/upload-crashed"), "x").ok());
  blobs_.reset();
  absl::StatusOr<std::unique_ptr<BlobStore>> again =
      BlobStore::Open(dir_.path());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(Files(), 0);
}

TEST_F(BlobStoreTest, ConcurrentIdenticalUploadsBothSucceed) {
  const std::string bytes = Artifact(300'000);
  const Digest digest = Sha256Of(bytes);
  std::vector<absl::Status> results(4);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back(
        [&, i] { results[i] = Upload(bytes, digest, bytes.size()); });
  }
  for (std::thread& t : threads) t.join();
  for (const absl::Status& s : results) EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(ReadFile(blobs_->PathFor(digest)).value(), bytes);
  EXPECT_EQ(Files(), 1);
}

TEST_F(BlobStoreTest, UnknownDigestIsNotFound) {
  EXPECT_EQ(blobs_->OpenForRead(Sha256Of("nothing")).status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace fleet::controller
