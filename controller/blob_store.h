// Content-addressed artifact storage: DATA_DIR/blobs/sha256/ab/abcdef... (the
// lower-case hex digest, sharded by its first two characters).
//
// A blob only ever appears under its name complete, fsync'd and checked
// against the digest and size it was promised: uploads stream into a private
// temp file under DATA_DIR/blobs/tmp/ while being hashed, and Commit() renames
// the file in only when both match.
//
//   ASSIGN_OR_RETURN(std::unique_ptr<BlobWriter> w, blobs.NewWriter());
//   RETURN_IF_ERROR(w->Append(chunk));          // repeatedly
//   RETURN_IF_ERROR(w->Commit(digest, size));   // or drop `w`: nothing stays
//
// Thread-safety: BlobStore is thread-safe; each BlobWriter and BlobReader
// belongs to one thread at a time.
#ifndef FLEET_CONTROLLER_BLOB_STORE_H_
#define FLEET_CONTROLLER_BLOB_STORE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/sha256.h"

namespace fleet::controller {

// An upload in progress. Destroying it without a successful Commit() removes
// the temp file.
class BlobWriter {
 public:
  ~BlobWriter();
  BlobWriter(const BlobWriter&) = delete;
  BlobWriter& operator=(const BlobWriter&) = delete;

  // Appends and hashes `data`. The errno-derived status on a write failure
  // (a full disk included); FAILED_PRECONDITION after Commit().
  absl::Status Append(absl::string_view data);
  // Bytes appended so far.
  uint64_t size() const { return size_; }

  // Checks the bytes against `expected_size` and `expected`, fsyncs them and
  // renames them to the blob's path (replacing an existing copy, which holds
  // the same bytes or was damaged). INVALID_ARGUMENT naming expected vs
  // actual on a mismatch, in which case the temp file is removed and nothing
  // is stored. May be called once.
  absl::Status Commit(const Digest& expected, uint64_t expected_size);

 private:
  friend class BlobStore;
  BlobWriter(std::string blobs_dir, std::string temp_path, int fd)
      : blobs_dir_(std::move(blobs_dir)),
        temp_path_(std::move(temp_path)),
        fd_(fd) {}
  void Discard();

  std::string blobs_dir_;
  std::string temp_path_;
  int fd_;
  uint64_t size_ = 0;
  Sha256 hasher_;
  bool done_ = false;
};

// A stored blob open for reading.
class BlobReader {
 public:
  ~BlobReader();
  BlobReader(BlobReader&& other) noexcept;
  BlobReader& operator=(BlobReader&&) = delete;
  BlobReader(const BlobReader&) = delete;

  uint64_t size() const { return size_; }
  // Up to `max_bytes` from `offset` (fewer only at the end; empty at or past
  // the end). The errno status on a read error.
  absl::StatusOr<std::string> ReadAt(uint64_t offset, size_t max_bytes) const;

 private:
  friend class BlobStore;
  BlobReader(int fd, uint64_t size, std::string path)
      : fd_(fd), size_(size), path_(std::move(path)) {}
  int fd_;
  uint64_t size_;
  std::string path_;
};

class BlobStore {
 public:
  // Creates DATA_DIR/blobs/{sha256,tmp} if missing and removes temp files a
  // crashed upload left behind. REQUIRES: no other BlobStore on `data_dir`.
  static absl::StatusOr<std::unique_ptr<BlobStore>> Open(
      const std::string& data_dir);

  // Where the blob with `digest` lives (whether or not it exists).
  std::string PathFor(const Digest& digest) const;
  bool Contains(const Digest& digest) const;

  // A new upload, backed by a temp file created with O_EXCL.
  absl::StatusOr<std::unique_ptr<BlobWriter>> NewWriter() const;
  // NOT_FOUND if no blob has `digest`.
  absl::StatusOr<BlobReader> OpenForRead(const Digest& digest) const;

 private:
  explicit BlobStore(std::string root) : root_(std::move(root)) {}
  std::string root_;  // DATA_DIR/blobs
};

}  // namespace fleet::controller

#endif  // FLEET_CONTROLLER_BLOB_STORE_H_
