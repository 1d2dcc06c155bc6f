#include "agent/supervisor_channel.h"

#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "agent/supervisor.pb.h"
#include "gtest/gtest.h"

namespace fleet::agent {
namespace {

class SocketPair : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds_), 0);
  }
  void TearDown() override {
    if (fds_[0] >= 0) close(fds_[0]);
    if (fds_[1] >= 0) close(fds_[1]);
  }
  int fds_[2] = {-1, -1};
};

TEST_F(SocketPair, FramesArriveWholeAndInOrder) {
  internal::SupervisorRequest a, b;
  a.set_id(1);
  a.mutable_start_program()->set_version("1.2.3");
  b.set_id(2);
  b.mutable_stop_program()->set_grace_ms(1500);
  ASSERT_TRUE(WriteFrame(fds_[0], a).ok());
  ASSERT_TRUE(WriteFrame(fds_[0], b).ok());
  internal::SupervisorRequest got;
  absl::StatusOr<bool> read = ReadFrame(fds_[1], &got);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_TRUE(*read);
  EXPECT_EQ(got.id(), 1u);
  EXPECT_EQ(got.start_program().version(), "1.2.3");
  read = ReadFrame(fds_[1], &got);
  ASSERT_TRUE(read.ok() && *read);
  EXPECT_EQ(got.stop_program().grace_ms(), 1500);
}

TEST_F(SocketPair, CleanCloseIsFalseAndTruncatedFrameIsDataLoss) {
  close(fds_[0]);
  fds_[0] = -1;
  internal::SupervisorRequest got;
  absl::StatusOr<bool> read = ReadFrame(fds_[1], &got);
  ASSERT_TRUE(read.ok());
  EXPECT_FALSE(*read);

  int more[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, more), 0);
  const char partial[] = {0, 0, 0, 10, 'x'};
  ASSERT_EQ(write(more[0], partial, sizeof(partial)), 5);
  close(more[0]);
  read = ReadFrame(more[1], &got);
  close(more[1]);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(SocketPair, WriteToClosedPeerIsUnavailableNotSigpipe) {
  close(fds_[1]);
  fds_[1] = -1;
  internal::SupervisorReply reply;
  reply.set_id(7);
  EXPECT_EQ(WriteFrame(fds_[0], reply).code(), absl::StatusCode::kUnavailable);
}

TEST(FrameBufferTest, SplitsBytesIntoFramesAndRefusesHugeOnes) {
  internal::SupervisorReply reply;
  reply.set_id(9);
  reply.set_message("hello");
  std::string body = reply.SerializeAsString();
  std::string wire = {0, 0, 0, static_cast<char>(body.size())};
  wire += body;
  FrameBuffer buffer;
  buffer.Append(wire.data(), 3);
  absl::StatusOr<std::optional<std::string>> next = buffer.Next();
  ASSERT_TRUE(next.ok());
  EXPECT_FALSE(next->has_value());
  buffer.Append(wire.data() + 3, wire.size() - 3);
  next = buffer.Next();
  ASSERT_TRUE(next.ok() && next->has_value());
  internal::SupervisorReply parsed;
  ASSERT_TRUE(parsed.ParseFromString(**next));
  EXPECT_EQ(parsed.message(), "hello");

  FrameBuffer huge;
  const char header[] = {0x7f, 0, 0, 0};
  huge.Append(header, 4);
  EXPECT_EQ(huge.Next().status().code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace fleet::agent
