#include "agent/platform/process.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#if defined(__linux__)
#include <sys/prctl.h>
#endif
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "common/log.h"

extern char** environ;

namespace fleet::agent {
namespace {

std::vector<std::string> BuildEnvironment(
    const std::map<std::string, std::string>& overrides) {
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    absl::string_view entry(*e);
    size_t eq = entry.find('=');
    std::string name(entry.substr(0, eq));
    if (overrides.count(name) == 0) env.emplace_back(entry);
  }
  for (const auto& [name, value] : overrides) {
    env.push_back(absl::StrCat(name, "=", value));
  }
  return env;
}

std::vector<char*> CStrings(std::vector<std::string>& strings) {
  std::vector<char*> out;
  out.reserve(strings.size() + 1);
  for (std::string& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

absl::StatusOr<std::string> ReadProcFile(const std::string& path) {
  FILE* f = fopen(path.c_str(), "re");
  if (f == nullptr) return absl::ErrnoToStatus(errno, "open " + path);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), f)) > 0) out.append(buf, n);
  fclose(f);
  return out;
}

}  // namespace

std::string DescribeExit(const siginfo_t& info) {
  switch (info.si_code) {
    case CLD_EXITED:
      return absl::StrCat("exit status ", info.si_status);
    case CLD_KILLED:
    case CLD_DUMPED:
      return absl::StrCat("signal ", info.si_status, " (",
                          strsignal(info.si_status), ")");
    default:
      return absl::StrCat("ended (code ", info.si_code, ")");
  }
}

ProgramSupervisor::ProgramSupervisor(ProgramSpec spec, RestartPolicy policy)
    : policy_(policy),
      spec_(std::move(spec)),
      backoff_(policy.initial_backoff) {
  monitor_ = std::thread([this] { MonitorLoop(); });
}

ProgramSupervisor::~ProgramSupervisor() {
  (void)Stop(absl::Seconds(5));
  {
    absl::MutexLock lock(&mu_);
    shutdown_ = true;
    cv_.SignalAll();
  }
  monitor_.join();
}

void ProgramSupervisor::SetSpec(ProgramSpec spec) {
  absl::MutexLock lock(&mu_);
  spec_ = std::move(spec);
}

void ProgramSupervisor::SetEnv(const std::string& name,
                               const std::string& value) {
  absl::MutexLock lock(&mu_);
  spec_.env[name] = value;
}

ProgramSpec ProgramSupervisor::spec() const {
  absl::MutexLock lock(&mu_);
  return spec_;
}

absl::Status ProgramSupervisor::Start() {
  absl::MutexLock lock(&mu_);
  if (shutdown_) return absl::FailedPreconditionError("supervisor shut down");
  if (wanted_ && (pid_ != 0 || spawning_)) return absl::OkStatus();
  wanted_ = true;
  backoff_ = policy_.initial_backoff;
  start_requested_ = true;
  const uint64_t want = start_results_ + 1;
  cv_.SignalAll();
  while (start_results_ < want && !shutdown_) cv_.Wait(&mu_);
  if (start_results_ < want)
    return absl::CancelledError("supervisor shut down");
  return start_result_;
}

absl::Status ProgramSupervisor::Stop(absl::Duration grace) {
  absl::MutexLock lock(&mu_);
  wanted_ = false;
  cv_.SignalAll();
  while (spawning_) cv_.Wait(&mu_);
  if (pid_ == 0) return absl::OkStatus();
  const pid_t pid = pid_;
  const uint64_t run = runs_;
  // The whole group: a shell script's children go with it.
  if (kill(-pid, SIGTERM) != 0 && errno != ESRCH) {
    return absl::ErrnoToStatus(errno, absl::StrCat("kill -TERM -", pid));
  }
  const absl::Time deadline = absl::Now() + grace;
  while (ended_runs_ < run && absl::Now() < deadline) {
    cv_.WaitWithDeadline(&mu_, deadline);
  }
  if (ended_runs_ < run) {
    LogWarning("program ignored SIGTERM, sending SIGKILL",
               {{"pid", pid}, {"grace_ms", absl::ToInt64Milliseconds(grace)}});
    if (kill(-pid, SIGKILL) != 0 && errno != ESRCH) {
      return absl::ErrnoToStatus(errno, absl::StrCat("kill -KILL -", pid));
    }
    while (ended_runs_ < run) cv_.Wait(&mu_);
  }
  return absl::OkStatus();
}

absl::Status ProgramSupervisor::WaitStaysUp(absl::Duration window) {
  absl::MutexLock lock(&mu_);
  if (pid_ == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("program is not running",
                     last_exit_.empty() ? "" : " (last: " + last_exit_ + ")"));
  }
  const uint64_t run = runs_;
  const uint64_t cancels = wait_cancels_;
  const absl::Time started = started_;
  const absl::Time deadline = started + window;
  while (ended_runs_ < run && !shutdown_ && wait_cancels_ == cancels &&
         absl::Now() < deadline) {
    cv_.WaitWithDeadline(&mu_, deadline);
  }
  if (wait_cancels_ != cancels) {
    return absl::CancelledError("health wait cancelled");
  }
  if (ended_runs_ >= run) {
    return absl::UnavailableError(absl::StrCat(
        "program exited ", absl::FormatDuration(last_ended_ - started),
        " after start: ", last_exit_));
  }
  if (shutdown_) return absl::CancelledError("supervisor shut down");
  return absl::OkStatus();
}

