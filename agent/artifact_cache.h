// The last N verified artifacts the agent downloaded, kept by sha256 under
// STATE_DIR/versions/<sha256 hex>, so going back to a recent version (a
// ROLLBACK directive, a re-install) needs no transfer. The Downloader puts
// every artifact it verified here and takes a cached one instead of asking
// the controller; the newest `keep` entries stay, older ones are deleted.
//
//   ArtifactCache cache(state_dir + "/versions", /*keep=*/3);
//   Downloader downloader(*stub, state_dir + "/downloads", {}, &cache);
//
// Entries are whole files, written to a temp name, fsync'd and renamed in,
// so after a crash an entry is complete or absent. Recency is the entry's
// mtime, renewed when it is used. Entries are copies, never links: a file
// the downloader truncates cannot damage the cache. An entry is trusted only
// after the downloader hashed it (a bad one is removed and fetched again).
//
// Thread-compatible.
#ifndef FLEET_AGENT_ARTIFACT_CACHE_H_
#define FLEET_AGENT_ARTIFACT_CACHE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/sha256.h"

namespace fleet::agent {

class ArtifactCache {
 public:
  // `keep` 0 turns the cache off (nothing kept, nothing found).
  ArtifactCache(std::string dir, int keep);

  const std::string& dir() const { return dir_; }
  int keep() const { return keep_; }
  std::string EntryPath(const Digest& digest) const;

  // True if an entry of `digest` with `size` bytes exists.
  bool Contains(const Digest& digest, uint64_t size) const;

  // Copies the entry of `digest` to `path` (temp file, fsync, rename) and
  // marks the entry as just used. NOT_FOUND if there is none; errno
  // statuses naming the path otherwise.
  absl::Status CopyOut(const Digest& digest, const std::string& path);

  // Copies `path` (a file whose sha256 the caller verified to be `digest`)
  // in as the newest entry, then deletes the oldest beyond `keep`. An entry
  // already there is only marked as just used.
  absl::Status Add(const Digest& digest, const std::string& path);

  // Removes the entry of `digest` (OK if absent).
  absl::Status Remove(const Digest& digest);

  // Digests of the entries, newest first.
  std::vector<Digest> Entries() const;

 private:
  // Gives `entry` an mtime later than every entry's.
  absl::Status MarkNewest(const std::string& entry);
  absl::Status Evict();

  const std::string dir_;
  const int keep_;
};

}  // namespace fleet::agent

#endif  // FLEET_AGENT_ARTIFACT_CACHE_H_
