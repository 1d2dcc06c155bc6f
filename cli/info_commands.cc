#include "cli/info_commands.h"

#include <algorithm>
#include <map>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/errors.h"
#include "cli/human.h"
#include "common/manifest.h"
#include "google/protobuf/util/json_util.h"

namespace fleet::cli {
namespace {

// GetServerInfo with the round trip time and the client's clock at the
// midpoint of the call, to compare with server_time_unix_ms.
struct ServerProbe {
  grpc::Status status;
  v1::ServerInfo info;
  absl::Duration round_trip;
  absl::Time midpoint;
};

ServerProbe Probe(CommandContext& ctx) {
  ServerProbe probe;
  grpc::ClientContext rpc;
  ctx.SetDeadline(rpc);
  const absl::Time start = absl::Now();
  probe.status =
      ctx.admin().GetServerInfo(&rpc, v1::GetServerInfoRequest(), &probe.info);
  const absl::Time end = absl::Now();
  probe.round_trip = end - start;
  probe.midpoint = start + probe.round_trip / 2;
  return probe;
}

std::string FormatMillis(absl::Duration d) {
  return absl::StrCat(absl::ToInt64Milliseconds(d), " ms");
}

// Every option name of `command` as typed (--long, -s), for completion.
std::vector<std::string> OptionWords(const CLI::App& command) {
  std::vector<std::string> words;
  for (const CLI::Option* option : command.get_options()) {
    for (const std::string& name : option->get_lnames()) {
      words.push_back("--" + name);
    }
    for (const std::string& name : option->get_snames()) {
      words.push_back("-" + name);
    }
  }
  return words;
}

void CollectCompletions(const CLI::App& command, const std::string& path,
                        const std::vector<std::string>& global_words,
                        std::map<std::string, std::string>& children,
                        std::map<std::string, std::string>& words) {
  std::vector<std::string> subcommands;
  for (const CLI::App* sub :
       command.get_subcommands([](const CLI::App*) { return true; })) {
    subcommands.push_back(sub->get_name());
    CollectCompletions(*sub, absl::StrCat(path, " ", sub->get_name()),
                       global_words, children, words);
  }
  std::vector<std::string> all = subcommands;
  for (const std::vector<std::string>& more :
       {OptionWords(command), global_words}) {
    for (const std::string& word : more) {
      if (std::find(all.begin(), all.end(), word) == all.end()) {
        all.push_back(word);
      }
    }
  }
  children[path] = absl::StrJoin(subcommands, " ");
  words[path] = absl::StrJoin(all, " ");
}

}  // namespace

absl::Status Version(absl::string_view client_version, CommandContext& ctx) {
  ServerProbe probe = Probe(ctx);
  if (ctx.json()) {
    std::string server = "null";
    if (probe.status.ok()) {
      google::protobuf::util::JsonPrintOptions options;
      options.preserve_proto_field_names = true;
      options.always_print_primitive_fields = true;
      server.clear();
      (void)google::protobuf::util::MessageToJsonString(probe.info, &server,
                                                        options);
    }
    ctx.out() << "{\"client\": {\"version\": \"" << client_version
              << "\"}, \"server\": " << server << "}\n";
  } else {
    ctx.out() << "fleetctl " << client_version << "\n";
    if (probe.status.ok()) {
      ctx.out() << "fleet-controller " << probe.info.version() << " (schema "
                << probe.info.schema_version() << ") at "
                << ctx.options().controller << "\n";
    }
  }
  if (!probe.status.ok()) {
    return ExplainRpcError(probe.status, ctx.Call("get the controller's "
                                                  "version"));
  }
  return absl::OkStatus();
}

absl::Status Doctor(const DoctorOptions& options,
                    absl::string_view client_version, CommandContext& ctx) {
  int failures = 0;
  auto report = [&ctx, &failures](absl::string_view verdict,
                                  absl::string_view check,
                                  absl::string_view detail) {
    if (verdict == "FAIL") ++failures;
    ctx.out() << absl::StrCat(verdict, std::string(6 - verdict.size(), ' '),
                              check, std::string(12 - check.size(), ' '),
                              detail)
              << "\n";
  };

  ServerProbe probe = Probe(ctx);
  if (!probe.status.ok()) {
    absl::Status explained =
        ExplainRpcError(probe.status, ctx.Call("reach the controller"));
    report("FAIL", "controller", explained.message());
  } else {
    report("ok", "controller",
           absl::StrCat(
               "reached ", ctx.options().controller, " in ",
               FormatMillis(probe.round_trip), "; ",
               probe.info.connected_agents(), " agents connected, up ",
               HumanDuration(
                   absl::FromUnixMillis(probe.info.server_time_unix_ms()) -
                   absl::FromUnixMillis(probe.info.started_unix_ms()))));
    const std::string versions = absl::StrCat(
        "fleet-controller ", probe.info.version(), " (schema ",
        probe.info.schema_version(), "), fleetctl ", client_version);
    if (probe.info.version() == client_version) {
      report("ok", "version", versions);
    } else {
      report("warn", "version",
             versions + "; use a fleetctl of the controller's version");
    }
    // The server read its clock somewhere inside the round trip: the skew
    // is known to +/- half of it.
    const absl::Duration skew =
        absl::FromUnixMillis(probe.info.server_time_unix_ms()) - probe.midpoint;
    const absl::Duration size = absl::AbsDuration(skew);
    const std::string detail =
        absl::StrCat("controller clock is ", FormatMillis(size),
                     skew >= absl::ZeroDuration() ? " ahead" : " behind",
                     " (+/- ", FormatMillis(probe.round_trip / 2), ")");
    if (size > options.max_clock_skew) {
      report("FAIL", "clock",
             detail +
                 "; run NTP (systemd-timesyncd or chrony) on both "
                 "machines: signed metadata and certificates expire");
    } else if (size > options.max_clock_skew / 10) {
      report("warn", "clock", detail);
    } else {
      report("ok", "clock", detail);
    }
  }

  for (const std::string& path : options.trust_keys) {
    TrustedKeys keys;
    absl::Status loaded = keys.AddPemFile(path);
    if (loaded.ok()) {
      report("ok", "trust key", path + " is an Ed25519 public key");
    } else {
      report("FAIL", "trust key",
             absl::StrCat(loaded.message(),
                          "; give the release public key (PEM) written by "
                          "`fleetctl keys generate`"));
    }
  }
  if (failures > 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(failures, " check(s) failed; see the FAIL lines above"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> CompletionScript(const CLI::App& root,
                                             absl::string_view shell) {
  if (shell != "bash" && shell != "zsh") {
    return UsageError(absl::StrCat("no completion for shell \"", shell,
                                   "\"; choose bash or zsh"));
  }
  const std::vector<std::string> global_words = OptionWords(root);
  std::map<std::string, std::string> children, words;
  CollectCompletions(root, root.get_name(), global_words, children, words);

  std::ostringstream out;
  out << "# fleetctl completion for " << shell
      << ". Load it with: source <(fleetctl completion " << shell << ")\n";
  if (shell == "zsh") {
    out << "autoload -U +X compinit && compinit\n"
           "autoload -U +X bashcompinit && bashcompinit\n";
  }
  out << "_fleetctl_children() {\n  case \"$1\" in\n";
  for (const auto& [path, names] : children) {
    out << "    \"" << path << "\") echo \"" << names << "\" ;;\n";
  }
  out << "  esac\n}\n_fleetctl_words() {\n  case \"$1\" in\n";
  for (const auto& [path, list] : words) {
    out << "    \"" << path << "\") echo \"" << list << "\" ;;\n";
  }
  out << "  esac\n}\n"
         "_fleetctl() {\n"
         "  local path=fleetctl cur=${COMP_WORDS[COMP_CWORD]} i w\n"
         "  for ((i = 1; i < COMP_CWORD; i++)); do\n"
         "    w=${COMP_WORDS[i]}\n"
         "    for c in $(_fleetctl_children \"$path\"); do\n"
         "      if [[ $c == \"$w\" ]]; then path=\"$path $w\"; break; fi\n"
         "    done\n"
         "  done\n"
         "  COMPREPLY=($(compgen -W \"$(_fleetctl_words \"$path\")\" -- "
         "\"$cur\"))\n"
         "}\n"
         "complete -o default -F _fleetctl fleetctl\n";
  return out.str();
}

}  // namespace fleet::cli
