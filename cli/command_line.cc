#include "cli/command_line.h"

#include <exception>
#include <functional>
#include <utility>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/agent_commands.h"
#include "cli/blacklist_commands.h"
#include "cli/errors.h"
#include "cli/human.h"
#include "cli/identity_commands.h"
#include "cli/info_commands.h"
#include "cli/keys_commands.h"
#include "cli/pki_commands.h"
#include "cli/release_commands.h"
#include "cli/rollout_commands.h"
#include "cli/root_commands.h"
#include "cli/telemetry_commands.h"
#include "common/files.h"
#include "common/names.h"
#include "common/status_macros.h"

namespace fleet::cli {

namespace {

constexpr char kFooter[] =
    "Environment:\n"
    "  FLEET_CONTROLLER   default for --controller\n"
    "  FLEET_PKI, FLEET_TLS_CA, FLEET_TLS_CERT, FLEET_TLS_KEY\n"
    "                     defaults for --pki, --tls-ca, --tls-cert, --tls-key\n"
    "  NO_COLOR           set and not empty: no colours (--color auto)\n"
    "\n"
    "Exit codes:\n"
    "  0  success\n"
    "  1  the operation failed (controller error or unreachable, file "
    "error,\n"
    "     a failed doctor check)\n"
    "  2  usage error (unknown command or flag, missing or invalid value,\n"
    "     missing credentials)\n"
    "  3  rollout status --watch: the rollout was aborted\n"
    "  4  rollout status --watch: the rollout was paused by its failure gate";

// The deepest command the parser got to: fleetctl, or fleetctl release, ...
const CLI::App* ChosenCommand(const CLI::App* app) {
  while (true) {
    std::vector<CLI::App*> chosen = app->get_subcommands();
    if (chosen.empty()) return app;
    app = chosen.front();
  }
}

// "fleetctl release push".
std::string CommandPath(const CLI::App* command) {
  std::vector<std::string> names;
  for (; command != nullptr; command = command->get_parent()) {
    names.insert(names.begin(), command->get_name());
  }
  return absl::StrJoin(names, " ");
}

// CLI11 says only "A subcommand is required"; name what was typed and what
// would have been accepted, as kubectl does.
std::string MissingCommandMessage(const CLI::App* root,
                                  const CLI::App* command) {
  std::vector<std::string> names;
  for (const CLI::App* sub :
       command->get_subcommands([](const CLI::App*) { return true; })) {
    names.push_back(sub->get_name());
  }
  const std::string path = CommandPath(command);
  for (const std::string& arg : root->remaining(true)) {
    if (!arg.empty() && arg[0] != '-') {
      return absl::StrCat("unknown command \"", arg, "\" for \"", path,
                          "\"; expected one of: ", absl::StrJoin(names, ", "));
    }
  }
  return absl::StrCat("\"", path,
                      "\" needs a command: ", absl::StrJoin(names, ", "));
}

std::string FailureMessage(const CLI::App* root, const CLI::Error& e) {
  const CLI::App* command = ChosenCommand(root);
  std::string what = e.what();
  if (e.get_name() == "RequiredError" &&
      what.find("subcommand is required") != std::string::npos) {
    what = MissingCommandMessage(root, command);
  }
  return absl::StrCat("fleetctl: ", what, "\nRun '", CommandPath(command),
                      " --help' for usage.\n");
}

void PrintError(const Io& io, const absl::Status& status) {
  io.err << "fleetctl: " << status.message() << '\n';
}

// Holds what CLI11 fills in and the command that runs once parsing succeeds.
class CommandLine {
 public:
  explicit CommandLine(absl::string_view controller_from_env)
      : app_("fleetctl: keeps software on a fleet of machines up to date.",
             "fleetctl") {
    if (!controller_from_env.empty()) {
      global_.controller = std::string(controller_from_env);
    }
    Define();
  }

  CLI::App& app() { return app_; }

