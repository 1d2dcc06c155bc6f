#include "agent/supervisor.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "agent/failpoint.h"
#include "agent/platform/swap.h"
#include "common/files.h"
#include "common/log.h"
#include "common/sha256.h"

namespace fleet::agent {

absl::StatusOr<uint64_t> ProcessStartTicks(pid_t pid) {
  absl::StatusOr<std::string> stat =
      ReadFile(absl::StrCat("/proc/", pid, "/stat"));
  if (!stat.ok()) {
    return absl::NotFoundError(absl::StrCat("no process ", pid));
  }
  const size_t close = stat->rfind(')');
  if (close == std::string::npos) {
    return absl::InternalError(
        absl::StrCat("cannot parse /proc/", pid, "/stat"));
  }
  std::vector<absl::string_view> fields = absl::StrSplit(
      absl::string_view(*stat).substr(close + 1), ' ', absl::SkipEmpty());
  // fields[0] is field 3 (state); starttime is field 22.
  uint64_t ticks = 0;
  if (fields.size() < 20 || !absl::SimpleAtoi(fields[19], &ticks)) {
    return absl::InternalError(
        absl::StrCat("cannot parse /proc/", pid, "/stat"));
  }
  if (fields[0] == "Z" || fields[0] == "X") {
    return absl::FailedPreconditionError(absl::StrCat(pid, " is a zombie"));
  }
  return ticks;
}

namespace {

// The sha256 of `path` in hex, "" if it cannot be read.
std::string HexDigestOf(const std::string& path) {
  absl::StatusOr<Digest> digest = Sha256OfFile(path);
  return digest.ok() ? DigestToHex(*digest) : "";
}

// Makes `exec` the binary whose sha256 is `old_hex` again: nothing to do if
// it is (a trial that never renamed, or a crash between link and rename);
// otherwise renames the backup (which must hold it) back over `exec`. Then
// removes the backup and staged leftovers. FAILED_PRECONDITION if neither
// file holds the old binary; the rename's errno status.
//
// `old_hex` empty: the trial record was unreadable (torn or damaged), so
// the backup's presence decides. It exists only from the rename that put
// the new binary in until the trial ends (a commit removes the record
// before the backup, a rollback renames the backup back before removing
// the record): with a backup, the new binary is in place; without one, the
// old binary is.
absl::Status RestoreAgentBinary(const std::string& exec,
                                const std::string& old_hex) {
  ExecutableSwap swap(exec);
  if (old_hex.empty()) {
    if (PathExists(swap.backup_path())) {
      if (absl::Status s = DurableRename(swap.backup_path(), exec); !s.ok()) {
        return s;
      }
    }
    (void)RemoveFile(swap.staged_path());
    return absl::OkStatus();
  }
  if (HexDigestOf(exec) != old_hex) {
    if (HexDigestOf(swap.backup_path()) != old_hex) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot restore the agent binary ", exec, ": neither it nor ",
          swap.backup_path(), " holds the old binary (sha256 ", old_hex,
          "); reinstall fleet-agent"));
    }
    if (absl::Status s = DurableRename(swap.backup_path(), exec); !s.ok()) {
      return s;
    }
  }
  (void)RemoveFile(swap.staged_path());
  (void)RemoveFile(swap.backup_path());
  return absl::OkStatus();
}

}  // namespace

Supervisor::Supervisor(SupervisorOptions options)
    : options_(std::move(options)) {
  worker_.name = "worker";
  worker_.spec = options_.worker;
  worker_.policy = options_.worker_restart;
  worker_.backoff = worker_.policy.initial_backoff;
  program_.name = "program";
  program_.spec = options_.program;
  program_.policy = options_.program_restart;
  program_.backoff = program_.policy.initial_backoff;
}

Supervisor::~Supervisor() {
  CloseWorkerSocket();
  if (signal_fd_ >= 0) close(signal_fd_);
  if (lock_fd_ >= 0) close(lock_fd_);
}

void Supervisor::WritePidFile(const Child& child) {
  absl::StatusOr<uint64_t> ticks = ProcessStartTicks(child.pid);
  absl::Status s = WriteFileAtomically(
      JoinPath(options_.state_dir, child.name + ".pid"),
      absl::StrCat(child.pid, " ", ticks.ok() ? *ticks : 0, "\n"));
  if (!s.ok()) LogWarning("cannot write pidfile", {{"error", s.ToString()}});
}

void Supervisor::RemovePidFile(const Child& child) {
  (void)RemoveFile(JoinPath(options_.state_dir, child.name + ".pid"));
}

