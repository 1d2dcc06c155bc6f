#include "cli/command_context.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include <chrono>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"

namespace fleet::cli {

namespace {

// Listing thousands of agents or releases exceeds gRPC's 4 MiB default.
constexpr int kMaxReceiveBytes = 64 << 20;

}  // namespace

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

absl::Status CommandContext::PrintJson(
    const google::protobuf::Message& message) const {
  google::protobuf::util::JsonPrintOptions json_options;
  json_options.add_whitespace = true;
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
  io_.out << json;
  if (json.empty() || json.back() != '\n') io_.out << '\n';
  return absl::OkStatus();
}

}  // namespace fleet::cli
