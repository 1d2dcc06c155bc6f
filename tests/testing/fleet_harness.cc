#include "tests/testing/fleet_harness.h"

#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/files.h"
#include "common/sqlite/database.h"
#include "common/status_macros.h"
#include "proto/fleet/v1/release.pb.h"

namespace fleet::testing {
namespace {

std::string ReadSmallFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string Tail(const std::string& text, size_t max_bytes = 6000) {
  return text.size() <= max_bytes
             ? text
             : "..." + text.substr(text.size() - max_bytes);
}

}  // namespace

std::optional<SampleStatus> AgentHandle::Status() const {
  std::string text(absl::StripAsciiWhitespace(ReadSmallFile(status_path)));
  std::vector<std::string> parts = absl::StrSplit(text, ' ');
  if (parts.size() != 2) return std::nullopt;
  SampleStatus status;
  status.version = parts[0];
  if (!absl::SimpleAtoi(parts[1], &status.pid)) return std::nullopt;
  return status;
}

bool AgentHandle::Runs(const std::string& version) const {
  std::optional<SampleStatus> status = Status();
  if (!status || status->version != version) return false;
  if (kill(status->pid, 0) != 0) return false;
  // The live process must be the program at exec_path (a shell script runs
  // as `sh EXEC`), not a leftover of an older one.
  std::string cmdline =
      ReadSmallFile(absl::StrCat("/proc/", status->pid, "/cmdline"));
  return cmdline.find(exec_path) != std::string::npos;
}

absl::StatusOr<std::vector<JournalUpdate>> AgentHandle::JournalUpdates() const {
  constexpr char kSelectUpdatesSql[] =
      "SELECT directive_id, rollout_id, from_version, to_version, kind, "
      "state, created_ms, updated_ms, signed_manifest FROM updates ORDER BY "
      "created_ms, "
      "directive_id";
  const std::string path = state_dir + "/journal.db";
  if (!PathExists(path)) return std::vector<JournalUpdate>();
  ASSIGN_OR_RETURN(std::unique_ptr<sqlite::Database> db,
                   sqlite::Database::Open(path));
  ASSIGN_OR_RETURN(std::unique_ptr<sqlite::Statement> select,
                   db->Prepare(kSelectUpdatesSql));
  std::vector<JournalUpdate> updates;
  while (true) {
    ASSIGN_OR_RETURN(bool row, select->Step());
    if (!row) break;
    JournalUpdate u;
    u.directive_id = select->ColumnText(0);
    u.rollout_id = select->ColumnText(1);
    u.from_version = select->ColumnText(2);
    u.to_version = select->ColumnText(3);
    u.kind = static_cast<int>(select->ColumnInt64(4));
    u.state = select->ColumnText(5);
    u.created_ms = select->ColumnInt64(6);
    u.updated_ms = select->ColumnInt64(7);
    v1::SignedManifest signed_manifest;
    v1::ReleaseManifest manifest;
    if (signed_manifest.ParseFromString(select->ColumnBlob(8)) &&
        manifest.ParseFromString(signed_manifest.manifest())) {
      u.to_version = manifest.version();
    }
    updates.push_back(std::move(u));
  }
  return updates;
}

absl::Status AgentHandle::MarkCrash(const std::string& version) const {
  return WriteFileAtomically(dir + "/crash-" + version, "", 0644);
}

FleetHarness::FleetHarness() : dir_(MakeTempDir("fleet")) {
  absl::StatusOr<Ed25519PrivateKey> key = Ed25519PrivateKey::Generate();
  if (key.ok()) release_key_ = *std::move(key);
  private_key_path_ = dir_ + "/release.key";
  public_key_path_ = dir_ + "/release.pub";
  if (release_key_) {
    (void)release_key_->WritePemFile(private_key_path_);
    (void)release_key_->PublicKey().WritePemFile(public_key_path_);
  }
}

FleetHarness::~FleetHarness() {
  for (auto& fleetctl : fleetctls_) fleetctl->Kill();
  // Agents first, so they do not spend the teardown reconnecting.
  for (auto& agent : agents_) agent->process->Kill();
  if (controller_) controller_->Kill();
}

std::string FleetHarness::controller_address() const {
  return absl::StrCat("127.0.0.1:", grpc_port_);
}

absl::Status FleetHarness::StartController(
    std::vector<std::string> extra_flags) {
  if (grpc_port_ == 0) grpc_port_ = PickFreePort();
  RETURN_IF_ERROR(MakeDirs(controller_data_dir()));
  std::vector<std::string> argv = {
      Runfile("controller/fleet-controller"), "--data-dir",
      controller_data_dir(), "--listen", controller_address(), "--http-listen",
      absl::StrCat("127.0.0.1:", PickFreePort()), "--trust-key",
      public_key_path_,
      // TLS has its own test (tests/mtls_e2e_test).
      "--insecure"};
  argv.insert(argv.end(), extra_flags.begin(), extra_flags.end());
  controller_ = std::make_unique<Subprocess>(argv, dir_ + "/controller.log");
  RETURN_IF_ERROR(controller_->Start());
  auto channel = grpc::CreateChannel(controller_address(),
                                     grpc::InsecureChannelCredentials());
  admin_ = v1::AdminService::NewStub(channel);
  bool ready = WaitFor(
      [&] {
        if (!controller_->running()) return true;
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::milliseconds(500));
        v1::ListReleasesResponse resp;
        return admin_->ListReleases(&ctx, v1::ListReleasesRequest(), &resp)
            .ok();
      },
      absl::Seconds(30));
  if (!controller_->running()) {
    return absl::InternalError("fleet-controller exited at start:\n" +
                               Tail(controller_->ReadLog()));
  }
  if (!ready) return absl::DeadlineExceededError("controller not ready");
  return absl::OkStatus();
}

