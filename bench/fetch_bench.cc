// fetch_bench: N concurrent AgentService.FetchArtifact downloads of one
// artifact, each on its own channel (own TCP connection), on the callback
// client API. Bytes are counted (and checked against the artifact's size),
// not stored: the peer it is compared with is `curl -o /dev/null`.
//
// Prints one JSON line: concurrency, bytes, seconds, MB/s, failures.
// Exit 1 if any download failed or came out short.
#include <grpcpp/grpcpp.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/sha256.h"
#include "proto/fleet/v1/agent.grpc.pb.h"

namespace {

class Download : public grpc::ClientReadReactor<fleet::v1::ArtifactChunk> {
 public:
  Download(fleet::v1::AgentService::Stub& stub, const std::string& digest,
           bool hash, std::atomic<int>& remaining, absl::Notification& all_done)
      : hash_(hash), remaining_(remaining), all_done_(all_done) {
    request_.set_sha256(digest);
    stub.async()->FetchArtifact(&context_, &request_, this);
  }
  void Start() {
    StartRead(&chunk_);
    StartCall();
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;
    if (hash_) hasher_.Update(chunk_.data());
    bytes_ += chunk_.data().size();
    StartRead(&chunk_);
  }
  void OnDone(const grpc::Status& status) override {
    status_ = status;
    if (hash_) digest_ = hasher_.Finish();
    if (--remaining_ == 0) all_done_.Notify();
  }
  uint64_t bytes() const { return bytes_; }
  const grpc::Status& status() const { return status_; }
  const fleet::Digest& digest() const { return digest_; }

 private:
  const bool hash_;
  std::atomic<int>& remaining_;
  absl::Notification& all_done_;
  grpc::ClientContext context_;
  fleet::v1::FetchArtifactRequest request_;
  fleet::v1::ArtifactChunk chunk_;
  fleet::Sha256 hasher_;
  fleet::Digest digest_{};
  uint64_t bytes_ = 0;
  grpc::Status status_;
};

}  // namespace

int main(int argc, char** argv) {
  std::string controller;
  std::string digest_hex;
  uint64_t size = 0;
  int concurrency = 1;
  bool hash = false;
  CLI::App app{"fetch_bench: concurrent FetchArtifact downloads"};
  app.add_option("--controller", controller, "HOST:PORT")->required();
  app.add_option("--sha256", digest_hex, "artifact digest, hex")->required();
  app.add_option("--size", size, "artifact size in bytes")->required();
  app.add_option("--concurrency", concurrency, "parallel downloads")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  app.add_flag("--hash", hash, "also sha256 each stream and check it");
  int window_bytes = 0;
  app.add_option("--window-bytes", window_bytes,
                 "HTTP/2 receive window per stream to start with "
                 "(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES); 0: gRPC's default")
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 30));
  CLI11_PARSE(app, argc, argv);

  absl::StatusOr<fleet::Digest> digest = fleet::DigestFromHex(digest_hex);
  if (!digest.ok()) {
    std::fprintf(stderr, "bad --sha256: %s\n",
                 std::string(digest.status().message()).c_str());
    return 2;
  }
  std::vector<std::unique_ptr<fleet::v1::AgentService::Stub>> stubs;
  for (int i = 0; i < concurrency; ++i) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetMaxReceiveMessageSize(16 << 20);
    if (window_bytes > 0) {
      args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, window_bytes);
    }
    auto channel = grpc::CreateCustomChannel(
        controller, grpc::InsecureChannelCredentials(), args);
    // Connect first so connection setup is not timed.
    if (!channel->WaitForConnected(
            absl::ToChronoTime(absl::Now() + absl::Seconds(10)))) {
      std::fprintf(stderr, "cannot connect to %s; is the controller up?\n",
                   controller.c_str());
      return 1;
    }
    stubs.push_back(fleet::v1::AgentService::NewStub(channel));
  }
  std::atomic<int> remaining{concurrency};
  absl::Notification all_done;
  std::vector<std::unique_ptr<Download>> downloads;
  const std::string digest_bytes = fleet::DigestToBytes(*digest);
  for (auto& stub : stubs) {
    downloads.push_back(std::make_unique<Download>(*stub, digest_bytes, hash,
                                                   remaining, all_done));
  }
  const absl::Time start = absl::Now();
  for (auto& d : downloads) d->Start();
  all_done.WaitForNotification();
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  uint64_t bytes = 0;
  int failures = 0;
  std::string first_error;
  for (auto& d : downloads) {
    bytes += d->bytes();
    const bool bad = !d->status().ok() || d->bytes() != size ||
                     (hash && d->digest() != *digest);
    if (bad) {
      ++failures;
      if (first_error.empty()) {
        first_error =
            absl::StrCat(d->status().error_message(), " bytes=", d->bytes());
      }
    }
  }
  std::printf(
      "{\"concurrency\":%d,\"bytes\":%llu,\"seconds\":%.4f,\"mb_per_s\":%.1f,"
      "\"failures\":%d,\"error\":\"%s\"}\n",
      concurrency, static_cast<unsigned long long>(bytes), seconds,
      bytes / seconds / 1e6, failures, first_error.c_str());
  return failures == 0 ? 0 : 1;
}
