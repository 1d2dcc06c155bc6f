#include "controller/artifact_stream.h"

#include <optional>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/grpc_status.h"
#include "common/sha256.h"

namespace fleet::controller {
namespace {

// One FetchArtifact call. `current_` is the chunk being written (at most
// one write in flight, as gRPC requires); `next_` is read while it is. Who
// sends the next chunk depends on which finishes last, the write
// (OnWriteDone) or the read ahead (Pump): the mutex decides.
class ArtifactStream : public grpc::ServerWriteReactor<v1::ArtifactChunk> {
 public:
  ArtifactStream(const BlobStore& blobs,
                 const v1::FetchArtifactRequest& request,
                 const absl::Status& admitted, size_t chunk_size)
      : chunk_size_(chunk_size) {
    absl::Status status = admitted.ok() ? Open(blobs, request) : admitted;
    if (!status.ok()) {
      Finish(ToGrpcStatus(status));
      return;
    }
    ReadNext();
    Pump();
  }

  void OnWriteDone(bool ok) override {
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) cancelled_ = true;
      if (reading_) return;  // Pump goes on when its read is done
    }
    Pump();
  }

  void OnDone() override { delete this; }

 private:
  absl::Status Open(const BlobStore& blobs,
                    const v1::FetchArtifactRequest& request) {
    absl::StatusOr<Digest> digest = DigestFromBytes(request.sha256());
    if (!digest.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sha256 must be 32 raw bytes, got ", request.sha256().size()));
    }
    absl::StatusOr<BlobReader> reader = blobs.OpenForRead(*digest);
    if (!reader.ok()) return reader.status();
    if (request.offset() > reader->size()) {
      return absl::OutOfRangeError(absl::StrCat(
          "offset ", request.offset(), " is past the end of artifact ",
          DigestToHex(*digest), " (", reader->size(), " bytes)"));
    }
    reader_.emplace(*std::move(reader));
    offset_ = request.offset();
    return absl::OkStatus();
  }

  // Reads the chunk at offset_ into next_ (or notes the end or an error).
  // Only one thread at a time: the one that owns the pump.
  void ReadNext() {
    const uint64_t size = reader_->size();
    if (offset_ >= size) {
      next_end_ = grpc::Status::OK;
      return;
    }
    absl::StatusOr<std::string> data = reader_->ReadAt(offset_, chunk_size_);
    if (!data.ok()) {
      next_end_ = ToGrpcStatus(data.status());
      return;
    }
    if (data->empty()) {
      next_end_ = grpc::Status(grpc::StatusCode::DATA_LOSS,
                               "artifact is shorter than when it was opened");
      return;
    }
    next_.set_offset(offset_);
    next_.set_total_size(size);
    offset_ += data->size();
    next_.set_data(*std::move(data));
  }

  // Sends next_ and reads the one after it while that write is in flight,
  // as long as writes finish before reads. REQUIRES: no write in flight, no
  // read in progress.
  void Pump() {
    while (true) {
      {
        absl::MutexLock lock(&mu_);
        if (cancelled_) {
          Finish(grpc::Status(grpc::StatusCode::CANCELLED, "client went away"));
          return;
        }
      }
      if (next_end_) {
        Finish(*next_end_);
        return;
      }
      std::swap(current_, next_);
      {
        absl::MutexLock lock(&mu_);
        writing_ = true;
        reading_ = true;
      }
      StartWrite(&current_);
      ReadNext();
      absl::MutexLock lock(&mu_);
      reading_ = false;
      if (writing_) return;  // OnWriteDone pumps on
    }
  }

  const size_t chunk_size_;
  std::optional<BlobReader> reader_;
  uint64_t offset_ = 0;
  v1::ArtifactChunk current_;
  v1::ArtifactChunk next_;
  // Set when next_ is not a chunk: how the call ends instead.
  std::optional<grpc::Status> next_end_;
  absl::Mutex mu_;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool reading_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

grpc::ServerWriteReactor<v1::ArtifactChunk>* NewArtifactStream(
    const BlobStore& blobs, const v1::FetchArtifactRequest& request,
    const absl::Status& admitted, size_t chunk_size) {
  return new ArtifactStream(blobs, request, admitted, chunk_size);
}

}  // namespace fleet::controller
