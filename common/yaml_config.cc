#include "common/yaml_config.h"

#include <yaml-cpp/yaml.h>

#include <iostream>
#include <map>
#include <memory>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace fleet {
namespace {

constexpr char kPrintConfigFlag[] = "--print-config";

// Options that steer the parse itself are never config keys.
bool IsConfigKey(const CLI::App& app, const CLI::Option& option) {
  if (!option.get_configurable()) return false;
  if (&option == app.get_help_ptr() || &option == app.get_version_ptr()) {
    return false;
  }
  const std::string& name = option.get_single_name();
  return name != "help" && name != "help-all" && name != "version" &&
         name != "print-config" && name != "config";
}

// Same lookup order as CLI11's own config parser: long flag, short flag,
// positional name.
CLI::Option* FindOption(CLI::App& app, const std::string& key) {
  CLI::Option* option = app.get_option_no_throw("--" + key);
  if (option == nullptr && key.size() == 1) {
    option = app.get_option_no_throw("-" + key);
  }
  if (option == nullptr) option = app.get_option_no_throw(key);
  if (option != nullptr && !IsConfigKey(app, *option)) return nullptr;
  return option;
}

std::vector<std::string> KnownKeys(const CLI::App& app) {
  std::vector<std::string> keys;
  for (const CLI::Option* option : app.get_options()) {
    if (IsConfigKey(app, *option)) keys.push_back(option->get_single_name());
  }
  return keys;
}

bool IsFlag(const CLI::Option& option) {
  // CLI11 parses a config item as a flag exactly when this holds.
  return option.get_expected_min() == 0;
}

std::string YamlScalar(const std::string& value) {
  YAML::Emitter out;
  out << value;
  return out.c_str();
}

}  // namespace

std::vector<CLI::ConfigItem> YamlConfig::from_config(
    std::istream& input) const {
  std::string file = "config";
  if (const CLI::Option* config = app_.get_config_ptr();
      config != nullptr && !config->results().empty()) {
    file = config->results().front();
  }
  auto error = [&file](int line, const std::string& what) {
    return CLI::ConfigError(absl::StrCat(file, ":", line, ": ", what));
  };

  YAML::Node root;
  try {
    root = YAML::Load(input);
  } catch (const YAML::ParserException& e) {
    throw error(e.mark.line + 1, "not valid YAML: " + e.msg);
  }
  if (root.IsNull()) return {};  // an empty file sets nothing
  if (!root.IsMap()) {
    throw error(root.Mark().line + 1,
                "want a mapping of flag names to values, like "
                "\"log-level: info\"");
  }

  std::map<std::string, int> seen;  // key -> line, to reject repeats
  for (const auto& entry : root) {
    const YAML::Node& key_node = entry.first;
    const YAML::Node& value = entry.second;
    const int line = key_node.Mark().line + 1;
    if (!key_node.IsScalar()) throw error(line, "a key must be a flag name");
    const std::string key = key_node.Scalar();
    const std::string where = absl::StrCat("key '", key, "'");

    if (auto [it, inserted] = seen.emplace(key, line); !inserted) {
      throw error(line, absl::StrCat(where, " is repeated (first on line ",
                                     it->second, "); keep one"));
    }
    CLI::Option* option = FindOption(app_, key);
    if (option == nullptr) {
      throw error(line, absl::StrCat("unknown ", where,
                                     "; the keys are the long "
                                     "flags without \"--\": ",
                                     absl::StrJoin(KnownKeys(app_), ", ")));
    }

    std::vector<std::string> inputs;
    if (value.IsScalar()) {
      inputs.push_back(value.Scalar());
    } else if (value.IsSequence()) {
      for (const auto& element : value) {
        if (!element.IsScalar()) {
          throw error(element.Mark().line + 1,
                      where + ": a list element must be a plain value");
        }
        inputs.push_back(element.Scalar());
      }
    } else if (value.IsMap()) {
      throw error(line, where + ": want a value or a list, not a mapping");
    } else {
      throw error(line, where + " has no value; give one or delete the line");
    }
    const bool takes_list =
        !IsFlag(*option) &&
        (option->get_items_expected_max() > 1 || option->get_positional());
    if (value.IsSequence() && !takes_list) {
      throw error(line, where + " takes one value, not a list");
    }
    if (value.IsSequence() && inputs.empty()) continue;  // "key: []"

    if (!option->empty()) continue;  // the command line wins
    try {
      if (IsFlag(*option)) {
        option->add_result(option->get_flag_value(key, inputs.front()));
      } else {
        option->add_result(inputs);
      }
      // Converts and validates now, while the line is known; CLI11 skips
      // options whose callback has run.
      option->run_callback();
    } catch (const CLI::ParseError& e) {
      throw error(line, absl::StrCat(where, ": ", e.what()));
    }
  }
  return {};
}

std::string YamlConfig::to_config(const CLI::App* app, bool default_also,
                                  bool write_description,
                                  std::string prefix) const {
  std::ostringstream out;
  for (const CLI::Option* option : app->get_options()) {
    if (!IsConfigKey(*app, *option)) continue;
    const std::string key = prefix + option->get_single_name();
    if (write_description && option->has_description()) {
      for (absl::string_view line :
           absl::StrSplit(option->get_description(), '\n')) {
        out << "# " << line << "\n";
      }
    }
    std::vector<std::string> values = option->results();
    if (values.empty() && default_also && !option->get_default_str().empty()) {
      values.push_back(option->get_default_str());
    }
    if (values.empty() && IsFlag(*option)) values.push_back("false");
    if (values.empty()) {
      out << "#" << key << ":\n";  // unset; shown so every key is listed
      continue;
    }
    const bool takes_list =
        !IsFlag(*option) &&
        (option->get_items_expected_max() > 1 || option->get_positional());
    if (takes_list) {
      out << key << ":\n";
      for (const std::string& value : values) {
        out << "  - " << YamlScalar(value) << "\n";
      }
    } else {
      out << key << ": " << YamlScalar(values.back()) << "\n";
    }
  }
  return out.str();
}

void AddYamlConfig(CLI::App& app) {
  app.set_config("--config", "",
                 "YAML file; every flag is a key (its name without \"--\"); "
                 "flags on the command line override it");
  static const std::string kPrintConfigHelp =
      "print the effective configuration as YAML and exit";
  app.add_flag(kPrintConfigFlag, kPrintConfigHelp)->configurable(false);
  app.config_formatter(std::make_shared<YamlConfig>(app));
}

std::optional<int> ParseCommandLine(CLI::App& app, int argc,
                                    const char* const* argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (const CLI::Option* print = app.get_option_no_throw(kPrintConfigFlag);
      print != nullptr && print->count() > 0) {
    std::cout << app.config_to_str(/*default_also=*/true,
                                   /*write_description=*/true);
    return 0;
  }
  return std::nullopt;
}

}  // namespace fleet