void Supervisor::EndLeftover(const std::string& name) {
  const std::string path = JoinPath(options_.state_dir, name + ".pid");
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return;
  std::vector<absl::string_view> parts =
      absl::StrSplit(absl::StripAsciiWhitespace(*text), ' ');
  int pid = 0;
  uint64_t ticks = 0;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &pid) ||
      !absl::SimpleAtoi(parts[1], &ticks) || pid <= 1) {
    (void)RemoveFile(path);
    return;
  }
  absl::StatusOr<uint64_t> now = ProcessStartTicks(pid);
  if (now.ok() && *now == ticks) {
    // Not ours to adopt (it is no child of this process, so it could not be
    // reaped or health-watched): end it and start a fresh one, so exactly
    // one instance runs.
    LogWarning("ending a process an earlier supervisor left behind",
               {{"role", name}, {"pid", pid}});
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
    const absl::Time give_up = absl::Now() + absl::Seconds(10);
    while (absl::Now() < give_up) {
      absl::StatusOr<uint64_t> again = ProcessStartTicks(pid);
      if (!again.ok() || *again != ticks) break;
      absl::SleepFor(absl::Milliseconds(10));
    }
  }
  (void)RemoveFile(path);
}

absl::Status Supervisor::Run(const sigset_t& stop_signals) {
  if (absl::Status s = MakeDirs(options_.state_dir, 0700); !s.ok()) return s;
  const std::string lock_path = JoinPath(options_.state_dir, "supervisor.lock");
  lock_fd_ = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock_fd_ < 0) return absl::ErrnoToStatus(errno, "open " + lock_path);
  if (flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      return absl::FailedPreconditionError(
          "another fleet-agent supervisor runs on --state-dir " +
          options_.state_dir + " (it holds " + lock_path +
          "); stop it first or use another state dir");
    }
    return absl::ErrnoToStatus(errno, "flock " + lock_path);
  }
  {
    Child self;
    self.name = "supervisor";
    self.pid = getpid();
    WritePidFile(self);
  }
  if (const char* failed = getenv(kAgentTrialFailedEnv); failed != nullptr) {
    trial_failed_ = failed;  // from an image that rolled a trial back
    unsetenv(kAgentTrialFailedEnv);
  }
  UseNormalWorker();
  RecoverInterruptedAgentTrial();  // may re-exec the old binary
  const bool adopted = AdoptFromHandover();
  if (!adopted) {
    EndLeftover("worker");
    EndLeftover("program");
  }

  sigset_t handled = stop_signals;
  sigaddset(&handled, SIGCHLD);
  sigaddset(&handled, SIGHUP);
  if (sigprocmask(SIG_BLOCK, &handled, nullptr) != 0) {
    return absl::ErrnoToStatus(errno, "sigprocmask");
  }
  signal_fd_ = signalfd(-1, &handled, SFD_CLOEXEC | SFD_NONBLOCK);
  if (signal_fd_ < 0) return absl::ErrnoToStatus(errno, "signalfd");

  worker_.wanted = true;
  if (adopted) {
    // Children that ended during the exec are reaped here (their SIGCHLD
    // may have been consumed before the exec).
    ReapChildren();
    // The worker still runs the old image's code: replace it, so a reload
    // after a package upgrade runs the new binary in both roles. After a
    // committed agent trial it already runs the new binary: kept.
    if (worker_.pid != 0 && !keep_adopted_worker_) {
      BeginStop(worker_, options_.worker_stop_grace);
      worker_.wanted = true;
    } else if (worker_.pid == 0) {
      worker_.next_start = absl::Now();  // it ended during the exec
    }
  } else if (trial_) {
    // The old binary could not be restored yet: no worker until it is
    // (RunTimers retries).
    worker_.wanted = false;
  } else if (absl::Status s = Spawn(worker_, /*requested=*/true); !s.ok()) {
    return s;  // the worker binary itself cannot run: nothing to supervise
  }
  LogInfo("supervisor running", {{"pid", getpid()},
                                 {"worker_pid", worker_.pid},
                                 {"program_pid", program_.pid},
                                 {"reexecuted", adopted},
                                 {"state_dir", options_.state_dir}});

  for (;;) {
    RunTimers(absl::Now());
    if (reexec_requested_ && !shutting_down_ && Quiet()) {
      reexec_requested_ = false;
      ReExec();  // returns only if execve failed
    }
    if (shutting_down_ && worker_.pid == 0) {
      if (program_.pid != 0 && !program_.stopping) {
        BeginStop(program_, options_.program_stop_grace);
      }
      program_.wanted = false;
      if (program_.pid == 0) break;
    }
    const absl::Time next = NextTimer();
    int timeout_ms = -1;
    if (next != absl::InfiniteFuture()) {
      timeout_ms = static_cast<int>(std::clamp<int64_t>(
          absl::ToInt64Milliseconds(next - absl::Now()) + 1, 0, 60'000));
    }
    pollfd fds[2] = {{signal_fd_, POLLIN, 0}, {socket_fd_, POLLIN, 0}};
    const int n = poll(fds, socket_fd_ >= 0 ? 2 : 1, timeout_ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, "poll");
    }
    if (fds[0].revents & POLLIN) {
      signalfd_siginfo si;
      while (read(signal_fd_, &si, sizeof(si)) == sizeof(si)) {
        if (si.ssi_signo == SIGCHLD) continue;  // reaped below
        if (si.ssi_signo == SIGHUP) {
          LogInfo("supervisor reload requested (SIGHUP)");
          reexec_requested_ = true;
          continue;
        }
        if (!shutting_down_) {
          LogInfo("supervisor stopping", {{"signal", strsignal(si.ssi_signo)}});
          shutting_down_ = true;
          worker_.wanted = false;
          worker_.next_start = absl::InfiniteFuture();
          if (worker_.pid != 0) BeginStop(worker_, options_.worker_stop_grace);
        }
      }
      ReapChildren();
    }
    if (socket_fd_ >= 0 && (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) {
      ReadWorker();
    }
  }
  RemovePidFile(worker_);
  RemovePidFile(program_);
  (void)RemoveFile(JoinPath(options_.state_dir, "supervisor.pid"));
  LogInfo("supervisor stopped");
  if (worker_config_error_) {
    return absl::FailedPreconditionError(
        "the worker refused its configuration (see its error above)");
  }
  return absl::OkStatus();
}

bool Supervisor::Quiet() const {
  // A reload waits for a trial to end: it would hand over a half-swapped
  // agent binary.
  return waits_.empty() && stop_waiters_.empty() && !worker_.stopping &&
         !program_.stopping && inbox_.empty() && !trial_;
}

namespace {
constexpr char kHandoverEnv[] = "FLEET_SUPERVISOR_HANDOVER";
}  // namespace

void Supervisor::ReExec() {
  // Everything the next image needs to take the children over; the pids
  // stay its children because execve keeps the pid.
  const std::string handover = absl::StrCat(
      "2 ", worker_.pid, " ", absl::ToUnixMillis(worker_.started), " ",
      worker_.runs, " ", worker_.restarts, " ", socket_fd_, " ", program_.pid,
      " ", absl::ToUnixMillis(program_.started), " ", program_.runs, " ",
      program_.restarts, " ", program_.wanted ? 1 : 0, " ",
      commit_reexec_ ? 1 : 0, " ", program_.spec.env["FLEET_VERSION"]);
  if (socket_fd_ >= 0) fcntl(socket_fd_, F_SETFD, 0);
  std::vector<std::string> argv_strings = options_.self_argv;
  std::vector<char*> argv;
  for (std::string& a : argv_strings) argv.push_back(a.data());
  argv.push_back(nullptr);
  setenv(kHandoverEnv, handover.c_str(), 1);
  LogInfo("supervisor re-executing", {{"path", options_.self_path},
                                      {"worker_pid", worker_.pid},
                                      {"program_pid", program_.pid}});
  execv(options_.self_path.c_str(), argv.data());
  const int err = errno;
  unsetenv(kHandoverEnv);
  commit_reexec_ = false;
  if (socket_fd_ >= 0) fcntl(socket_fd_, F_SETFD, FD_CLOEXEC);
  LogError("supervisor re-exec failed; keeps running",
           {{"path", options_.self_path}, {"error", strerror(err)}});
}

bool Supervisor::AdoptFromHandover() {
  const char* raw = getenv(kHandoverEnv);
  if (raw == nullptr) return false;
  const std::string text = raw;
  unsetenv(kHandoverEnv);  // not for the children
  std::vector<std::string> f = absl::StrSplit(text, ' ');
  // "1", ten numbers, then the program's FLEET_VERSION (may be empty); "2"
  // adds an eleventh, keep_worker (the handover of a committed agent
  // trial), before the version. An older image hands over "1".
  int64_t v[11] = {0};
  const int numbers = f.empty() ? 0 : f[0] == "1" ? 10 : f[0] == "2" ? 11 : 0;
  bool ok = numbers != 0 && f.size() == static_cast<size_t>(numbers) + 2;
  for (int i = 0; ok && i < numbers; ++i) {
    ok = absl::SimpleAtoi(f[i + 1], &v[i]);
  }
  if (!ok) {
    LogError("unreadable supervisor handover; starting fresh",
             {{"handover", text}});
    return false;
  }
  auto is_child = [](pid_t pid) {
    siginfo_t info;
    memset(&info, 0, sizeof(info));
    return pid > 0 &&
           waitid(P_PID, pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0;
  };
  worker_.pid = is_child(v[0]) ? static_cast<pid_t>(v[0]) : 0;
  worker_.started = absl::FromUnixMillis(v[1]);
  worker_.runs = v[2];
  worker_.restarts = static_cast<uint32_t>(v[3]);
  const int fd = static_cast<int>(v[4]);
  if (fd >= 0 && fcntl(fd, F_SETFD, FD_CLOEXEC) == 0) {
    socket_fd_ = fd;
    fcntl(socket_fd_, F_SETFL, fcntl(socket_fd_, F_GETFL) | O_NONBLOCK);
  }
  program_.pid = is_child(v[5]) ? static_cast<pid_t>(v[5]) : 0;
  program_.started = absl::FromUnixMillis(v[6]);
  program_.runs = v[7];
  program_.restarts = static_cast<uint32_t>(v[8]);
  program_.wanted = v[9] != 0;
  keep_adopted_worker_ = numbers == 11 && v[10] != 0;
  program_.spec.env["FLEET_VERSION"] = f.back();
  if (program_.wanted && program_.pid == 0) program_.next_start = absl::Now();
  LogInfo("supervisor took over its children after re-exec",
          {{"worker_pid", worker_.pid}, {"program_pid", program_.pid}});
  return true;
}

absl::Status Supervisor::Spawn(Child& child, bool requested) {
  SpawnOptions spawn;
  spawn.die_with_parent = child.policy.die_with_agent;
  int pair[2] = {-1, -1};
  if (&child == &worker_) {
    CloseWorkerSocket();
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
      return absl::ErrnoToStatus(errno, "socketpair for the worker");
    }
    spawn.pass_fd = pair[1];
  }
  absl::StatusOr<pid_t> pid = SpawnProcess(child.spec, spawn);
  if (pair[1] >= 0) close(pair[1]);
  if (!pid.ok()) {
    if (pair[0] >= 0) close(pair[0]);
    if (requested) {
      child.wanted = false;
    } else {
      LogError("restart failed",
               {{"role", child.name},
                {"path", child.spec.path},
                {"error", pid.status().ToString()},
                {"retry_in_ms", absl::ToInt64Milliseconds(child.backoff)}});
      child.next_start = absl::Now() + child.backoff;
      child.backoff = std::min(child.backoff * 2, child.policy.max_backoff);
    }
    return pid.status();
  }
  if (pair[0] >= 0) {
    socket_fd_ = pair[0];
    fcntl(socket_fd_, F_SETFL, fcntl(socket_fd_, F_GETFL) | O_NONBLOCK);
  }
  child.pid = *pid;
  child.started = absl::Now();
  child.next_start = absl::InfiniteFuture();
  child.stopping = false;
  child.kill_at = absl::InfiniteFuture();
  ++child.runs;
  if (!requested) ++child.restarts;
  if (&child == &worker_ && trial_ && !trial_->worker_started) {
    // The window counts from the trial worker's start, not from the old
    // worker's (possibly slow) stop.
    trial_->worker_started = true;
    trial_->deadline = child.started + options_.agent_trial_window;
  }
  Failpoint("supervisor.spawned." + child.name);  // before its pidfile
  WritePidFile(child);
  LogInfo(child.name + " started",
          {{"pid", *pid}, {"path", child.spec.path}, {"restart", !requested}});
  return absl::OkStatus();
}

void Supervisor::BeginStop(Child& child, absl::Duration grace) {
  child.wanted = false;
  child.next_start = absl::InfiniteFuture();
  if (child.pid == 0 || child.stopping) return;
  child.stopping = true;
  // The program's whole group: a shell script's children go with it. The
  // worker is not a group leader's business: just the process.
  const pid_t target = &child == &program_ ? -child.pid : child.pid;
  if (kill(target, SIGTERM) != 0 && errno != ESRCH) {
    LogWarning("SIGTERM failed",
               {{"role", child.name}, {"error", strerror(errno)}});
  }
  child.kill_at = absl::Now() + grace;
}

void Supervisor::ReapChildren() {
  for (;;) {
    siginfo_t info;
    memset(&info, 0, sizeof(info));
    // WNOWAIT first: while the zombie exists its pid and process group id
    // cannot be reused, so killing the group's leftovers is safe.
    if (waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) != 0) return;
    const pid_t pid = info.si_pid;
    if (pid == 0) return;
    if (pid == program_.pid) kill(-pid, SIGKILL);
    int wstatus = 0;
    while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
    }
    if (pid == program_.pid) {
      OnExit(program_, info);
    } else if (pid == worker_.pid) {
      OnExit(worker_, info);
    }
  }
}

