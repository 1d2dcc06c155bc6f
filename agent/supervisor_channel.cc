#include "agent/supervisor_channel.h"

#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"

namespace fleet::agent {
namespace {

absl::Status WriteAll(int fd, const char* data, size_t n) {
  while (n > 0) {
    const ssize_t w = send(fd, data, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EPIPE || errno == ECONNRESET) {
        return absl::UnavailableError("supervisor socket closed by the peer");
      }
      return absl::ErrnoToStatus(errno, "write to the supervisor socket");
    }
    data += w;
    n -= static_cast<size_t>(w);
  }
  return absl::OkStatus();
}

// Reads exactly n bytes; returns the number read before EOF (< n on EOF).
absl::StatusOr<size_t> ReadAll(int fd, char* data, size_t n) {
  size_t done = 0;
  while (done < n) {
    const ssize_t r = read(fd, data + done, n - done);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == ECONNRESET) return done;
      return absl::ErrnoToStatus(errno, "read from the supervisor socket");
    }
    if (r == 0) return done;
    done += static_cast<size_t>(r);
  }
  return done;
}

uint32_t DecodeLength(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) |
         (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

}  // namespace

absl::Status WriteFrame(int fd, const google::protobuf::MessageLite& message) {
  std::string body;
  if (!message.SerializeToString(&body)) {
    return absl::InternalError("cannot serialize a supervisor message");
  }
  if (body.size() > kMaxFrameBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("supervisor message of ", body.size(), " bytes"));
  }
  const uint32_t n = static_cast<uint32_t>(body.size());
  std::string frame;
  frame.reserve(4 + body.size());
  frame.push_back(static_cast<char>(n >> 24));
  frame.push_back(static_cast<char>(n >> 16));
  frame.push_back(static_cast<char>(n >> 8));
  frame.push_back(static_cast<char>(n));
  frame += body;
  return WriteAll(fd, frame.data(), frame.size());
}

absl::StatusOr<bool> ReadFrame(int fd, google::protobuf::MessageLite* message) {
  unsigned char header[4];
  absl::StatusOr<size_t> got =
      ReadAll(fd, reinterpret_cast<char*>(header), sizeof(header));
  if (!got.ok()) return got.status();
  if (*got == 0) return false;
  if (*got < sizeof(header)) {
    return absl::DataLossError("supervisor socket closed inside a frame");
  }
  const uint32_t n = DecodeLength(header);
  if (n > kMaxFrameBytes) {
    return absl::DataLossError(
        absl::StrCat("supervisor frame of ", n, " bytes is too large"));
  }
  std::string body(n, '\0');
  got = ReadAll(fd, body.data(), n);
  if (!got.ok()) return got.status();
  if (*got < n) {
    return absl::DataLossError("supervisor socket closed inside a frame");
  }
  if (!message->ParseFromString(body)) {
    return absl::DataLossError("unparsable supervisor message");
  }
  return true;
}

absl::StatusOr<std::optional<std::string>> FrameBuffer::Next() {
  if (buffer_.size() < 4) return std::nullopt;
  const uint32_t n =
      DecodeLength(reinterpret_cast<const unsigned char*>(buffer_.data()));
  if (n > kMaxFrameBytes) {
    return absl::DataLossError(
        absl::StrCat("supervisor frame of ", n, " bytes is too large"));
  }
  if (buffer_.size() < 4 + size_t{n}) return std::nullopt;
  std::string body = buffer_.substr(4, n);
  buffer_.erase(0, 4 + size_t{n});
  return std::optional<std::string>(std::move(body));
}

}  // namespace fleet::agent
