#include "controller/blob_store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/ids.h"
#include "common/status_macros.h"

namespace fleet::controller {
namespace {

constexpr char kDigestDir[] = "sha256";
constexpr char kTempDir[] = "tmp";

absl::Status RemoveFilesIn(const std::string& dir) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return absl::ErrnoToStatus(errno, "opendir " + dir);
  absl::Status status;
  while (dirent* entry = readdir(d)) {
    std::string name = entry->d_name;
    if (name == "." || name == "..") continue;
    absl::Status removed = RemoveFile(JoinPath(dir, name));
    if (status.ok()) status = removed;
  }
  closedir(d);
  return status;
}

}  // namespace

// ------------------------------------------------------------- BlobWriter

BlobWriter::~BlobWriter() { Discard(); }

void BlobWriter::Discard() {
  if (fd_ >= 0) {
    close(fd_);
    fd_ = -1;
  }
  if (!done_) {
    (void)RemoveFile(temp_path_);
    done_ = true;
  }
}

absl::Status BlobWriter::Append(absl::string_view data) {
  if (done_ || fd_ < 0) {
    return absl::FailedPreconditionError("blob upload already finished");
  }
  hasher_.Update(data);
  const char* p = data.data();
  size_t left = data.size();
  while (left > 0) {
    ssize_t n = write(fd_, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, "write " + temp_path_);
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  size_ += data.size();
  return absl::OkStatus();
}

absl::Status BlobWriter::Commit(const Digest& expected,
                                uint64_t expected_size) {
  if (done_ || fd_ < 0) {
    return absl::FailedPreconditionError("blob upload already finished");
  }
  if (size_ != expected_size) {
    Discard();
    return absl::InvalidArgumentError(
        absl::StrCat("artifact size mismatch: manifest says ", expected_size,
                     " bytes, received ", size_));
  }
  Digest actual = hasher_.Finish();
  if (actual != expected) {
    Discard();
    return absl::InvalidArgumentError(absl::StrCat(
        "artifact sha256 mismatch: manifest says ", DigestToHex(expected),
        ", received ", DigestToHex(actual)));
  }
  if (fsync(fd_) != 0) {
    absl::Status status = absl::ErrnoToStatus(errno, "fsync " + temp_path_);
    Discard();
    return status;
  }
  close(fd_);
  fd_ = -1;
  const std::string hex = DigestToHex(expected);
  const std::string digest_dir = JoinPath(blobs_dir_, kDigestDir);
  const std::string shard = JoinPath(digest_dir, hex.substr(0, 2));
  absl::Status status = MakeDirs(shard);
  // A new shard directory must itself be durable before the rename is.
  if (status.ok()) status = FsyncDir(digest_dir);
  if (status.ok()) status = DurableRename(temp_path_, JoinPath(shard, hex));
  if (!status.ok()) {
    Discard();
    return status;
  }
  done_ = true;
  return absl::OkStatus();
}

// ------------------------------------------------------------- BlobReader

BlobReader::~BlobReader() {
  if (fd_ >= 0) close(fd_);
}

BlobReader::BlobReader(BlobReader&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      size_(other.size_),
      path_(std::move(other.path_)) {}

absl::StatusOr<std::string> BlobReader::ReadAt(uint64_t offset,
                                               size_t max_bytes) const {
  std::string out;
  if (offset >= size_) return out;
  out.resize(
      static_cast<size_t>(std::min<uint64_t>(max_bytes, size_ - offset)));
  size_t got = 0;
  while (got < out.size()) {
    ssize_t n = pread(fd_, out.data() + got, out.size() - got,
                      static_cast<off_t>(offset + got));
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, "pread " + path_);
    }
    if (n == 0) break;  // the file shrank under us
    got += static_cast<size_t>(n);
  }
  out.resize(got);
  return out;
}

// -------------------------------------------------------------- BlobStore

absl::StatusOr<std::unique_ptr<BlobStore>> BlobStore::Open(
    const std::string& data_dir) {
  const std::string root = JoinPath(data_dir, "blobs");
  RETURN_IF_ERROR(MakeDirs(JoinPath(root, kDigestDir)));
  RETURN_IF_ERROR(MakeDirs(JoinPath(root, kTempDir)));
  RETURN_IF_ERROR(RemoveFilesIn(JoinPath(root, kTempDir)));
  return std::unique_ptr<BlobStore>(new BlobStore(root));
}

std::string BlobStore::PathFor(const Digest& digest) const {
  const std::string hex = DigestToHex(digest);
  return JoinPath(JoinPath(JoinPath(root_, kDigestDir), hex.substr(0, 2)), hex);
}

bool BlobStore::Contains(const Digest& digest) const {
  return PathExists(PathFor(digest));
}

absl::StatusOr<std::unique_ptr<BlobWriter>> BlobStore::NewWriter() const {
  const std::string path = JoinPath(JoinPath(root_, kTempDir), NewId("upload"));
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return absl::ErrnoToStatus(errno, "create " + path);
  return std::unique_ptr<BlobWriter>(new BlobWriter(root_, path, fd));
}

absl::StatusOr<BlobReader> BlobStore::OpenForRead(const Digest& digest) const {
  const std::string path = PathFor(digest);
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) {
      return absl::NotFoundError("no artifact with sha256 " +
                                 DigestToHex(digest));
    }
    return absl::ErrnoToStatus(errno, "open " + path);
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    absl::Status status = absl::ErrnoToStatus(errno, "fstat " + path);
    close(fd);
    return status;
  }
  return BlobReader(fd, static_cast<uint64_t>(st.st_size), path);
}

}  // namespace fleet::controller
