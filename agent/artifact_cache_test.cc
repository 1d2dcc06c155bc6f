#include "agent/artifact_cache.h"

#include <stdlib.h>

#include <string>
#include <vector>

#include "common/files.h"
#include "common/sha256.h"
#include "gtest/gtest.h"

namespace fleet::agent {
namespace {

class ArtifactCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = JoinPath(
        getenv("TEST_TMPDIR"),
        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    ASSERT_TRUE(RemoveTree(dir_).ok());
    ASSERT_TRUE(MakeDirs(dir_ + "/in").ok());
  }

  // A file with `content` and its digest.
  Digest Artifact(const std::string& content, std::string* path) {
    *path = dir_ + "/in/" + DigestToHex(Sha256Of(content)).substr(0, 8);
    EXPECT_TRUE(WriteFileAtomically(*path, content).ok());
    return Sha256Of(content);
  }

  std::string dir_;
};

TEST_F(ArtifactCacheTest, KeepsTheNewestNAndDeletesOlderOnes) {
  ArtifactCache cache(dir_ + "/versions", 3);
  std::vector<Digest> added;
  for (int v = 0; v < 5; ++v) {
    std::string path;
    const Digest d = Artifact("release " + std::to_string(v), &path);
    ASSERT_TRUE(cache.Add(d, path).ok());
    added.push_back(d);
  }
  EXPECT_EQ(cache.Entries(),
            (std::vector<Digest>{added[4], added[3], added[2]}));
  EXPECT_FALSE(PathExists(cache.EntryPath(added[0])));
  EXPECT_FALSE(PathExists(cache.EntryPath(added[1])));
  absl::StatusOr<std::string> kept = ReadFile(cache.EntryPath(added[2]));
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(*kept, "release 2");
}

TEST_F(ArtifactCacheTest, UsingAnEntryMakesItNewest) {
  ArtifactCache cache(dir_ + "/versions", 2);
  std::string a_path, b_path, c_path;
  const Digest a = Artifact("a", &a_path), b = Artifact("b", &b_path),
               c = Artifact("c", &c_path);
  ASSERT_TRUE(cache.Add(a, a_path).ok());
  ASSERT_TRUE(cache.Add(b, b_path).ok());
  // A rollback to `a` takes it from the cache: `b` is now the oldest.
  ASSERT_TRUE(cache.CopyOut(a, dir_ + "/out").ok());
  ASSERT_TRUE(cache.Add(c, c_path).ok());
  EXPECT_EQ(cache.Entries(), (std::vector<Digest>{c, a}));
  absl::StatusOr<std::string> out = ReadFile(dir_ + "/out");
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(*out, "a");
}

TEST_F(ArtifactCacheTest, ContainsChecksTheSize) {
  ArtifactCache cache(dir_ + "/versions", 3);
  std::string path;
  const Digest d = Artifact("twelve bytes", &path);
  ASSERT_TRUE(cache.Add(d, path).ok());
  EXPECT_TRUE(cache.Contains(d, 12));
  EXPECT_FALSE(cache.Contains(d, 13));
  EXPECT_FALSE(cache.Contains(Sha256Of("other"), 12));
  EXPECT_EQ(cache.CopyOut(Sha256Of("other"), dir_ + "/out").code(),
            absl::StatusCode::kNotFound);
}

TEST_F(ArtifactCacheTest, KeepZeroKeepsNothing) {
  ArtifactCache cache(dir_ + "/versions", 0);
  std::string path;
  const Digest d = Artifact("x", &path);
  ASSERT_TRUE(cache.Add(d, path).ok());
  EXPECT_FALSE(cache.Contains(d, 1));
  EXPECT_TRUE(cache.Entries().empty());
}

}  // namespace
}  // namespace fleet::agent
