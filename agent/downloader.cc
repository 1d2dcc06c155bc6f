#include "agent/downloader.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "agent/failpoint.h"
#include "common/files.h"
#include "common/grpc_status.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace fleet::agent {
namespace {

absl::Status WriteAll(int fd, absl::string_view data, const std::string& path) {
  while (!data.empty()) {
    ssize_t n = write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, "write " + path);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

// Hashes the first `length` bytes of `fd` from offset 0.
absl::Status HashPrefix(int fd, uint64_t length, const std::string& path,
                        Sha256& hasher) {
  std::vector<char> buf(1 << 20);
  uint64_t done = 0;
  while (done < length) {
    size_t want =
        static_cast<size_t>(std::min<uint64_t>(buf.size(), length - done));
    ssize_t n = pread(fd, buf.data(), want, static_cast<off_t>(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, "read " + path);
    }
    if (n == 0) {
      return absl::DataLossError(
          absl::StrCat(path, " shrank while being read at ", done));
    }
    hasher.Update(buf.data(), static_cast<size_t>(n));
    done += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

// Ends a transfer that is too slow: checks the bytes received at the end of
// every rate window and the elapsed time against the deadline, on its own
// thread, and calls `abort` (once) when a limit is broken.
class TransferWatchdog {
 public:
  TransferWatchdog(const DownloadLimits& limits,
                   const std::atomic<uint64_t>& received,
                   std::function<void()> abort)
      : limits_(limits), received_(received), abort_(std::move(abort)) {
    const bool rate = limits_.min_bytes_per_second > 0 &&
                      limits_.rate_window > absl::ZeroDuration();
    const bool deadline = limits_.transfer_deadline > absl::ZeroDuration();
    if (rate || deadline) thread_ = std::thread([this] { Run(); });
  }
  ~TransferWatchdog() { Stop(); }

  // Ends the watch; after it returns, `abort` is not called any more.
  void Stop() {
    done_.Cancel("transfer ended");
    if (thread_.joinable()) thread_.join();
  }

  // Why the transfer was cut, if it was.
  std::optional<std::string> tripped() const {
    absl::MutexLock lock(&mu_);
    return tripped_;
  }

 private:
  void Run() {
    const absl::Time start = absl::Now();
    const bool rate = limits_.min_bytes_per_second > 0 &&
                      limits_.rate_window > absl::ZeroDuration();
    const bool deadline = limits_.transfer_deadline > absl::ZeroDuration();
    absl::Time window_start = start;
    uint64_t window_bytes = 0;
    for (;;) {
      absl::Time next = absl::InfiniteFuture();
      if (rate) next = window_start + limits_.rate_window;
      if (deadline) next = std::min(next, start + limits_.transfer_deadline);
      if (done_.WaitFor(next - absl::Now())) return;
      const absl::Time now = absl::Now();
      std::string why;
      if (deadline && now - start >= limits_.transfer_deadline) {
        why = absl::StrCat("did not finish within ",
                           absl::FormatDuration(limits_.transfer_deadline),
                           " (download deadline)");
      } else if (rate && now - window_start >= limits_.rate_window) {
        const uint64_t bytes = received_.load(std::memory_order_relaxed);
        const double seconds = absl::ToDoubleSeconds(now - window_start);
        const uint64_t moved = bytes - window_bytes;
        if (static_cast<double>(moved) <
            static_cast<double>(limits_.min_bytes_per_second) * seconds) {
          why = absl::StrCat("stalled: ", moved, " bytes in the last ",
                             absl::FormatDuration(now - window_start),
                             ", below the minimum rate of ",
                             limits_.min_bytes_per_second, " bytes/s");
        }
        window_start = now;
        window_bytes = bytes;
      }
      if (!why.empty()) {
        {
          absl::MutexLock lock(&mu_);
          tripped_ = why;
        }
        abort_();
        return;
      }
    }
  }

  const DownloadLimits limits_;
  const std::atomic<uint64_t>& received_;
  const std::function<void()> abort_;
  Cancellation done_;
  mutable absl::Mutex mu_;
  std::optional<std::string> tripped_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace

Downloader::Downloader(v1::AgentService::StubInterface& stub, std::string dir,
                       DownloadLimits limits, ArtifactCache* cache)
    : stub_(stub), dir_(std::move(dir)), limits_(limits), cache_(cache) {}

std::string Downloader::PartPath(const Digest& digest) const {
  return JoinPath(dir_, DigestToHex(digest) + ".part");
}

uint64_t Downloader::BytesOnDisk(const Digest& digest) const {
  absl::StatusOr<uint64_t> size = FileSize(PartPath(digest));
  return size.ok() ? *size : 0;
}

absl::Status Downloader::Discard(const Digest& digest) {
  return RemoveFile(PartPath(digest));
}

absl::Status Downloader::DiscardAll() {
  DIR* d = opendir(dir_.c_str());
  if (d == nullptr) {
    if (errno == ENOENT) return absl::OkStatus();
    return absl::ErrnoToStatus(errno, "opendir " + dir_);
  }
  std::vector<std::string> names;
  while (struct dirent* e = readdir(d)) {
    const absl::string_view name = e->d_name;
    if (absl::EndsWith(name, ".part")) names.emplace_back(name);
  }
  closedir(d);
  for (const std::string& name : names) {
    RETURN_IF_ERROR(RemoveFile(JoinPath(dir_, name)));
  }
  return absl::OkStatus();
}

absl::StatusOr<DownloadResult> Downloader::Fetch(const Digest& digest,
                                                 uint64_t size,
                                                 Cancellation& cancel) {
  absl::StatusOr<DownloadResult> result = FetchOnce(digest, size, cancel);
  // A wrong digest after a resume may be the old prefix's fault (a partial
  // file from another source, or changed under us): FetchOnce removed the
  // file, so one more transfer starts from byte 0 and decides.
  if (!result.ok() && result.status().code() == absl::StatusCode::kDataLoss &&
      resumed_from_last_ > 0 && !PathExists(PartPath(digest))) {
    LogWarning("resumed download did not match; fetching again from byte 0",
               {{"sha256", DigestToHex(digest)},
                {"resumed_from", resumed_from_last_},
                {"error", result.status().ToString()}});
    result = FetchOnce(digest, size, cancel);
  }
  if (result.ok() && cache_ != nullptr) {
    // Kept for a later rollback or re-install; the download itself is done.
    if (absl::Status kept = cache_->Add(digest, result->path); !kept.ok()) {
      LogWarning("caching the artifact failed", {{"error", kept.ToString()}});
    }
  }
  return result;
}

absl::StatusOr<DownloadResult> Downloader::FetchOnce(const Digest& digest,
                                                     uint64_t size,
                                                     Cancellation& cancel) {
  resumed_from_last_ = 0;
  if (cancel.cancelled()) return absl::CancelledError(cancel.reason());
  RETURN_IF_ERROR(MakeDirs(dir_, 0700));
  DownloadResult result;
  result.path = PartPath(digest);
  const std::string& path = result.path;
  if (cache_ != nullptr && !PathExists(path) &&
      cache_->Contains(digest, size)) {
    absl::Status copied = cache_->CopyOut(digest, path);
    if (copied.ok()) {
      result.from_cache = true;
      LogInfo("artifact taken from the version cache",
              {{"sha256", DigestToHex(digest)}});
    } else {
      LogWarning("version cache unreadable; downloading",
                 {{"error", copied.ToString()}});
    }
  }

  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return absl::ErrnoToStatus(errno, "open " + path);
  absl::Cleanup close_fd = [fd] { close(fd); };
  struct stat st;
  if (fstat(fd, &st) != 0) return absl::ErrnoToStatus(errno, "stat " + path);
  uint64_t have = static_cast<uint64_t>(st.st_size);
  if (have > size) {
    // Left by a download of something else under this name: useless.
    if (ftruncate(fd, 0) != 0) {
      return absl::ErrnoToStatus(errno, "truncate " + path);
    }
    have = 0;
  }
  result.resumed_from = have;
  resumed_from_last_ = have;

  Sha256 hasher;
  RETURN_IF_ERROR(HashPrefix(fd, have, path, hasher));
  if (lseek(fd, static_cast<off_t>(have), SEEK_SET) < 0) {
    return absl::ErrnoToStatus(errno, "seek " + path);
  }

  auto discard = [&](absl::Status status) {
    LogWarning("discarding download",
               {{"path", path}, {"error", status.ToString()}});
    (void)ftruncate(fd, 0);
    (void)RemoveFile(path);
    return status;
  };

  if (have < size) {
    grpc::ClientContext ctx;
    CancelCallback abort_rpc(cancel, [&ctx] { ctx.TryCancel(); });
    std::atomic<uint64_t> received{0};
    TransferWatchdog watchdog(limits_, received, [&ctx] { ctx.TryCancel(); });
    v1::FetchArtifactRequest request;
    request.set_sha256(DigestToBytes(digest));
    request.set_offset(have);
    std::unique_ptr<grpc::ClientReaderInterface<v1::ArtifactChunk>> reader =
        stub_.FetchArtifact(&ctx, request);
    v1::ArtifactChunk chunk;
    absl::Status failure;
    while (failure.ok() && reader->Read(&chunk)) {
      if (chunk.total_size() != 0 && chunk.total_size() != size) {
        ctx.TryCancel();
        (void)reader->Finish();
        return discard(absl::DataLossError(
            absl::StrCat("artifact ", DigestToHex(digest), " has ",
                         chunk.total_size(), " bytes, manifest says ", size)));
      }
      if (chunk.offset() != have) {
        failure = absl::DataLossError(
            absl::StrCat("chunk at offset ", chunk.offset(), ", expected ",
                         have, " (artifact ", DigestToHex(digest), ")"));
        break;
      }
      absl::string_view data = chunk.data();
      bool overflow = false;
      if (data.size() > size - have) {
        data = data.substr(0, static_cast<size_t>(size - have));
        overflow = true;
      }
      failure = WriteAll(fd, data, path);
      if (!failure.ok()) break;
      hasher.Update(data);
      have += data.size();
      result.fetched += data.size();
      received.store(result.fetched, std::memory_order_relaxed);
      Failpoint("download.chunk");
      if (overflow) {
        failure = absl::DataLossError(
            absl::StrCat("artifact ", DigestToHex(digest), " is longer than ",
                         size, " bytes"));
      }
    }
    if (!failure.ok()) {
      ctx.TryCancel();
      (void)reader->Finish();
      if (cancel.cancelled()) return absl::CancelledError(cancel.reason());
      return failure;
    }
    grpc::Status rpc = reader->Finish();
    watchdog.Stop();
    if (cancel.cancelled()) return absl::CancelledError(cancel.reason());
    if (std::optional<std::string> why = watchdog.tripped()) {
      return absl::DeadlineExceededError(
          absl::StrCat("FetchArtifact ", DigestToHex(digest), " ", *why, "; ",
                       have, " of ", size, " bytes kept for a resume"));
    }
    if (!rpc.ok()) {
      absl::Status status = FromGrpcStatus(rpc);
      return absl::Status(status.code(),
                          absl::StrCat("FetchArtifact ", DigestToHex(digest),
                                       " at ", have, ": ", status.message()));
    }
    if (have < size) {
      return absl::UnavailableError(
          absl::StrCat("FetchArtifact ", DigestToHex(digest), " ended at ",
                       have, " of ", size, " bytes"));
    }
  }

  if (fsync(fd) != 0) return absl::ErrnoToStatus(errno, "fsync " + path);
  result.size = have;
  result.digest = hasher.Finish();
  if (result.digest != digest) {
    if (result.from_cache) (void)cache_->Remove(digest);
    return discard(absl::DataLossError(absl::StrCat(
        "downloaded artifact has sha256 ", DigestToHex(result.digest),
        ", manifest says ", DigestToHex(digest))));
  }
  return result;
}

}  // namespace fleet::agent