  // Runs the command the parsed arguments chose.
  absl::Status Run(const Io& io) {
    if (output_ == "json") global_.output = OutputFormat::kJson;
    if (output_ == "yaml") global_.output = OutputFormat::kYaml;
    global_.color = color_ == "always" || (color_ == "auto" && io.color);
    absl::StatusOr<absl::Duration> timeout = ParseHumanDuration(timeout_);
    if (!timeout.ok() || *timeout <= absl::ZeroDuration()) {
      return UsageError(
          absl::StrCat("invalid --timeout \"", timeout_,
                       "\": expected a positive duration such as 30s or 2m"));
    }
    global_.timeout = *timeout;
    RETURN_IF_ERROR(ValidateControllerTarget(global_.controller));
    if (!pki_dir_.empty()) {
      auto fill = [&](std::string& path, const char* name) {
        if (path.empty()) path = JoinPath(pki_dir_, name);
      };
      fill(global_.tls.ca_file, "ca.crt");
      fill(global_.tls.cert_file, "admin.crt");
      fill(global_.tls.key_file, "admin.key");
    }
    CommandContext ctx(global_, io);
    for (const auto& [command, run] : commands_) {
      if (!command->parsed()) continue;
      if (NeedsCredentials(command)) RETURN_IF_ERROR(ctx.LoadCredentials());
      return run(ctx);
    }
    return UsageError("no command given; run `fleetctl --help`");
  }