void Supervisor::OnExit(Child& child, const siginfo_t& info) {
  const absl::Time now = absl::Now();
  const pid_t pid = child.pid;
  child.pid = 0;
  child.last_ended = now;
  child.last_exit = DescribeExit(info);
  child.last_exit_signal =
      (info.si_code == CLD_KILLED || info.si_code == CLD_DUMPED)
          ? info.si_status
          : 0;
  child.kill_at = absl::InfiniteFuture();
  const bool was_stopping = child.stopping;
  child.stopping = false;
  RemovePidFile(child);
  if (&child == &worker_ && trial_) {
    CloseWorkerSocket();
    if (trial_->worker_started) {
      // The trial worker ended before its commit (crashed, refused its
      // configuration, or was killed for missing the window).
      if (trial_->failure.empty()) {
        trial_->failure = absl::StrCat(
            "the new agent's worker exited ",
            absl::FormatDuration(
                absl::Trunc(now - child.started, absl::Milliseconds(1))),
            " after its start, before committing: ", child.last_exit);
      }
      LogWarning("agent trial worker ended",
                 {{"pid", pid},
                  {"exit", child.last_exit},
                  {"directive_id", trial_->directive_id}});
      RollBackAgentTrial();
    } else {
      // The old worker stopped for the trial: the new one starts at once.
      LogInfo("old worker stopped for the agent trial",
              {{"pid", pid}, {"directive_id", trial_->directive_id}});
      child.wanted = !shutting_down_;
      child.next_start = now;
    }
    return;
  }
  if (&child == &worker_ && !shutting_down_ && info.si_code == CLD_EXITED &&
      info.si_status == kWorkerConfigErrorExit) {
    LogError(
        "the worker cannot start with this configuration (its error is "
        "logged above); fix it and start fleet-agent again",
        {{"pid", pid}});
    worker_config_error_ = true;
    shutting_down_ = true;
    child.wanted = false;
    child.next_start = absl::InfiniteFuture();
  }
  if (child.wanted) {
    if (now - child.started >= child.policy.reset_after) {
      child.backoff = child.policy.initial_backoff;
    }
    child.next_start = now + child.backoff;
    LogWarning(child.name + " exited unexpectedly",
               {{"pid", pid},
                {"exit", child.last_exit},
                {"restart_in_ms", absl::ToInt64Milliseconds(child.backoff)}});
    child.backoff = std::min(child.backoff * 2, child.policy.max_backoff);
  } else {
    LogInfo(
        child.name + " stopped",
        {{"pid", pid}, {"exit", child.last_exit}, {"requested", was_stopping}});
  }
  if (&child == &program_) {
    std::vector<PendingWait> waits;
    waits.swap(waits_);
    for (const PendingWait& w : waits) {
      Reply(w.id,
            absl::UnavailableError(absl::StrCat(
                "program exited ", absl::FormatDuration(now - child.started),
                " after start: ", child.last_exit)));
    }
    std::vector<uint64_t> stopped;
    stopped.swap(stop_waiters_);
    for (uint64_t id : stopped) Reply(id, absl::OkStatus());
  } else {
    // The old worker's requests die with it; the next one gets a new socket.
    CloseWorkerSocket();
  }
}