AgentHandle* FleetHarness::StartAgent(
    const std::string& name, const std::string& product,
    std::vector<std::string> extra_flags, const std::string& trust_key,
    std::map<std::string, std::string> extra_env) {
  auto agent = std::make_unique<AgentHandle>();
  agent->name = name;
  agent->dir = dir_ + "/" + name;
  agent->state_dir = agent->dir + "/state";
  agent->exec_path = agent->dir + "/bin/" + product;
  agent->status_path = agent->dir + "/status";
  (void)MakeDirs(agent->dir + "/bin");
  std::vector<std::string> argv = {
      Runfile("agent/fleet-agent"),
      "--controller",
      controller_address(),
      "--state-dir",
      agent->state_dir,
      "--trust-key",
      trust_key.empty() ? public_key_path_ : trust_key,
      "--product",
      product,
      "--exec",
      agent->exec_path,
      "--agent-id",
      name,
      "--insecure",
      "--health-seconds",
      "1",
  };
  argv.insert(argv.end(), extra_flags.begin(), extra_flags.end());
  extra_env["FLEET_SAMPLE_STATUS"] = agent->status_path;
  agent->process = std::make_unique<Subprocess>(argv, agent->dir + "/agent.log",
                                                std::move(extra_env));
  agents_.push_back(std::move(agent));
  return agents_.back().get();
}

std::vector<AgentHandle*> FleetHarness::agents() {
  std::vector<AgentHandle*> out;
  for (auto& a : agents_) out.push_back(a.get());
  return out;
}

std::string FleetHarness::MakeSampleApp(const std::string& version,
                                        bool crash) {
  std::string out =
      absl::StrCat(dir_, "/programs/app-", version, crash ? "-crash" : "");
  (void)MakeDirs(dir_ + "/programs");
  std::vector<std::string> argv = {
      "/bin/sh", Runfile("deploy/sample-app/make-sample-app.sh"), version, out};
  if (crash) argv.push_back("--crash");
  RunResult r = Run(argv);
  if (r.exit_code != 0) return "";
  return out;
}

