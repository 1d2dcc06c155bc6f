#include "tests/fault/fault_checks.h"

#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <map>
#include <set>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/files.h"
#include "common/sha256.h"
#include "nlohmann/json.hpp"

namespace fleet::testing {
namespace {

std::string ReadProcFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  return text.ok() ? *text : "";
}

// The state letter of /proc/PID/stat ('R', 'S', 'Z', 'T', ...), or 0.
char ProcessState(pid_t pid) {
  const std::string stat = ReadProcFile(absl::StrCat("/proc/", pid, "/stat"));
  // "pid (comm) S ...": comm may hold spaces and parentheses.
  const size_t close = stat.rfind(')');
  if (close == std::string::npos || close + 2 >= stat.size()) return 0;
  return stat[close + 2];
}

// The parent pid from /proc/PID/stat (the field after the state), or 0.
pid_t ParentPid(pid_t pid) {
  const std::string stat = ReadProcFile(absl::StrCat("/proc/", pid, "/stat"));
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return 0;
  const std::vector<absl::string_view> fields =
      absl::StrSplit(absl::string_view(stat).substr(close + 2), ' ');
  int ppid = 0;
  if (fields.size() < 2 || !absl::SimpleAtoi(fields[1], &ppid)) return 0;
  return ppid;
}

bool IsFinal(v1::UpdatePhase phase) {
  return phase == v1::UPDATE_PHASE_HEALTHY ||
         phase == v1::UPDATE_PHASE_FAILED ||
         phase == v1::UPDATE_PHASE_ROLLED_BACK;
}

}  // namespace

std::vector<pid_t> ProgramInstances(const std::string& exec_path) {
  // The program itself, or an interpreter running it (`sh EXEC`); not a
  // process that merely names it (the agent's `--exec EXEC`).
  const std::vector<pid_t> pids =
      ProcessesWhere([&](const std::vector<std::string>& argv) {
        return (!argv.empty() && argv[0] == exec_path) ||
               (argv.size() > 1 && argv[1] == exec_path);
      });
  // A script program forks subshells (`sleep 1 &`) that briefly carry the
  // same `sh EXEC` command line: a child of an instance is not another one.
  const absl::flat_hash_set<pid_t> candidates(pids.begin(), pids.end());
  std::vector<pid_t> instances;
  for (pid_t pid : pids) {
    if (!candidates.contains(ParentPid(pid))) instances.push_back(pid);
  }
  return instances;
}

pid_t ControllerPid(const std::string& data_dir) {
  const std::vector<pid_t> found =
      ProcessesWhere([&](const std::vector<std::string>& argv) {
        if (argv.empty() || !absl::EndsWith(argv[0], "fleet-controller")) {
          return false;
        }
        for (size_t i = 0; i + 1 < argv.size(); ++i) {
          if (argv[i] == "--data-dir" && argv[i + 1] == data_dir) return true;
        }
        return false;
      });
  return found.empty() ? 0 : found.back();
}

bool IsStopped(pid_t pid) { return ProcessState(pid) == 'T'; }

absl::StatusOr<std::vector<StoredEvent>> ControllerEvents(
    const std::string& data_dir, const std::string& agent_id) {
  constexpr char kSelectEventsSql[] =
      "SELECT seq, directive_id, phase, bytes, error_class, error FROM events "
      "WHERE agent_id = ? ORDER BY seq";
  const std::string path = data_dir + "/fleet.db";
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) !=
      SQLITE_OK) {
    std::string error = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return absl::UnavailableError("open " + path + ": " + error);
  }
  sqlite3_busy_timeout(db, 5000);
  sqlite3_stmt* select = nullptr;
  if (sqlite3_prepare_v2(db, kSelectEventsSql, -1, &select, nullptr) !=
      SQLITE_OK) {
    std::string error = sqlite3_errmsg(db);
    sqlite3_close(db);
    return absl::InternalError("prepare: " + error);
  }
  sqlite3_bind_text(select, 1, agent_id.c_str(), -1, SQLITE_TRANSIENT);
  std::vector<StoredEvent> events;
  int rc;
  while ((rc = sqlite3_step(select)) == SQLITE_ROW) {
    StoredEvent e;
    e.seq = sqlite3_column_int64(select, 0);
    e.directive_id =
        reinterpret_cast<const char*>(sqlite3_column_text(select, 1));
    e.phase = static_cast<v1::UpdatePhase>(sqlite3_column_int(select, 2));
    e.bytes = sqlite3_column_int64(select, 3);
    e.error_class =
        reinterpret_cast<const char*>(sqlite3_column_text(select, 4));
    e.error = reinterpret_cast<const char*>(sqlite3_column_text(select, 5));
    events.push_back(std::move(e));
  }
  std::string error = rc == SQLITE_DONE ? "" : sqlite3_errmsg(db);
  sqlite3_finalize(select);
  sqlite3_close(db);
  if (!error.empty()) return absl::InternalError("select events: " + error);
  return events;
}

