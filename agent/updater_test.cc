// The updater end to end on one machine: real signatures, a real gRPC
// FetchArtifact server on 127.0.0.1, a real SQLite journal, real files and
// real shell-script programs started and stopped by the supervisor.
#include "agent/updater.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "agent/testing/artifact_server.h"
#include "common/ed25519.h"
#include "common/files.h"
#include "common/manifest.h"
#include "common/names.h"
#include "common/sha256.h"
#include "gtest/gtest.h"

namespace fleet::agent {
namespace {

bool WaitFor(const std::function<bool()>& done,
             absl::Duration timeout = absl::Seconds(20)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (done()) return true;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return done();
}

std::string OtherPlatform() {
  return HostPlatform() == "linux/amd64" ? "linux/arm64" : "linux/amd64";
}

class UpdaterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = JoinPath(
        getenv("TEST_TMPDIR"),
        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    ASSERT_TRUE(RemoveTree(dir_).ok());
    ASSERT_TRUE(MakeDirs(dir_ + "/bin").ok());
    ASSERT_TRUE(MakeDirs(dir_ + "/state").ok());
    exec_ = dir_ + "/bin/app";
    status_ = dir_ + "/status";

    absl::StatusOr<Ed25519PrivateKey> key = Ed25519PrivateKey::Generate();
    ASSERT_TRUE(key.ok());
    key_ = std::make_unique<Ed25519PrivateKey>(*key);
    keys_.Add(key_->PublicKey());

    server_ = testing::ArtifactServer::Start();
    ASSERT_NE(server_, nullptr);
    channel_ = server_->NewChannel();
    stub_ = v1::AgentService::NewStub(channel_);
    downloader_ =
        std::make_unique<Downloader>(*stub_, dir_ + "/state/downloads");
    OpenJournal();
    ProgramSpec spec;
    spec.path = exec_;
    spec.env = {{"FLEET_PRODUCT", "app"}};
    program_ = std::make_unique<ProgramSupervisor>(spec);
  }

  void TearDown() override {
    if (updater_) updater_->Stop();
    updater_.reset();
    program_.reset();  // stops whatever still runs
  }

  void OpenJournal() {
    absl::StatusOr<std::unique_ptr<UpdateJournal>> journal =
        UpdateJournal::Open(dir_ + "/state/journal.db");
    ASSERT_TRUE(journal.ok()) << journal.status();
    journal_ = *std::move(journal);
  }

  void StartUpdater() {
    UpdaterOptions options;
    options.product = "app";
    options.exec_path = exec_;
    options.health_window = absl::Milliseconds(800);
    options.stop_grace = absl::Seconds(3);
    options.download_retry_initial = absl::Milliseconds(20);
    options.download_retry_max = absl::Milliseconds(100);
    options.health = health_;
    updater_ = std::make_unique<Updater>(options, *journal_, keys_,
                                         *downloader_, *program_);
    updater_->Start();
  }

  // A program that writes "VERSION FLEET_VERSION PID" to the status file and
  // runs until stopped, or (crash) exits at once.
  std::string AppBytes(const std::string& version, bool crash = false) {
    std::string body = absl::StrCat(
        "#!/bin/sh\n", "echo \"", version, " $FLEET_VERSION $$\" > ", status_,
        ".tmp && mv ", status_, ".tmp ", status_, "\n");
    if (crash) return body + "exit 1\n";
    return body + "trap 'exit 0' TERM\nwhile :; do sleep 0.05; done\n";
  }

  struct Status {
    std::string version;
    std::string env_version;
    pid_t pid = 0;
  };
  std::optional<Status> ReadStatus() {
    absl::StatusOr<std::string> data = ReadFile(status_);
    if (!data.ok()) return std::nullopt;
    std::vector<std::string> parts =
        absl::StrSplit(absl::StripTrailingAsciiWhitespace(*data), ' ');
    if (parts.size() == 2) parts.insert(parts.begin() + 1, "");
    if (parts.size() != 3) return std::nullopt;
    Status s{parts[0], parts[1], atoi(parts[2].c_str())};
    return s;
  }
  // True if `version` is what runs now, as the supervised process.
  bool Runs(const std::string& version) {
    std::optional<Status> s = ReadStatus();
    return s && s->version == version && s->pid == program_->state().pid &&
           kill(s->pid, 0) == 0;
  }

  v1::UpdateDirective Directive(const std::string& id,
                                const std::string& version,
                                const std::string& bytes,
                                const std::string& platform = "",
                                const std::string& product = "app",
                                const Ed25519PrivateKey* key = nullptr,
                                bool allows_downgrade = false) {
    v1::ReleaseManifest m;
    m.set_allows_downgrade(allows_downgrade);
    m.set_product(product);
    m.set_version(version);
    m.set_platform(platform.empty() ? HostPlatform() : platform);
    m.set_sha256(DigestToBytes(Sha256Of(bytes)));
    m.set_size(bytes.size());
    m.set_created_unix_seconds(absl::ToUnixSeconds(absl::Now()) - 10);
    absl::StatusOr<v1::SignedManifest> signed_manifest =
        SignManifest(m, key != nullptr ? *key : *key_);
    EXPECT_TRUE(signed_manifest.ok()) << signed_manifest.status();
    v1::UpdateDirective d;
    d.set_directive_id(id);
    d.set_rollout_id("ro-test");
    d.set_kind(v1::DIRECTIVE_KIND_UPDATE);
    *d.mutable_manifest() = *signed_manifest;
    return d;
  }

