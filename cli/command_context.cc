#include "cli/command_context.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include <chrono>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"
#include "yaml-cpp/yaml.h"

namespace fleet::cli {

namespace {

// Listing thousands of agents or releases exceeds gRPC's 4 MiB default.
constexpr int kMaxReceiveBytes = 64 << 20;

void EmitYaml(const nlohmann::json& node, YAML::Emitter& out) {
  switch (node.type()) {
    case nlohmann::json::value_t::object:
      out << YAML::BeginMap;
      for (const auto& [key, value] : node.items()) {
        out << YAML::Key << key << YAML::Value;
        EmitYaml(value, out);
      }
      out << YAML::EndMap;
      break;
    case nlohmann::json::value_t::array:
      out << YAML::BeginSeq;
      for (const auto& item : node) EmitYaml(item, out);
      out << YAML::EndSeq;
      break;
    case nlohmann::json::value_t::string: {
      // A string that a YAML reader would take for a number, a bool or
      // null is quoted: "123" (a proto int64) and "true" stay strings.
      // yaml-cpp 0.7 leaves these plain.
      const std::string& text = node.get_ref<const std::string&>();
      bool needs_quotes = !text.empty();
      for (char c : text) {
        if (!absl::ascii_isdigit(static_cast<unsigned char>(c)) && c != '.' &&
            c != '-' && c != '+' && c != 'e' && c != 'E') {
          needs_quotes = false;
          break;
        }
      }
      static const absl::flat_hash_set<std::string>* const kReserved =
          new absl::flat_hash_set<std::string>(
              {"", "~", "null", "true", "false", "yes", "no", "on", "off", "y",
               "n", ".inf", "-.inf", ".nan"});
      if (kReserved->contains(absl::AsciiStrToLower(text))) {
        needs_quotes = true;
      }
      if (needs_quotes) out << YAML::DoubleQuoted;
      out << text;
      break;
    }
    case nlohmann::json::value_t::boolean:
      out << node.get<bool>();
      break;
    case nlohmann::json::value_t::number_integer:
      out << node.get<int64_t>();
      break;
    case nlohmann::json::value_t::number_unsigned:
      out << node.get<uint64_t>();
      break;
    case nlohmann::json::value_t::number_float:
      out << node.get<double>();
      break;
    default:
      out << YAML::Null;
      break;
  }
}

}  // namespace

bool WantsColor(bool out_is_terminal, const char* no_color_env,
                const char* term_env) {
  if (!out_is_terminal) return false;
  if (no_color_env != nullptr && no_color_env[0] != '\0') return false;
  return term_env == nullptr || std::string(term_env) != "dumb";
}

std::string RenderYaml(const nlohmann::json& doc) {
  YAML::Emitter out;
  out.SetIndent(2);
  out.SetSeqFormat(YAML::Block);
  out.SetMapFormat(YAML::Block);
  EmitYaml(doc, out);
  std::string text = out.c_str();
  if (text.empty() || text.back() != '\n') text += '\n';
  return text;
}

absl::Status ValidateControllerTarget(absl::string_view target) {
  // URI forms are gRPC's business; only check the plain host:port form.
  if (absl::StrContains(target, ":/") || absl::StartsWith(target, "unix:")) {
    return absl::OkStatus();
  }
  auto invalid = [&](absl::string_view why) {
    return UsageError(absl::StrCat("invalid --controller \"", target,
                                   "\": ", why, "; expected HOST:PORT, e.g. ",
                                   kDefaultController));
  };
  size_t colon = target.rfind(':');
  if (colon == absl::string_view::npos) return invalid("no port");
  absl::string_view host = target.substr(0, colon);
  absl::string_view port = target.substr(colon + 1);
  if (host.empty()) return invalid("no host");
  if (absl::StrContains(host, ':') &&
      !(absl::StartsWith(host, "[") && absl::EndsWith(host, "]"))) {
    return invalid("an IPv6 address needs brackets, e.g. [::1]:7443");
  }
  int port_number = 0;
  if (!absl::SimpleAtoi(port, &port_number) || port_number < 1 ||
      port_number > 65535) {
    return invalid("the port must be a number from 1 to 65535");
  }
  return absl::OkStatus();
}

CommandContext::CommandContext(GlobalOptions options, const Io& io)
    : options_(std::move(options)), io_(io) {}

absl::Status CommandContext::LoadCredentials() {
  if (options_.insecure) {
    credentials_ = grpc::InsecureChannelCredentials();
    return absl::OkStatus();
  }
  const TlsFiles& tls = options_.tls;
  if (tls.ca_file.empty()) {
    return UsageError(
        "no TLS credentials: give --pki DIR (from fleetctl pki init) or "
        "--tls-ca, --tls-cert and --tls-key; --insecure talks plaintext to a "
        "controller started with --insecure");
  }
  if (tls.cert_file.empty() != tls.key_file.empty()) {
    return UsageError("--tls-cert and --tls-key go together");
  }
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      MakeChannelCredentials(tls);
  if (!credentials.ok()) {
    return UsageError(absl::StrCat("cannot load TLS credentials: ",
                                   credentials.status().message()));
  }
  credentials_ = *std::move(credentials);
  return absl::OkStatus();
}

std::shared_ptr<grpc::Channel> CommandContext::Channel() {
  if (channel_ == nullptr) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(kMaxReceiveBytes);
    channel_ = grpc::CreateCustomChannel(
        options_.controller,
        credentials_ != nullptr ? credentials_
                                : grpc::InsecureChannelCredentials(),
        args);
  }
  return channel_;
}