void Supervisor::RunTimers(absl::Time now) {
  for (Child* child : {&worker_, &program_}) {
    if (child->pid != 0 && child->stopping && now >= child->kill_at) {
      LogWarning(child->name + " ignored SIGTERM, sending SIGKILL",
                 {{"pid", child->pid}});
      kill(child == &program_ ? -child->pid : child->pid, SIGKILL);
      child->kill_at = absl::InfiniteFuture();
    }
    if (child->wanted && child->pid == 0 && now >= child->next_start &&
        !(shutting_down_ && child == &worker_)) {
      absl::Status spawned = Spawn(*child, /*requested=*/false);
      if (!spawned.ok() && child == &worker_ && trial_ &&
          !trial_->worker_started && trial_->failure.empty()) {
        FailAgentTrial("cannot start the new agent binary: " +
                       spawned.ToString());
      }
    }
  }
  if (trial_ && trial_->worker_started && trial_->failure.empty() &&
      now >= trial_->deadline) {
    FailAgentTrial(
        absl::StrCat("the new agent did not commit within the trial window of ",
                     absl::FormatDuration(options_.agent_trial_window)));
  }
  if (trial_ && !trial_->failure.empty() && worker_.pid == 0 &&
      now >= trial_->retry_restore) {
    RollBackAgentTrial();
  }
  std::vector<PendingWait> keep;
  std::vector<uint64_t> done;
  for (const PendingWait& w : waits_) {
    if (now >= w.deadline && program_.pid != 0 && program_.runs == w.run) {
      done.push_back(w.id);
    } else {
      keep.push_back(w);
    }
  }
  waits_.swap(keep);
  for (uint64_t id : done) Reply(id, absl::OkStatus());
}