 private:
  void Define() {
    app_.set_version_flag("--version",
                          absl::StrCat("fleetctl ", kFleetctlVersion));
    app_.footer(kFooter);
    app_.require_subcommand(1);
    // Global flags are accepted after the command too: `release list -o json`.
    app_.fallthrough();
    app_.failure_message(FailureMessage);
    app_.add_option("--controller", global_.controller,
                    "controller address HOST:PORT ($FLEET_CONTROLLER)")
        ->capture_default_str();
    app_.add_option("-o,--output", output_,
                    "output format: table, json or yaml")
        ->check(CLI::IsMember({"table", "json", "yaml"}))
        ->capture_default_str();
    app_.add_option("--color", color_,
                    "colours: auto (only on a terminal, not with $NO_COLOR), "
                    "always or never")
        ->check(CLI::IsMember({"auto", "always", "never"}))
        ->capture_default_str();
    app_.add_option("--timeout", timeout_,
                    "deadline of each request, e.g. 30s, 2m (a push adds 1s "
                    "per MiB)")
        ->capture_default_str();
    app_.add_option("--pki", pki_dir_,
                    "directory from `fleetctl pki init`: ca.crt, admin.crt, "
                    "admin.key ($FLEET_PKI)")
        ->envname("FLEET_PKI");
    app_.add_option("--tls-ca", global_.tls.ca_file,
                    "fleet CA certificate the controller must present")
        ->envname("FLEET_TLS_CA");
    app_.add_option("--tls-cert", global_.tls.cert_file,
                    "admin client certificate ($FLEET_TLS_CERT)")
        ->envname("FLEET_TLS_CERT");
    app_.add_option("--tls-key", global_.tls.key_file,
                    "its private key ($FLEET_TLS_KEY)")
        ->envname("FLEET_TLS_KEY");
    app_.add_flag("--insecure", global_.insecure,
                  "plaintext, to a controller started with --insecure");

    CLI::App* keys = app_.add_subcommand("keys", "Release signing keys");
    keys->require_subcommand(1);
    CLI::App* generate = keys->add_subcommand(
        "generate",
        "Create an Ed25519 key pair: DIR/release.key (private, 0600) and "
        "DIR/release.pub");
    generate
        ->add_option("--out", keys_generate_.out_dir,
                     "directory for the key pair")
        ->required();
    Add(generate, [this](CommandContext& ctx) {
      return KeysGenerate(keys_generate_, ctx);
    });

    CLI::App* sign = keys->add_subcommand(
        "sign",
        "Add your signature to a manifest file from `release prepare` (in "
        "place); shows what it signs first");
    sign->add_option("FILE", keys_sign_.manifest, "manifest file")->required();
    sign->add_option("--key", keys_sign_.key_files,
                     "release private key; repeatable")
        ->required();
    sign->add_option("--root", keys_sign_.root,
                     "refuse keys this root does not list as release keys, "
                     "and show the threshold");
    Add(sign,
        [this](CommandContext& ctx) { return KeysSign(keys_sign_, ctx); });

    CLI::App* root = keys->add_subcommand(
        "root", "Root metadata: which release keys agents trust");
    root->require_subcommand(1);
    CLI::App* root_init = root->add_subcommand(
        "init", "Create root metadata version 1 (signed with --sign-key)");
    root_init
        ->add_option("--root-pub", root_init_.root_pubs,
                     "public key that signs future roots; repeatable")
        ->required();
    root_init
        ->add_option("--root-threshold", root_init_.root_threshold,
                     "root keys needed to sign a root")
        ->capture_default_str();
    root_init
        ->add_option("--release-pub", root_init_.release_pubs,
                     "public key that signs releases; repeatable")
        ->required();
    root_init
        ->add_option("--release-threshold", root_init_.release_threshold,
                     "release keys needed to sign a release")
        ->capture_default_str();
    root_init
        ->add_option("--expires", root_init_.expires, "lifetime, e.g. 365d")
        ->capture_default_str();
    root_init->add_option("--sign-key", root_init_.sign_keys,
                          "root private key to sign with now; repeatable");
    root_init->add_option("--out", root_init_.out, "root file to create")
        ->required();
    Add(root_init,
        [this](CommandContext& ctx) { return RootInit(root_init_, ctx); });

    CLI::App* rotate = root->add_subcommand(
        "rotate", "Create the next root version with changed keys or expiry");
    rotate->add_option("--from", root_rotate_.from, "current root file")
        ->required();
    rotate->add_option("--root-pub", root_rotate_.root_pubs,
                       "replace the root keys; repeatable");
    rotate->add_option("--root-threshold", root_rotate_.root_threshold,
                       "new root threshold (default: keep)");
    rotate->add_option("--release-pub", root_rotate_.release_pubs,
                       "replace the release keys; repeatable");
    rotate->add_option("--release-threshold", root_rotate_.release_threshold,
                       "new release threshold (default: keep)");
    rotate->add_option("--expires", root_rotate_.expires, "lifetime, e.g. 365d")
        ->capture_default_str();
    rotate->add_option("--sign-key", root_rotate_.sign_keys,
                       "root private key to sign with now; repeatable");
    rotate->add_option("--out", root_rotate_.out, "root file to create")
        ->required();
    Add(rotate,
        [this](CommandContext& ctx) { return RootRotate(root_rotate_, ctx); });

    CLI::App* root_sign =
        root->add_subcommand("sign", "Add signatures to a root file");
    root_sign
        ->add_option("--root", root_sign_.root, "root file, signed in place")
        ->required();
    root_sign
        ->add_option("--key", root_sign_.sign_keys,
                     "root private key; repeatable")
        ->required();
    Add(root_sign,
        [this](CommandContext& ctx) { return RootSign(root_sign_, ctx); });

    CLI::App* root_show = root->add_subcommand(
        "show", "Show a root file's version, keys, expiry and signatures");
    root_show->add_option("FILE", root_show_path_, "root file")->required();
    Add(root_show,
        [this](CommandContext& ctx) { return RootShow(root_show_path_, ctx); });

    CLI::App* root_push = root->add_subcommand(
        "push", "Send a new root to the controller and its agents");
    root_push->add_option("FILE", root_push_path_, "root file")->required();
    Add(root_push,
        [this](CommandContext& ctx) { return RootPush(root_push_path_, ctx); });

    CLI::App* release_key = keys->add_subcommand(
        "release-key", "Trust or distrust a release key (a root rotation)");
    release_key->require_subcommand(1);
    for (const bool adding : {true, false}) {
      RootRotateOptions& options =
          adding ? release_key_add_ : release_key_remove_;
      CLI::App* command = release_key->add_subcommand(
          adding ? "add" : "remove",
          adding ? "Next root version trusting one more release key"
                 : "Next root version no longer trusting a release key");
      command->add_option("--root", options.from, "current root file")
          ->required();
      command
          ->add_option(
              "--pub",
              adding ? options.add_release_pubs : options.remove_release_pubs,
              "the release public key")
          ->required();
      command->add_option("--sign-key", options.sign_keys,
                          "root private key to sign with; repeatable");
      command
          ->add_option("--expires", options.expires, "lifetime of the new root")
          ->capture_default_str();
      command->add_option("--out", options.out, "root file to create")
          ->required();
      Add(command, [this, &options](CommandContext& ctx) {
        return RootRotate(options, ctx);
      });
    }

    CLI::App* pki = app_.add_subcommand(
        "pki", "Certificate authority for TLS and mutual TLS");
    pki->require_subcommand(1);
    CLI::App* pki_init = pki->add_subcommand(
        "init",
        "Create a CA, the controller's server certificate and an operator's "
        "admin certificate in DIR (keys 0600)");
    pki_init->add_option("--out", pki_init_.out_dir, "directory to create")
        ->required();
    pki_init
        ->add_option("--host", pki_init_.hosts,
                     "name or IP the controller is dialled by; repeatable")
        ->capture_default_str();
    pki_init
        ->add_option("--admin", pki_init_.admin_name,
                     "identity of the admin certificate")
        ->capture_default_str();
    Add(pki_init,
        [this](CommandContext& ctx) { return PkiInit(pki_init_, ctx); });
    CLI::App* pki_issue = pki->add_subcommand(
        "issue", "Issue a key and certificate signed by an existing CA");
    pki_issue
        ->add_option("--ca", pki_issue_.ca_dir,
                     "directory with ca.crt and ca.key")
        ->required();
    pki_issue->add_option("--role", pki_issue_.role, "admin, server or agent")
        ->required();
    pki_issue
        ->add_option("--name", pki_issue_.name,
                     "identity: operator name, host or agent id")
        ->required();
    pki_issue->add_option("--host", pki_issue_.hosts,
                          "server name or IP (--role server); repeatable");
    pki_issue
        ->add_option("--out", pki_issue_.out_dir,
                     "directory for NAME.crt and NAME.key")
        ->required();
    Add(pki_issue,
        [this](CommandContext& ctx) { return PkiIssue(pki_issue_, ctx); });

    CLI::App* release = app_.add_subcommand("release", "Signed releases");
    release->require_subcommand(1);
    CLI::App* push = release->add_subcommand(
        "push",
        "Upload a release: sign it here with --key (repeatable), or push a "
        "--manifest prepared and signed offline");
    CLI::Option* push_product =
        push->add_option("--product", push_.product, "product name, e.g. web");
    CLI::Option* push_version =
        push->add_option("--version", push_.version, "SemVer, e.g. 1.2.0");
    CLI::Option* push_platform = push->add_option(
        "--platform", push_.platform,
        absl::StrCat("os/arch of the file (default: this host's, ",
                     HostPlatform(), ")"));
    push->add_option("--file", push_.file, "the executable to release")
        ->required();
    CLI::Option* push_key = push->add_option(
        "--key", push_.key_files,
        "private key from `fleetctl keys generate`; repeat to sign with "
        "several keys of a k-of-n root");
    CLI::Option* push_expires =
        push->add_option("--expires", push_.expires,
                         "manifest lifetime, e.g. 90d, 12h; 0 or never: no "
                         "expiry")
            ->capture_default_str();
    CLI::Option* push_downgrade = push->add_flag(
        "--allows-downgrade", push_.allows_downgrade,
        "sign a manifest that agents may install over a newer version");
    push->add_option("--manifest", push_.manifest,
                     "manifest file from `release prepare`, signed with "
                     "`keys sign`")
        ->excludes(push_product)
        ->excludes(push_version)
        ->excludes(push_platform)
        ->excludes(push_key)
        ->excludes(push_expires)
        ->excludes(push_downgrade);
    // Required unless --manifest brings them: checked while parsing, so a
    // missing one is reported with the help pointer like any required flag.
    push->parse_complete_callback([this, push_product, push_version, push_key] {
      if (!push_.manifest.empty()) return;
      for (const CLI::Option* option : {push_product, push_version, push_key}) {
        if (option->count() == 0) {
          throw CLI::RequiredError(
              option->get_name() + " is required (or give --manifest)",
              CLI::ExitCodes::RequiredError);
        }
      }
    });
    Add(push, [this](CommandContext& ctx) { return ReleasePush(push_, ctx); });

    CLI::App* prepare = release->add_subcommand(
        "prepare",
        "Write an unsigned manifest file for offline signing (keys sign)");
    prepare->add_option("--product", prepare_.product, "product name")
        ->required();
    prepare->add_option("--version", prepare_.version, "SemVer, e.g. 1.2.0")
        ->required();
    prepare->add_option("--platform", prepare_.platform,
                        absl::StrCat("os/arch of the file (default: this "
                                     "host's, ",
                                     HostPlatform(), ")"));
    prepare->add_option("--file", prepare_.file, "the executable to release")
        ->required();
    prepare
        ->add_option("--expires", prepare_.expires,
                     "manifest lifetime, e.g. 90d; 0 or never: no expiry")
        ->capture_default_str();
    prepare->add_flag("--allows-downgrade", prepare_.allows_downgrade,
                      "agents may install it over a newer version");
    prepare->add_option("--out", prepare_.out, "manifest file to write")
        ->required();
    prepare->add_flag("--force", prepare_.force,
                      "replace an existing --out (its signatures are lost)");
    Add(prepare,
        [this](CommandContext& ctx) { return ReleasePrepare(prepare_, ctx); });

    CLI::App* verify = release->add_subcommand(
        "verify",
        "Check a manifest file's signatures against a root, offline, as an "
        "agent would");
    verify->add_option("--manifest", verify_.manifest, "manifest file")
        ->required();
    CLI::Option* verify_root = verify->add_option(
        "--root", verify_.root, "root file whose release keys must sign");
    verify
        ->add_option("--trust-key", verify_.trust_keys,
                     "release public key instead of --root; repeatable")
        ->excludes(verify_root);
    verify->add_option("--file", verify_.file,
                       "also check this artifact's size and sha256");
    Add(verify,
        [this](CommandContext& ctx) { return ReleaseVerify(verify_, ctx); });

    CLI::App* release_list =
        release->add_subcommand("list", "List stored releases");
    release_list->add_option("--product", release_list_.product,
                             "only this product");
    release_list->add_option("--platform", release_list_.platform,
                             "only this os/arch");
    Add(release_list, [this](CommandContext& ctx) {
      return ReleaseList(release_list_, ctx);
    });

    CLI::App* agents = app_.add_subcommand("agents", "Managed machines");
    agents->require_subcommand(1);
    CLI::App* agents_list =
        agents->add_subcommand("list", "List agents the controller knows");
    agents_list->add_option("--product", agents_list_.product,
                            "only agents that run this product");
    Add(agents_list,
        [this](CommandContext& ctx) { return AgentsList(agents_list_, ctx); });

    CLI::App* rollout =
        app_.add_subcommand("rollout", "Move the fleet to a release");
    rollout->require_subcommand(1);
    CLI::App* create =
        rollout->add_subcommand("create", "Start rolling out a release");
    create->add_option("--product", create_.product, "product name")
        ->required();
    create->add_option("--version", create_.version, "version to roll out")
        ->required();
    create
        ->add_option("--selector", create_.selector,
                     "only agents with these labels: key=value[,key=value]")
        ->delimiter(',');
    create->add_option("--platform", create_.platform,
                       "only agents on this os/arch");
    create
        ->add_option("--stages", create_.stages,
                     "cohorts as increasing percents, e.g. 10,50,100 "
                     "(default: 100)")
        ->delimiter(',');
    create->add_option("--bake", create_.bake,
                       "healthy time before the next stage, e.g. 10m");
    create->add_option("--max-in-flight", create_.max_in_flight,
                       "most agents updating at once: a count (5) or a "
                       "percent of the targets (20%); default no limit");
    create->add_option("--max-failure-rate", create_.max_failure_rate,
                       "failure gate: stop when more than this share of "
                       "finished targets failed, e.g. 5% (default no gate)");
    create->add_option("--min-samples", create_.min_samples,
                       "finished targets needed before the gate can trip "
                       "(default and minimum 1)");
    create->add_option("--on-failure", create_.on_failure,
                       "what a tripped gate does: pause (default) or abort");
    create->add_flag("--blacklist-on-failure", create_.blacklist_on_failure,
                     "a tripped gate also blacklists the version");
    Add(create,
        [this](CommandContext& ctx) { return RolloutCreate(create_, ctx); });

    CLI::App* status =
        rollout->add_subcommand("status", "Show a rollout and its targets");
    status->add_option("id", rollout_id_, "rollout id (ro-...)")->required();
    CLI::Option* watch =
        status->add_flag("--watch", watch_,
                         "follow the rollout live until it ends; exit 0 "
                         "completed, 3 aborted, 4 paused by its failure gate "
                         "(an operator's pause keeps watching)");
    status
        ->add_option("--interval", watch_interval_,
                     "with --watch: time between polls (at least 100ms)")
        ->capture_default_str()
        ->needs(watch);
    Add(status, [this](CommandContext& ctx) {
      if (!watch_) return RolloutStatus(rollout_id_, ctx);
      RolloutWatchOptions watch;
      watch.rollout_id = rollout_id_;
      watch.interval = watch_interval_;
      return RolloutWatch(watch, ctx);
    });

    CLI::App* pause = rollout->add_subcommand(
        "pause", "Stop sending new directives; in-flight updates finish");
    pause->add_option("id", change_.rollout_id, "rollout id (ro-...)")
        ->required();
    pause->add_option("--reason", change_.reason, "why, shown in status");
    Add(pause,
        [this](CommandContext& ctx) { return RolloutPause(change_, ctx); });

    CLI::App* resume =
        rollout->add_subcommand("resume", "Continue a paused rollout");
    resume->add_option("id", change_.rollout_id, "rollout id (ro-...)")
        ->required();
    Add(resume, [this](CommandContext& ctx) {
      return RolloutResume(change_.rollout_id, ctx);
    });

    CLI::App* abort = rollout->add_subcommand(
        "abort", "End a rollout for good; pending targets are not updated");
    abort->add_option("id", change_.rollout_id, "rollout id (ro-...)")
        ->required();
    abort->add_option("--reason", change_.reason, "why, shown in status");
    abort->add_flag("--rollback", change_.rollback,
                    "also lead every target that left its previous version "
                    "(updated or in flight) back to it");
    Add(abort,
        [this](CommandContext& ctx) { return RolloutAbort(change_, ctx); });

    CLI::App* rollout_list =
        rollout->add_subcommand("list", "List rollouts, newest first");
    rollout_list->add_option("--product", rollout_list_.product,
                             "only this product");
    Add(rollout_list, [this](CommandContext& ctx) {
      return RolloutList(rollout_list_, ctx);
    });

    AddIdentityCommands();
    AddBlacklistCommands();
    AddInfoCommands();
    AddTelemetryCommands();
  }

