// The server side of AgentService.FetchArtifact: streams a stored blob from
// a byte offset in ArtifactChunks read with pread.
//
//   return NewArtifactStream(blobs, *request, admitted);  // in the service
//
// Throughput (issue #7, bench/NOTES.md): chunks are 1 MiB, not 64 KiB, so a
// stream pays one write round trip per MiB; and the next chunk is read while
// the previous one is being written (one write in flight, one chunk read
// ahead), so disk reads and socket writes overlap.
#ifndef FLEET_CONTROLLER_ARTIFACT_STREAM_H_
#define FLEET_CONTROLLER_ARTIFACT_STREAM_H_

#include <cstddef>

#include "absl/status/status.h"
#include "controller/blob_store.h"
#include "grpcpp/grpcpp.h"
#include "proto/fleet/v1/agent.grpc.pb.h"

namespace fleet::controller {

// Bytes of artifact data per ArtifactChunk: 1 MiB, well under the 4 MiB
// gRPC receive limit agents keep by default (a chunk's framing adds a few
// bytes).
inline constexpr size_t kArtifactChunkSize = 1024 * 1024;

// A reactor that ends the call with `admitted` if it is not OK; otherwise
// with INVALID_ARGUMENT for a digest that is not 32 bytes, NOT_FOUND for an
// unknown blob, OUT_OF_RANGE for an offset past its end, DATA_LOSS if the
// file shrank, CANCELLED if the client went away, OK after the last byte.
// Deletes itself when done. `blobs` must outlive the call.
grpc::ServerWriteReactor<v1::ArtifactChunk>* NewArtifactStream(
    const BlobStore& blobs, const v1::FetchArtifactRequest& request,
    const absl::Status& admitted, size_t chunk_size = kArtifactChunkSize);

}  // namespace fleet::controller

#endif  // FLEET_CONTROLLER_ARTIFACT_STREAM_H_
