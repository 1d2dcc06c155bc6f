// The controller as agents and operators see it: a real ControllerServer on
// 127.0.0.1 (port 0) with its SQLite file and blobs in a temp dir, driven
// over real gRPC channels.
#include "controller/server.h"

#include <dirent.h>
#include <grpcpp/grpcpp.h>
#include <httplib.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/ed25519.h"
#include "common/files.h"
#include "common/manifest.h"
#include "common/root.h"
#include "common/sha256.h"
#include "common/testing/test_roots.h"
#include "controller/artifact_stream.h"
#include "controller/store/store.h"
#include "controller/testing/temp_dir.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "proto/fleet/v1/admin.grpc.pb.h"
#include "proto/fleet/v1/agent.grpc.pb.h"

namespace fleet::controller {
namespace {

constexpr char kPlatform[] = "linux/amd64";

std::string Artifact(size_t size, int seed) {
  std::string out(size, '\0');
  for (size_t i = 0; i < size; ++i) {
    out[i] = static_cast<char>((i * 131 + seed * 17 + (i >> 9)) & 0xff);
  }
  return out;
}

std::chrono::system_clock::time_point Deadline(int seconds = 10) {
  return std::chrono::system_clock::now() + std::chrono::seconds(seconds);
}

// Polls `done` every 20 ms for up to 10 s.
bool WaitUntil(const std::function<bool()>& done) {
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!done()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return true;
}

// A raw Connect stream, as an agent would hold it.
class FakeAgent {
 public:
  FakeAgent(v1::AgentService::Stub& stub, std::string agent_id)
      : agent_id_(std::move(agent_id)) {
    context_.set_deadline(Deadline(20));
    stream_ = stub.Connect(&context_);
  }
  ~FakeAgent() {
    if (!finished_) {
      context_.TryCancel();
      stream_->Finish();
    }
  }

  v1::Hello MakeHello(const std::string& installed_version,
                      const std::string& sha256 = "") {
    v1::Hello hello;
    hello.set_agent_id(agent_id_);
    hello.set_agent_version("0.1.0");
    hello.set_platform(kPlatform);
    hello.set_hostname("host-" + agent_id_);
    (*hello.mutable_labels())["region"] = "eu";
    v1::InstalledProduct* p = hello.add_installed();
    p->set_product("app");
    p->set_version(installed_version);
    p->set_sha256(sha256);
    return hello;
  }

  bool Send(const v1::AgentMessage& message) { return stream_->Write(message); }
  bool SendHello(const v1::Hello& hello) {
    v1::AgentMessage m;
    *m.mutable_hello() = hello;
    return Send(m);
  }
  bool SendHeartbeat(const v1::Heartbeat& heartbeat) {
    v1::AgentMessage m;
    *m.mutable_heartbeat() = heartbeat;
    return Send(m);
  }
  bool SendEvent(const v1::UpdateEvent& event) {
    v1::AgentMessage m;
    *m.mutable_event() = event;
    return Send(m);
  }
  // The next message; fails the test and returns an empty one at the end.
  v1::ControllerMessage Next() {
    v1::ControllerMessage m;
    EXPECT_TRUE(stream_->Read(&m))
        << "stream ended: " << Finish().error_message();
    return m;
  }
  grpc::Status Finish() {
    finished_ = true;
    stream_->WritesDone();
    v1::ControllerMessage ignored;
    while (stream_->Read(&ignored)) {
    }
    return stream_->Finish();
  }

 private:
  std::string agent_id_;
  grpc::ClientContext context_;
  std::unique_ptr<
      grpc::ClientReaderWriter<v1::AgentMessage, v1::ControllerMessage>>
      stream_;
  bool finished_ = false;
};

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    absl::StatusOr<Ed25519PrivateKey> key = Ed25519PrivateKey::Generate();
    ASSERT_TRUE(key.ok());
    key_.emplace(*std::move(key));
    ASSERT_TRUE(key_->PublicKey().WritePemFile(dir_.Join("release.pub")).ok());
    StartServer();
  }

  void StartServer() {
    ControllerOptions options;
    options.data_dir = dir_.Join("data");
    options.listen_address = "127.0.0.1:0";
    options.http_address = "127.0.0.1:0";
    options.trust_key_paths = {dir_.Join("release.pub")};
    options.trust_root_path = trust_root_path_;
    options.insecure = true;  // TLS is tested in controller/identity and tests/
    server_ = std::make_unique<ControllerServer>(options);
    absl::StatusOr<int> port = server_->Start();
    ASSERT_TRUE(port.ok()) << port.status();
    auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", *port),
                                       grpc::InsecureChannelCredentials());
    admin_ = v1::AdminService::NewStub(channel);
    agents_ = v1::AgentService::NewStub(channel);
  }

  v1::ReleaseManifest ManifestFor(const std::string& bytes,
                                  const std::string& version) {
    v1::ReleaseManifest m;
    m.set_product("app");
    m.set_version(version);
    m.set_platform(kPlatform);
    m.set_sha256(DigestToBytes(Sha256Of(bytes)));
    m.set_size(bytes.size());
    m.set_created_unix_seconds(absl::ToUnixSeconds(absl::Now()));
    return m;
  }

  v1::SignedManifest Sign(const v1::ReleaseManifest& m,
                          const Ed25519PrivateKey* key = nullptr) {
    absl::StatusOr<v1::SignedManifest> signed_manifest =
        SignManifest(m, key != nullptr ? *key : *key_);
    EXPECT_TRUE(signed_manifest.ok()) << signed_manifest.status();
    return signed_manifest.ok() ? *signed_manifest : v1::SignedManifest();
  }

  grpc::Status Push(const v1::SignedManifest& signed_manifest,
                    const std::string& bytes, v1::Release* release = nullptr) {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    v1::Release ignored;
    auto writer = admin_->PushRelease(&ctx, release ? release : &ignored);
    v1::PushReleaseRequest first;
    *first.mutable_manifest() = signed_manifest;
    bool ok = writer->Write(first);
    for (size_t off = 0; ok && off < bytes.size(); off += 65536) {
      v1::PushReleaseRequest chunk;
      chunk.set_chunk(bytes.substr(off, 65536));
      ok = writer->Write(chunk);
    }
    writer->WritesDone();
    return writer->Finish();
  }

  // Pushes a correctly signed release of `bytes`.
  void PushGood(const std::string& bytes, const std::string& version) {
    grpc::Status status = Push(Sign(ManifestFor(bytes, version)), bytes);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }

  std::vector<v1::Release> Releases() {
    grpc::ClientContext ctx;
    v1::ListReleasesResponse resp;
    EXPECT_TRUE(
        admin_->ListReleases(&ctx, v1::ListReleasesRequest(), &resp).ok());
    return {resp.releases().begin(), resp.releases().end()};
  }

  int BlobFiles() {
    int n = 0;
    std::function<void(const std::string&)> walk = [&](const std::string& d) {
      DIR* dir = opendir(d.c_str());
      if (dir == nullptr) return;
      while (dirent* e = readdir(dir)) {
        std::string name = e->d_name;
        if (name == "." || name == "..") continue;
        if (e->d_type == DT_DIR) {
          walk(d + "/" + name);
        } else {
          ++n;
        }
      }
      closedir(dir);
    };
    walk(dir_.Join("data/blobs"));
    return n;
  }

  grpc::Status Fetch(const std::string& sha256, uint64_t offset,
                     std::string* data, uint64_t* total = nullptr) {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    v1::FetchArtifactRequest req;
    req.set_sha256(sha256);
    req.set_offset(offset);
    auto reader = agents_->FetchArtifact(&ctx, req);
    v1::ArtifactChunk chunk;
    uint64_t expected_offset = offset;
    while (reader->Read(&chunk)) {
      EXPECT_EQ(chunk.offset(), expected_offset);
      EXPECT_LE(chunk.data().size(), kArtifactChunkSize);
      expected_offset += chunk.data().size();
      data->append(chunk.data());
      if (total != nullptr) *total = chunk.total_size();
    }
    return reader->Finish();
  }

  absl::StatusOr<v1::Rollout> CreateRollout(const std::string& version) {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    v1::CreateRolloutRequest req;
    req.set_product("app");
    req.set_version(version);
    v1::Rollout rollout;
    grpc::Status status = admin_->CreateRollout(&ctx, req, &rollout);
    if (!status.ok()) {
      return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                          status.error_message());
    }
    return rollout;
  }

  v1::Rollout GetRollout(const std::string& id) {
    grpc::ClientContext ctx;
    v1::GetRolloutRequest req;
    req.set_rollout_id(id);
    v1::Rollout rollout;
    grpc::Status status = admin_->GetRollout(&ctx, req, &rollout);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return rollout;
  }

  // Polls GetRollout until `done` holds or 10 s pass.
  v1::Rollout WaitForRollout(
      const std::string& id,
      const std::function<bool(const v1::Rollout&)>& done) {
    v1::Rollout rollout;
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    do {
      rollout = GetRollout(id);
      if (done(rollout)) break;
      absl::SleepFor(absl::Milliseconds(20));
    } while (absl::Now() < deadline);
    return rollout;
  }

  v1::UpdateEvent Event(uint64_t seq, const v1::UpdateDirective& directive,
                        v1::UpdatePhase phase) {
    v1::UpdateEvent e;
    e.set_seq(seq);
    e.set_directive_id(directive.directive_id());
    e.set_rollout_id(directive.rollout_id());
    e.set_product("app");
    e.set_from_version("1.0.0");
    e.set_to_version("1.1.0");
    e.set_phase(phase);
    e.set_time_unix_ms(absl::ToUnixMillis(absl::Now()));
    return e;
  }

  testing::TempDir dir_;
  std::optional<Ed25519PrivateKey> key_;
  std::unique_ptr<ControllerServer> server_;
  std::string trust_root_path_;  // --trust-root of StartServer, if set
  std::unique_ptr<v1::AdminService::Stub> admin_;
  std::unique_ptr<v1::AgentService::Stub> agents_;
};