  void AddTelemetryCommands() {
    CLI::App* telemetry = app_.add_subcommand(
        "telemetry", "Query update events, heartbeats and agent versions");
    telemetry->require_subcommand(1);
    CLI::App* query = telemetry->add_subcommand(
        "query",
        "Run a query, e.g. 'count(agents{product=\"app\"}) by (version)' "
        "(language: docs/telemetry.md)");
    query->add_option("query", telemetry_query_.query, "the query")->required();
    query
        ->add_option("--since", telemetry_query_.since,
                     "start: a duration before --until (1h, 7d) or RFC 3339")
        ->capture_default_str();
    query->add_option("--until", telemetry_query_.until,
                      "end: now (default), a duration ago, or RFC 3339");
    query->add_option("--step", telemetry_query_.step, "bucket width")
        ->capture_default_str();
    query
        ->add_option("-o,--output", telemetry_query_.format,
                     "table (with sparklines), json, yaml or csv")
        ->check(CLI::IsMember({"table", "json", "yaml", "csv"}));
    Add(query, [this](CommandContext& ctx) {
      return TelemetryQuery(telemetry_query_, ctx);
    });
  }

  void AddBlacklistCommands() {
    CLI::App* blacklist = app_.add_subcommand(
        "blacklist", "Versions that must never be rolled out");
    blacklist->require_subcommand(1);
    CLI::App* add = blacklist->add_subcommand(
        "add", "Blacklist a version and abort its rollouts");
    add->add_option("--product", blacklist_.product, "product name")
        ->required();
    add->add_option("--version", blacklist_.version, "the bad version")
        ->required();
    add->add_option("--reason", blacklist_.reason, "why it is bad")->required();
    Add(add,
        [this](CommandContext& ctx) { return BlacklistAdd(blacklist_, ctx); });

    CLI::App* remove =
        blacklist->add_subcommand("remove", "Allow a version again");
    remove->add_option("--product", blacklist_.product, "product name")
        ->required();
    remove->add_option("--version", blacklist_.version, "the version")
        ->required();
    Add(remove, [this](CommandContext& ctx) {
      return BlacklistRemove(blacklist_, ctx);
    });

    CLI::App* list =
        blacklist->add_subcommand("list", "List blacklisted versions");
    list->add_option("--product", blacklist_.product, "only this product");
    Add(list, [this](CommandContext& ctx) {
      return BlacklistList(blacklist_.product, ctx);
    });
  }

