#include "agent/platform/swap.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/sha256.h"
#include "gtest/gtest.h"

namespace fleet::agent {
namespace {

class ExecutableSwapTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = JoinPath(
        getenv("TEST_TMPDIR"),
        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    ASSERT_TRUE(RemoveTree(dir_).ok());
    ASSERT_TRUE(MakeDirs(dir_ + "/bin").ok());
    ASSERT_TRUE(MakeDirs(dir_ + "/downloads").ok());
    exec_ = dir_ + "/bin/app";
  }

  // Writes a download with `content` and returns its path.
  std::string Download(const std::string& name, const std::string& content) {
    std::string path = dir_ + "/downloads/" + name;
    EXPECT_TRUE(WriteFileAtomically(path, content).ok());
    return path;
  }

  std::string Read(const std::string& path) {
    absl::StatusOr<std::string> data = ReadFile(path);
    return data.ok() ? *data : "<" + data.status().ToString() + ">";
  }

  std::string dir_;
  std::string exec_;
};

TEST_F(ExecutableSwapTest, FirstInstallHasNoBackupAndRollbackRemovesIt) {
  ExecutableSwap swap(exec_);
  const std::string v1 = "#!/bin/sh\necho v1\n";
  ASSERT_TRUE(swap.Stage(Download("v1", v1), Sha256Of(v1)).ok());
  EXPECT_FALSE(PathExists(exec_));
  ASSERT_TRUE(swap.Swap().ok());
  EXPECT_EQ(Read(exec_), v1);
  EXPECT_FALSE(swap.HasBackup());
  EXPECT_FALSE(PathExists(swap.staged_path()));
  struct stat st;
  ASSERT_EQ(stat(exec_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0755u);

  ASSERT_TRUE(swap.Rollback(Sha256Of(v1)).ok());
  EXPECT_FALSE(PathExists(exec_));
}

TEST_F(ExecutableSwapTest, RollbackRestoresExactBytesAndIsIdempotent) {
  const std::string v1 = "old program \x01\x02\xff bytes";
  const std::string v2 = "new program";
  ASSERT_TRUE(WriteFileAtomically(exec_, v1, 0755).ok());
  ExecutableSwap swap(exec_);
  ASSERT_TRUE(swap.Stage(Download("v2", v2), Sha256Of(v2)).ok());
  ASSERT_TRUE(swap.Swap().ok());
  EXPECT_EQ(Read(exec_), v2);
  EXPECT_EQ(Read(swap.backup_path()), v1);

  ASSERT_TRUE(swap.Rollback(Sha256Of(v2)).ok());
  EXPECT_EQ(Read(exec_), v1);
  EXPECT_FALSE(swap.HasBackup());
  // Again, as after a crash before the journal recorded the rollback: the
  // old program must stay.
  ASSERT_TRUE(swap.Rollback(Sha256Of(v2)).ok());
  EXPECT_EQ(Read(exec_), v1);
}

TEST_F(ExecutableSwapTest, CommitRemovesBackupAndKeepsNewVersion) {
  ASSERT_TRUE(WriteFileAtomically(exec_, "v1", 0755).ok());
  ExecutableSwap swap(exec_);
  ASSERT_TRUE(swap.Stage(Download("v2", "v2"), Sha256Of("v2")).ok());
  ASSERT_TRUE(swap.Swap().ok());
  ASSERT_TRUE(swap.Commit().ok());
  EXPECT_EQ(Read(exec_), "v2");
  EXPECT_FALSE(swap.HasBackup());
  // A second update replaces the (now absent) backup with v2.
  ASSERT_TRUE(swap.Stage(Download("v3", "v3"), Sha256Of("v3")).ok());
  ASSERT_TRUE(swap.Swap().ok());
  EXPECT_EQ(Read(swap.backup_path()), "v2");
}

TEST_F(ExecutableSwapTest, StaleBackupIsReplaced) {
  ASSERT_TRUE(WriteFileAtomically(exec_, "v1", 0755).ok());
  ExecutableSwap swap(exec_);
  ASSERT_TRUE(WriteFileAtomically(swap.backup_path(), "stale", 0755).ok());
  ASSERT_TRUE(swap.Stage(Download("v2", "v2"), Sha256Of("v2")).ok());
  ASSERT_TRUE(swap.Swap().ok());
  EXPECT_EQ(Read(swap.backup_path()), "v1");
}

TEST_F(ExecutableSwapTest, StageRejectsWrongDigestAndLeavesExecAlone) {
  ASSERT_TRUE(WriteFileAtomically(exec_, "v1", 0755).ok());
  ExecutableSwap swap(exec_);
  absl::Status staged = swap.Stage(Download("v2", "tampered"), Sha256Of("v2"));
  EXPECT_EQ(staged.code(), absl::StatusCode::kDataLoss) << staged;
  EXPECT_FALSE(PathExists(swap.staged_path()));
  EXPECT_EQ(Read(exec_), "v1");
  EXPECT_EQ(swap.Swap().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Read(exec_), "v1");
}

TEST_F(ExecutableSwapTest, StageOfMissingSourceNamesThePath) {
  ExecutableSwap swap(exec_);
  const std::string missing = dir_ + "/downloads/missing";
  absl::Status staged = swap.Stage(missing, Sha256Of(""));
  EXPECT_EQ(staged.code(), absl::StatusCode::kNotFound) << staged;
  EXPECT_NE(staged.message().find(missing), absl::string_view::npos);
}

// The test runs as root in CI, so permission bits cannot make a path
// unwritable; a non-empty directory in the way fails the same syscalls.
TEST_F(ExecutableSwapTest, BlockedStagePathLeavesExecUntouched) {
  ASSERT_TRUE(WriteFileAtomically(exec_, "v1", 0755).ok());
  ExecutableSwap swap(exec_);
  ASSERT_TRUE(MakeDirs(swap.staged_path() + "/x").ok());
  EXPECT_FALSE(swap.Stage(Download("v2", "v2"), Sha256Of("v2")).ok());
  EXPECT_EQ(Read(exec_), "v1");
}

TEST_F(ExecutableSwapTest, BlockedBackupPathFailsSwapAndLeavesExecUntouched) {
  ASSERT_TRUE(WriteFileAtomically(exec_, "v1", 0755).ok());
  ExecutableSwap swap(exec_);
  ASSERT_TRUE(swap.Stage(Download("v2", "v2"), Sha256Of("v2")).ok());
  ASSERT_TRUE(MakeDirs(swap.backup_path() + "/x").ok());
  absl::Status swapped = swap.Swap();
  EXPECT_FALSE(swapped.ok());
  EXPECT_NE(swapped.message().find(swap.backup_path()), absl::string_view::npos)
      << swapped;
  EXPECT_EQ(Read(exec_), "v1");
}

TEST_F(ExecutableSwapTest, UnwritableDirectoryLeavesExecUntouched) {
  if (geteuid() == 0) GTEST_SKIP() << "root ignores directory permissions";
  ASSERT_TRUE(WriteFileAtomically(exec_, "v1", 0755).ok());
  ExecutableSwap swap(exec_);
  ASSERT_EQ(chmod((dir_ + "/bin").c_str(), 0555), 0);
  absl::Status staged = swap.Stage(Download("v2", "v2"), Sha256Of("v2"));
  ASSERT_EQ(chmod((dir_ + "/bin").c_str(), 0755), 0);
  EXPECT_EQ(staged.code(), absl::StatusCode::kPermissionDenied) << staged;
  EXPECT_EQ(Read(exec_), "v1");
}

TEST_F(ExecutableSwapTest, RollbackAfterCrashBetweenLinkAndRename) {
  ASSERT_TRUE(WriteFileAtomically(exec_, "v1", 0755).ok());
  ExecutableSwap swap(exec_);
  ASSERT_TRUE(swap.Stage(Download("v2", "v2"), Sha256Of("v2")).ok());
  // What Swap() leaves if the agent dies right after link().
  ASSERT_EQ(link(exec_.c_str(), swap.backup_path().c_str()), 0);
  ASSERT_TRUE(swap.Rollback(Sha256Of("v2")).ok());
  EXPECT_EQ(Read(exec_), "v1");
  EXPECT_FALSE(swap.HasBackup());
  EXPECT_FALSE(PathExists(swap.staged_path()));
}

TEST_F(ExecutableSwapTest, ReadersNeverSeeMissingOrPartialExec) {
  // Two large, distinct contents.
  std::string a(4 << 20, 'a');
  std::string b(4 << 20, 'b');
  for (size_t i = 0; i < a.size(); i += 4096) a[i] = 'A';
  const std::string path_a = Download("a", a);
  const std::string path_b = Download("b", b);
  const Digest digest_a = Sha256Of(a);
  const Digest digest_b = Sha256Of(b);
  ASSERT_TRUE(WriteFileAtomically(exec_, a, 0755).ok());

  std::atomic<bool> done{false};
  std::atomic<int> reads{0};
  std::atomic<int> bad{0};
  std::string first_bad;
  std::thread reader([&] {
    std::string buf;
    while (!done.load()) {
      int fd = open(exec_.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) {
        if (bad++ == 0)
          first_bad = "open failed: errno " + std::to_string(errno);
        continue;
      }
      buf.clear();
      char chunk[1 << 16];
      ssize_t n;
      while ((n = read(fd, chunk, sizeof(chunk))) > 0) buf.append(chunk, n);
      close(fd);
      if (buf != a && buf != b) {
        if (bad++ == 0)
          first_bad = "partial file of " + std::to_string(buf.size());
      }
      ++reads;
    }
  });

  ExecutableSwap swap(exec_);
  for (int i = 0; i < 20; ++i) {
    const bool to_b = i % 2 == 0;
    ASSERT_TRUE(
        swap.Stage(to_b ? path_b : path_a, to_b ? digest_b : digest_a).ok());
    ASSERT_TRUE(swap.Swap().ok());
    if (i % 4 == 3) {
      ASSERT_TRUE(swap.Rollback(to_b ? digest_b : digest_a).ok());
    } else {
      ASSERT_TRUE(swap.Commit().ok());
    }
  }
  done = true;
  reader.join();
  EXPECT_EQ(bad.load(), 0) << first_bad;
  EXPECT_GT(reads.load(), 20);
}

}  // namespace
}  // namespace fleet::agent