absl::Time Supervisor::NextTimer() const {
  absl::Time next = absl::InfiniteFuture();
  for (const Child* child : {&worker_, &program_}) {
    if (child->stopping) next = std::min(next, child->kill_at);
    if (child->wanted && child->pid == 0)
      next = std::min(next, child->next_start);
  }
  for (const PendingWait& w : waits_) next = std::min(next, w.deadline);
  if (trial_ && trial_->worker_started && trial_->failure.empty()) {
    next = std::min(next, trial_->deadline);
  }
  if (trial_) next = std::min(next, trial_->retry_restore);
  return next;
}

void Supervisor::CloseWorkerSocket() {
  if (socket_fd_ >= 0) close(socket_fd_);
  socket_fd_ = -1;
  inbox_.Clear();
  waits_.clear();
  // Stops already signalled complete anyway; nobody is left to tell.
  stop_waiters_.clear();
}

void Supervisor::ReadWorker() {
  char buf[8192];
  for (;;) {
    const ssize_t n = read(socket_fd_, buf, sizeof(buf));
    if (n > 0) {
      inbox_.Append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    // EOF or error: the worker closed its end (it is exiting); its exit is
    // handled when it is reaped.
    CloseWorkerSocket();
    return;
  }
  for (;;) {
    absl::StatusOr<std::optional<std::string>> frame = inbox_.Next();
    if (!frame.ok()) {
      LogError("bad frame from the worker; dropping its socket",
               {{"error", frame.status().ToString()}});
      CloseWorkerSocket();
      if (worker_.pid != 0) kill(worker_.pid, SIGKILL);
      return;
    }
    if (!frame->has_value()) return;
    internal::SupervisorRequest request;
    if (!request.ParseFromString(**frame)) {
      LogError("unparsable request from the worker");
      continue;
    }
    Handle(request);
    if (socket_fd_ < 0) return;
  }
}

void Supervisor::FillStatus(internal::ProgramStatus* status) const {
  status->set_wanted(program_.wanted);
  status->set_pid(program_.pid);
  status->set_started_unix_ms(
      program_.runs == 0 ? 0 : absl::ToUnixMillis(program_.started));
  status->set_runs(program_.runs);
  status->set_restarts(program_.restarts);
  status->set_last_exit(program_.last_exit);
  status->set_last_exit_signal(program_.last_exit_signal);
}

void Supervisor::Reply(uint64_t id, const absl::Status& status) {
  if (socket_fd_ < 0) return;
  internal::SupervisorReply reply;
  reply.set_id(id);
  reply.set_code(static_cast<int32_t>(status.code()));
  reply.set_message(std::string(status.message()));
  FillStatus(reply.mutable_program());
  // The worker reads its socket on its own thread at all times, so this
  // blocking write of a small frame does not stall the loop.
  const int flags = fcntl(socket_fd_, F_GETFL);
  fcntl(socket_fd_, F_SETFL, flags & ~O_NONBLOCK);
  absl::Status sent = WriteFrame(socket_fd_, reply);
  fcntl(socket_fd_, F_SETFL, flags);
  if (!sent.ok()) {
    LogWarning("cannot answer the worker", {{"error", sent.ToString()}});
    CloseWorkerSocket();
  }
}

void Supervisor::Handle(const internal::SupervisorRequest& request) {
  const uint64_t id = request.id();
  switch (request.request_case()) {
    case internal::SupervisorRequest::kStartProgram: {
      program_.spec.env["FLEET_VERSION"] = request.start_program().version();
      if (program_.pid != 0) {
        if (!program_.wanted) {
          // A stop is still in progress: start again once it has ended.
          program_.wanted = true;
          program_.next_start = absl::Now();
        }
        Reply(id, absl::OkStatus());
        return;
      }
      program_.wanted = true;
      program_.backoff = program_.policy.initial_backoff;
      Reply(id, Spawn(program_, /*requested=*/true));
      return;
    }
    case internal::SupervisorRequest::kStopProgram: {
      const absl::Duration grace = absl::Milliseconds(
          std::max<int64_t>(0, request.stop_program().grace_ms()));
      BeginStop(program_, grace);
      if (program_.pid == 0) {
        Reply(id, absl::OkStatus());
      } else {
        stop_waiters_.push_back(id);
      }
      return;
    }
    case internal::SupervisorRequest::kWaitProgramUp: {
      if (program_.pid == 0) {
        Reply(id, absl::FailedPreconditionError(absl::StrCat(
                      "program is not running",
                      program_.last_exit.empty()
                          ? ""
                          : " (last: " + program_.last_exit + ")")));
        return;
      }
      const absl::Duration window = absl::Milliseconds(
          std::max<int64_t>(0, request.wait_program_up().window_ms()));
      waits_.push_back({id, program_.runs, program_.started + window});
      return;
    }
    case internal::SupervisorRequest::kProgramStatus:
      Reply(id, absl::OkStatus());
      return;
    case internal::SupervisorRequest::kCancelWaits: {
      std::vector<PendingWait> waits;
      waits.swap(waits_);
      for (const PendingWait& w : waits) {
        Reply(w.id, absl::CancelledError("health wait cancelled"));
      }
      Reply(id, absl::OkStatus());
      return;
    }
    case internal::SupervisorRequest::kBeginAgentTrial: {
      absl::Status begun = BeginAgentTrial(request.begin_agent_trial());
      Reply(id, begun);
      if (!begun.ok()) return;
      // The new binary is in place: the old worker goes, the trial worker
      // follows from OnExit.
      worker_.spec.path = options_.agent_exec;
      worker_.spec.env[kAgentTrialEnv] = trial_->directive_id;
      worker_.spec.env.erase(kAgentTrialFailedEnv);
      BeginStop(worker_, options_.worker_stop_grace);
      return;
    }
    case internal::SupervisorRequest::kCommitAgentTrial: {
      absl::Status committed = CommitAgentTrial(request.commit_agent_trial());
      Reply(id, committed);
      if (committed.ok()) {
        commit_reexec_ = true;
        reexec_requested_ = true;
      }
      return;
    }
    default:
      Reply(id, absl::InvalidArgumentError(
                    "unknown supervisor request (a newer worker?)"));
      return;
  }
}

std::string Supervisor::AgentTrialPath() const {
  return JoinPath(options_.state_dir, "agent-trial");
}

void Supervisor::UseNormalWorker() {
  worker_.spec = options_.worker;
  if (!trial_failed_.empty()) {
    worker_.spec.env[kAgentTrialFailedEnv] = trial_failed_;
  }
}

absl::Status Supervisor::BeginAgentTrial(
    const internal::BeginAgentTrial& request) {
  if (options_.agent_exec.empty()) {
    return absl::FailedPreconditionError(
        "this supervisor knows no agent binary (--agent-exec)");
  }
  if (trial_) {
    return absl::FailedPreconditionError("the agent trial of directive " +
                                         trial_->directive_id +
                                         " runs already");
  }
  if (request.directive_id().empty()) {
    return absl::InvalidArgumentError("agent trial without a directive id");
  }
  absl::StatusOr<Digest> want = DigestFromHex(request.sha256_hex());
  if (!want.ok()) return absl::InvalidArgumentError(want.status().message());
  ExecutableSwap swap(options_.agent_exec);
  const std::string staged = HexDigestOf(swap.staged_path());
  if (staged != DigestToHex(*want)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the new agent binary is not staged at ", swap.staged_path(),
        " (want sha256 ", DigestToHex(*want),
        staged.empty() ? ", no such file)" : ", found " + staged + ")"));
  }
  const std::string old = HexDigestOf(options_.agent_exec);
  if (old.empty()) {
    return absl::FailedPreconditionError("cannot read the agent binary " +
                                         options_.agent_exec);
  }
  // Durable before the rename: a supervisor killed from here on finds it at
  // its next start and puts the old binary back.
  if (absl::Status s = WriteFileAtomically(
          AgentTrialPath(),
          absl::StrCat(request.directive_id(), "\n", old, "\n", staged, "\n"),
          0600);
      !s.ok()) {
    return s;
  }
  Failpoint("agent-trial.recorded");
  if (absl::Status s = swap.Swap(); !s.ok()) {
    (void)RemoveFile(AgentTrialPath());
    return s;
  }
  Failpoint("agent-trial.swapped");
  trial_ = AgentTrial{.directive_id = request.directive_id(),
                      .old_sha256_hex = old,
                      .new_sha256_hex = staged};
  LogInfo(
      "agent trial begins: new agent binary in place",
      {{"directive_id", request.directive_id()},
       {"agent_exec", options_.agent_exec},
       {"old_sha256", old},
       {"new_sha256", staged},
       {"window_ms", absl::ToInt64Milliseconds(options_.agent_trial_window)}});
  return absl::OkStatus();
}