void ProgramSupervisor::CancelWaits() {
  absl::MutexLock lock(&mu_);
  ++wait_cancels_;
  cv_.SignalAll();
}

ProgramState ProgramSupervisor::state() const {
  absl::MutexLock lock(&mu_);
  ProgramState s;
  s.wanted = wanted_;
  s.pid = pid_;
  s.started = started_;
  s.runs = runs_;
  s.restarts = restarts_;
  s.last_exit = last_exit_;
  s.last_exit_signal = last_exit_signal_;
  return s;
}

void ProgramSupervisor::MonitorLoop() {
  absl::MutexLock lock(&mu_);
  for (;;) {
    while (!shutdown_ && !start_requested_ &&
           !(wanted_ && pid_ == 0 && absl::Now() >= next_start_)) {
      if (wanted_ && pid_ == 0) {
        cv_.WaitWithDeadline(&mu_, next_start_);
      } else {
        cv_.Wait(&mu_);
      }
    }
    if (shutdown_) break;
    const bool requested = start_requested_;
    start_requested_ = false;
    ProgramSpec spec = spec_;
    spawning_ = true;
    mu_.Unlock();
    SpawnOptions spawn;
    spawn.die_with_parent = policy_.die_with_agent;
    absl::StatusOr<pid_t> pid = SpawnProcess(spec, spawn);
    mu_.Lock();
    spawning_ = false;
    if (requested) {
      start_result_ = pid.status();
      ++start_results_;
    }
    if (!pid.ok()) {
      if (requested) {
        wanted_ = false;
      } else {
        LogError("program restart failed",
                 {{"path", spec.path},
                  {"error", pid.status().ToString()},
                  {"retry_in_ms", absl::ToInt64Milliseconds(backoff_)}});
        next_start_ = absl::Now() + backoff_;
        backoff_ = std::min(backoff_ * 2, policy_.max_backoff);
      }
      cv_.SignalAll();
      continue;
    }
    pid_ = *pid;
    started_ = absl::Now();
    ++runs_;
    if (!requested) ++restarts_;
    LogInfo("program started",
            {{"path", spec.path}, {"pid", *pid}, {"restart", !requested}});
    cv_.SignalAll();

    mu_.Unlock();
    siginfo_t info;
    memset(&info, 0, sizeof(info));
    // Wait without reaping: while the zombie exists its pid (and process
    // group id) cannot be reused, so killing leftovers of the group is safe.
    while (waitid(P_PID, *pid, &info, WEXITED | WNOWAIT) != 0 &&
           errno == EINTR) {
    }
    kill(-*pid, SIGKILL);
    int wstatus = 0;
    while (waitpid(*pid, &wstatus, 0) < 0 && errno == EINTR) {
    }
    mu_.Lock();

    const absl::Time now = absl::Now();
    pid_ = 0;
    ++ended_runs_;
    last_ended_ = now;
    last_exit_ = DescribeExit(info);
    last_exit_signal_ =
        (info.si_code == CLD_KILLED || info.si_code == CLD_DUMPED)
            ? info.si_status
            : 0;
    if (wanted_) {
      if (now - started_ >= policy_.reset_after) {
        backoff_ = policy_.initial_backoff;
      }
      next_start_ = now + backoff_;
      LogWarning("program exited unexpectedly",
                 {{"pid", *pid},
                  {"exit", last_exit_},
                  {"restart_in_ms", absl::ToInt64Milliseconds(backoff_)}});
      backoff_ = std::min(backoff_ * 2, policy_.max_backoff);
    } else {
      LogInfo("program stopped", {{"pid", *pid}, {"exit", last_exit_}});
    }
    cv_.SignalAll();
  }
}

