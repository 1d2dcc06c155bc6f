#include "tests/testing/process.h"

#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

extern char** environ;

namespace fleet::testing {
namespace {

std::vector<std::string> MergedEnvironment(
    const std::map<std::string, std::string>& extra) {
  std::map<std::string, std::string> merged;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string entry(*e);
    size_t eq = entry.find('=');
    if (eq == std::string::npos) continue;
    merged[entry.substr(0, eq)] = entry.substr(eq + 1);
  }
  for (const auto& [k, v] : extra) merged[k] = v;
  std::vector<std::string> out;
  for (const auto& [k, v] : merged) out.push_back(k + "=" + v);
  return out;
}

std::vector<char*> CStrings(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (auto& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// posix_spawn with the child in its own process group and stdout/stderr
// redirected to the given descriptors.
absl::StatusOr<pid_t> Spawn(std::vector<std::string> argv,
                            const std::map<std::string, std::string>& env,
                            int out_fd, int err_fd) {
  std::vector<std::string> envs = MergedEnvironment(env);
  std::vector<char*> c_argv = CStrings(argv);
  std::vector<char*> c_env = CStrings(envs);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, out_fd, 1);
  posix_spawn_file_actions_adddup2(&actions, err_fd, 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setpgroup(&attr, 0);
  sigset_t no_signals;
  sigemptyset(&no_signals);
  posix_spawnattr_setsigmask(&attr, &no_signals);
  sigset_t default_signals;
  sigfillset(&default_signals);
  posix_spawnattr_setsigdefault(&attr, &default_signals);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP |
                                      POSIX_SPAWN_SETSIGMASK |
                                      POSIX_SPAWN_SETSIGDEF);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, c_argv[0], &actions, &attr, c_argv.data(),
                       c_env.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) return absl::ErrnoToStatus(rc, "spawn " + argv[0]);
  return pid;
}

std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

std::string Runfile(const std::string& workspace_relative_path) {
  const char* srcdir = getenv("TEST_SRCDIR");
  const char* workspace = getenv("TEST_WORKSPACE");
  if (srcdir == nullptr) return workspace_relative_path;
  return absl::StrCat(srcdir, "/", workspace ? workspace : "fleet", "/",
                      workspace_relative_path);
}

std::string MakeTempDir(const std::string& prefix) {
  const char* base = getenv("TEST_TMPDIR");
  std::string tmpl = absl::StrCat(base ? base : "/tmp", "/", prefix, "-XXXXXX");
  char* made = mkdtemp(tmpl.data());
  return made ? std::string(made) : std::string();
}

Subprocess::Subprocess(std::vector<std::string> argv, std::string log_path,
                       std::map<std::string, std::string> env)
    : argv_(std::move(argv)),
      log_path_(std::move(log_path)),
      env_(std::move(env)) {}

Subprocess::~Subprocess() { Kill(); }

absl::Status Subprocess::Start() {
  int fd =
      open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return absl::ErrnoToStatus(errno, "open " + log_path_);
  absl::StatusOr<pid_t> pid = Spawn(argv_, env_, fd, fd);
  close(fd);
  if (!pid.ok()) return pid.status();
  pid_ = *pid;
  exit_status_.reset();
  return absl::OkStatus();
}

bool Subprocess::running() {
  if (pid_ <= 0 || exit_status_.has_value()) return false;
  int status = 0;
  pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    exit_status_ = status;
    return false;
  }
  return r == 0;
}

std::optional<int> Subprocess::Wait(absl::Duration timeout) {
  if (pid_ <= 0) return std::nullopt;
  absl::Time deadline = absl::Now() + timeout;
  while (running()) {
    if (absl::Now() > deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return exit_status_;
}

int Subprocess::Stop(absl::Duration grace) {
  if (!running()) return exit_status_.value_or(-1);
  kill(pid_, SIGTERM);
  if (std::optional<int> status = Wait(grace)) return *status;
  Kill();
  return exit_status_.value_or(-1);
}

void Subprocess::Kill() {
  if (pid_ <= 0) return;
  // The group too: a killed agent must not leave its managed program behind.
  kill(-pid_, SIGKILL);
  if (running()) {
    kill(pid_, SIGKILL);
    int status = 0;
    if (waitpid(pid_, &status, 0) == pid_) exit_status_ = status;
  }
}

std::string Subprocess::ReadLog() const { return ReadWholeFile(log_path_); }

RunResult Run(const std::vector<std::string>& argv,
              const std::map<std::string, std::string>& env,
              absl::Duration timeout) {
  RunResult result;
  std::string dir = MakeTempDir("run");
  std::string out_path = dir + "/stdout", err_path = dir + "/stderr";
  int out_fd = open(out_path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  int err_fd = open(err_path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  absl::StatusOr<pid_t> pid = Spawn(argv, env, out_fd, err_fd);
  close(out_fd);
  close(err_fd);
  if (!pid.ok()) {
    result.err = pid.status().ToString();
    return result;
  }
  absl::Time deadline = absl::Now() + timeout;
  int status = 0;
  while (true) {
    pid_t r = waitpid(*pid, &status, WNOHANG);
    if (r == *pid) break;
    if (absl::Now() > deadline) {
      kill(-*pid, SIGKILL);
      waitpid(*pid, &status, 0);
      status = -1;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (status != -1 && WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  result.out = ReadWholeFile(out_path);
  result.err = ReadWholeFile(err_path);
  return result;
}

bool WaitFor(const std::function<bool()>& done, absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  while (true) {
    if (done()) return true;
    if (absl::Now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

int PickFreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

std::vector<pid_t> ProcessesWhere(
    const std::function<bool(const std::vector<std::string>& argv)>& match) {
  std::vector<pid_t> found;
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return found;
  while (dirent* e = readdir(proc)) {
    int pid = 0;
    if (!absl::SimpleAtoi(e->d_name, &pid)) continue;
    std::ifstream cmdline(absl::StrCat("/proc/", pid, "/cmdline"));
    std::ifstream stat(absl::StrCat("/proc/", pid, "/stat"));
    if (!cmdline || !stat) continue;  // ended meanwhile
    const std::string args((std::istreambuf_iterator<char>(cmdline)),
                           std::istreambuf_iterator<char>());
    const std::string fields((std::istreambuf_iterator<char>(stat)),
                             std::istreambuf_iterator<char>());
    // The state follows the parenthesised command name, which may itself
    // hold spaces or parentheses.
    const size_t close = fields.rfind(')');
    if (close == std::string::npos || close + 2 >= fields.size() ||
        fields[close + 2] == 'Z') {
      continue;
    }
    if (args.empty()) continue;  // a kernel thread, or ending
    if (match(absl::StrSplit(args, '\0'))) found.push_back(pid);
  }
  closedir(proc);
  return found;
}

}  // namespace fleet::testing