absl::Status Supervisor::CommitAgentTrial(
    const internal::CommitAgentTrial& request) {
  if (!trial_ || trial_->directive_id != request.directive_id()) {
    return absl::FailedPreconditionError("no agent trial of directive " +
                                         request.directive_id() + " runs");
  }
  if (!trial_->failure.empty()) {
    return absl::FailedPreconditionError("the agent trial of directive " +
                                         request.directive_id() +
                                         " failed already: " + trial_->failure);
  }
  Failpoint("agent-trial.committing");
  // Removing the record is the commit: from here on a restarted supervisor
  // keeps the new binary.
  if (absl::Status s = RemoveFile(AgentTrialPath()); !s.ok()) return s;
  if (absl::Status s = FsyncDir(options_.state_dir); !s.ok()) return s;
  Failpoint("agent-trial.committed");
  if (absl::Status s = ExecutableSwap(options_.agent_exec).Commit(); !s.ok()) {
    LogWarning("agent backup cleanup failed", {{"error", s.ToString()}});
  }
  LogInfo("agent trial committed; re-executing into the new binary",
          {{"directive_id", trial_->directive_id},
           {"agent_exec", options_.agent_exec},
           {"sha256", trial_->new_sha256_hex}});
  trial_.reset();
  trial_failed_.clear();
  options_.self_path = options_.agent_exec;
  options_.worker.path = options_.agent_exec;
  UseNormalWorker();
  return absl::OkStatus();
}