  void AddInfoCommands() {
    CLI::App* version = app_.add_subcommand(
        "version", "Show fleetctl's and the controller's versions");
    Add(version,
        [](CommandContext& ctx) { return Version(kFleetctlVersion, ctx); });

    CLI::App* doctor = app_.add_subcommand(
        "doctor",
        "Check the controller connection, versions, clock skew and key files");
    doctor->add_option("--trust-key", doctor_.trust_keys,
                       "release public key (PEM) to check; repeatable");
    Add(doctor, [this](CommandContext& ctx) {
      return Doctor(doctor_, kFleetctlVersion, ctx);
    });

    CLI::App* completion = app_.add_subcommand(
        "completion",
        "Print a shell completion script: source <(fleetctl completion bash)");
    completion->add_option("shell", completion_shell_, "bash or zsh")
        ->required();
    Add(completion, [this](CommandContext& ctx) -> absl::Status {
      ASSIGN_OR_RETURN(std::string script,
                       CompletionScript(app_, completion_shell_));
      ctx.out() << script;
      return absl::OkStatus();
    });
  }

  // Commands that never call the controller (keys, certificates, shell
  // completion) run without TLS credentials; `version` runs either way and
  // reports what it could reach.
  static bool NeedsCredentials(const CLI::App* command) {
    // Offline signing: prepare and verify read and write files only.
    const CLI::App* parent = command->get_parent();
    if (parent != nullptr && parent->get_name() == "release" &&
        (command->get_name() == "prepare" || command->get_name() == "verify")) {
      return false;
    }
    for (const CLI::App* c = command; c != nullptr; c = c->get_parent()) {
      const std::string& name = c->get_name();
      // doctor loads them itself, to report a bad file as a failed check.
      if (name == "keys" || name == "pki" || name == "completion" ||
          name == "version" || name == "doctor") {
        return false;
      }
    }
    return true;
  }