  void Submit(const v1::UpdateDirective& d) {
    updater_->Submit(d);
    ASSERT_TRUE(updater_->WaitIdle(absl::Seconds(30)));
  }

  std::vector<v1::UpdateEvent> Events(const std::string& directive_id) {
    std::vector<v1::UpdateEvent> out;
    absl::StatusOr<std::vector<v1::UpdateEvent>> all =
        journal_->PendingEvents(0, 10000);
    EXPECT_TRUE(all.ok());
    for (const v1::UpdateEvent& e : *all) {
      if (e.directive_id() == directive_id) out.push_back(e);
    }
    return out;
  }
  std::vector<std::string> Phases(const std::string& directive_id) {
    std::vector<std::string> out;
    for (const v1::UpdateEvent& e : Events(directive_id)) {
      out.push_back(std::string(
          absl::StripPrefix(v1::UpdatePhase_Name(e.phase()), "UPDATE_PHASE_")));
    }
    return out;
  }
  UpdateState StateOf(const std::string& directive_id) {
    absl::StatusOr<std::optional<UpdateRecord>> r =
        journal_->FindUpdate(directive_id);
    EXPECT_TRUE(r.ok() && r->has_value()) << directive_id;
    return (r.ok() && r->has_value()) ? (*r)->state : UpdateState::kReceived;
  }
  std::string ExecDigest() {
    absl::StatusOr<Digest> d = Sha256OfFile(exec_);
    return d.ok() ? DigestToHex(*d) : "<missing>";
  }

  // Installs `bytes` as version `version` through a directive.
  void InstallVersion(const std::string& id, const std::string& version) {
    const std::string bytes = AppBytes(version);
    server_->Add(bytes);
    Submit(Directive(id, version, bytes));
    ASSERT_EQ(StateOf(id), UpdateState::kHealthy);
    ASSERT_TRUE(WaitFor([&] { return Runs(version); }));
  }

