#include "common/files.h"

#include <dirent.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace fleet {
namespace {

std::string NewTempDir() {
  std::string dir = testing::TempDir() + "/files_test_XXXXXX";
  EXPECT_NE(mkdtemp(dir.data()), nullptr);
  return dir;
}

std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = opendir(dir.c_str());
  EXPECT_NE(d, nullptr);
  if (d == nullptr) return names;
  while (struct dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  closedir(d);
  return names;
}

int ModeOf(const std::string& path) {
  struct stat st;
  EXPECT_EQ(stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

TEST(FilesTest, WriteFileAtomicallyReplacesContentAndLeavesNoTempFiles) {
  const std::string dir = NewTempDir();
  const std::string path = JoinPath(dir, "state.json");
  ASSERT_TRUE(WriteFileAtomically(path, "first version, longer").ok());
  ASSERT_TRUE(WriteFileAtomically(path, "second").ok());
  absl::StatusOr<std::string> content = ReadFile(path);
  ASSERT_TRUE(content.ok()) << content.status();
  EXPECT_EQ(*content, "second");
  EXPECT_EQ(ListDir(dir), std::vector<std::string>{"state.json"});
  ASSERT_TRUE(RemoveTree(dir).ok());
}

TEST(FilesTest, WriteFileAtomicallyAppliesModeExactly) {
  const std::string dir = NewTempDir();
  const std::string path = JoinPath(dir, "bin");
  ASSERT_TRUE(WriteFileAtomically(path, "#!/bin/sh\n", 0755).ok());
  EXPECT_EQ(ModeOf(path), 0755);
  ASSERT_TRUE(WriteFileAtomically(path, "secret", 0600).ok());
  EXPECT_EQ(ModeOf(path), 0600);
  ASSERT_TRUE(RemoveTree(dir).ok());
}

TEST(FilesTest, WriteFileAtomicallyRoundTripsBinaryData) {
  const std::string dir = NewTempDir();
  const std::string path = JoinPath(dir, "blob");
  std::string data(200000, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 13);
  ASSERT_TRUE(WriteFileAtomically(path, data).ok());
  EXPECT_EQ(*ReadFile(path), data);
  EXPECT_EQ(*FileSize(path), data.size());
  ASSERT_TRUE(RemoveTree(dir).ok());
}

TEST(FilesTest, WriteIntoMissingDirectoryFailsWithNotFound) {
  const std::string dir = NewTempDir();
  absl::Status s = WriteFileAtomically(JoinPath(dir, "no/such/file"), "x");
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  ASSERT_TRUE(RemoveTree(dir).ok());
}

TEST(FilesTest, MissingFilesAreNotFound) {
  const std::string dir = NewTempDir();
  const std::string missing = JoinPath(dir, "missing");
  absl::StatusOr<std::string> content = ReadFile(missing);
  EXPECT_EQ(content.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(content.status().message().find(missing), absl::string_view::npos)
      << content.status();
  EXPECT_EQ(FileSize(missing).status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(PathExists(missing));
  EXPECT_TRUE(RemoveFile(missing).ok());
  EXPECT_TRUE(RemoveTree(missing).ok());
  ASSERT_TRUE(RemoveTree(dir).ok());
}

TEST(FilesTest, MakeDirsCreatesNestedDirectoriesAndIsIdempotent) {
  const std::string dir = NewTempDir();
  const std::string nested = JoinPath(dir, "a/b/c");
  ASSERT_TRUE(MakeDirs(nested, 0700).ok());
  struct stat st;
  ASSERT_EQ(stat(nested.c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  EXPECT_TRUE(MakeDirs(nested).ok());
  EXPECT_TRUE(MakeDirs(nested + "/").ok());

  const std::string file = JoinPath(dir, "file");
  ASSERT_TRUE(WriteFileAtomically(file, "x").ok());
  EXPECT_FALSE(MakeDirs(file).ok());
  EXPECT_FALSE(MakeDirs(JoinPath(file, "sub")).ok());
  ASSERT_TRUE(RemoveTree(dir).ok());
}

TEST(FilesTest, RemoveTreeDeletesEverythingAndDoesNotFollowSymlinks) {
  const std::string dir = NewTempDir();
  const std::string outside = NewTempDir();
  const std::string keep = JoinPath(outside, "keep");
  ASSERT_TRUE(WriteFileAtomically(keep, "precious").ok());
  ASSERT_TRUE(MakeDirs(JoinPath(dir, "x/y")).ok());
  ASSERT_TRUE(WriteFileAtomically(JoinPath(dir, "x/y/f"), "1").ok());
  ASSERT_TRUE(WriteFileAtomically(JoinPath(dir, "g"), "2").ok());
  ASSERT_EQ(symlink(outside.c_str(), JoinPath(dir, "x/link").c_str()), 0);

  ASSERT_TRUE(RemoveTree(dir).ok());
  EXPECT_FALSE(PathExists(dir));
  EXPECT_EQ(*ReadFile(keep), "precious");
  ASSERT_TRUE(RemoveTree(outside).ok());
}

TEST(FilesTest, DurableRenameMovesAndRemoveFileDeletes) {
  const std::string dir = NewTempDir();
  const std::string from = JoinPath(dir, "from");
  const std::string to = JoinPath(dir, "sub/to");
  ASSERT_TRUE(MakeDirs(JoinPath(dir, "sub")).ok());
  ASSERT_TRUE(WriteFileAtomically(from, "payload").ok());
  ASSERT_TRUE(DurableRename(from, to).ok());
  EXPECT_FALSE(PathExists(from));
  EXPECT_EQ(*ReadFile(to), "payload");
  absl::Status s = DurableRename(from, to);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(s.message().find("rename " + from + " -> " + to),
            absl::string_view::npos)
      << s;
  EXPECT_TRUE(FsyncPath(to).ok());
  EXPECT_TRUE(FsyncDir(dir).ok());
  EXPECT_TRUE(RemoveFile(to).ok());
  EXPECT_FALSE(PathExists(to));
  ASSERT_TRUE(RemoveTree(dir).ok());
}

TEST(FilesTest, PathHelpers) {
  const struct {
    const char* path;
    const char* dirname;
    const char* basename;
  } kCases[] = {
      {"/a/b/c", "/a/b", "c"}, {"/a/b/", "/a", "b"}, {"a/b", "a", "b"},
      {"a", ".", "a"},         {"/a", "/", "a"},     {"/", "/", "/"},
      {"a//b", "a", "b"},
  };
  for (const auto& c : kCases) {
    EXPECT_EQ(Dirname(c.path), c.dirname) << c.path;
    EXPECT_EQ(Basename(c.path), c.basename) << c.path;
  }
  EXPECT_EQ(JoinPath("a", "b"), "a/b");
  EXPECT_EQ(JoinPath("a/", "b"), "a/b");
  EXPECT_EQ(JoinPath("a", "/b"), "a/b");
  EXPECT_EQ(JoinPath("", "b"), "b");
  EXPECT_EQ(JoinPath("a", ""), "a");
}

TEST(FilesTest, FreeBytesIsPositive) {
  absl::StatusOr<uint64_t> free = FreeBytes(testing::TempDir());
  ASSERT_TRUE(free.ok()) << free.status();
  EXPECT_GT(*free, 0u);
  EXPECT_EQ(FreeBytes("/no/such/dir").status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace fleet
