#include "agent/testing/artifact_server.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace fleet::agent::testing {

std::unique_ptr<ArtifactServer> ArtifactServer::Start() {
  std::unique_ptr<ArtifactServer> server(new ArtifactServer());
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(server.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || port == 0) return nullptr;
  server->address_ = absl::StrCat("127.0.0.1:", port);
  return server;
}

ArtifactServer::~ArtifactServer() {
  if (server_ != nullptr) {
    server_->Shutdown(std::chrono::system_clock::now());
    server_->Wait();
  }
}

std::shared_ptr<grpc::Channel> ArtifactServer::NewChannel() const {
  return grpc::CreateChannel(address_, grpc::InsecureChannelCredentials());
}

Digest ArtifactServer::Add(std::string bytes) {
  Digest digest = Sha256Of(bytes);
  AddAs(digest, std::move(bytes));
  return digest;
}

void ArtifactServer::AddAs(const Digest& digest, std::string bytes) {
  absl::MutexLock lock(&mu_);
  artifacts_[DigestToBytes(digest)] = std::move(bytes);
}

void ArtifactServer::set_bytes_per_stream(uint64_t n) {
  absl::MutexLock lock(&mu_);
  bytes_per_stream_ = n;
}

void ArtifactServer::set_chunk_size(size_t n) {
  absl::MutexLock lock(&mu_);
  chunk_size_ = n;
}

void ArtifactServer::set_chunk_delay(absl::Duration d) {
  absl::MutexLock lock(&mu_);
  chunk_delay_ = d;
}

std::vector<uint64_t> ArtifactServer::requested_offsets() const {
  absl::MutexLock lock(&mu_);
  return offsets_;
}

grpc::Status ArtifactServer::FetchArtifact(
    grpc::ServerContext* context, const v1::FetchArtifactRequest* request,
    grpc::ServerWriter<v1::ArtifactChunk>* writer) {
  std::string bytes;
  uint64_t limit;
  size_t chunk_size;
  absl::Duration delay;
  {
    absl::MutexLock lock(&mu_);
    offsets_.push_back(request->offset());
    auto it = artifacts_.find(request->sha256());
    if (it == artifacts_.end()) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown artifact");
    }
    bytes = it->second;
    limit = bytes_per_stream_;
    chunk_size = chunk_size_;
    delay = chunk_delay_;
  }
  if (request->offset() > bytes.size()) {
    return grpc::Status(grpc::StatusCode::OUT_OF_RANGE, "offset past end");
  }
  uint64_t sent = 0;
  for (uint64_t off = request->offset(); off < bytes.size();) {
    if (context->IsCancelled()) {
      return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
    }
    if (limit != 0 && sent >= limit) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "stream cut (test)");
    }
    size_t n =
        static_cast<size_t>(std::min<uint64_t>(chunk_size, bytes.size() - off));
    if (limit != 0)
      n = static_cast<size_t>(std::min<uint64_t>(n, limit - sent));
    v1::ArtifactChunk chunk;
    chunk.set_offset(off);
    chunk.set_data(bytes.substr(off, n));
    chunk.set_total_size(bytes.size());
    if (!writer->Write(chunk)) break;
    off += n;
    sent += n;
    if (delay > absl::ZeroDuration()) absl::SleepFor(delay);
  }
  return grpc::Status::OK;
}

}  // namespace fleet::agent::testing