void Supervisor::FailAgentTrial(const std::string& reason) {
  if (!trial_ || !trial_->failure.empty()) return;
  trial_->failure = reason;
  LogWarning("agent trial failed",
             {{"directive_id", trial_->directive_id}, {"reason", reason}});
  worker_.wanted = false;
  worker_.next_start = absl::InfiniteFuture();
  if (worker_.pid != 0) {
    // A hung or misbehaving new binary gets no grace.
    kill(worker_.pid, SIGKILL);
    worker_.stopping = true;
    worker_.kill_at = absl::InfiniteFuture();
  } else {
    RollBackAgentTrial();
  }
}

void Supervisor::RollBackAgentTrial() {
  if (!trial_) return;
  absl::Status restored =
      RestoreAgentBinary(options_.agent_exec, trial_->old_sha256_hex);
  if (!restored.ok()) {
    LogError("agent trial rollback failed; retrying in 1 s",
             {{"directive_id", trial_->directive_id},
              {"error", restored.ToString()}});
    trial_->retry_restore = absl::Now() + absl::Seconds(1);
    worker_.wanted = false;
    return;
  }
  Failpoint("agent-trial.restored");
  if (absl::Status s = RemoveFile(AgentTrialPath()); !s.ok()) {
    LogWarning("cannot remove the agent trial record",
               {{"error", s.ToString()}});
  }
  (void)FsyncDir(options_.state_dir);
  LogWarning("agent self-update rolled back: the old agent binary is back",
             {{"directive_id", trial_->directive_id},
              {"reason", trial_->failure},
              {"agent_exec", options_.agent_exec}});
  trial_failed_ = trial_->directive_id + " " + trial_->failure;
  trial_.reset();
  UseNormalWorker();
  worker_.wanted = !shutting_down_;
  worker_.next_start = absl::Now();
  worker_.backoff = worker_.policy.initial_backoff;
}

