// Framing of the supervisor <-> worker socket (agent/supervisor.proto): each
// message is a 4-byte big-endian length then that many bytes of a
// serialized protobuf. Frames above kMaxFrameBytes are refused: both ends
// are ours, so a larger one means a broken peer, not a bigger request.
#ifndef FLEET_AGENT_SUPERVISOR_CHANNEL_H_
#define FLEET_AGENT_SUPERVISOR_CHANNEL_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "google/protobuf/message_lite.h"

namespace fleet::agent {

inline constexpr uint32_t kMaxFrameBytes = 1 << 20;

// Writes one frame to `fd` (blocking until all of it is written). Never
// raises SIGPIPE: a closed peer is UNAVAILABLE.
absl::Status WriteFrame(int fd, const google::protobuf::MessageLite& message);

// Reads one whole frame from a blocking `fd` into `message`. nullopt-like
// false when the peer closed the socket cleanly between frames; DATA_LOSS for
// an oversized or unparsable frame or a close in the middle of one.
absl::StatusOr<bool> ReadFrame(int fd, google::protobuf::MessageLite* message);

// Collects bytes read from a non-blocking socket and hands out whole frames.
class FrameBuffer {
 public:
  void Append(const char* data, size_t n) { buffer_.append(data, n); }
  // The next whole frame's bytes, nullopt if none is complete yet,
  // DATA_LOSS if the length prefix is above kMaxFrameBytes.
  absl::StatusOr<std::optional<std::string>> Next();
  void Clear() { buffer_.clear(); }
  bool empty() const { return buffer_.empty(); }

 private:
  std::string buffer_;
};

}  // namespace fleet::agent

#endif  // FLEET_AGENT_SUPERVISOR_CHANNEL_H_
