#include "common/files.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace fleet {
namespace {

absl::Status WriteAll(int fd, absl::string_view data, const std::string& path) {
  const char* p = data.data();
  size_t left = data.size();
  while (left > 0) {
    ssize_t n = write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, "write " + path);
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status MakeDirs(const std::string& path, int mode) {
  if (path.empty()) return absl::InvalidArgumentError("mkdir: empty path");
  struct stat st;
  if (stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return absl::OkStatus();
    return absl::FailedPreconditionError(
        absl::StrCat("mkdir ", path, ": exists and is not a directory"));
  }
  std::string parent = Dirname(path);
  if (parent != path) RETURN_IF_ERROR(MakeDirs(parent, mode));
  // Another process may create it between our stat and mkdir; that is fine.
  if (mkdir(path.c_str(), static_cast<mode_t>(mode)) != 0 && errno != EEXIST) {
    return absl::ErrnoToStatus(errno, "mkdir " + path);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, "open " + path);
  absl::Cleanup closer = [fd] { close(fd); };
  std::string out;
  char buffer[1 << 16];
  while (true) {
    ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, "read " + path);
    }
    if (n == 0) break;
    out.append(buffer, static_cast<size_t>(n));
  }
  return out;
}

absl::Status WriteNewFile(const std::string& path, absl::string_view data,
                          int mode) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return absl::ErrnoToStatus(errno, "create " + path);
  bool ok = false;
  absl::Cleanup cleanup = [&] {
    if (fd >= 0) close(fd);
    if (!ok) unlink(path.c_str());
  };
  // The umask may have narrowed the mode; the contract is the exact mode.
  if (fchmod(fd, mode) != 0) return absl::ErrnoToStatus(errno, "chmod " + path);
  RETURN_IF_ERROR(WriteAll(fd, data, path));
  if (fsync(fd) != 0) return absl::ErrnoToStatus(errno, "fsync " + path);
  int rc = close(fd);
  fd = -1;
  if (rc != 0) return absl::ErrnoToStatus(errno, "close " + path);
  ok = true;
  return FsyncDir(Dirname(path));
}

absl::Status WriteFileAtomically(const std::string& path,
                                 absl::string_view data, int mode) {
  std::string tmp = path + ".tmp-XXXXXX";
  int fd = mkostemp(tmp.data(), O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, "mkstemp " + tmp);
  bool renamed = false;
  absl::Cleanup cleanup = [&] {
    if (fd >= 0) close(fd);
    if (!renamed) unlink(tmp.c_str());
  };
  RETURN_IF_ERROR(WriteAll(fd, data, tmp));
  // mkstemp creates 0600; fchmod is not subject to the umask, so the final
  // mode is exactly what the caller asked for.
  if (fchmod(fd, static_cast<mode_t>(mode)) != 0) {
    return absl::ErrnoToStatus(errno, "chmod " + tmp);
  }
  if (fsync(fd) != 0) return absl::ErrnoToStatus(errno, "fsync " + tmp);
  int rc = close(fd);
  fd = -1;
  if (rc != 0) return absl::ErrnoToStatus(errno, "close " + tmp);
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::ErrnoToStatus(errno, "rename " + tmp + " -> " + path);
  }
  renamed = true;
  return FsyncDir(Dirname(path));
}

absl::Status FsyncPath(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, "open " + path);
  absl::Status status = absl::OkStatus();
  if (fsync(fd) != 0) status = absl::ErrnoToStatus(errno, "fsync " + path);
  close(fd);
  return status;
}

absl::Status FsyncDir(const std::string& dir) {
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, "open " + dir);
  absl::Status status = absl::OkStatus();
  if (fsync(fd) != 0) status = absl::ErrnoToStatus(errno, "fsync " + dir);
  close(fd);
  return status;
}

absl::Status DurableRename(const std::string& from, const std::string& to) {
  if (rename(from.c_str(), to.c_str()) != 0) {
    return absl::ErrnoToStatus(errno, "rename " + from + " -> " + to);
  }
  RETURN_IF_ERROR(FsyncDir(Dirname(to)));
  // A rename across directories also changes the source directory.
  std::string from_dir = Dirname(from);
  if (from_dir != Dirname(to)) RETURN_IF_ERROR(FsyncDir(from_dir));
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> FileSize(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    return absl::ErrnoToStatus(errno, "stat " + path);
  }
  return static_cast<uint64_t>(st.st_size);
}

bool PathExists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

absl::Status RemoveFile(const std::string& path) {
  if (unlink(path.c_str()) != 0 && errno != ENOENT) {
    return absl::ErrnoToStatus(errno, "unlink " + path);
  }
  return absl::OkStatus();
}

namespace {

// nftw offers no user pointer; the first failure is reported through this.
thread_local int remove_tree_errno = 0;
thread_local std::string* remove_tree_failed = nullptr;

int RemoveEntry(const char* path, const struct stat*, int type, struct FTW*) {
  int rc = (type == FTW_DP) ? rmdir(path) : unlink(path);
  if (rc != 0 && errno != ENOENT) {
    remove_tree_errno = errno;
    if (remove_tree_failed != nullptr) *remove_tree_failed = path;
    return 1;
  }
  return 0;
}

}  // namespace

absl::Status RemoveTree(const std::string& path) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return absl::ErrnoToStatus(errno, "stat " + path);
  }
  std::string failed;
  remove_tree_errno = 0;
  remove_tree_failed = &failed;
  // FTW_DEPTH visits children before their directory; FTW_PHYS never follows
  // a symlink out of the tree.
  int rc = nftw(path.c_str(), RemoveEntry, 64, FTW_DEPTH | FTW_PHYS);
  remove_tree_failed = nullptr;
  if (rc == 0) return absl::OkStatus();
  if (remove_tree_errno != 0) {
    return absl::ErrnoToStatus(remove_tree_errno, "remove " + failed);
  }
  return absl::ErrnoToStatus(errno, "walk " + path);
}

std::string Dirname(absl::string_view path) {
  size_t end = path.size();
  while (end > 1 && path[end - 1] == '/') --end;
  size_t slash = path.substr(0, end).rfind('/');
  if (slash == absl::string_view::npos) return ".";
  while (slash > 0 && path[slash - 1] == '/') --slash;
  if (slash == 0) return "/";
  return std::string(path.substr(0, slash));
}

std::string Basename(absl::string_view path) {
  size_t end = path.size();
  while (end > 1 && path[end - 1] == '/') --end;
  absl::string_view trimmed = path.substr(0, end);
  size_t slash = trimmed.rfind('/');
  if (slash == absl::string_view::npos || trimmed == "/") {
    return std::string(trimmed);
  }
  return std::string(trimmed.substr(slash + 1));
}

std::string JoinPath(absl::string_view a, absl::string_view b) {
  if (a.empty()) return std::string(b);
  if (b.empty()) return std::string(a);
  if (b[0] == '/') b.remove_prefix(1);
  if (a.back() == '/') return absl::StrCat(a, b);
  return absl::StrCat(a, "/", b);
}

absl::StatusOr<uint64_t> FreeBytes(const std::string& path) {
  struct statvfs st;
  if (statvfs(path.c_str(), &st) != 0) {
    return absl::ErrnoToStatus(errno, "statvfs " + path);
  }
  return static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
}

}  // namespace fleet