void Supervisor::RecoverInterruptedAgentTrial() {
  absl::StatusOr<std::string> text = ReadFile(AgentTrialPath());
  if (!text.ok()) return;
  std::vector<std::string> lines =
      absl::StrSplit(*text, '\n', absl::SkipEmpty());
  auto is_digest = [](const std::string& hex) {
    return hex.size() == 64 && std::all_of(hex.begin(), hex.end(), [](char c) {
             return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
           });
  };
  if (lines.size() < 3 || !is_digest(lines[1]) || !is_digest(lines[2])) {
    // Never block on it: without a worker the agent could not even report.
    LogError(
        "agent trial record unreadable; restoring by the backup file alone",
        {{"path", AgentTrialPath()}, {"content_bytes", text->size()}});
    lines.resize(3);
    lines[1].clear();
    lines[2].clear();
  }
  trial_ =
      AgentTrial{.directive_id = lines[0],
                 .old_sha256_hex = lines[1],
                 .new_sha256_hex = lines[2],
                 .worker_started = true,
                 .failure =
                     "the agent supervisor was restarted during the trial of "
                     "the new agent"};
  LogWarning("an agent trial was interrupted; putting the old binary back",
             {{"directive_id", trial_->directive_id},
              {"agent_exec", options_.agent_exec}});
  RollBackAgentTrial();
  if (trial_) return;  // not restored: retried from the loop
  if (trial_failed_.empty() || options_.agent_exec.empty()) return;
  // Without a readable record the restored file itself says what "old" is.
  const std::string old =
      lines[1].empty() ? HexDigestOf(options_.agent_exec) : lines[1];
  if (HexDigestOf("/proc/self/exe") == old) return;
  // This image is the new binary (systemd started AGENT_EXEC while it held
  // the trial): become the old one before any child runs.
  std::vector<std::string> argv_strings = options_.self_argv;
  std::vector<char*> argv;
  for (std::string& a : argv_strings) argv.push_back(a.data());
  argv.push_back(nullptr);
  setenv(kAgentTrialFailedEnv, trial_failed_.c_str(), 1);
  LogInfo("re-executing the restored agent binary",
          {{"path", options_.agent_exec}});
  execv(options_.agent_exec.c_str(), argv.data());
  const int err = errno;
  unsetenv(kAgentTrialFailedEnv);
  LogError("re-exec of the restored agent binary failed; running on",
           {{"path", options_.agent_exec}, {"error", strerror(err)}});
}

}  // namespace fleet::agent
