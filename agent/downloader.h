// Resumable artifact download over AgentService.FetchArtifact.
//
// The artifact goes to DIR/<sha256 hex>.part. A previous attempt's partial
// file is kept: its bytes are hashed first, then the transfer asks for the
// rest from the file's length and appends, hashing as bytes arrive (the
// file is never read twice). Nothing past the manifest's size is kept. At
// the end the file is fsync'd and its size and sha256 are checked against
// what the caller expects. A resumed file whose final digest is wrong is
// suspected of a bad prefix (written by an earlier, different transfer):
// it is discarded and fetched once more from byte 0 before DATA_LOSS.
//
// Slow retrieval (TUF's attack list): a transfer that moves fewer than
// DownloadLimits::min_bytes_per_second over a rate window, or runs past
// the transfer deadline, is cut with DEADLINE_EXCEEDED and its bytes kept;
// the caller retries with backoff and the next call resumes. Endless data:
// nothing past the manifest's size is ever written.
//
//   Downloader downloader(*stub, state_dir + "/downloads");
//   ASSIGN_OR_RETURN(DownloadResult r,
//                    downloader.Fetch(digest, size, cancellation));
//
// Thread-compatible: one Fetch at a time per artifact.
#ifndef FLEET_AGENT_DOWNLOADER_H_
#define FLEET_AGENT_DOWNLOADER_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "agent/artifact_cache.h"
#include "agent/cancellation.h"
#include "common/sha256.h"
#include "proto/fleet/v1/agent.grpc.pb.h"

namespace fleet::agent {

struct DownloadResult {
  std::string path;           // the complete, fsync'd .part file
  uint64_t size = 0;          // bytes in it
  Digest digest{};            // its sha256
  uint64_t resumed_from = 0;  // bytes already on disk before this call
  uint64_t fetched = 0;       // bytes transferred by this call
  bool from_cache = false;    // copied from the ArtifactCache, not fetched
};

// Limits on one transfer (one Fetch call). Zero turns a limit off.
struct DownloadLimits {
  // A window in which fewer than min_bytes_per_second * rate_window bytes
  // arrive ends the transfer (windows are consecutive, from the RPC start).
  uint64_t min_bytes_per_second = 1024;
  absl::Duration rate_window = absl::Seconds(30);
  // The whole transfer must finish within this.
  absl::Duration transfer_deadline = absl::Hours(1);
};

class Downloader {
 public:
  // `stub` must outlive the Downloader. `dir` is created if missing.
  // With a `cache` (borrowed, may be null), an artifact found there is
  // copied instead of fetched, and every verified artifact is added to it.
  Downloader(v1::AgentService::StubInterface& stub, std::string dir,
             DownloadLimits limits = {}, ArtifactCache* cache = nullptr);

  const std::string& dir() const { return dir_; }
  std::string PartPath(const Digest& digest) const;
  // Bytes of `digest` already on disk (0 if none).
  uint64_t BytesOnDisk(const Digest& digest) const;

  // Makes PartPath(digest) hold the artifact, fetching what is missing.
  // On success its size is `size` and its sha256 is `digest`.
  //   DATA_LOSS: the artifact does not match (server's total size differs,
  //     more bytes than `size`, wrong digest even after one fresh transfer
  //     from byte 0) — the partial file is removed (or truncated back to
  //     `size` when only excess bytes came).
  //   CANCELLED: `cancel` fired; the partial file is kept for a resume.
  //   DEADLINE_EXCEEDED: too slow (below the minimum rate over a window, or
  //     past the transfer deadline); the partial file is kept for a resume.
  //   UNAVAILABLE, NOT_FOUND, ...: the RPC's status (stream ended early:
  //     UNAVAILABLE); the partial file is kept.
  //   errno statuses naming the path on disk errors (RESOURCE_EXHAUSTED
  //     when the disk is full).
  absl::StatusOr<DownloadResult> Fetch(const Digest& digest, uint64_t size,
                                       Cancellation& cancel);

  // Removes the partial (or complete) file of `digest`.
  absl::Status Discard(const Digest& digest);
  // Removes every download in the directory (leftovers of updates that
  // ended while the agent was down). OK if the directory does not exist.
  absl::Status DiscardAll();

 private:
  // One transfer, resuming from what is on disk.
  absl::StatusOr<DownloadResult> FetchOnce(const Digest& digest, uint64_t size,
                                           Cancellation& cancel);

  v1::AgentService::StubInterface& stub_;
  const std::string dir_;
  const DownloadLimits limits_;
  ArtifactCache* const cache_;
  // Bytes the last FetchOnce found on disk before its transfer.
  uint64_t resumed_from_last_ = 0;
};

}  // namespace fleet::agent

#endif  // FLEET_AGENT_DOWNLOADER_H_