std::string EventProblems(const std::vector<StoredEvent>& events,
                          const std::string& directive_id,
                          v1::UpdatePhase final_phase,
                          const std::vector<v1::UpdatePhase>& phases) {
  std::vector<std::string> problems;
  std::vector<std::string> shown;
  for (const StoredEvent& e : events) {
    shown.push_back(absl::StrCat(e.seq, ":", v1::UpdatePhase_Name(e.phase),
                                 e.error_class.empty() ? "" : "/",
                                 e.error_class));
  }
  for (size_t i = 0; i < events.size(); ++i) {
    if (events[i].seq != static_cast<int64_t>(i) + 1) {
      problems.push_back(absl::StrCat("seq ", events[i].seq, " at position ",
                                      i + 1, " (lost or duplicated event)"));
      break;
    }
  }
  int finals = 0;
  v1::UpdatePhase last = v1::UPDATE_PHASE_UNSPECIFIED;
  v1::UpdatePhase final_seen = v1::UPDATE_PHASE_UNSPECIFIED;
  std::set<v1::UpdatePhase> distinct;
  for (const StoredEvent& e : events) {
    if (e.directive_id != directive_id) {
      problems.push_back("event of another directive " + e.directive_id);
      continue;
    }
    distinct.insert(e.phase);
    const bool repeat_ok = e.phase == v1::UPDATE_PHASE_DOWNLOADING &&
                           last == v1::UPDATE_PHASE_DOWNLOADING;
    if (e.phase <= last && !repeat_ok) {
      problems.push_back(absl::StrCat("phase ", v1::UpdatePhase_Name(e.phase),
                                      " after ", v1::UpdatePhase_Name(last)));
    }
    last = e.phase;
    if (IsFinal(e.phase)) {
      ++finals;
      final_seen = e.phase;
    }
  }
  if (finals != 1) {
    problems.push_back(absl::StrCat(finals, " final events, want exactly 1"));
  } else if (final_seen != final_phase) {
    problems.push_back(absl::StrCat("final phase ",
                                    v1::UpdatePhase_Name(final_seen), ", want ",
                                    v1::UpdatePhase_Name(final_phase)));
  }
  if (!phases.empty() &&
      distinct != std::set<v1::UpdatePhase>(phases.begin(), phases.end())) {
    std::vector<std::string> want;
    for (v1::UpdatePhase p : phases) want.push_back(v1::UpdatePhase_Name(p));
    problems.push_back("phases differ from " + absl::StrJoin(want, ","));
  }
  if (problems.empty()) return "";
  return absl::StrCat(absl::StrJoin(problems, "; "), " in events [",
                      absl::StrJoin(shown, " "), "]");
}

