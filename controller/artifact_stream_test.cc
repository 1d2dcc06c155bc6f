#include "controller/artifact_stream.h"

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/sha256.h"
#include "controller/testing/temp_dir.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace fleet::controller {
namespace {

// Serves FetchArtifact only, with a small chunk so that a stream has many
// chunks and the read-ahead runs on every one of them.
class FetchOnly : public v1::AgentService::CallbackService {
 public:
  FetchOnly(const BlobStore& blobs, size_t chunk)
      : blobs_(blobs), chunk_(chunk) {}
  grpc::ServerWriteReactor<v1::ArtifactChunk>* FetchArtifact(
      grpc::CallbackServerContext*,
      const v1::FetchArtifactRequest* request) override {
    return NewArtifactStream(blobs_, *request, absl::OkStatus(), chunk_);
  }

 private:
  const BlobStore& blobs_;
  const size_t chunk_;
};

constexpr size_t kChunk = 4096;

class ArtifactStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto blobs = BlobStore::Open(dir_.path());
    ASSERT_TRUE(blobs.ok()) << blobs.status();
    blobs_ = *std::move(blobs);
    artifact_.resize(kChunk * 50 + 123);
    for (size_t i = 0; i < artifact_.size(); ++i) {
      artifact_[i] = static_cast<char>(i * 131 + 7);
    }
    digest_ = Sha256Of(artifact_);
    auto writer = blobs_->NewWriter();
    ASSERT_TRUE(writer.ok()) << writer.status();
    ASSERT_TRUE((*writer)->Append(artifact_).ok());
    ASSERT_TRUE((*writer)->Commit(digest_, artifact_.size()).ok());

    service_ = std::make_unique<FetchOnly>(*blobs_, kChunk);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port, 0);
    stub_ = v1::AgentService::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                            grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
  }

  // Reads the whole stream; checks each chunk's offset, size and total.
  grpc::Status Fetch(const std::string& sha256, uint64_t offset,
                     std::string* data, size_t* chunks) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(20));
    v1::FetchArtifactRequest request;
    request.set_sha256(sha256);
    request.set_offset(offset);
    auto reader = stub_->FetchArtifact(&ctx, request);
    v1::ArtifactChunk chunk;
    uint64_t expected = offset;
    *chunks = 0;
    while (reader->Read(&chunk)) {
      EXPECT_EQ(chunk.offset(), expected);
      EXPECT_EQ(chunk.total_size(), artifact_.size());
      EXPECT_LE(chunk.data().size(), kChunk);
      EXPECT_FALSE(chunk.data().empty());
      expected += chunk.data().size();
      data->append(chunk.data());
      ++*chunks;
    }
    return reader->Finish();
  }

  std::string DigestBytes() const { return DigestToBytes(digest_); }

  testing::TempDir dir_;
  std::unique_ptr<BlobStore> blobs_;
  std::string artifact_;
  Digest digest_;
  std::unique_ptr<FetchOnly> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::AgentService::Stub> stub_;
};

TEST_F(ArtifactStreamTest, StreamsEveryByteInOrderFromAnyOffset) {
  for (uint64_t offset :
       {uint64_t{0}, uint64_t{1}, uint64_t{kChunk}, uint64_t{kChunk * 7 + 5},
        uint64_t{artifact_.size() - 1}}) {
    std::string data;
    size_t chunks = 0;
    grpc::Status status = Fetch(DigestBytes(), offset, &data, &chunks);
    ASSERT_TRUE(status.ok()) << offset << ": " << status.error_message();
    EXPECT_EQ(data, artifact_.substr(offset)) << offset;
    EXPECT_EQ(chunks, (artifact_.size() - offset + kChunk - 1) / kChunk);
  }
  // At the very end: no chunk, OK.
  std::string data;
  size_t chunks = 0;
  EXPECT_TRUE(Fetch(DigestBytes(), artifact_.size(), &data, &chunks).ok());
  EXPECT_EQ(chunks, 0u);
}

TEST_F(ArtifactStreamTest, ManyConcurrentStreamsEachGetTheWholeArtifact) {
  std::vector<std::thread> clients;
  std::vector<std::string> got(8);
  std::vector<grpc::Status> statuses(8);
  for (size_t i = 0; i < got.size(); ++i) {
    clients.emplace_back([&, i] {
      size_t chunks = 0;
      statuses[i] = Fetch(DigestBytes(), 0, &got[i], &chunks);
    });
  }
  for (std::thread& t : clients) t.join();
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_TRUE(statuses[i].ok()) << statuses[i].error_message();
    EXPECT_TRUE(got[i] == artifact_) << "stream " << i;
  }
}

TEST_F(ArtifactStreamTest, ErrorsArePreciseStatuses) {
  std::string data;
  size_t chunks = 0;
  EXPECT_EQ(Fetch("short", 0, &data, &chunks).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Fetch(std::string(32, 'x'), 0, &data, &chunks).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(
      Fetch(DigestBytes(), artifact_.size() + 1, &data, &chunks).error_code(),
      grpc::StatusCode::OUT_OF_RANGE);
  EXPECT_TRUE(data.empty());
}

TEST_F(ArtifactStreamTest, ClientCancellingMidStreamEndsTheCall) {
  grpc::ClientContext ctx;
  v1::FetchArtifactRequest request;
  request.set_sha256(DigestBytes());
  auto reader = stub_->FetchArtifact(&ctx, request);
  v1::ArtifactChunk chunk;
  ASSERT_TRUE(reader->Read(&chunk));
  ctx.TryCancel();
  while (reader->Read(&chunk)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  // The server is still serving (Shutdown in TearDown waits for the call).
  std::string data;
  size_t chunks = 0;
  EXPECT_TRUE(Fetch(DigestBytes(), 0, &data, &chunks).ok());
  EXPECT_EQ(data, artifact_);
}

}  // namespace
}  // namespace fleet::controller
