#include "cli/testing/fake_admin_service.h"

#include <arpa/inet.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <iostream>

#include "absl/strings/str_cat.h"

namespace fleet::cli::testing {

void FakeAdminService::FailWith(grpc::Status status) {
  absl::MutexLock lock(&mu_);
  fail_with_ = std::move(status);
}

void FakeAdminService::SetDelay(absl::Duration delay) {
  absl::MutexLock lock(&mu_);
  delay_ = delay;
}

void FakeAdminService::SetReleases(v1::ListReleasesResponse releases) {
  absl::MutexLock lock(&mu_);
  releases_ = std::move(releases);
}

void FakeAdminService::SetAgents(v1::ListAgentsResponse agents) {
  absl::MutexLock lock(&mu_);
  agents_ = std::move(agents);
}

void FakeAdminService::SetRollout(v1::Rollout rollout) {
  absl::MutexLock lock(&mu_);
  rollout_ = std::move(rollout);
}

void FakeAdminService::ScriptGetRollout(std::vector<GetRolloutStep> steps) {
  absl::MutexLock lock(&mu_);
  get_rollout_script_ = std::move(steps);
}

int FakeAdminService::get_rollout_calls() const {
  absl::MutexLock lock(&mu_);
  return get_rollout_calls_;
}

void FakeAdminService::SetRollouts(v1::ListRolloutsResponse rollouts) {
  absl::MutexLock lock(&mu_);
  rollouts_ = std::move(rollouts);
}

void FakeAdminService::SetStoredAtMs(int64_t unix_ms) {
  absl::MutexLock lock(&mu_);
  stored_at_ms_ = unix_ms;
}

int FakeAdminService::calls() const {
  absl::MutexLock lock(&mu_);
  return calls_;
}

std::optional<PushRecord> FakeAdminService::last_push() const {
  absl::MutexLock lock(&mu_);
  return last_push_;
}

std::optional<v1::ListReleasesRequest> FakeAdminService::last_list_releases()
    const {
  absl::MutexLock lock(&mu_);
  return last_list_releases_;
}

std::optional<v1::ListAgentsRequest> FakeAdminService::last_list_agents()
    const {
  absl::MutexLock lock(&mu_);
  return last_list_agents_;
}

std::optional<v1::CreateRolloutRequest> FakeAdminService::last_create_rollout()
    const {
  absl::MutexLock lock(&mu_);
  return last_create_rollout_;
}

std::optional<v1::ListRolloutsRequest> FakeAdminService::last_list_rollouts()
    const {
  absl::MutexLock lock(&mu_);
  return last_list_rollouts_;
}

grpc::Status FakeAdminService::Begin() {
  absl::Duration delay;
  std::optional<grpc::Status> fail;
  {
    absl::MutexLock lock(&mu_);
    ++calls_;
    delay = delay_;
    fail = fail_with_;
  }
  absl::SleepFor(delay);
  return fail.value_or(grpc::Status::OK);
}

grpc::Status FakeAdminService::PushRelease(
    grpc::ServerContext*, grpc::ServerReader<v1::PushReleaseRequest>* reader,
    v1::Release* response) {
  grpc::Status status = Begin();
  PushRecord record;
  v1::PushReleaseRequest request;
  bool first = true;
  while (reader->Read(&request)) {
    if (request.has_manifest()) {
      if (first) record.manifest_first = true;
      ++record.manifests;
      record.manifest = request.manifest();
    } else {
      record.artifact += request.chunk();
      record.chunk_sizes.push_back(request.chunk().size());
    }
    first = false;
  }
  v1::ReleaseManifest manifest;
  manifest.ParseFromString(record.manifest.manifest());
  absl::MutexLock lock(&mu_);
  last_push_ = std::move(record);
  if (!status.ok()) return status;
  response->set_product(manifest.product());
  response->set_version(manifest.version());
  response->set_platform(manifest.platform());
  response->set_sha256(manifest.sha256());
  response->set_size(manifest.size());
  *response->mutable_signed_manifest() = last_push_->manifest;
  response->set_created_unix_ms(stored_at_ms_);
  return grpc::Status::OK;
}

grpc::Status FakeAdminService::ListReleases(
    grpc::ServerContext*, const v1::ListReleasesRequest* request,
    v1::ListReleasesResponse* response) {
  grpc::Status status = Begin();
  absl::MutexLock lock(&mu_);
  last_list_releases_ = *request;
  if (status.ok()) *response = releases_;
  return status;
}

grpc::Status FakeAdminService::GetRelease(grpc::ServerContext*,
                                          const v1::GetReleaseRequest*,
                                          v1::Release*) {
  grpc::Status status = Begin();
  if (!status.ok()) return status;
  return grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                      "fleetctl does not call GetRelease");
}