std::string ProgramProblems(const AgentHandle& agent,
                            const std::string& want_version,
                            const std::string& want_sha256_hex,
                            absl::Duration timeout) {
  auto problems = [&]() -> std::string {
    std::vector<std::string> out;
    absl::StatusOr<Digest> digest = Sha256OfFile(agent.exec_path);
    if (!digest.ok()) {
      out.push_back("EXEC unreadable: " + digest.status().ToString());
    } else if (DigestToHex(*digest) != want_sha256_hex) {
      out.push_back("EXEC sha256 " + DigestToHex(*digest) + ", want " +
                    want_sha256_hex);
    }
    if (access(agent.exec_path.c_str(), X_OK) != 0) {
      out.push_back("EXEC not executable");
    }
    for (const char* leftover : {".fleet-new", ".fleet-backup"}) {
      if (PathExists(agent.exec_path + leftover)) {
        out.push_back(absl::StrCat("leftover EXEC", leftover));
      }
    }
    const std::vector<pid_t> running = ProgramInstances(agent.exec_path);
    if (running.size() != 1) {
      out.push_back(absl::StrCat(running.size(),
                                 " instances running, want exactly 1 (pids ",
                                 absl::StrJoin(running, ","), ")"));
    }
    std::optional<SampleStatus> status = agent.Status();
    if (!agent.Runs(want_version)) {
      out.push_back(absl::StrCat(
          "program does not report ", want_version, " (status: ",
          status ? absl::StrCat(status->version, " pid ", status->pid) : "none",
          ")"));
    } else if (running.size() == 1 && status->pid != running[0]) {
      out.push_back(absl::StrCat("status names pid ", status->pid,
                                 ", the running instance is ", running[0]));
    }
    return absl::StrJoin(out, "; ");
  };
  std::string last;
  const absl::Time deadline = absl::Now() + timeout;
  while (!(last = problems()).empty() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  if (!last.empty()) return last;
  // Settled: it must stay so (no second start racing the first, no crash).
  for (int i = 0; i < 5; ++i) {
    absl::SleepFor(absl::Milliseconds(200));
    last = problems();
    if (!last.empty()) return "after settling: " + last;
  }
  return "";
}

std::string MakePaddedSampleApp(FleetHarness& fleet, const std::string& version,
                                size_t size, bool crash) {
  const std::string sample = fleet.MakeSampleApp(version, crash);
  if (sample.empty()) return "";
  absl::StatusOr<std::string> text = ReadFile(sample);
  if (!text.ok()) return "";
  std::string padded = *text + "\n";
  // Never reached (the program loops or exits before it), only downloaded.
  const std::string line = "# padding " + std::string(100, 'x') + "\n";
  while (padded.size() < size) padded += line;
  const std::string out = sample + "-padded";
  if (!WriteFileAtomically(out, padded, 0755).ok()) return "";
  return out;
}

absl::StatusOr<FiredFailpoint> AwaitFailpoint(const std::string& marker,
                                              absl::Duration timeout) {
  FiredFailpoint fired;
  // The marker is written before the signal is raised: read until whole.
  const bool ok = WaitFor(
      [&] {
        const std::vector<std::string> parts =
            absl::StrSplit(ReadProcFile(marker), ' ');
        return parts.size() == 2 && absl::SimpleAtoi(parts[1], &fired.pid) &&
               !(fired.point = parts[0]).empty();
      },
      timeout);
  if (!ok) {
    return absl::DeadlineExceededError("failpoint never fired (no " + marker +
                                       ")");
  }
  return fired;
}

absl::Status AwaitFailpointKillAndRestart(AgentHandle& agent,
                                          const std::string& marker,
                                          const std::string& spec,
                                          absl::Duration timeout) {
  absl::StatusOr<FiredFailpoint> fired = AwaitFailpoint(marker, timeout);
  if (!fired.ok()) return fired.status();
  const std::string point = spec.substr(0, spec.find(':'));
  if (fired->point != point) {
    return absl::InternalError("failpoint " + fired->point + " fired, want " +
                               point);
  }
  if (fired->pid != agent.process->pid()) return absl::OkStatus();
  std::optional<int> status = agent.process->Wait(absl::Seconds(10));
  if (!status.has_value()) {
    return absl::InternalError("the agent survived its failpoint");
  }
  if (!WIFSIGNALED(*status) || WTERMSIG(*status) != SIGKILL) {
    return absl::InternalError(
        absl::StrCat("agent wait status ", *status, ", want SIGKILL"));
  }
  return agent.process->Start();
}

bool WaitForAgentReporting(FleetHarness& fleet, const std::string& agent_id,
                           const std::string& version, absl::Duration timeout) {
  return WaitForProductReported(fleet, agent_id, "app", version, "", timeout);
}

std::string CreateRollout(FleetHarness& fleet, const std::string& version,
                          const std::string& selector, std::string* error) {
  std::vector<std::string> args = {"-o",        "json", "rollout",   "create",
                                   "--product", "app",  "--version", version};
  if (!selector.empty()) {
    args.push_back("--selector");
    args.push_back(selector);
  }
  RunResult r = fleet.Fleetctl(args);
  nlohmann::json j = nlohmann::json::parse(r.out, nullptr, false);
  if (r.exit_code != 0 || j.is_discarded() || !j.contains("rollout_id")) {
    *error = absl::StrCat("fleetctl rollout create exited ", r.exit_code, ": ",
                          r.err, r.out);
    return "";
  }
  return j["rollout_id"].get<std::string>();
}

absl::StatusOr<v1::RolloutTarget> WaitForOnlyTargetFinal(
    FleetHarness& fleet, const std::string& rollout_id,
    absl::Duration timeout) {
  absl::StatusOr<v1::Rollout> rollout =
      fleet.WaitForRolloutEnd(rollout_id, timeout);
  if (!rollout.ok()) return rollout.status();
  if (rollout->targets_size() != 1) {
    return absl::FailedPreconditionError(
        absl::StrCat("rollout has ", rollout->targets_size(),
                     " targets, want 1:\n", rollout->DebugString()));
  }
  return rollout->targets(0);
}

std::string AgentBinary(const AgentHandle& agent) {
  return agent.dir + "/agent/fleet-agent";
}

std::unique_ptr<AgentHandle> MakeSelfUpdatingAgent(
    FleetHarness& fleet, const std::string& name,
    std::vector<std::string> extra_flags,
    std::map<std::string, std::string> extra_env) {
  auto agent = std::make_unique<AgentHandle>();
  agent->name = name;
  agent->dir = fleet.dir() + "/" + name;
  agent->state_dir = agent->dir + "/state";
  agent->exec_path = agent->dir + "/bin/app";
  agent->status_path = agent->dir + "/status";
  if (!MakeDirs(agent->dir + "/bin").ok() ||
      !MakeDirs(agent->dir + "/agent").ok()) {
    return nullptr;
  }
  absl::StatusOr<std::string> binary = ReadFile(Runfile("agent/fleet-agent"));
  if (!binary.ok() ||
      !WriteFileAtomically(AgentBinary(*agent), *binary, 0755).ok()) {
    return nullptr;
  }
  const std::string key = agent->dir + "/release.pub";
  if (!fleet.release_key().PublicKey().WritePemFile(key).ok()) return nullptr;
  std::vector<std::string> argv = {AgentBinary(*agent),
                                   "--controller",
                                   fleet.controller_address(),
                                   "--state-dir",
                                   agent->state_dir,
                                   "--trust-key",
                                   key,
                                   "--product",
                                   "app",
                                   "--exec",
                                   agent->exec_path,
                                   "--agent-id",
                                   name,
                                   "--insecure",
                                   "--health-seconds",
                                   "1"};
  argv.insert(argv.end(), extra_flags.begin(), extra_flags.end());
  extra_env["FLEET_SAMPLE_STATUS"] = agent->status_path;
  agent->process = std::make_unique<Subprocess>(argv, agent->dir + "/agent.log",
                                                std::move(extra_env));
  return agent;
}

std::string MakeNewAgentBinary(FleetHarness& fleet, const std::string& tag) {
  absl::StatusOr<std::string> binary = ReadFile(Runfile("agent/fleet-agent"));
  if (!binary.ok()) return "";
  const std::string out = fleet.dir() + "/programs/fleet-agent-" + tag;
  if (!MakeDirs(fleet.dir() + "/programs").ok() ||
      !WriteFileAtomically(out, *binary + "\nfleet-agent release " + tag + "\n",
                           0755)
           .ok()) {
    return "";
  }
  return out;
}

bool WaitForProductReported(FleetHarness& fleet, const std::string& agent_id,
                            const std::string& product,
                            const std::string& version,
                            const std::string& sha256_hex,
                            absl::Duration timeout) {
  return WaitFor(
      [&] {
        grpc::ClientContext ctx;
        v1::ListAgentsResponse resp;
        if (!fleet.admin()
                 .ListAgents(&ctx, v1::ListAgentsRequest(), &resp)
                 .ok()) {
          return false;
        }
        for (const v1::Agent& a : resp.agents()) {
          if (a.agent_id() != agent_id || !a.connected()) continue;
          for (const v1::InstalledProduct& p : a.installed()) {
            if (p.product() != product) continue;
            if (!version.empty() && p.version() != version) continue;
            absl::StatusOr<Digest> digest = DigestFromBytes(p.sha256());
            if (!sha256_hex.empty() &&
                (!digest.ok() || DigestToHex(*digest) != sha256_hex)) {
              continue;
            }
            return true;
          }
        }
        return false;
      },
      timeout);
}

std::string CreateProductRollout(FleetHarness& fleet,
                                 const std::string& product,
                                 const std::string& version,
                                 std::string* error) {
  RunResult r = fleet.Fleetctl({"-o", "json", "rollout", "create", "--product",
                                product, "--version", version});
  nlohmann::json j = nlohmann::json::parse(r.out, nullptr, false);
  if (r.exit_code != 0 || j.is_discarded() || !j.contains("rollout_id")) {
    *error = absl::StrCat("fleetctl rollout create exited ", r.exit_code, ": ",
                          r.err, r.out);
    return "";
  }
  return j["rollout_id"].get<std::string>();
}

pid_t RolePid(const AgentHandle& agent, const std::string& role) {
  absl::StatusOr<std::string> text =
      ReadFile(agent.state_dir + "/" + role + ".pid");
  if (!text.ok()) return 0;
  std::vector<std::string> parts = absl::StrSplit(*text, ' ');
  int pid = 0;
  if (parts.empty() || !absl::SimpleAtoi(parts[0], &pid)) return 0;
  return pid;
}

namespace {

// The digest of the binary `pid` runs, "" if it cannot be read.
std::string ExeDigest(pid_t pid) {
  if (pid <= 0) return "";
  absl::StatusOr<Digest> digest =
      Sha256OfFile(absl::StrCat("/proc/", pid, "/exe"));
  return digest.ok() ? DigestToHex(*digest) : "";
}

// Live processes whose command line has --internal-role=worker and
// --state-dir `state_dir`.
std::vector<pid_t> WorkersOf(const std::string& state_dir) {
  return ProcessesWhere([&](const std::vector<std::string>& argv) {
    bool worker = false, ours = false;
    for (size_t i = 0; i < argv.size(); ++i) {
      if (argv[i] == "--internal-role=worker") worker = true;
      if (argv[i] == "--state-dir" && i + 1 < argv.size() &&
          argv[i + 1] == state_dir) {
        ours = true;
      }
    }
    return worker && ours;
  });
}

std::string AgentProblemsNow(const AgentHandle& agent,
                             const std::string& want) {
  const std::string binary = AgentBinary(agent);
  absl::StatusOr<Digest> on_disk = Sha256OfFile(binary);
  if (!on_disk.ok()) return "agent binary unreadable: " + binary;
  if (DigestToHex(*on_disk) != want) {
    return absl::StrCat("agent binary holds ", DigestToHex(*on_disk), ", want ",
                        want);
  }
  for (const std::string& leftover :
       {binary + ".fleet-new", binary + ".fleet-backup",
        agent.state_dir + "/agent-trial"}) {
    if (PathExists(leftover)) return "leftover " + leftover;
  }
  const pid_t supervisor = RolePid(agent, "supervisor");
  if (ExeDigest(supervisor) != want) {
    return absl::StrCat("supervisor ", supervisor, " runs ",
                        ExeDigest(supervisor), ", want ", want);
  }
  std::vector<pid_t> workers = WorkersOf(agent.state_dir);
  if (workers.size() != 1) {
    return absl::StrCat(workers.size(), " workers run, want 1");
  }
  if (ExeDigest(workers[0]) != want) {
    return absl::StrCat("worker ", workers[0], " runs ", ExeDigest(workers[0]),
                        ", want ", want);
  }
  return "";
}

}  // namespace

std::string AgentProblems(const AgentHandle& agent,
                          const std::string& want_sha256_hex,
                          absl::Duration timeout) {
  std::string problem;
  const bool settled = WaitFor(
      [&] {
        problem = AgentProblemsNow(agent, want_sha256_hex);
        return problem.empty();
      },
      timeout);
  if (!settled) return problem;
  absl::SleepFor(absl::Seconds(1));
  return AgentProblemsNow(agent, want_sha256_hex);
}

}  // namespace fleet::testing