v1::AdminService::StubInterface& CommandContext::admin() {
  if (admin_ == nullptr) admin_ = v1::AdminService::NewStub(Channel());
  return *admin_;
}

v1::IdentityService::StubInterface& CommandContext::identity() {
  if (identity_ == nullptr) identity_ = v1::IdentityService::NewStub(Channel());
  return *identity_;
}

void CommandContext::SetDeadline(grpc::ClientContext& rpc,
                                 absl::Duration extra) const {
  rpc.set_deadline(std::chrono::system_clock::now() +
                   absl::ToChronoMilliseconds(options_.timeout + extra));
}

RpcCall CommandContext::Call(std::string action, absl::Duration timeout,
                             std::vector<RpcHint> hints) const {
  return RpcCall{options_.controller, std::move(action), timeout,
                 std::move(hints)};
}

std::string CommandContext::Paint(absl::string_view text, Color color) const {
  if (!options_.color) return std::string(text);
  const char* code = "";
  switch (color) {
    case Color::kGreen:
      code = "32";
      break;
    case Color::kYellow:
      code = "33";
      break;
    case Color::kRed:
      code = "1;31";
      break;
    case Color::kDim:
      code = "2";
      break;
  }
  return absl::StrCat("\x1b[", code, "m", text, "\x1b[0m");
}

absl::StatusOr<nlohmann::json> CommandContext::MessageDocument(
    const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions json_options;
  json_options.always_print_primitive_fields = true;
  json_options.preserve_proto_field_names = true;
  std::string json;
  auto status =
      google::protobuf::util::MessageToJsonString(message, &json, json_options);
  if (!status.ok()) {
    return absl::InternalError(absl::StrCat("cannot render ",
                                            message.GetTypeName(),
                                            " as JSON: ", status.ToString()));
  }
  return nlohmann::json::parse(json);
}

absl::Status CommandContext::PrintResult(
    const google::protobuf::Message& message) const {
  absl::StatusOr<nlohmann::json> doc = MessageDocument(message);
  if (!doc.ok()) return doc.status();
  PrintDocument(*doc);
  return absl::OkStatus();
}

void CommandContext::PrintDocument(const nlohmann::json& doc) const {
  if (options_.output == OutputFormat::kYaml) {
    io_.out << RenderYaml(doc);
    return;
  }
  io_.out << doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace)
          << '\n';
}

absl::Status CommandContext::PrintStreamItem(
    const google::protobuf::Message& message) const {
  absl::StatusOr<nlohmann::json> doc = MessageDocument(message);
  if (!doc.ok()) return doc.status();
  if (options_.output == OutputFormat::kYaml) {
    io_.out << "---\n" << RenderYaml(*doc);
  } else {
    io_.out << doc->dump(-1, ' ', false,
                         nlohmann::json::error_handler_t::replace)
            << '\n';
  }
  io_.out.flush();
  return absl::OkStatus();
}

}  // namespace fleet::cli