grpc::Status FakeAdminService::ListAgents(grpc::ServerContext*,
                                          const v1::ListAgentsRequest* request,
                                          v1::ListAgentsResponse* response) {
  grpc::Status status = Begin();
  absl::MutexLock lock(&mu_);
  last_list_agents_ = *request;
  if (status.ok()) *response = agents_;
  return status;
}

grpc::Status FakeAdminService::CreateRollout(
    grpc::ServerContext*, const v1::CreateRolloutRequest* request,
    v1::Rollout* response) {
  grpc::Status status = Begin();
  absl::MutexLock lock(&mu_);
  last_create_rollout_ = *request;
  if (status.ok()) *response = rollout_;
  return status;
}

grpc::Status FakeAdminService::GetRollout(grpc::ServerContext*,
                                          const v1::GetRolloutRequest* request,
                                          v1::Rollout* response) {
  grpc::Status status = Begin();
  if (!status.ok()) return status;
  absl::MutexLock lock(&mu_);
  const int call = get_rollout_calls_++;
  const v1::Rollout* answer = &rollout_;
  if (!get_rollout_script_.empty()) {
    const GetRolloutStep& step = get_rollout_script_[std::min<size_t>(
        call, get_rollout_script_.size() - 1)];
    if (!step.status.ok()) return step.status;
    answer = &step.rollout;
  }
  if (request->rollout_id() != answer->rollout_id()) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("no rollout ", request->rollout_id()));
  }
  *response = *answer;
  return grpc::Status::OK;
}

grpc::Status FakeAdminService::ListRollouts(
    grpc::ServerContext*, const v1::ListRolloutsRequest* request,
    v1::ListRolloutsResponse* response) {
  grpc::Status status = Begin();
  absl::MutexLock lock(&mu_);
  last_list_rollouts_ = *request;
  if (status.ok()) *response = rollouts_;
  return status;
}

std::optional<v1::PauseRolloutRequest> FakeAdminService::last_pause_rollout()
    const {
  absl::MutexLock lock(&mu_);
  return last_pause_rollout_;
}

std::optional<v1::ResumeRolloutRequest> FakeAdminService::last_resume_rollout()
    const {
  absl::MutexLock lock(&mu_);
  return last_resume_rollout_;
}

std::optional<v1::AbortRolloutRequest> FakeAdminService::last_abort_rollout()
    const {
  absl::MutexLock lock(&mu_);
  return last_abort_rollout_;
}

grpc::Status FakeAdminService::ChangedRollout(const std::string& rollout_id,
                                              v1::RolloutState state,
                                              v1::Rollout* response) {
  if (rollout_id != rollout_.rollout_id()) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("no rollout ", rollout_id));
  }
  *response = rollout_;
  response->set_state(state);
  return grpc::Status::OK;
}

grpc::Status FakeAdminService::PauseRollout(
    grpc::ServerContext*, const v1::PauseRolloutRequest* request,
    v1::Rollout* response) {
  grpc::Status status = Begin();
  absl::MutexLock lock(&mu_);
  last_pause_rollout_ = *request;
  if (!status.ok()) return status;
  return ChangedRollout(request->rollout_id(), v1::ROLLOUT_STATE_PAUSED,
                        response);
}