// ------------------------------------------------------------------ push

TEST_F(ServerTest, SignedReleaseIsStoredListedAndItsBlobWritten) {
  const std::string bytes = Artifact(200'000, 1);
  const v1::SignedManifest signed_manifest = Sign(ManifestFor(bytes, "1.0.0"));
  v1::Release stored;
  ASSERT_TRUE(Push(signed_manifest, bytes, &stored).ok());
  EXPECT_EQ(stored.version(), "1.0.0");
  EXPECT_GT(stored.created_unix_ms(), 0);

  std::vector<v1::Release> releases = Releases();
  ASSERT_EQ(releases.size(), 1u);
  EXPECT_EQ(releases[0].product(), "app");
  EXPECT_EQ(releases[0].size(), bytes.size());
  EXPECT_EQ(releases[0].sha256(), DigestToBytes(Sha256Of(bytes)));

  const std::string hex = DigestToHex(Sha256Of(bytes));
  EXPECT_EQ(
      ReadFile(dir_.Join("data/blobs/sha256/" + hex.substr(0, 2) + "/" + hex))
          .value_or(""),
      bytes);
  EXPECT_EQ(BlobFiles(), 1);

  grpc::ClientContext ctx;
  v1::GetReleaseRequest req;
  req.set_product("app");
  req.set_version("1.0.0");
  req.set_platform(kPlatform);
  v1::Release got;
  ASSERT_TRUE(admin_->GetRelease(&ctx, req, &got).ok());
  // The signed bytes are kept exactly as pushed.
  EXPECT_EQ(got.signed_manifest().SerializeAsString(),
            signed_manifest.SerializeAsString());
}

TEST_F(ServerTest, ReleasesListNewestVersionFirst) {
  PushGood(Artifact(1000, 1), "1.2.0");
  PushGood(Artifact(1000, 2), "1.10.0");
  PushGood(Artifact(1000, 3), "1.9.0");
  std::vector<std::string> versions;
  for (const v1::Release& r : Releases()) versions.push_back(r.version());
  EXPECT_EQ(versions, (std::vector<std::string>{"1.10.0", "1.9.0", "1.2.0"}));
}

TEST_F(ServerTest, BadPushesAreRefusedPreciselyAndStoreNothing) {
  const std::string bytes = Artifact(150'000, 1);
  absl::StatusOr<Ed25519PrivateKey> other = Ed25519PrivateKey::Generate();
  ASSERT_TRUE(other.ok());
  std::string tampered = bytes;
  tampered[77'777] ^= 0x01;
  v1::ReleaseManifest bad_name = ManifestFor(bytes, "1.0.0");
  bad_name.set_product("../../etc");
  v1::SignedManifest bad_name_signed;
  bad_name_signed.set_manifest(bad_name.SerializeAsString());
  v1::Signature* sig = bad_name_signed.add_signatures();
  sig->set_key_id(key_->PublicKey().KeyId());
  sig->set_signature(key_->Sign(bad_name_signed.manifest()));
  v1::SignedManifest unsigned_manifest;
  unsigned_manifest.set_manifest(
      ManifestFor(bytes, "1.0.0").SerializeAsString());

  struct Case {
    std::string name;
    v1::SignedManifest manifest;
    std::string upload;
    grpc::StatusCode want;
  };
  const std::vector<Case> cases = {
      {"wrong key", Sign(ManifestFor(bytes, "1.0.0"), &*other), bytes,
       grpc::StatusCode::PERMISSION_DENIED},
      {"unsigned", unsigned_manifest, bytes,
       grpc::StatusCode::PERMISSION_DENIED},
      {"truncated", Sign(ManifestFor(bytes, "1.0.0")),
       bytes.substr(0, bytes.size() - 7), grpc::StatusCode::INVALID_ARGUMENT},
      {"tampered", Sign(ManifestFor(bytes, "1.0.0")), tampered,
       grpc::StatusCode::INVALID_ARGUMENT},
      {"oversized", Sign(ManifestFor(bytes, "1.0.0")),
       bytes + std::string(1 << 20, 'x'), grpc::StatusCode::RESOURCE_EXHAUSTED},
      {"path traversal in name", bad_name_signed, bytes,
       grpc::StatusCode::INVALID_ARGUMENT},
  };
  for (const Case& c : cases) {
    grpc::Status status = Push(c.manifest, c.upload);
    EXPECT_EQ(status.error_code(), c.want)
        << c.name << ": " << status.error_message();
    EXPECT_TRUE(Releases().empty()) << c.name;
    EXPECT_EQ(BlobFiles(), 0) << c.name;
  }
}

TEST_F(ServerTest, FirstPushMessageMustBeTheManifest) {
  grpc::ClientContext ctx;
  v1::Release release;
  auto writer = admin_->PushRelease(&ctx, &release);
  v1::PushReleaseRequest chunk;
  chunk.set_chunk("bytes");
  writer->Write(chunk);
  writer->WritesDone();
  grpc::Status status = writer->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("manifest"), std::string::npos);
}

TEST_F(ServerTest, DuplicateReleaseIsAlreadyExists) {
  const std::string bytes = Artifact(10'000, 1);
  PushGood(bytes, "1.0.0");
  grpc::Status status = Push(Sign(ManifestFor(bytes, "1.0.0")), bytes);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::ALREADY_EXISTS)
      << status.error_message();
  EXPECT_EQ(Releases().size(), 1u);
}

// ----------------------------------------------------------------- fetch

TEST_F(ServerTest, FetchArtifactStreamsExactBytesFromAnyOffset) {
  const std::string bytes = Artifact(200'000, 5);
  PushGood(bytes, "1.0.0");
  const std::string digest = DigestToBytes(Sha256Of(bytes));

  for (uint64_t offset :
       {uint64_t{0}, uint64_t{65'536}, uint64_t{123'457}, uint64_t{199'999}}) {
    std::string data;
    uint64_t total = 0;
    grpc::Status status = Fetch(digest, offset, &data, &total);
    ASSERT_TRUE(status.ok()) << offset << ": " << status.error_message();
    EXPECT_EQ(data, bytes.substr(offset)) << offset;
    EXPECT_EQ(total, bytes.size());
  }
  std::string at_end;
  EXPECT_TRUE(Fetch(digest, bytes.size(), &at_end).ok());
  EXPECT_EQ(at_end, "");
}

TEST_F(ServerTest, FetchArtifactErrors) {
  const std::string bytes = Artifact(1000, 5);
  PushGood(bytes, "1.0.0");
  std::string data;
  EXPECT_EQ(Fetch(DigestToBytes(Sha256Of("unknown")), 0, &data).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Fetch(DigestToBytes(Sha256Of(bytes)), 1001, &data).error_code(),
            grpc::StatusCode::OUT_OF_RANGE);
  EXPECT_EQ(Fetch("short", 0, &data).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(data, "");
}

// ---------------------------------------------------------------- agents

TEST_F(ServerTest, AgentGetsWelcomeThenDirectiveAndEventsAreAckedOnce) {
  const std::string v1_bytes = Artifact(5000, 1);
  const std::string v2_bytes = Artifact(6000, 2);
  PushGood(v1_bytes, "1.0.0");
  PushGood(v2_bytes, "1.1.0");

  FakeAgent agent(*agents_, "a1");
  // Installed version unknown: resolved from the executable's digest.
  ASSERT_TRUE(
      agent.SendHello(agent.MakeHello("", DigestToBytes(Sha256Of(v1_bytes)))));
  v1::ControllerMessage welcome = agent.Next();
  ASSERT_TRUE(welcome.has_welcome()) << welcome.DebugString();
  EXPECT_EQ(welcome.welcome().agent_id(), "a1");
  EXPECT_EQ(welcome.welcome().acked_event_seq(), 0u);
  EXPECT_EQ(welcome.welcome().heartbeat_interval_seconds(), 10u);

  absl::StatusOr<v1::Rollout> rollout = CreateRollout("1.1.0");
  ASSERT_TRUE(rollout.ok()) << rollout.status();
  EXPECT_EQ(rollout->state(), v1::ROLLOUT_STATE_RUNNING);
  EXPECT_EQ(rollout->counts().total(), 1u);
  EXPECT_EQ(rollout->counts().in_flight(), 1u);

  v1::ControllerMessage directive = agent.Next();
  ASSERT_TRUE(directive.has_directive()) << directive.DebugString();
  const v1::UpdateDirective& d = directive.directive();
  EXPECT_EQ(d.rollout_id(), rollout->rollout_id());
  EXPECT_EQ(d.kind(), v1::DIRECTIVE_KIND_UPDATE);
  EXPECT_EQ(d.deadline_unix_ms(), 0);
  v1::ReleaseManifest manifest;
  ASSERT_TRUE(manifest.ParseFromString(d.manifest().manifest()));
  EXPECT_EQ(manifest.version(), "1.1.0");
  EXPECT_EQ(d.manifest().signatures_size(), 1);

  v1::Rollout running = GetRollout(rollout->rollout_id());
  ASSERT_EQ(running.targets_size(), 1);
  EXPECT_EQ(running.targets(0).from_version(), "1.0.0");
  EXPECT_EQ(running.targets(0).state(), v1::TARGET_STATE_DIRECTED);
  EXPECT_EQ(running.targets(0).directive_id(), d.directive_id());

  ASSERT_TRUE(agent.SendEvent(Event(1, d, v1::UPDATE_PHASE_RECEIVED)));
  ASSERT_TRUE(agent.SendEvent(Event(2, d, v1::UPDATE_PHASE_DOWNLOADING)));
  uint64_t acked = 0;
  while (acked < 2) {
    v1::ControllerMessage ack = agent.Next();
    ASSERT_TRUE(ack.has_ack()) << ack.DebugString();
    EXPECT_GT(ack.ack().acked_seq(), acked);
    acked = ack.ack().acked_seq();
  }
  // A resend of seq 2 (say after a reconnect) is acked but stored once, and
  // its different phase is ignored.
  ASSERT_TRUE(agent.SendEvent(Event(2, d, v1::UPDATE_PHASE_FAILED)));
  EXPECT_EQ(agent.Next().ack().acked_seq(), 2u);
  EXPECT_EQ(GetRollout(rollout->rollout_id()).targets(0).state(),
            v1::TARGET_STATE_DOWNLOADING);

  ASSERT_TRUE(agent.SendEvent(Event(3, d, v1::UPDATE_PHASE_SWAPPED)));
  ASSERT_TRUE(agent.SendEvent(Event(4, d, v1::UPDATE_PHASE_HEALTHY)));
  v1::Rollout done = WaitForRollout(rollout->rollout_id(), [](const auto& r) {
    return r.state() == v1::ROLLOUT_STATE_COMPLETED;
  });
  EXPECT_EQ(done.state(), v1::ROLLOUT_STATE_COMPLETED);
  EXPECT_EQ(done.counts().healthy(), 1u);
  EXPECT_EQ(done.targets(0).state(), v1::TARGET_STATE_HEALTHY);

  grpc::ClientContext ctx;
  v1::ListAgentsResponse agents;
  ASSERT_TRUE(admin_->ListAgents(&ctx, v1::ListAgentsRequest(), &agents).ok());
  ASSERT_EQ(agents.agents_size(), 1);
  EXPECT_TRUE(agents.agents(0).connected());
  EXPECT_EQ(agents.agents(0).installed(0).version(), "1.1.0");
  EXPECT_EQ(agents.agents(0).labels().at("region"), "eu");

  EXPECT_TRUE(agent.Finish().ok());
  absl::StatusOr<std::unique_ptr<Store>> store =
      Store::Open(dir_.Join("data/fleet.db"));
  ASSERT_TRUE(store.ok());
  absl::StatusOr<std::vector<v1::UpdateEvent>> events =
      (*store)->ListEvents("a1");
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 4u);
  EXPECT_EQ((*events)[1].phase(), v1::UPDATE_PHASE_DOWNLOADING);
}

TEST_F(ServerTest, ReconnectingAgentIsResentItsUnacknowledgedDirective) {
  PushGood(Artifact(5000, 1), "1.1.0");
  std::string directive_id;
  {
    FakeAgent agent(*agents_, "a1");
    ASSERT_TRUE(agent.SendHello(agent.MakeHello("1.0.0")));
    ASSERT_TRUE(agent.Next().has_welcome());
    ASSERT_TRUE(CreateRollout("1.1.0").ok());
    v1::ControllerMessage m = agent.Next();
    ASSERT_TRUE(m.has_directive());
    directive_id = m.directive().directive_id();
  }
  {
    // The directive was never acknowledged: it comes again, same id.
    FakeAgent agent(*agents_, "a1");
    ASSERT_TRUE(agent.SendHello(agent.MakeHello("1.0.0")));
    ASSERT_TRUE(agent.Next().has_welcome());
    v1::ControllerMessage m = agent.Next();
    ASSERT_TRUE(m.has_directive()) << m.DebugString();
    EXPECT_EQ(m.directive().directive_id(), directive_id);
  }
  {
    // Now the agent says it journaled it: only the Welcome, then the ack of
    // its first event (no directive in between).
    FakeAgent agent(*agents_, "a1");
    v1::Hello hello = agent.MakeHello("1.0.0");
    hello.set_last_directive_id(directive_id);
    ASSERT_TRUE(agent.SendHello(hello));
    v1::ControllerMessage welcome = agent.Next();
    ASSERT_TRUE(welcome.has_welcome());
    v1::UpdateDirective d;
    d.set_directive_id(directive_id);
    d.set_rollout_id("unknown-rollout");
    ASSERT_TRUE(agent.SendEvent(Event(1, d, v1::UPDATE_PHASE_RECEIVED)));
    v1::ControllerMessage next = agent.Next();
    EXPECT_TRUE(next.has_ack()) << next.DebugString();
  }
  // A reconnect learns how far its events were stored.
  FakeAgent agent(*agents_, "a1");
  ASSERT_TRUE(agent.SendHello(agent.MakeHello("1.0.0")));
  v1::ControllerMessage welcome = agent.Next();
  EXPECT_EQ(welcome.welcome().acked_event_seq(), 1u);
}

TEST_F(ServerTest, AgentConnectingLaterJoinsTheRunningRollout) {
  PushGood(Artifact(5000, 1), "1.0.0");
  absl::StatusOr<v1::Rollout> rollout = CreateRollout("1.0.0");
  ASSERT_TRUE(rollout.ok()) << rollout.status();
  EXPECT_EQ(rollout->counts().total(), 0u);
  EXPECT_EQ(rollout->state(), v1::ROLLOUT_STATE_RUNNING);

  FakeAgent fresh(*agents_, "fresh");
  ASSERT_TRUE(fresh.SendHello(fresh.MakeHello("")));  // nothing installed
  ASSERT_TRUE(fresh.Next().has_welcome());
  v1::ControllerMessage m = fresh.Next();
  ASSERT_TRUE(m.has_directive()) << m.DebugString();
  EXPECT_EQ(m.directive().rollout_id(), rollout->rollout_id());
  v1::Rollout joined = GetRollout(rollout->rollout_id());
  ASSERT_EQ(joined.targets_size(), 1);
  EXPECT_EQ(joined.targets(0).agent_id(), "fresh");
  EXPECT_EQ(joined.targets(0).from_version(), "");
}

TEST_F(ServerTest, AgentAlreadyOnTheVersionIsHealthyAtOnce) {
  PushGood(Artifact(5000, 1), "1.0.0");
  FakeAgent agent(*agents_, "a1");
  ASSERT_TRUE(agent.SendHello(agent.MakeHello("1.0.0")));
  ASSERT_TRUE(agent.Next().has_welcome());
  absl::StatusOr<v1::Rollout> rollout = CreateRollout("1.0.0");
  ASSERT_TRUE(rollout.ok());
  EXPECT_EQ(rollout->state(), v1::ROLLOUT_STATE_COMPLETED);
  EXPECT_EQ(rollout->counts().healthy(), 1u);
}

TEST_F(ServerTest, SecondStreamOfAnAgentReplacesTheFirst) {
  FakeAgent first(*agents_, "a1");
  ASSERT_TRUE(first.SendHello(first.MakeHello("1.0.0")));
  ASSERT_TRUE(first.Next().has_welcome());
  FakeAgent second(*agents_, "a1");
  ASSERT_TRUE(second.SendHello(second.MakeHello("1.0.0")));
  ASSERT_TRUE(second.Next().has_welcome());
  EXPECT_EQ(first.Finish().error_code(), grpc::StatusCode::ABORTED);
  EXPECT_EQ(server_->ConnectedAgents(), 1u);
}

TEST_F(ServerTest, StreamsThatBreakTheProtocolAreInvalidArgument) {
  struct Case {
    std::string name;
    std::function<void(v1::AgentMessage&)> first;
  };
  const std::vector<Case> cases = {
      {"heartbeat first", [](v1::AgentMessage& m) { m.mutable_heartbeat(); }},
      {"empty message", [](v1::AgentMessage&) {}},
      {"bad agent id",
       [](v1::AgentMessage& m) {
         m.mutable_hello()->set_agent_id("../x");
         m.mutable_hello()->set_platform(kPlatform);
       }},
      {"bad platform",
       [](v1::AgentMessage& m) {
         m.mutable_hello()->set_agent_id("a1");
         m.mutable_hello()->set_platform("plan9/mips");
       }},
  };
  for (const Case& c : cases) {
    FakeAgent agent(*agents_, "a1");
    v1::AgentMessage m;
    c.first(m);
    agent.Send(m);
    grpc::Status status = agent.Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << c.name << ": " << status.error_message();
  }
  // A valid Hello followed by an event with seq 0.
  FakeAgent agent(*agents_, "a1");
  ASSERT_TRUE(agent.SendHello(agent.MakeHello("1.0.0")));
  ASSERT_TRUE(agent.Next().has_welcome());
  v1::UpdateEvent bad;
  bad.set_phase(v1::UPDATE_PHASE_RECEIVED);
  agent.SendEvent(bad);
  grpc::Status status = agent.Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("event.seq"), std::string::npos)
      << status.error_message();
}

// --------------------------------------------------------------- rollouts

TEST_F(ServerTest, RolloutRequestsAreValidated) {
  EXPECT_EQ(CreateRollout("1.0.0").status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(CreateRollout("1.0").status().code(),
            absl::StatusCode::kInvalidArgument);
  PushGood(Artifact(100, 1), "1.0.0");

  grpc::ClientContext ctx;
  v1::CreateRolloutRequest req;
  req.set_product("app");
  req.set_version("1.0.0");
  req.add_stages()->set_percent(50);
  v1::Rollout rollout;
  grpc::Status status = admin_->CreateRollout(&ctx, req, &rollout);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("100"), std::string::npos);

  for (uint32_t percent : {0u, 101u}) {
    grpc::ClientContext limit_ctx;
    v1::CreateRolloutRequest limited;
    limited.set_product("app");
    limited.set_version("1.0.0");
    limited.mutable_max_in_flight()->set_percent(percent);
    status = admin_->CreateRollout(&limit_ctx, limited, &rollout);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(status.error_message().find("max_in_flight"), std::string::npos)
        << status.error_message();
  }

  grpc::ClientContext get_ctx;
  v1::GetRolloutRequest get;
  get.set_rollout_id("ro-doesnotexist");
  EXPECT_EQ(admin_->GetRollout(&get_ctx, get, &rollout).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(ServerTest, FailurePolicyIsValidatedAndReturnedAsStored) {
  PushGood(Artifact(100, 1), "1.0.0");
  v1::Rollout rollout;
  for (double rate : {-0.5, 1.5}) {
    grpc::ClientContext ctx;
    v1::CreateRolloutRequest req;
    req.set_product("app");
    req.set_version("1.0.0");
    req.mutable_failure_policy()->set_max_failure_rate(rate);
    req.mutable_failure_policy()->set_min_samples(3);
    grpc::Status status = admin_->CreateRollout(&ctx, req, &rollout);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << rate;
    EXPECT_NE(status.error_message().find("failure_policy.max_failure_rate"),
              std::string::npos)
        << status.error_message();
  }

  grpc::ClientContext ctx;
  v1::CreateRolloutRequest req;
  req.set_product("app");
  req.set_version("1.0.0");
  req.mutable_failure_policy()->set_max_failure_rate(1);
  req.mutable_failure_policy()->set_min_samples(3);
  req.mutable_failure_policy()->set_action(v1::FAILURE_ACTION_ABORT);
  req.mutable_failure_policy()->set_blacklist(true);
  grpc::Status status = admin_->CreateRollout(&ctx, req, &rollout);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(rollout.failure_policy().max_failure_rate(), 1);
  EXPECT_EQ(rollout.failure_policy().action(), v1::FAILURE_ACTION_ABORT);

  grpc::ClientContext get_ctx;
  v1::GetRolloutRequest get;
  get.set_rollout_id(rollout.rollout_id());
  v1::Rollout stored;
  ASSERT_TRUE(admin_->GetRollout(&get_ctx, get, &stored).ok());
  EXPECT_EQ(stored.failure_policy().SerializeAsString(),
            req.failure_policy().SerializeAsString());
}

TEST_F(ServerTest, PauseResumeAndAbortChangeStateWithPreciseStatuses) {
  PushGood(Artifact(100, 1), "1.0.0");
  absl::StatusOr<v1::Rollout> created = CreateRollout("1.0.0");
  ASSERT_TRUE(created.ok()) << created.status();
  const std::string id = created->rollout_id();
  auto pause = [&](const std::string& rollout_id, const std::string& reason,
                   v1::Rollout* out) {
    grpc::ClientContext ctx;
    v1::PauseRolloutRequest req;
    req.set_rollout_id(rollout_id);
    req.set_reason(reason);
    return admin_->PauseRollout(&ctx, req, out);
  };
  auto resume = [&](const std::string& rollout_id, v1::Rollout* out) {
    grpc::ClientContext ctx;
    v1::ResumeRolloutRequest req;
    req.set_rollout_id(rollout_id);
    return admin_->ResumeRollout(&ctx, req, out);
  };
  auto abort = [&](const std::string& rollout_id, const std::string& reason,
                   v1::Rollout* out) {
    grpc::ClientContext ctx;
    v1::AbortRolloutRequest req;
    req.set_rollout_id(rollout_id);
    req.set_reason(reason);
    return admin_->AbortRollout(&ctx, req, out);
  };
  v1::Rollout out;

  grpc::Status status = resume(id, &out);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(status.error_message().find("RUNNING"), std::string::npos)
      << status.error_message();
  EXPECT_EQ(pause("../etc", "", &out).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(pause(id, "two\nlines", &out).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(pause(id, std::string(501, 'x'), &out).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(pause("ro-doesnotexist", "", &out).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(GetRollout(id).state(), v1::ROLLOUT_STATE_RUNNING);

  ASSERT_TRUE(pause(id, "error spike", &out).ok());
  EXPECT_EQ(out.state(), v1::ROLLOUT_STATE_PAUSED);
  EXPECT_EQ(GetRollout(id).state(), v1::ROLLOUT_STATE_PAUSED);
  EXPECT_EQ(GetRollout(id).state_reason(), "paused by operator: error spike");
  status = pause(id, "", &out);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(status.error_message().find("PAUSED"), std::string::npos);

  ASSERT_TRUE(resume(id, &out).ok());
  EXPECT_EQ(GetRollout(id).state(), v1::ROLLOUT_STATE_RUNNING);
  ASSERT_TRUE(abort(id, "wrong build", &out).ok());
  EXPECT_EQ(out.state(), v1::ROLLOUT_STATE_ABORTED);
  EXPECT_EQ(GetRollout(id).state_reason(), "aborted by operator: wrong build");
  status = resume(id, &out);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(status.error_message().find("ABORTED"), std::string::npos)
      << status.error_message();
  EXPECT_EQ(abort(id, "", &out).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(GetRollout(id).state(), v1::ROLLOUT_STATE_ABORTED);
}

TEST_F(ServerTest, SecondRolloutWithOverlappingSelectorIsRefused) {
  PushGood(Artifact(100, 1), "1.0.0");
  auto create = [&](std::map<std::string, std::string> labels,
                    v1::Rollout* out) {
    grpc::ClientContext ctx;
    v1::CreateRolloutRequest req;
    req.set_product("app");
    req.set_version("1.0.0");
    for (const auto& [k, v] : labels) {
      (*req.mutable_selector()->mutable_labels())[k] = v;
    }
    return admin_->CreateRollout(&ctx, req, out);
  };
  v1::Rollout prod;
  ASSERT_TRUE(create({{"env", "prod"}}, &prod).ok());
  v1::Rollout beta;
  ASSERT_TRUE(create({{"env", "beta"}}, &beta).ok());  // disjoint: allowed

  v1::Rollout refused;
  // Overlaps the prod rollout only (an env=prod agent in eu).
  grpc::Status status = create({{"env", "prod"}, {"region", "eu"}}, &refused);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(status.error_message().rfind("active rollout ", 0), 0u)
      << status.error_message();
  EXPECT_NE(status.error_message().find(prod.rollout_id()), std::string::npos)
      << status.error_message();
  // Nothing was superseded.
  EXPECT_EQ(GetRollout(prod.rollout_id()).state(), v1::ROLLOUT_STATE_RUNNING);
  EXPECT_EQ(GetRollout(beta.rollout_id()).state(), v1::ROLLOUT_STATE_RUNNING);

  // A paused rollout still blocks; an aborted one no longer does.
  {
    grpc::ClientContext ctx;
    v1::PauseRolloutRequest req;
    req.set_rollout_id(prod.rollout_id());
    v1::Rollout out;
    ASSERT_TRUE(admin_->PauseRollout(&ctx, req, &out).ok());
  }
  EXPECT_EQ(create({{"env", "prod"}}, &refused).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  for (const std::string& id : {prod.rollout_id(), beta.rollout_id()}) {
    grpc::ClientContext ctx;
    v1::AbortRolloutRequest req;
    req.set_rollout_id(id);
    v1::Rollout out;
    ASSERT_TRUE(admin_->AbortRollout(&ctx, req, &out).ok());
  }
  v1::Rollout next;
  ASSERT_TRUE(create({}, &next).ok());

  grpc::ClientContext ctx;
  v1::ListRolloutsResponse list;
  ASSERT_TRUE(
      admin_->ListRollouts(&ctx, v1::ListRolloutsRequest(), &list).ok());
  ASSERT_EQ(list.rollouts_size(), 3);
  EXPECT_EQ(list.rollouts(0).rollout_id(), next.rollout_id());
}

TEST_F(ServerTest, BlacklistRequestsAreValidatedAndListed) {
  auto add = [&](const std::string& product, const std::string& version,
                 const std::string& reason) {
    grpc::ClientContext ctx;
    v1::AddBlacklistRequest req;
    req.set_product(product);
    req.set_version(version);
    req.set_reason(reason);
    v1::AddBlacklistResponse resp;
    return admin_->AddBlacklist(&ctx, req, &resp);
  };
  EXPECT_EQ(add("App", "1.0.0", "bad").error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(add("app", "1.0", "bad").error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  grpc::Status status = add("app", "1.0.0", "");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("reason"), std::string::npos);
  EXPECT_EQ(add("app", "1.0.0", std::string(501, 'x')).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  PushGood(Artifact(100, 1), "1.0.0");
  absl::StatusOr<v1::Rollout> rollout = CreateRollout("1.0.0");
  ASSERT_TRUE(rollout.ok()) << rollout.status();
  ASSERT_TRUE(add("app", "1.0.0", "leaks memory").ok());
  EXPECT_EQ(add("app", "1.0.0", "again").error_code(),
            grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(GetRollout(rollout->rollout_id()).state(),
            v1::ROLLOUT_STATE_ABORTED);
  absl::Status refused = CreateRollout("1.0.0").status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.message().find("blacklisted"), std::string::npos);

  {
    grpc::ClientContext ctx;
    v1::ListBlacklistRequest req;
    req.set_product("app");
    v1::ListBlacklistResponse resp;
    ASSERT_TRUE(admin_->ListBlacklist(&ctx, req, &resp).ok());
    ASSERT_EQ(resp.entries_size(), 1);
    EXPECT_EQ(resp.entries(0).version(), "1.0.0");
    EXPECT_EQ(resp.entries(0).reason(), "leaks memory");
    EXPECT_EQ(resp.entries(0).created_by(), "operator");
    EXPECT_GT(resp.entries(0).created_unix_ms(), 0);
  }
  auto remove = [&](const std::string& version) {
    grpc::ClientContext ctx;
    v1::RemoveBlacklistRequest req;
    req.set_product("app");
    req.set_version(version);
    v1::RemoveBlacklistResponse resp;
    return admin_->RemoveBlacklist(&ctx, req, &resp);
  };
  EXPECT_EQ(remove("1.0").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(remove("9.9.9").error_code(), grpc::StatusCode::NOT_FOUND);
  ASSERT_TRUE(remove("1.0.0").ok());
  EXPECT_TRUE(CreateRollout("1.0.0").ok());
}

// ------------------------------------------------------------ lifecycle

// The next message that is not an EventAck.
v1::ControllerMessage NextNotAck(FakeAgent& agent) {
  v1::ControllerMessage m;
  do {
    m = agent.Next();
  } while (m.has_ack());
  return m;
}

std::string ManifestVersion(const v1::UpdateDirective& d) {
  v1::ReleaseManifest manifest;
  EXPECT_TRUE(manifest.ParseFromString(d.manifest().manifest()));
  return manifest.version();
}

TEST_F(ServerTest, BlacklistReachesAgentsAndLeadsThemBack) {
  PushGood(Artifact(5000, 1), "1.0.0");
  PushGood(Artifact(5000, 2), "1.1.0");
  FakeAgent a1(*agents_, "a1");
  v1::Hello hello = a1.MakeHello("1.1.0");
  hello.mutable_installed(0)->add_previous_versions("1.0.0");
  ASSERT_TRUE(a1.SendHello(hello));
  v1::ControllerMessage welcome = a1.Next();
  ASSERT_TRUE(welcome.has_welcome());
  EXPECT_TRUE(welcome.welcome().blacklist().empty());

  grpc::ClientContext ctx;
  v1::AddBlacklistRequest add;
  add.set_product("app");
  add.set_version("1.1.0");
  add.set_reason("crash loop");
  v1::AddBlacklistResponse added;
  ASSERT_TRUE(admin_->AddBlacklist(&ctx, add, &added).ok());
  EXPECT_EQ(added.led_back_agents(), 1u);

  v1::ControllerMessage update = a1.Next();
  ASSERT_TRUE(update.has_blacklist()) << update.DebugString();
  ASSERT_EQ(update.blacklist().entries_size(), 1);
  EXPECT_EQ(update.blacklist().entries(0).version(), "1.1.0");
  v1::ControllerMessage back = a1.Next();
  ASSERT_TRUE(back.has_directive()) << back.DebugString();
  EXPECT_EQ(back.directive().kind(), v1::DIRECTIVE_KIND_ROLLBACK);
  EXPECT_EQ(back.directive().rollout_id(), "");
  EXPECT_EQ(ManifestVersion(back.directive()), "1.0.0");
  EXPECT_EQ(back.directive().manifest().signatures_size(), 1);

  // An agent that connects now learns the blacklist in its Welcome.
  FakeAgent a2(*agents_, "a2");
  ASSERT_TRUE(a2.SendHello(a2.MakeHello("1.0.0")));
  v1::ControllerMessage welcome2 = a2.Next();
  ASSERT_EQ(welcome2.welcome().blacklist_size(), 1);
  EXPECT_EQ(welcome2.welcome().blacklist(0).product(), "app");
  EXPECT_EQ(welcome2.welcome().blacklist(0).version(), "1.1.0");

  // a1 reports the rollback done: it runs 1.0.0 again.
  v1::UpdateEvent done = Event(1, back.directive(), v1::UPDATE_PHASE_HEALTHY);
  done.set_from_version("1.1.0");
  done.set_to_version("1.0.0");
  ASSERT_TRUE(a1.SendEvent(done));
  EXPECT_EQ(a1.Next().ack().acked_seq(), 1u);
  grpc::ClientContext list_ctx;
  v1::ListAgentsRequest list_req;
  list_req.set_product("app");
  v1::ListAgentsResponse agents;
  ASSERT_TRUE(admin_->ListAgents(&list_ctx, list_req, &agents).ok());
  ASSERT_EQ(agents.agents_size(), 2);
  EXPECT_EQ(agents.agents(0).installed(0).version(), "1.0.0");

  grpc::ClientContext remove_ctx;
  v1::RemoveBlacklistRequest remove;
  remove.set_product("app");
  remove.set_version("1.1.0");
  v1::RemoveBlacklistResponse removed;
  ASSERT_TRUE(admin_->RemoveBlacklist(&remove_ctx, remove, &removed).ok());
  for (FakeAgent* agent : {&a1, &a2}) {
    v1::ControllerMessage cleared = NextNotAck(*agent);
    ASSERT_TRUE(cleared.has_blacklist()) << cleared.DebugString();
    EXPECT_EQ(cleared.blacklist().entries_size(), 0);
  }
}

TEST_F(ServerTest, AbortWithRollbackSendsUpdatedAgentsBack) {
  PushGood(Artifact(5000, 1), "1.0.0");
  PushGood(Artifact(5000, 2), "1.1.0");
  FakeAgent a1(*agents_, "a1");
  ASSERT_TRUE(a1.SendHello(a1.MakeHello("1.0.0")));
  ASSERT_TRUE(a1.Next().has_welcome());
  // a2 stays in flight, so the rollout is still running at the abort.
  FakeAgent a2(*agents_, "a2");
  ASSERT_TRUE(a2.SendHello(a2.MakeHello("1.0.0")));
  ASSERT_TRUE(a2.Next().has_welcome());
  absl::StatusOr<v1::Rollout> rollout = CreateRollout("1.1.0");
  ASSERT_TRUE(rollout.ok()) << rollout.status();
  v1::ControllerMessage forward = a1.Next();
  ASSERT_TRUE(forward.has_directive());
  v1::ControllerMessage forward2 = a2.Next();
  ASSERT_TRUE(forward2.has_directive());
  ASSERT_TRUE(
      a1.SendEvent(Event(1, forward.directive(), v1::UPDATE_PHASE_HEALTHY)));
  EXPECT_EQ(a1.Next().ack().acked_seq(), 1u);

  grpc::ClientContext ctx;
  v1::AbortRolloutRequest abort;
  abort.set_rollout_id(rollout->rollout_id());
  abort.set_reason("bad numbers");
  abort.set_rollback(true);
  v1::Rollout aborted;
  grpc::Status status = admin_->AbortRollout(&ctx, abort, &aborted);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(aborted.state(), v1::ROLLOUT_STATE_ABORTED);
  EXPECT_EQ(aborted.counts().reverting(), 2u);

  // The update in flight is canceled, then directed back too.
  v1::ControllerMessage cancel = a2.Next();
  ASSERT_TRUE(cancel.has_cancel()) << cancel.DebugString();
  EXPECT_EQ(cancel.cancel().directive_id(),
            forward2.directive().directive_id());
  v1::ControllerMessage back2 = a2.Next();
  ASSERT_TRUE(back2.has_directive()) << back2.DebugString();
  EXPECT_EQ(back2.directive().kind(), v1::DIRECTIVE_KIND_ROLLBACK);

  v1::ControllerMessage back = NextNotAck(a1);
  ASSERT_TRUE(back.has_directive()) << back.DebugString();
  EXPECT_EQ(back.directive().kind(), v1::DIRECTIVE_KIND_ROLLBACK);
  EXPECT_EQ(back.directive().rollout_id(), rollout->rollout_id());
  EXPECT_EQ(ManifestVersion(back.directive()), "1.0.0");
  v1::UpdateEvent done = Event(2, back.directive(), v1::UPDATE_PHASE_HEALTHY);
  done.set_from_version("1.1.0");
  done.set_to_version("1.0.0");
  ASSERT_TRUE(a1.SendEvent(done));
  v1::Rollout reverted = WaitForRollout(
      rollout->rollout_id(),
      [](const v1::Rollout& r) { return r.counts().reverted() == 1; });
  EXPECT_EQ(reverted.counts().reverted(), 1u);
  EXPECT_EQ(reverted.counts().reverting(), 1u);
  ASSERT_EQ(reverted.targets_size(), 2);
  EXPECT_EQ(reverted.targets(0).state(), v1::TARGET_STATE_HEALTHY);
  EXPECT_EQ(reverted.targets(0).revert_state(), v1::TARGET_STATE_HEALTHY);
  EXPECT_EQ(reverted.targets(0).revert_to_version(), "1.0.0");
  grpc::ClientContext list_ctx;
  v1::ListRolloutsResponse listed;
  ASSERT_TRUE(
      admin_->ListRollouts(&list_ctx, v1::ListRolloutsRequest(), &listed).ok());
  ASSERT_EQ(listed.rollouts_size(), 1);
  EXPECT_EQ(listed.rollouts(0).counts().reverted(), 1u);
}

TEST_F(ServerTest, OfflineTimeoutIsValidatedAndDefaultsToTheFlag) {
  PushGood(Artifact(5000, 1), "1.0.0");
  for (int64_t bad : {int64_t{-1}, int64_t{31} * 24 * 3600}) {
    grpc::ClientContext ctx;
    v1::CreateRolloutRequest req;
    req.set_product("app");
    req.set_version("1.0.0");
    req.set_offline_timeout_seconds(bad);
    v1::Rollout ignored;
    grpc::Status status = admin_->CreateRollout(&ctx, req, &ignored);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad;
    EXPECT_NE(status.error_message().find("offline_timeout_seconds"),
              std::string::npos)
        << status.error_message();
  }
  absl::StatusOr<v1::Rollout> rollout = CreateRollout("1.0.0");
  ASSERT_TRUE(rollout.ok()) << rollout.status();
  EXPECT_EQ(rollout->offline_timeout_seconds(), 600);
  EXPECT_EQ(GetRollout(rollout->rollout_id()).offline_timeout_seconds(), 600);
}

TEST_F(ServerTest, HealthzCountsConnectedAgents) {
  FakeAgent agent(*agents_, "a1");
  ASSERT_TRUE(agent.SendHello(agent.MakeHello("1.0.0")));
  ASSERT_TRUE(agent.Next().has_welcome());
  httplib::Client http("127.0.0.1", server_->http_port());
  auto response = http.Get("/healthz");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
  nlohmann::json body = nlohmann::json::parse(response->body);
  EXPECT_EQ(body["status"], "ok");
  EXPECT_EQ(body["connected_agents"], 1);
}

TEST_F(ServerTest, DataSurvivesARestartAndAgentsStartDisconnected) {
  PushGood(Artifact(1000, 1), "1.0.0");
  {
    FakeAgent agent(*agents_, "a1");
    ASSERT_TRUE(agent.SendHello(agent.MakeHello("1.0.0")));
    ASSERT_TRUE(agent.Next().has_welcome());
    server_->Shutdown();
    EXPECT_EQ(agent.Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
  }
  server_.reset();
  StartServer();
  EXPECT_EQ(Releases().size(), 1u);
  grpc::ClientContext ctx;
  v1::ListAgentsResponse agents;
  ASSERT_TRUE(admin_->ListAgents(&ctx, v1::ListAgentsRequest(), &agents).ok());
  ASSERT_EQ(agents.agents_size(), 1);
  EXPECT_FALSE(agents.agents(0).connected());
}

TEST_F(ServerTest, BusyPortIsUnavailable) {
  ControllerOptions options;
  options.data_dir = dir_.Join("other");
  options.listen_address = absl::StrCat("127.0.0.1:", server_->grpc_port());
  options.http_address = "";
  options.trust_key_paths = {dir_.Join("release.pub")};
  options.insecure = true;
  ControllerServer second(options);
  absl::StatusOr<int> port = second.Start();
  EXPECT_EQ(port.status().code(), absl::StatusCode::kUnavailable)
      << port.status();

  options.listen_address = "127.0.0.1:0";
  options.http_address = absl::StrCat("127.0.0.1:", server_->http_port());
  ControllerServer third(options);
  EXPECT_EQ(third.Start().status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(ServerTest, StartWithoutTrustKeysIsInvalidArgument) {
  ControllerOptions options;
  options.data_dir = dir_.Join("other");
  options.listen_address = "127.0.0.1:0";
  options.http_address = "";
  options.insecure = true;
  ControllerServer server(options);
  EXPECT_EQ(server.Start().status().code(), absl::StatusCode::kInvalidArgument);
  options.trust_key_paths = {dir_.Join("missing.pub")};
  ControllerServer missing(options);
  EXPECT_EQ(missing.Start().status().code(), absl::StatusCode::kNotFound);
}

// ------------------------------------------------------ hardening and roots

TEST_F(ServerTest, AgentFloodingItsStreamIsResourceExhausted) {
  FakeAgent calm(*agents_, "calm");
  ASSERT_TRUE(calm.SendHello(calm.MakeHello("1.0.0")));
  ASSERT_TRUE(calm.Next().has_welcome());
  FakeAgent flood(*agents_, "flood");
  ASSERT_TRUE(flood.SendHello(flood.MakeHello("1.0.0")));
  ASSERT_TRUE(flood.Next().has_welcome());
  // Far beyond the default burst of 200 at 50 messages/s.
  v1::Heartbeat heartbeat;
  for (int i = 0; i < 2000 && flood.SendHeartbeat(heartbeat); ++i) {
  }
  grpc::Status status = flood.Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << status.error_message();
  EXPECT_NE(status.error_message().find("messages/s"), std::string::npos)
      << status.error_message();
  // The well-behaved agent is untouched.
  EXPECT_TRUE(calm.SendHeartbeat(heartbeat));
  ASSERT_TRUE(WaitUntil([&] { return server_->ConnectedAgents() == 1; }));
}

class TrustRootServerTest : public ServerTest {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    key_.emplace(*Ed25519PrivateKey::Generate());
    ASSERT_TRUE(key_->PublicKey().WritePemFile(dir_.Join("release.pub")).ok());
    v1_ = MakeTestRoot(1, root_a_, *key_, {&root_a_});
    trust_root_path_ = dir_.Join("root.json");
    ASSERT_TRUE(WriteRootFile(trust_root_path_, v1_).ok());
    StartServer();
  }

  grpc::Status PushRoot(const v1::SignedRoot& root,
                        v1::PushRootResponse* response) {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    v1::PushRootRequest request;
    *request.mutable_root() = root;
    return admin_->PushRoot(&ctx, request, response);
  }

  Ed25519PrivateKey root_a_ = *Ed25519PrivateKey::Generate();
  Ed25519PrivateKey root_b_ = *Ed25519PrivateKey::Generate();
  v1::SignedRoot v1_;
};

TEST_F(TrustRootServerTest, PushedRootsReachAgentsOnceAndInOrder) {
  // An agent on v1 (connected), one without root metadata.
  FakeAgent current(*agents_, "current");
  v1::Hello hello = current.MakeHello("1.0.0");
  hello.set_root_version(1);
  ASSERT_TRUE(current.SendHello(hello));
  v1::ControllerMessage welcome = current.Next();
  ASSERT_TRUE(welcome.has_welcome());
  EXPECT_EQ(welcome.welcome().roots_size(), 0);
  FakeAgent flat(*agents_, "flat");
  ASSERT_TRUE(flat.SendHello(flat.MakeHello("1.0.0")));
  ASSERT_TRUE(flat.Next().has_welcome());

  Ed25519PrivateKey release_2 = *Ed25519PrivateKey::Generate();
  const v1::SignedRoot v2 =
      MakeTestRoot(2, root_b_, release_2, {&root_a_, &root_b_});
  v1::PushRootResponse pushed;
  grpc::Status status = PushRoot(v2, &pushed);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(pushed.version(), 2u);
  EXPECT_EQ(pushed.agents_notified(), 1u);  // not the agent without roots
  v1::ControllerMessage update = current.Next();
  ASSERT_TRUE(update.has_root());
  ASSERT_EQ(update.root().roots_size(), 1);
  EXPECT_EQ(update.root().roots(0).root(), v2.root());

  // Refused: not approved by v2's root key, and a version skipped.
  EXPECT_EQ(PushRoot(MakeTestRoot(3, root_a_, *key_, {&root_a_}), &pushed)
                .error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(PushRoot(MakeTestRoot(4, root_b_, *key_, {&root_b_}), &pushed)
                .error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(PushRoot(v1::SignedRoot(), &pushed).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  // An agent still pinned at v1 gets the chain in its Welcome.
  FakeAgent late(*agents_, "late");
  v1::Hello late_hello = late.MakeHello("1.0.0");
  late_hello.set_root_version(1);
  ASSERT_TRUE(late.SendHello(late_hello));
  v1::ControllerMessage late_welcome = late.Next();
  ASSERT_TRUE(late_welcome.has_welcome());
  ASSERT_EQ(late_welcome.welcome().roots_size(), 1);
  EXPECT_EQ(late_welcome.welcome().roots(0).root(), v2.root());

  // Releases now need release key 2.
  const std::string bytes = Artifact(100, 7);
  EXPECT_EQ(Push(Sign(ManifestFor(bytes, "1.1.0")), bytes).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(Push(Sign(ManifestFor(bytes, "1.1.0"), &release_2), bytes).ok());

  // Heartbeats report the agent's root: ListAgents and /metrics show it.
  v1::Heartbeat heartbeat;
  heartbeat.set_root_version(2);
  heartbeat.set_root_expires_unix_seconds(
      absl::ToUnixSeconds(absl::Now() - absl::Minutes(1)));
  ASSERT_TRUE(current.SendHeartbeat(heartbeat));
  ASSERT_TRUE(WaitUntil([&] {
    grpc::ClientContext ctx;
    v1::ListAgentsResponse agents;
    if (!admin_->ListAgents(&ctx, v1::ListAgentsRequest(), &agents).ok()) {
      return false;
    }
    for (const v1::Agent& a : agents.agents()) {
      if (a.agent_id() == "current" && a.root_version() == 2) return true;
    }
    return false;
  }));
  httplib::Client http("127.0.0.1", server_->http_port());
  auto metrics = http.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find(
                "fleet_agents_root{root_version=\"2\",expired=\"true\"} 1"),
            std::string::npos)
      << metrics->body;
  EXPECT_NE(metrics->body.find("fleet_root_version 2"), std::string::npos);

  // The chain survives a restart.
  server_.reset();
  StartServer();
  grpc::ClientContext ctx;
  v1::GetRootResponse root;
  ASSERT_TRUE(admin_->GetRoot(&ctx, v1::GetRootRequest(), &root).ok());
  EXPECT_EQ(root.version(), 2u);
}

TEST_F(ServerTest, PushRootWithoutTrustRootIsFailedPrecondition) {
  grpc::ClientContext ctx;
  v1::PushRootRequest request;
  request.mutable_root()->set_root("bytes");
  v1::PushRootResponse response;
  EXPECT_EQ(admin_->PushRoot(&ctx, request, &response).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
}

}  // namespace
}  // namespace fleet::controller
