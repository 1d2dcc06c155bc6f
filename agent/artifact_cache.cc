#include "agent/artifact_cache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace fleet::agent {
namespace {

constexpr char kTempSuffix[] = ".tmp";

// Streams `from` into `to` durably: a temp file beside `to`, fsync'd,
// renamed over `to`, directory fsync'd.
absl::Status CopyFileDurably(const std::string& from, const std::string& to) {
  const int in = open(from.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) return absl::ErrnoToStatus(errno, "open " + from);
  absl::Cleanup close_in = [in] { close(in); };
  const std::string temp = to + kTempSuffix;
  const int out =
      open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (out < 0) return absl::ErrnoToStatus(errno, "open " + temp);
  bool done = false;
  absl::Cleanup close_out = [out, &temp, &done] {
    close(out);
    if (!done) (void)RemoveFile(temp);
  };
  std::string buf(1 << 20, '\0');
  for (;;) {
    ssize_t n = read(in, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, "read " + from);
    }
    if (n == 0) break;
    for (ssize_t off = 0; off < n;) {
      ssize_t w = write(out, buf.data() + off, static_cast<size_t>(n - off));
      if (w < 0) {
        if (errno == EINTR) continue;
        return absl::ErrnoToStatus(errno, "write " + temp);
      }
      off += w;
    }
  }
  if (fsync(out) != 0) return absl::ErrnoToStatus(errno, "fsync " + temp);
  RETURN_IF_ERROR(DurableRename(temp, to));
  done = true;
  return absl::OkStatus();
}

}  // namespace

ArtifactCache::ArtifactCache(std::string dir, int keep)
    : dir_(std::move(dir)), keep_(std::max(keep, 0)) {}

std::string ArtifactCache::EntryPath(const Digest& digest) const {
  return JoinPath(dir_, DigestToHex(digest));
}

bool ArtifactCache::Contains(const Digest& digest, uint64_t size) const {
  if (keep_ == 0) return false;
  absl::StatusOr<uint64_t> have = FileSize(EntryPath(digest));
  return have.ok() && *have == size;
}

absl::Status ArtifactCache::CopyOut(const Digest& digest,
                                    const std::string& path) {
  const std::string entry = EntryPath(digest);
  if (keep_ == 0 || !PathExists(entry)) {
    return absl::NotFoundError("no cached artifact " + DigestToHex(digest));
  }
  RETURN_IF_ERROR(CopyFileDurably(entry, path));
  return MarkNewest(entry);
}

absl::Status ArtifactCache::Add(const Digest& digest, const std::string& path) {
  if (keep_ == 0) return absl::OkStatus();
  RETURN_IF_ERROR(MakeDirs(dir_, 0700));
  const std::string entry = EntryPath(digest);
  if (PathExists(entry)) {
    RETURN_IF_ERROR(MarkNewest(entry));
  } else {
    RETURN_IF_ERROR(CopyFileDurably(path, entry));
    RETURN_IF_ERROR(MarkNewest(entry));
  }
  return Evict();
}

absl::Status ArtifactCache::Remove(const Digest& digest) {
  return RemoveFile(EntryPath(digest));
}

std::vector<Digest> ArtifactCache::Entries() const {
  struct Entry {
    Digest digest;
    struct timespec mtime;
  };
  std::vector<Entry> entries;
  DIR* d = opendir(dir_.c_str());
  if (d == nullptr) return {};
  while (struct dirent* e = readdir(d)) {
    absl::StatusOr<Digest> digest = DigestFromHex(e->d_name);
    if (!digest.ok()) continue;  // temp files and strangers
    struct stat st;
    if (stat(JoinPath(dir_, e->d_name).c_str(), &st) != 0) continue;
    entries.push_back({*digest, st.st_mtim});
  }
  closedir(d);
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    if (a.mtime.tv_sec != b.mtime.tv_sec) {
      return a.mtime.tv_sec > b.mtime.tv_sec;
    }
    return a.mtime.tv_nsec > b.mtime.tv_nsec;
  });
  std::vector<Digest> out;
  for (const Entry& e : entries) out.push_back(e.digest);
  return out;
}

absl::Status ArtifactCache::MarkNewest(const std::string& entry) {
  // File times come from a coarse clock (milliseconds apart at best): two
  // entries added in one tick would tie. The newest entry's mtime + 1 ns
  // keeps the order strict.
  struct timespec when;
  clock_gettime(CLOCK_REALTIME, &when);
  DIR* d = opendir(dir_.c_str());
  if (d != nullptr) {
    while (struct dirent* e = readdir(d)) {
      if (!DigestFromHex(e->d_name).ok()) continue;
      struct stat st;
      if (stat(JoinPath(dir_, e->d_name).c_str(), &st) != 0) continue;
      const struct timespec& m = st.st_mtim;
      if (m.tv_sec > when.tv_sec ||
          (m.tv_sec == when.tv_sec && m.tv_nsec >= when.tv_nsec)) {
        when = m;
        if (++when.tv_nsec == 1000000000) {
          when.tv_nsec = 0;
          ++when.tv_sec;
        }
      }
    }
    closedir(d);
  }
  const struct timespec times[2] = {when, when};
  if (utimensat(AT_FDCWD, entry.c_str(), times, 0) != 0) {
    return absl::ErrnoToStatus(errno, "utimensat " + entry);
  }
  return absl::OkStatus();
}

absl::Status ArtifactCache::Evict() {
  const std::vector<Digest> entries = Entries();
  for (size_t i = static_cast<size_t>(keep_); i < entries.size(); ++i) {
    LogInfo("dropping old cached version",
            {{"sha256", DigestToHex(entries[i])}, {"keep", keep_}});
    RETURN_IF_ERROR(Remove(entries[i]));
  }
  return absl::OkStatus();
}

}  // namespace fleet::agent