grpc::Status FakeAdminService::ResumeRollout(
    grpc::ServerContext*, const v1::ResumeRolloutRequest* request,
    v1::Rollout* response) {
  grpc::Status status = Begin();
  absl::MutexLock lock(&mu_);
  last_resume_rollout_ = *request;
  if (!status.ok()) return status;
  return ChangedRollout(request->rollout_id(), v1::ROLLOUT_STATE_RUNNING,
                        response);
}

grpc::Status FakeAdminService::AbortRollout(
    grpc::ServerContext*, const v1::AbortRolloutRequest* request,
    v1::Rollout* response) {
  grpc::Status status = Begin();
  absl::MutexLock lock(&mu_);
  last_abort_rollout_ = *request;
  if (!status.ok()) return status;
  return ChangedRollout(request->rollout_id(), v1::ROLLOUT_STATE_ABORTED,
                        response);
}

void FakeAdminService::SetBlacklist(v1::ListBlacklistResponse blacklist) {
  absl::MutexLock lock(&mu_);
  blacklist_ = std::move(blacklist);
}

void FakeAdminService::SetAbortedRollouts(std::vector<std::string> ids) {
  absl::MutexLock lock(&mu_);
  aborted_rollouts_ = std::move(ids);
}

std::optional<v1::AddBlacklistRequest> FakeAdminService::last_add_blacklist()
    const {
  absl::MutexLock lock(&mu_);
  return last_add_blacklist_;
}

std::optional<v1::RemoveBlacklistRequest>
FakeAdminService::last_remove_blacklist() const {
  absl::MutexLock lock(&mu_);
  return last_remove_blacklist_;
}

std::optional<v1::ListBlacklistRequest> FakeAdminService::last_list_blacklist()
    const {
  absl::MutexLock lock(&mu_);
  return last_list_blacklist_;
}

grpc::Status FakeAdminService::AddBlacklist(
    grpc::ServerContext*, const v1::AddBlacklistRequest* request,
    v1::AddBlacklistResponse* response) {
  grpc::Status status = Begin();
  absl::MutexLock lock(&mu_);
  last_add_blacklist_ = *request;
  if (!status.ok()) return status;
  v1::BlacklistEntry* entry = response->mutable_entry();
  entry->set_product(request->product());
  entry->set_version(request->version());
  entry->set_reason(request->reason());
  entry->set_created_by("operator");
  entry->set_created_unix_ms(stored_at_ms_);
  for (const std::string& id : aborted_rollouts_) {
    response->add_aborted_rollout_ids(id);
  }
  return grpc::Status::OK;
}

grpc::Status FakeAdminService::RemoveBlacklist(
    grpc::ServerContext*, const v1::RemoveBlacklistRequest* request,
    v1::RemoveBlacklistResponse*) {
  grpc::Status status = Begin();
  absl::MutexLock lock(&mu_);
  last_remove_blacklist_ = *request;
  if (!status.ok()) return status;
  for (const v1::BlacklistEntry& e : blacklist_.entries()) {
    if (e.product() == request->product() &&
        e.version() == request->version()) {
      return grpc::Status::OK;
    }
  }
  return grpc::Status(grpc::StatusCode::NOT_FOUND,
                      absl::StrCat(request->product(), " ", request->version(),
                                   " is not blacklisted"));
}

grpc::Status FakeAdminService::ListBlacklist(
    grpc::ServerContext*, const v1::ListBlacklistRequest* request,
    v1::ListBlacklistResponse* response) {
  grpc::Status status = Begin();
  absl::MutexLock lock(&mu_);
  last_list_blacklist_ = *request;
  if (status.ok()) *response = blacklist_;
  return status;
}

FakeAdminServer::FakeAdminServer() {
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port_);
  builder.RegisterService(&service_);
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || port_ == 0) {
    std::cerr << "FakeAdminServer: cannot listen on 127.0.0.1\n";
    std::abort();
  }
}

FakeAdminServer::~FakeAdminServer() {
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
}

std::string FakeAdminServer::address() const {
  return absl::StrCat("127.0.0.1:", port_);
}

int UnusedLocalPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    std::cerr << "UnusedLocalPort: cannot bind 127.0.0.1:0\n";
    std::abort();
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

}  // namespace fleet::cli::testing