  void AddIdentityCommands() {
    CLI::App* token = app_.add_subcommand(
        "enroll-token", "One-time tokens that let new agents enroll");
    token->require_subcommand(1);
    CLI::App* create = token->add_subcommand(
        "create", "Create a token (printed once; the controller keeps a hash)");
    create->add_option("--ttl", token_create_.ttl, "lifetime, at most 30d")
        ->capture_default_str();
    create->add_option("--uses", token_create_.uses, "enrollments allowed")
        ->capture_default_str();
    create->add_option("--label", token_create_.labels,
                       "key=value given to agents enrolled with it; "
                       "repeatable");
    Add(create, [this](CommandContext& ctx) {
      return EnrollTokenCreate(token_create_, ctx);
    });
    CLI::App* list = token->add_subcommand("list", "List usable tokens");
    Add(list, [](CommandContext& ctx) { return EnrollTokenList(ctx); });
    CLI::App* remove = token->add_subcommand("delete", "Delete a token");
    remove->add_option("ID", token_id_, "token id from enroll-token list")
        ->required();
    Add(remove, [this](CommandContext& ctx) {
      return EnrollTokenDelete(token_id_, ctx);
    });

    CLI::App* revoke = app_.get_subcommand("agents")->add_subcommand(
        "revoke", "Cut an agent off now and refuse it from then on");
    revoke->add_option("AGENT_ID", revoke_agent_id_, "the agent")->required();
    revoke->add_option("--reason", revoke_reason_, "why, for the audit log");
    Add(revoke, [this](CommandContext& ctx) {
      return AgentsRevoke(revoke_agent_id_, revoke_reason_, ctx);
    });

    CLI::App* audit =
        app_.add_subcommand("audit", "Who changed what, and when");
    audit->require_subcommand(1);
    CLI::App* audit_list = audit->add_subcommand("list", "Newest first");
    audit_list->add_option("--limit", audit_limit_, "entries to show")
        ->capture_default_str();
    Add(audit_list,
        [this](CommandContext& ctx) { return AuditList(audit_limit_, ctx); });
  }