absl::StatusOr<pid_t> SpawnProcess(const ProgramSpec& spec,
                                   const SpawnOptions& options) {
  const bool die_with_agent = options.die_with_parent;
  const int pass_fd = options.pass_fd;
  // Everything the child needs is built before fork(): between fork and
  // exec a multi-threaded parent's child may only make async-signal-safe
  // calls (no malloc).
  std::vector<std::string> argv_strings = {spec.path};
  argv_strings.insert(argv_strings.end(), spec.args.begin(), spec.args.end());
  std::vector<std::string> env_strings = BuildEnvironment(spec.env);
  std::vector<char*> argv = CStrings(argv_strings);
  std::vector<char*> envp = CStrings(env_strings);
  const pid_t parent = getpid();

  int rc = 0;
  for (int attempt = 0; attempt < 5; ++attempt) {
    // Reports the exec error to the parent; closes itself on success.
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) {
      return absl::ErrnoToStatus(errno, "pipe for spawn " + spec.path);
    }
    const pid_t pid = fork();
    if (pid < 0) {
      const int err = errno;
      close(report[0]);
      close(report[1]);
      return absl::ErrnoToStatus(err, "fork for " + spec.path);
    }
    if (pid == 0) {
      close(report[0]);
      setpgid(0, 0);
#if defined(__linux__)
      if (die_with_agent) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        // The agent may have died before prctl took effect.
        if (getppid() != parent) _exit(127);
      }
#endif
      // The agent blocks SIGTERM/SIGINT for sigwait and gRPC ignores
      // SIGPIPE; masks and ignored dispositions survive exec, so without
      // this the program could not be stopped with SIGTERM.
      struct sigaction dfl;
      memset(&dfl, 0, sizeof(dfl));
      dfl.sa_handler = SIG_DFL;
      for (int sig = 1; sig < NSIG; ++sig) {
        if (sig != SIGKILL && sig != SIGSTOP) sigaction(sig, &dfl, nullptr);
      }
      sigset_t empty;
      sigemptyset(&empty);
      sigprocmask(SIG_SETMASK, &empty, nullptr);
      int first_closed = 3;
      if (pass_fd >= 0) {
        // Move the report pipe out of fd 3's way, then put the passed
        // descriptor there without close-on-exec.
        const int moved = fcntl(report[1], F_DUPFD_CLOEXEC, 10);
        if (moved < 0) _exit(127);
        report[1] = moved;
        if (pass_fd == 3) {
          fcntl(3, F_SETFD, 0);
        } else if (dup2(pass_fd, 3) != 3) {
          _exit(127);
        }
        first_closed = 4;
      }
#if defined(__linux__) && defined(SYS_close_range)
      // Descriptors the agent forgot to mark close-on-exec stay with it.
      if (report[1] > first_closed) {
        syscall(SYS_close_range, first_closed, report[1] - 1, 0);
      }
      syscall(SYS_close_range, report[1] + 1, ~0U, 0);
#endif
      execve(spec.path.c_str(), argv.data(), envp.data());
      const int err = errno;
      (void)!write(report[1], &err, sizeof(err));
      _exit(127);
    }
    close(report[1]);
    int child_errno = 0;
    ssize_t n;
    while ((n = read(report[0], &child_errno, sizeof(child_errno))) < 0 &&
           errno == EINTR) {
    }
    close(report[0]);
    if (n <= 0) return pid;  // exec succeeded: the pipe closed on exec
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    rc = child_errno;
    // ETXTBSY: another thread's fork briefly held a write descriptor to the
    // file we just wrote; it goes away once that child execs.
    if (rc != ETXTBSY) break;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return absl::ErrnoToStatus(rc, "spawn " + spec.path);
}

absl::StatusOr<uint64_t> ResidentBytes(pid_t pid) {
#if defined(__linux__)
  absl::StatusOr<std::string> statm =
      ReadProcFile(absl::StrCat("/proc/", pid, "/statm"));
  if (!statm.ok()) return statm.status();
  std::vector<absl::string_view> fields =
      absl::StrSplit(*statm, ' ', absl::SkipEmpty());
  uint64_t pages = 0;
  if (fields.size() < 2 || !absl::SimpleAtoi(fields[1], &pages)) {
    return absl::InternalError(
        absl::StrCat("cannot parse /proc/", pid, "/statm"));
  }
  return pages * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
#else
  return absl::UnimplementedError("ResidentBytes needs /proc");
#endif
}

absl::StatusOr<uint64_t> CpuMillis(pid_t pid) {
#if defined(__linux__)
  absl::StatusOr<std::string> stat =
      ReadProcFile(absl::StrCat("/proc/", pid, "/stat"));
  if (!stat.ok()) return stat.status();
  // The command name (field 2) may hold spaces and parentheses: fields are
  // counted after its closing parenthesis.
  size_t close = stat->rfind(')');
  if (close == std::string::npos) {
    return absl::InternalError(
        absl::StrCat("cannot parse /proc/", pid, "/stat"));
  }
  std::vector<absl::string_view> fields = absl::StrSplit(
      absl::string_view(*stat).substr(close + 1), ' ', absl::SkipEmpty());
  // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
  uint64_t utime = 0, stime = 0;
  if (fields.size() < 13 || !absl::SimpleAtoi(fields[11], &utime) ||
      !absl::SimpleAtoi(fields[12], &stime)) {
    return absl::InternalError(
        absl::StrCat("cannot parse /proc/", pid, "/stat"));
  }
  const uint64_t ticks = static_cast<uint64_t>(sysconf(_SC_CLK_TCK));
  return (utime + stime) * 1000 / (ticks == 0 ? 100 : ticks);
#else
  return absl::UnimplementedError("CpuMillis needs /proc");
#endif
}

}  // namespace fleet::agent