std::string FleetHarness::MakeCrashWhereMarkedApp(const std::string& version) {
  const std::string sample = MakeSampleApp(version);
  if (sample.empty()) return "";
  absl::StatusOr<std::string> text = ReadFile(sample);
  if (!text.ok()) return "";
  // The status file lives in the agent's directory (StartAgent), so the
  // marker beside it names the agent.
  const std::string check = absl::StrCat(
      "if [ -e \"$(dirname \"${FLEET_SAMPLE_STATUS:-/nonexistent/x}\")/crash-",
      version,
      "\" ]; then\n"
      "  echo \"sample-app ",
      version,
      ": crashing on purpose (this agent is marked)\" >&2\n"
      "  exit 1\n"
      "fi\n");
  const size_t first_line_end = text->find('\n');
  if (first_line_end == std::string::npos) return "";
  const std::string out =
      absl::StrCat(dir_, "/programs/app-", version, "-crash-where-marked");
  if (!WriteFileAtomically(
           out,
           absl::StrCat(text->substr(0, first_line_end + 1), check,
                        text->substr(first_line_end + 1)),
           0755)
           .ok()) {
    return "";
  }
  return out;
}

absl::Status FleetHarness::Preinstall(AgentHandle* agent,
                                      const std::string& program) {
  ASSIGN_OR_RETURN(std::string bytes, ReadFile(program));
  return WriteFileAtomically(agent->exec_path, bytes, 0755);
}

RunResult FleetHarness::Fleetctl(std::vector<std::string> args) {
  std::vector<std::string> argv = {Runfile("cli/fleetctl"), "--controller",
                                   controller_address(), "--insecure"};
  argv.insert(argv.end(), args.begin(), args.end());
  return Run(argv);
}

Subprocess* FleetHarness::StartFleetctl(std::vector<std::string> args,
                                        const std::string& log_path) {
  std::vector<std::string> argv = {Runfile("cli/fleetctl"), "--controller",
                                   controller_address(), "--insecure"};
  argv.insert(argv.end(), args.begin(), args.end());
  fleetctls_.push_back(std::make_unique<Subprocess>(argv, log_path));
  if (!fleetctls_.back()->Start().ok()) return nullptr;
  return fleetctls_.back().get();
}

void FleetHarness::KillController() {
  if (controller_) controller_->Kill();
}

RunResult FleetHarness::PushRelease(const std::string& product,
                                    const std::string& version,
                                    const std::string& file,
                                    const std::string& platform) {
  std::vector<std::string> args = {
      "release", "push",   "--product", product, "--version",
      version,   "--file", file,        "--key", private_key_path_};
  if (!platform.empty()) {
    args.push_back("--platform");
    args.push_back(platform);
  }
  return Fleetctl(args);
}

v1::AdminService::Stub& FleetHarness::admin() { return *admin_; }

absl::StatusOr<v1::Rollout> FleetHarness::WaitForRolloutEnd(
    const std::string& rollout_id, absl::Duration timeout) {
  v1::Rollout last;
  bool ended = WaitFor(
      [&] {
        grpc::ClientContext ctx;
        v1::GetRolloutRequest req;
        req.set_rollout_id(rollout_id);
        if (!admin_->GetRollout(&ctx, req, &last).ok()) return false;
        return last.state() == v1::ROLLOUT_STATE_COMPLETED ||
               last.state() == v1::ROLLOUT_STATE_ABORTED;
      },
      timeout);
  if (!ended) {
    return absl::DeadlineExceededError("rollout did not end; last state:\n" +
                                       last.DebugString());
  }
  return last;
}

std::string FleetHarness::DumpLogs() const {
  std::string out;
  if (controller_) {
    absl::StrAppend(&out, "==== controller log\n",
                    Tail(controller_->ReadLog()));
  }
  for (const auto& agent : agents_) {
    absl::StrAppend(&out, "==== agent ", agent->name, " log\n",
                    Tail(agent->process->ReadLog()));
  }
  return out;
}

}  // namespace fleet::testing