  void Add(CLI::App* command,
           std::function<absl::Status(CommandContext&)> run) {
    commands_.emplace_back(command, std::move(run));
  }

  CLI::App app_;
  GlobalOptions global_;
  std::string output_ = "table";
  std::string color_ = "auto";
  TelemetryQueryOptions telemetry_query_;
  std::string timeout_ = "30s";
  KeysGenerateOptions keys_generate_;
  KeysSignOptions keys_sign_;
  ReleasePrepareOptions prepare_;
  ReleaseVerifyOptions verify_;
  PkiInitOptions pki_init_;
  PkiIssueOptions pki_issue_;
  RootInitOptions root_init_;
  RootRotateOptions root_rotate_;
  RootSignOptions root_sign_;
  std::string root_show_path_;
  std::string root_push_path_;
  RootRotateOptions release_key_add_;
  RootRotateOptions release_key_remove_;
  ReleasePushOptions push_;
  ReleaseListOptions release_list_;
  AgentsListOptions agents_list_;
  RolloutCreateOptions create_;
  std::string rollout_id_;
  bool watch_ = false;
  std::string watch_interval_ = "1s";
  RolloutChangeOptions change_;
  BlacklistOptions blacklist_;
  std::string pki_dir_;
  EnrollTokenCreateOptions token_create_;
  std::string token_id_;
  std::string revoke_agent_id_;
  std::string revoke_reason_;
  int audit_limit_ = 50;
  DoctorOptions doctor_;
  std::string completion_shell_;
  RolloutListOptions rollout_list_;
  std::vector<
      std::pair<CLI::App*, std::function<absl::Status(CommandContext&)>>>
      commands_;
};

}  // namespace

int RunFleetctl(const std::vector<std::string>& args, const Io& io,
                absl::string_view controller_from_env) {
  try {
    CommandLine command_line(controller_from_env);
    std::vector<const char*> argv;
    argv.reserve(args.size());
    for (const std::string& arg : args) argv.push_back(arg.c_str());
    try {
      command_line.app().parse(static_cast<int>(argv.size()), argv.data());
    } catch (const CLI::ParseError& e) {
      // --help and --version are "errors" with exit code 0.
      int code = command_line.app().exit(e, io.out, io.err);
      return code == 0 ? kExitOk : kExitUsage;
    }
    absl::Status status = command_line.Run(io);
    if (!status.ok()) PrintError(io, status);
    return ExitCodeFor(status);
  } catch (const std::exception& e) {
    io.err << "fleetctl: internal error: " << e.what() << '\n';
    return kExitFailed;
  }
}

}  // namespace fleet::cli