  std::string dir_, exec_, status_;
  std::unique_ptr<Ed25519PrivateKey> key_;
  TrustedKeys keys_;
  std::unique_ptr<testing::ArtifactServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::AgentService::Stub> stub_;
  std::unique_ptr<Downloader> downloader_;
  std::unique_ptr<UpdateJournal> journal_;
  std::unique_ptr<ProgramSupervisor> program_;
  std::unique_ptr<Updater> updater_;
  HealthCheckOptions health_;
};

const std::vector<std::string> kHappyPath = {
    "RECEIVED", "DOWNLOADING", "DOWNLOADED", "VERIFIED",
    "STAGED",   "SWAPPED",     "RESTARTED",  "HEALTHY"};

TEST_F(UpdaterTest, UpdatesRunningProgramAndCommits) {
  const std::string v1 = AppBytes("1.0.0");
  ASSERT_TRUE(WriteFileAtomically(exec_, v1, 0755).ok());
  StartUpdater();
  ASSERT_TRUE(WaitFor([&] { return Runs("1.0.0"); }));
  const pid_t old_pid = program_->state().pid;

  const std::string v2 = AppBytes("2.0.0");
  server_->Add(v2);
  Submit(Directive("d-1", "2.0.0", v2));

  EXPECT_EQ(StateOf("d-1"), UpdateState::kHealthy);
  EXPECT_EQ(Phases("d-1"), kHappyPath);
  EXPECT_EQ(ExecDigest(), DigestToHex(Sha256Of(v2)));
  ASSERT_TRUE(WaitFor([&] { return Runs("2.0.0"); }));
  EXPECT_EQ(ReadStatus()->env_version, "2.0.0");
  EXPECT_NE(kill(old_pid, 0), 0) << "old program still running";
  EXPECT_FALSE(PathExists(exec_ + ".fleet-backup"));
  EXPECT_FALSE(PathExists(exec_ + ".fleet-new"));
  EXPECT_FALSE(PathExists(downloader_->PartPath(Sha256Of(v2))));

  std::optional<InstalledRecord> installed = *journal_->FindInstalled("app");
  ASSERT_TRUE(installed.has_value());
  EXPECT_EQ(installed->version, "2.0.0");
  EXPECT_EQ(installed->sha256, DigestToBytes(Sha256Of(v2)));

  std::vector<v1::UpdateEvent> events = Events("d-1");
  for (const v1::UpdateEvent& e : events) {
    EXPECT_EQ(e.rollout_id(), "ro-test");
    EXPECT_EQ(e.product(), "app");
    EXPECT_GT(e.time_unix_ms(), 0);
    EXPECT_TRUE(e.error().empty()) << e.error();
  }
  EXPECT_EQ(events.back().to_version(), "2.0.0");
  EXPECT_EQ(events[2].bytes(), v2.size());  // DOWNLOADED
  for (size_t i = 1; i < events.size(); ++i) {
    EXPECT_EQ(events[i].seq(), events[i - 1].seq() + 1);
  }
}

TEST_F(UpdaterTest, FirstInstallStartsTheProgram) {
  StartUpdater();
  ASSERT_TRUE(updater_->WaitIdle(absl::Seconds(10)));
  EXPECT_EQ(program_->state().pid, 0);
  InstallVersion("d-1", "1.0.0");
  EXPECT_EQ(Phases("d-1"), kHappyPath);
  EXPECT_EQ(ReadStatus()->env_version, "1.0.0");
}

TEST_F(UpdaterTest, WrongSignatureFailsBeforeAnyDownload) {
  const std::string v1 = AppBytes("1.0.0");
  ASSERT_TRUE(WriteFileAtomically(exec_, v1, 0755).ok());
  StartUpdater();
  ASSERT_TRUE(WaitFor([&] { return Runs("1.0.0"); }));
  const pid_t old_pid = program_->state().pid;

  absl::StatusOr<Ed25519PrivateKey> rogue = Ed25519PrivateKey::Generate();
  ASSERT_TRUE(rogue.ok());
  const std::string evil = AppBytes("6.6.6");
  server_->Add(evil);
  Submit(Directive("d-evil", "6.6.6", evil, "", "app", &*rogue));

  EXPECT_EQ(StateOf("d-evil"), UpdateState::kFailed);
  EXPECT_EQ(Phases("d-evil"), (std::vector<std::string>{"RECEIVED", "FAILED"}));
  EXPECT_EQ(Events("d-evil").back().error_class(), "signature");
  EXPECT_TRUE(server_->requested_offsets().empty()) << "fetched before verify";
  EXPECT_EQ(ExecDigest(), DigestToHex(Sha256Of(v1)));
  EXPECT_EQ(program_->state().pid, old_pid);
  EXPECT_TRUE(Runs("1.0.0"));
}

TEST_F(UpdaterTest, ForgedManifestBytesFailSignature) {
  StartUpdater();
  const std::string v2 = AppBytes("2.0.0");
  server_->Add(v2);
  v1::UpdateDirective d = Directive("d-1", "2.0.0", v2);
  // Same signature, different bytes (e.g. a swapped digest).
  v1::ReleaseManifest m;
  ASSERT_TRUE(m.ParseFromString(d.manifest().manifest()));
  m.set_version("2.0.1");
  d.mutable_manifest()->set_manifest(m.SerializeAsString());
  Submit(d);
  EXPECT_EQ(StateOf("d-1"), UpdateState::kFailed);
  EXPECT_EQ(Events("d-1").back().error_class(), "signature");
  EXPECT_FALSE(PathExists(exec_));
}

TEST_F(UpdaterTest, TamperedArtifactFailsVerification) {
  const std::string v1 = AppBytes("1.0.0");
  ASSERT_TRUE(WriteFileAtomically(exec_, v1, 0755).ok());
  StartUpdater();
  ASSERT_TRUE(WaitFor([&] { return Runs("1.0.0"); }));
  const pid_t old_pid = program_->state().pid;

  const std::string v2 = AppBytes("2.0.0");
  std::string evil = v2;
  evil[evil.size() - 5] = '#';
  server_->AddAs(Sha256Of(v2), evil);
  Submit(Directive("d-1", "2.0.0", v2));

  EXPECT_EQ(StateOf("d-1"), UpdateState::kFailed);
  EXPECT_EQ(Phases("d-1"),
            (std::vector<std::string>{"RECEIVED", "DOWNLOADING", "FAILED"}));
  EXPECT_EQ(Events("d-1").back().error_class(), "verify");
  EXPECT_EQ(ExecDigest(), DigestToHex(Sha256Of(v1)));
  EXPECT_FALSE(PathExists(exec_ + ".fleet-new"));
  EXPECT_EQ(program_->state().pid, old_pid);
  EXPECT_TRUE(Runs("1.0.0"));
}

TEST_F(UpdaterTest, WrongPlatformOrProductFails) {
  StartUpdater();
  const std::string v2 = AppBytes("2.0.0");
  server_->Add(v2);
  Submit(Directive("d-platform", "2.0.0", v2, OtherPlatform()));
  Submit(Directive("d-product", "2.0.0", v2, "", "other-app"));
  EXPECT_EQ(StateOf("d-platform"), UpdateState::kFailed);
  EXPECT_EQ(Events("d-platform").back().error_class(), "platform");
  EXPECT_EQ(StateOf("d-product"), UpdateState::kFailed);
  EXPECT_EQ(Events("d-product").back().error_class(), "product");
  EXPECT_TRUE(server_->requested_offsets().empty());
  EXPECT_FALSE(PathExists(exec_));
}

TEST_F(UpdaterTest, ProgramThatExitsAtOnceIsRolledBack) {
  StartUpdater();
  InstallVersion("d-1", "1.0.0");
  const std::string v1_digest = ExecDigest();

  const std::string bad = AppBytes("2.0.0", /*crash=*/true);
  server_->Add(bad);
  Submit(Directive("d-2", "2.0.0", bad));

  EXPECT_EQ(StateOf("d-2"), UpdateState::kRolledBack);
  EXPECT_EQ(Phases("d-2"),
            (std::vector<std::string>{"RECEIVED", "DOWNLOADING", "DOWNLOADED",
                                      "VERIFIED", "STAGED", "SWAPPED",
                                      "RESTARTED", "ROLLED_BACK"}));
  v1::UpdateEvent last = Events("d-2").back();
  EXPECT_EQ(last.error_class(), "health");
  EXPECT_NE(last.error().find("exit status 1"), std::string::npos)
      << last.error();
  EXPECT_EQ(last.from_version(), "1.0.0");
  EXPECT_EQ(ExecDigest(), v1_digest);
  EXPECT_FALSE(PathExists(exec_ + ".fleet-backup"));
  ASSERT_TRUE(WaitFor([&] { return Runs("1.0.0"); }));
  EXPECT_EQ(ReadStatus()->env_version, "1.0.0");
  EXPECT_EQ((*journal_->FindInstalled("app"))->version, "1.0.0");
}

TEST_F(UpdaterTest, FailingHealthCommandRollsBack) {
  // Healthy for every version but 2.0.0 (FLEET_VERSION is the new one's).
  health_.command = "test \"$FLEET_VERSION\" != 2.0.0";
  health_.retry_interval = absl::Milliseconds(100);
  StartUpdater();
  InstallVersion("d-1", "1.0.0");
  const std::string v2 = AppBytes("2.0.0");
  server_->Add(v2);
  Submit(Directive("d-2", "2.0.0", v2));
  EXPECT_EQ(StateOf("d-2"), UpdateState::kRolledBack);
  const v1::UpdateEvent last = Events("d-2").back();
  EXPECT_EQ(last.error_class(), "health");
  EXPECT_NE(last.error().find("health command exited with status 1"),
            std::string::npos)
      << last.error();
  ASSERT_TRUE(WaitFor([&] { return Runs("1.0.0"); }));
}

TEST_F(UpdaterTest, FailedFirstInstallLeavesNothingInstalled) {
  StartUpdater();
  const std::string bad = AppBytes("1.0.0", /*crash=*/true);
  server_->Add(bad);
  Submit(Directive("d-1", "1.0.0", bad));
  EXPECT_EQ(StateOf("d-1"), UpdateState::kRolledBack);
  EXPECT_FALSE(PathExists(exec_));
  EXPECT_EQ(program_->state().pid, 0);
}

TEST_F(UpdaterTest, DowngradeNeedsARollbackDirective) {
  StartUpdater();
  const std::string v1 = AppBytes("1.0.0");
  InstallVersion("d-1", "2.0.0");
  server_->Add(v1);

  Submit(Directive("d-down", "1.0.0", v1));
  EXPECT_EQ(StateOf("d-down"), UpdateState::kFailed);
  EXPECT_EQ(Events("d-down").back().error_class(), "downgrade");
  EXPECT_TRUE(Runs("2.0.0"));

  // 1.0.0 never ran here and its manifest does not allow downgrades: even
  // a ROLLBACK may not install it.
  v1::UpdateDirective rollback = Directive("d-rollback", "1.0.0", v1);
  rollback.set_kind(v1::DIRECTIVE_KIND_ROLLBACK);
  Submit(rollback);
  EXPECT_EQ(StateOf("d-rollback"), UpdateState::kFailed);
  EXPECT_EQ(Events("d-rollback").back().error_class(), "downgrade");
  EXPECT_NE(Events("d-rollback").back().error().find("never ran here"),
            std::string::npos);
  EXPECT_TRUE(Runs("2.0.0"));

  // Signed with allows_downgrade, it may.
  v1::UpdateDirective allowed =
      Directive("d-allowed", "1.0.0", v1, "", "app", nullptr,
                /*allows_downgrade=*/true);
  allowed.set_kind(v1::DIRECTIVE_KIND_ROLLBACK);
  Submit(allowed);
  EXPECT_EQ(StateOf("d-allowed"), UpdateState::kHealthy);
  EXPECT_TRUE(WaitFor([&] { return Runs("1.0.0"); }));
}

TEST_F(UpdaterTest, RollbackMayReturnToAReleaseThatRanHere) {
  // 1.0.0 installed by hand (not through fleet): it ran here when 2.0.0
  // arrived, so a rollback to its exact bytes is allowed...
  const std::string v1 = AppBytes("1.0.0");
  ASSERT_TRUE(WriteFileAtomically(exec_, v1, 0755).ok());
  StartUpdater();
  InstallVersion("d-2", "2.0.0");
  server_->Add(v1);
  v1::UpdateDirective back = Directive("d-back", "1.0.0", v1);
  back.set_kind(v1::DIRECTIVE_KIND_ROLLBACK);
  Submit(back);
  EXPECT_EQ(StateOf("d-back"), UpdateState::kHealthy);
  EXPECT_TRUE(WaitFor([&] { return Runs("1.0.0"); }));

  // ...while other bytes signed as 1.0.0 (same version, another digest) are
  // not, and an UPDATE never goes lower whatever the manifest allows.
  InstallVersion("d-3", "3.0.0");
  const std::string other = AppBytes("1.0.0") + "# rebuilt\n";
  server_->Add(other);
  v1::UpdateDirective rebuilt = Directive("d-rebuilt", "1.0.0", other);
  rebuilt.set_kind(v1::DIRECTIVE_KIND_ROLLBACK);
  Submit(rebuilt);
  EXPECT_EQ(StateOf("d-rebuilt"), UpdateState::kFailed);
  EXPECT_EQ(Events("d-rebuilt").back().error_class(), "downgrade");
  Submit(Directive("d-update-down", "1.0.0", other, "", "app", nullptr,
                   /*allows_downgrade=*/true));
  EXPECT_EQ(StateOf("d-update-down"), UpdateState::kFailed);
  EXPECT_EQ(Events("d-update-down").back().error_class(), "downgrade");
  EXPECT_TRUE(Runs("3.0.0"));
}

v1::BlacklistedVersion Banned(const std::string& version) {
  v1::BlacklistedVersion b;
  b.set_product("app");
  b.set_version(version);
  return b;
}

TEST_F(UpdaterTest, BlacklistedVersionFailsBeforeDownloadEvenWhenToldTo) {
  StartUpdater();
  const std::string v1 = AppBytes("1.0.0");
  const std::string v3 = AppBytes("3.0.0");
  InstallVersion("d-1", "1.0.0");
  InstallVersion("d-2", "2.0.0");
  server_->Add(v3);
  updater_->SetBlacklist({Banned("1.0.0"), Banned("3.0.0")});
  const size_t fetches = server_->requested_offsets().size();

  struct Case {
    const char* id;
    const char* version;
    const std::string* bytes;
    v1::DirectiveKind kind;
  };
  const Case cases[] = {
      {"d-up", "3.0.0", &v3, v1::DIRECTIVE_KIND_UPDATE},
      {"d-back", "1.0.0", &v1, v1::DIRECTIVE_KIND_ROLLBACK},
      {"d-back-as-update", "3.0.0", &v3, v1::DIRECTIVE_KIND_ROLLBACK},
  };
  for (const Case& c : cases) {
    v1::UpdateDirective d = Directive(c.id, c.version, *c.bytes);
    d.set_kind(c.kind);
    Submit(d);
    EXPECT_EQ(StateOf(c.id), UpdateState::kFailed) << c.id;
    EXPECT_EQ(Phases(c.id), (std::vector<std::string>{"RECEIVED", "FAILED"}))
        << c.id;
    EXPECT_EQ(Events(c.id).back().error_class(), "blacklisted") << c.id;
    EXPECT_NE(Events(c.id).back().error().find("blacklisted"),
              std::string::npos);
  }
  EXPECT_EQ(server_->requested_offsets().size(), fetches);
  EXPECT_TRUE(Runs("2.0.0"));
  EXPECT_EQ((*journal_->FindInstalled("app"))->version, "2.0.0");
}

TEST_F(UpdaterTest, BlacklistHoldsAcrossRestartUntilTheControllerLiftsIt) {
  StartUpdater();
  InstallVersion("d-1", "1.0.0");
  const std::string v2 = AppBytes("2.0.0");
  server_->Add(v2);
  updater_->SetBlacklist({Banned("2.0.0")});
  updater_->Stop();
  updater_.reset();
  journal_.reset();

  // Restarted with no controller to tell it again.
  OpenJournal();
  StartUpdater();
  ASSERT_TRUE(WaitFor([&] { return Runs("1.0.0"); }));
  Submit(Directive("d-2", "2.0.0", v2));
  EXPECT_EQ(StateOf("d-2"), UpdateState::kFailed);
  EXPECT_EQ(Events("d-2").back().error_class(), "blacklisted");

  updater_->SetBlacklist({});
  Submit(Directive("d-3", "2.0.0", v2));
  EXPECT_EQ(StateOf("d-3"), UpdateState::kHealthy);
  EXPECT_TRUE(WaitFor([&] { return Runs("2.0.0"); }));
}

TEST_F(UpdaterTest, JournaledDirectiveIsANoOp) {
  StartUpdater();
  InstallVersion("d-1", "1.0.0");
  const pid_t pid = program_->state().pid;
  const size_t events = Events("d-1").size();
  const std::string v1 = AppBytes("1.0.0");
  Submit(Directive("d-1", "1.0.0", v1));
  EXPECT_EQ(Events("d-1").size(), events);
  EXPECT_EQ(program_->state().pid, pid);
}

TEST_F(UpdaterTest, AlreadyInstalledDigestIsHealthyWithoutASwap) {
  const std::string v1 = AppBytes("1.0.0");
  ASSERT_TRUE(WriteFileAtomically(exec_, v1, 0755).ok());
  StartUpdater();
  ASSERT_TRUE(WaitFor([&] { return Runs("1.0.0"); }));
  const pid_t pid = program_->state().pid;
  server_->Add(v1);
  Submit(Directive("d-1", "1.0.0", v1));
  EXPECT_EQ(Phases("d-1"), (std::vector<std::string>{"RECEIVED", "HEALTHY"}));
  EXPECT_EQ(program_->state().pid, pid);
  EXPECT_TRUE(server_->requested_offsets().empty());
  EXPECT_EQ((*journal_->FindInstalled("app"))->version, "1.0.0");
}

TEST_F(UpdaterTest, InterruptedDownloadsAreResumed) {
  StartUpdater();
  server_->set_bytes_per_stream(100);
  const std::string v1 = AppBytes("1.0.0") + std::string(350, '#');
  server_->Add(v1);
  Submit(Directive("d-1", "1.0.0", v1));
  EXPECT_EQ(StateOf("d-1"), UpdateState::kHealthy);
  std::vector<uint64_t> offsets = server_->requested_offsets();
  ASSERT_GE(offsets.size(), 4u);
  for (size_t i = 0; i < offsets.size(); ++i) EXPECT_EQ(offsets[i], i * 100);
  EXPECT_EQ(ExecDigest(), DigestToHex(Sha256Of(v1)));
}

// A real filesystem fault under an update: a tmpfs of `size` mounted on
// `dir` (under the test dir), remounted with `remount_flags` once the old
// program runs. The kernel gives the real ENOSPC / EROFS / noexec.
struct DiskFault {
  const char* name;
  const char* dir;  // "bin" (EXEC's directory) or "state/downloads"
  const char* size;
  unsigned long remount_flags;  // 0: none
  size_t padding;               // bytes added to the new release
  const char* want_error;       // in the FAILED event's error
  bool names_staged_file;       // the error names EXEC.fleet-new
};

class UpdaterDiskFaultTest : public UpdaterTest,
                             public ::testing::WithParamInterface<DiskFault> {};

TEST_P(UpdaterDiskFaultTest, FailsWithDiskClassAndOldProgramKeepsRunning) {
  const DiskFault& fault = GetParam();
  const std::string dir = dir_ + "/" + fault.dir;
  ASSERT_TRUE(MakeDirs(dir).ok());
  const std::string options = absl::StrCat("size=", fault.size, ",mode=0755");
  if (mount("tmpfs", dir.c_str(), "tmpfs", 0, options.c_str()) != 0) {
    GTEST_SKIP() << "mount -t tmpfs on " << dir << ": " << strerror(errno);
  }
  absl::Cleanup unmount = [&dir] { umount2(dir.c_str(), MNT_DETACH); };
  const std::string v1 = AppBytes("1.0.0");
  ASSERT_TRUE(WriteFileAtomically(exec_, v1, 0755).ok());
  StartUpdater();
  ASSERT_TRUE(WaitFor([&] { return Runs("1.0.0"); }));
  const pid_t running = program_->state().pid;
  if (fault.remount_flags != 0) {
    // Root ignores mode bits, so "unwritable" is a read-only remount here.
    ASSERT_EQ(mount("tmpfs", dir.c_str(), "tmpfs",
                    MS_REMOUNT | fault.remount_flags, options.c_str()),
              0)
        << strerror(errno);
  }
  const std::string v2 = AppBytes("2.0.0") + std::string(fault.padding, '#');
  server_->Add(v2);
  Submit(Directive("d-1", "2.0.0", v2));
  EXPECT_EQ(StateOf("d-1"), UpdateState::kFailed);
  const v1::UpdateEvent last = Events("d-1").back();
  EXPECT_EQ(last.error_class(), "disk");
  EXPECT_NE(last.error().find(fault.want_error), std::string::npos)
      << last.error();
  if (fault.names_staged_file) {
    EXPECT_NE(last.error().find(exec_ + ".fleet-new"), std::string::npos)
        << last.error();
  }
  EXPECT_EQ(ExecDigest(), DigestToHex(Sha256Of(v1)));
  EXPECT_FALSE(PathExists(exec_ + ".fleet-new"));
  EXPECT_EQ(program_->state().pid, running);
  EXPECT_TRUE(Runs("1.0.0"));
}

INSTANTIATE_TEST_SUITE_P(
    DiskFaults, UpdaterDiskFaultTest,
    ::testing::Values(
        // Downloads fit (they are elsewhere); the staged copy beside EXEC
        // does not.
        DiskFault{"FullDiskAtStaging", "bin", "64k", 0, 256 * 1024,
                  "No space left on device", true},
        DiskFault{"FullDownloadDisk", "state/downloads", "64k", 0, 256 * 1024,
                  "No space left on device", false},
        DiskFault{"ReadOnlyExecDirectory", "bin", "1m", MS_RDONLY, 0,
                  "Read-only file system", false},
        // The running program keeps running; nothing new could start here.
        DiskFault{"NoexecExecDirectory", "bin", "1m", MS_NOEXEC, 0, "noexec",
                  false}),
    [](const ::testing::TestParamInfo<DiskFault>& info) {
      return std::string(info.param.name);
    });

TEST_F(UpdaterTest, CancelBeforeSwapFailsAndChangesNothing) {
  const std::string v1 = AppBytes("1.0.0");
  ASSERT_TRUE(WriteFileAtomically(exec_, v1, 0755).ok());
  StartUpdater();
  ASSERT_TRUE(WaitFor([&] { return Runs("1.0.0"); }));
  server_->set_chunk_size(64);
  server_->set_chunk_delay(absl::Milliseconds(50));
  const std::string v2 = AppBytes("2.0.0") + std::string(64 * 100, '#');
  server_->Add(v2);
  updater_->Submit(Directive("d-1", "2.0.0", v2));
  ASSERT_TRUE(WaitFor([&] { return !server_->requested_offsets().empty(); }));
  updater_->Cancel("d-1", "rollout aborted");
  ASSERT_TRUE(updater_->WaitIdle(absl::Seconds(10)));
  EXPECT_EQ(StateOf("d-1"), UpdateState::kFailed);
  EXPECT_EQ(Events("d-1").back().error_class(), "canceled");
  EXPECT_NE(Events("d-1").back().error().find("rollout aborted"),
            std::string::npos);
  EXPECT_EQ(ExecDigest(), DigestToHex(Sha256Of(v1)));
  EXPECT_TRUE(Runs("1.0.0"));
}

TEST_F(UpdaterTest, StartRollsBackAnUpdateInterruptedAfterTheSwap) {
  // What a crash in the health window leaves: EXEC is v2, the backup v1,
  // the journal says RESTARTED.
  const std::string v1 = AppBytes("1.0.0");
  const std::string v2 = AppBytes("2.0.0");
  ASSERT_TRUE(WriteFileAtomically(exec_, v1, 0755).ok());
  ASSERT_TRUE(WriteFileAtomically(dir_ + "/v2", v2).ok());
  ExecutableSwap swap(exec_);
  ASSERT_TRUE(swap.Stage(dir_ + "/v2", Sha256Of(v2)).ok());
  ASSERT_TRUE(swap.Swap().ok());
  UpdateRecord r;
  r.directive_id = "d-1";
  r.rollout_id = "ro-test";
  r.product = "app";
  r.from_version = "1.0.0";
  r.to_version = "2.0.0";
  r.signed_manifest = Directive("d-1", "2.0.0", v2).manifest();
  r.state = UpdateState::kRestarted;
  ASSERT_TRUE(journal_->InsertUpdate(r, nullptr).ok());

  StartUpdater();
  ASSERT_TRUE(updater_->WaitIdle(absl::Seconds(20)));
  EXPECT_EQ(StateOf("d-1"), UpdateState::kRolledBack);
  EXPECT_EQ(Phases("d-1"), (std::vector<std::string>{"ROLLED_BACK"}));
  EXPECT_EQ(Events("d-1").back().error_class(), "interrupted");
  EXPECT_EQ(ExecDigest(), DigestToHex(Sha256Of(v1)));
  EXPECT_FALSE(swap.HasBackup());
  EXPECT_TRUE(WaitFor([&] { return Runs("1.0.0"); }));
}

TEST_F(UpdaterTest, StartResumesAnUpdateInterruptedBeforeTheSwap) {
  const std::string v1 = AppBytes("1.0.0");
  const std::string v2 = AppBytes("2.0.0") + std::string(5000, '#');
  ASSERT_TRUE(WriteFileAtomically(exec_, v1, 0755).ok());
  server_->Add(v2);
  // What a crash mid-download leaves: a partial file and DOWNLOADING.
  ASSERT_TRUE(MakeDirs(downloader_->dir()).ok());
  ASSERT_TRUE(WriteFileAtomically(downloader_->PartPath(Sha256Of(v2)),
                                  v2.substr(0, 3000))
                  .ok());
  UpdateRecord r;
  r.directive_id = "d-1";
  r.rollout_id = "ro-test";
  r.product = "app";
  r.from_version = "1.0.0";
  r.signed_manifest = Directive("d-1", "2.0.0", v2).manifest();
  r.state = UpdateState::kDownloading;
  ASSERT_TRUE(journal_->InsertUpdate(r, nullptr).ok());

  StartUpdater();
  ASSERT_TRUE(updater_->WaitIdle(absl::Seconds(20)));
  EXPECT_EQ(StateOf("d-1"), UpdateState::kHealthy);
  EXPECT_EQ(server_->requested_offsets(), (std::vector<uint64_t>{3000}));
  EXPECT_EQ((*journal_->FindUpdate("d-1"))->attempt, 2);
  EXPECT_EQ(ExecDigest(), DigestToHex(Sha256Of(v2)));
  EXPECT_TRUE(WaitFor([&] { return Runs("2.0.0"); }));
}

TEST_F(UpdaterTest, DirectivePastItsDeadlineFails) {
  StartUpdater();
  const std::string v1 = AppBytes("1.0.0");
  server_->Add(v1);
  v1::UpdateDirective d = Directive("d-1", "1.0.0", v1);
  d.set_deadline_unix_ms(absl::ToUnixMillis(absl::Now()) - 1000);
  Submit(d);
  EXPECT_EQ(StateOf("d-1"), UpdateState::kFailed);
  EXPECT_EQ(Events("d-1").back().error_class(), "deadline");
  EXPECT_FALSE(PathExists(exec_));
}

TEST_F(UpdaterTest, UpdateInterruptedTooOftenFailsInsteadOfLooping) {
  const std::string v1 = AppBytes("1.0.0");
  ASSERT_TRUE(WriteFileAtomically(exec_, v1, 0755).ok());
  const std::string v2 = AppBytes("2.0.0");
  server_->Add(v2);
  UpdateRecord r;
  r.directive_id = "d-1";
  r.product = "app";
  r.signed_manifest = Directive("d-1", "2.0.0", v2).manifest();
  r.state = UpdateState::kDownloading;
  r.attempt = 6;  // the agent died during this update five times already
  ASSERT_TRUE(journal_->InsertUpdate(r, nullptr).ok());
  StartUpdater();
  ASSERT_TRUE(updater_->WaitIdle(absl::Seconds(20)));
  EXPECT_EQ(StateOf("d-1"), UpdateState::kFailed);
  EXPECT_EQ(Events("d-1").back().error_class(), "interrupted");
  EXPECT_TRUE(server_->requested_offsets().empty());
  EXPECT_EQ(ExecDigest(), DigestToHex(Sha256Of(v1)));
  EXPECT_TRUE(WaitFor([&] { return Runs("1.0.0"); }));
}

TEST_F(UpdaterTest, StartCleansLeftoversOfEndedUpdates) {
  const std::string v1 = AppBytes("1.0.0");
  ASSERT_TRUE(WriteFileAtomically(exec_, v1, 0755).ok());
  ASSERT_TRUE(WriteFileAtomically(exec_ + ".fleet-backup", "old", 0755).ok());
  ASSERT_TRUE(MakeDirs(downloader_->dir()).ok());
  const std::string stale = downloader_->PartPath(Sha256Of("stale"));
  ASSERT_TRUE(WriteFileAtomically(stale, "sta").ok());
  StartUpdater();
  ASSERT_TRUE(updater_->WaitIdle(absl::Seconds(20)));
  EXPECT_FALSE(PathExists(exec_ + ".fleet-backup"));
  EXPECT_FALSE(PathExists(stale));
  EXPECT_EQ(ExecDigest(), DigestToHex(Sha256Of(v1)));
}

TEST_F(UpdaterTest, StopLeavesAnUnfinishedUpdateToResume) {
  const std::string v1 = AppBytes("1.0.0");
  ASSERT_TRUE(WriteFileAtomically(exec_, v1, 0755).ok());
  StartUpdater();
  ASSERT_TRUE(WaitFor([&] { return Runs("1.0.0"); }));
  server_->set_chunk_size(64);
  server_->set_chunk_delay(absl::Milliseconds(50));
  const std::string v2 = AppBytes("2.0.0") + std::string(64 * 100, '#');
  server_->Add(v2);
  updater_->Submit(Directive("d-1", "2.0.0", v2));
  // Stop once some bytes are on disk, so the restart has a prefix to resume
  // from (a request seen by the server may not have delivered a chunk yet).
  const std::string partial =
      dir_ + "/state/downloads/" + DigestToHex(Sha256Of(v2)) + ".part";
  ASSERT_TRUE(WaitFor([&] {
    struct stat st;
    return stat(partial.c_str(), &st) == 0 && st.st_size > 0;
  }));
  const absl::Time start = absl::Now();
  updater_->Stop();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  EXPECT_EQ(StateOf("d-1"), UpdateState::kDownloading);
  EXPECT_EQ(program_->state().pid, 0);  // Stop() stops the program too
  EXPECT_EQ(ExecDigest(), DigestToHex(Sha256Of(v1)));

  server_->set_chunk_delay(absl::ZeroDuration());
  updater_.reset();
  StartUpdater();
  ASSERT_TRUE(updater_->WaitIdle(absl::Seconds(20)));
  EXPECT_EQ(StateOf("d-1"), UpdateState::kHealthy);
  EXPECT_GT(server_->requested_offsets().back(), 0u);
  EXPECT_TRUE(WaitFor([&] { return Runs("2.0.0"); }));
}

}  // namespace
}  // namespace fleet::agent
