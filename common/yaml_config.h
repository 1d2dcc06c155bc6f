// YAML config files for CLI11 command lines.
//
// fleet-controller and fleet-agent take every flag from a YAML file too:
// `--config FILE` reads a mapping whose keys are the long flag names without
// the dashes (`data-dir: /var/lib/fleet`); a repeatable flag takes a list.
// The keys are derived from the CLI11 options at parse time, so a flag added
// to the App later is a config key without further work. A flag given on the
// command line overrides the file. An unknown key, a list for a one-value
// flag, a nested mapping, an empty value or a value the flag rejects is an
// error naming the file, the line and the key. `--print-config` prints the
// effective configuration (file + flags + defaults) as YAML that loads again.
//
//   CLI::App app{"fleet-agent"};
//   app.add_option("--state-dir", state_dir, "...")->required();
//   fleet::AddYamlConfig(app);
//   if (std::optional<int> exit = fleet::ParseCommandLine(app, argc, argv)) {
//     return *exit;
//   }
#ifndef FLEET_COMMON_YAML_CONFIG_H_
#define FLEET_COMMON_YAML_CONFIG_H_

#include <CLI/CLI.hpp>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

namespace fleet {

// A CLI::Config that reads and writes YAML. It applies the file's values to
// the App's options itself (instead of handing ConfigItems back to CLI11)
// because only here is the line of each key still known; CLI11's own errors
// are rethrown as CLI::ConfigError prefixed with "FILE:LINE: key 'k': ".
// Not thread-safe; used by one App during one parse.
class YamlConfig : public CLI::Config {
 public:
  // `app` must outlive this object.
  explicit YamlConfig(CLI::App& app) : app_(app) {}

  // YAML of every configurable option: given values, else the default,
  // else a commented-out key. `default_also` false leaves defaults out.
  std::string to_config(const CLI::App* app, bool default_also,
                        bool write_description,
                        std::string prefix) const override;

  // Applies the mapping in `input` to the App's options that the command
  // line did not set. Returns no items (all are applied already).
  // Throws CLI::ConfigError naming file, line and key on any bad entry.
  std::vector<CLI::ConfigItem> from_config(std::istream& input) const override;

 private:
  CLI::App& app_;
};

// Adds `--config FILE` and `--print-config` to `app` and makes YamlConfig its
// config formatter. Call once, before ParseCommandLine.
void AddYamlConfig(CLI::App& app);

// Parses argv (with the config file) like CLI11_PARSE. Returns nullopt when
// the program should go on; otherwise the exit code main should return now:
// 0 after --help, --version or --print-config (printed to stdout), non-zero
// after an error (printed to stderr with the usage hint).
std::optional<int> ParseCommandLine(CLI::App& app, int argc,
                                    const char* const* argv);

}  // namespace fleet

#endif  // FLEET_COMMON_YAML_CONFIG_H_
