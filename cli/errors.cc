#include "cli/errors.h"

#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace fleet::cli {

namespace {

constexpr absl::string_view kUsagePayloadUrl = "fleet.dev/fleetctl/usage-error";
constexpr absl::string_view kExitCodePayloadUrl =
    "fleet.dev/fleetctl/exit-code";

absl::StatusCode ToAbslCode(grpc::StatusCode code) {
  // grpc::StatusCode and absl::StatusCode share their numbering (both follow
  // google.rpc.Code).
  return static_cast<absl::StatusCode>(static_cast<int>(code));
}

// " (message)" or nothing when the controller gave no message.
std::string Detail(absl::string_view message) {
  if (message.empty()) return "";
  return absl::StrCat(" (", message, ")");
}

}  // namespace

absl::Status UsageError(absl::string_view message) {
  absl::Status status = absl::InvalidArgumentError(message);
  status.SetPayload(kUsagePayloadUrl, absl::Cord("1"));
  return status;
}

bool IsUsageError(const absl::Status& status) {
  return status.GetPayload(kUsagePayloadUrl).has_value();
}

absl::Status InvalidFlag(absl::string_view flag, absl::string_view value,
                         absl::string_view why) {
  return UsageError(absl::StrCat("invalid ", flag, " \"", value, "\": ", why));
}

absl::Status CheckFlag(absl::string_view flag, absl::string_view value,
                       const absl::Status& valid) {
  if (valid.ok()) return valid;
  return InvalidFlag(flag, value, valid.message());
}

absl::Status WithExitCode(absl::Status status, int exit_code) {
  status.SetPayload(kExitCodePayloadUrl, absl::Cord(absl::StrCat(exit_code)));
  return status;
}

int ExitCodeFor(const absl::Status& status) {
  if (status.ok()) return kExitOk;
  if (absl::optional<absl::Cord> code =
          status.GetPayload(kExitCodePayloadUrl)) {
    int exit_code = kExitFailed;
    if (absl::SimpleAtoi(std::string(*code), &exit_code)) return exit_code;
  }
  return IsUsageError(status) ? kExitUsage : kExitFailed;
}

std::string TransportCause(absl::string_view grpc_message) {
  struct Cause {
    absl::string_view needle;  // lower case
    absl::string_view cause;
  };
  static constexpr Cause kCauses[] = {
      {"connection refused", "connection refused"},
      {"dns resolution failed", "cannot resolve the host name"},
      {"name resolution", "cannot resolve the host name"},
      {"domain name not found", "cannot resolve the host name"},
      {"no route to host", "no route to host"},
      {"network is unreachable", "network unreachable"},
      {"connection reset", "connection reset"},
      {"timed out", "connection timed out"},
      {"socket closed", "the connection was closed"},
      {"connection closed", "the connection was closed"},
      {"goaway", "the connection was closed"},
      {"handshake", "TLS handshake failed"},
      {"http1.x server",
       "an HTTP/1 server answered, not gRPC: is this fleet-controller's "
       "--http-listen port instead of its --listen port?"},
  };
  std::string lower = absl::AsciiStrToLower(grpc_message);
  for (const Cause& c : kCauses) {
    if (absl::StrContains(lower, c.needle)) return std::string(c.cause);
  }
  if (grpc_message.empty()) return "no details";
  return std::string(grpc_message);
}

absl::Status ExplainRpcError(const grpc::Status& status, const RpcCall& call) {
  const absl::StatusCode code = ToAbslCode(status.error_code());
  const std::string& msg = status.error_message();
  for (const RpcHint& hint : call.hints) {
    if (hint.code == status.error_code()) {
      return absl::Status(
          code, absl::StrCat(hint.problem, hint.with_detail ? Detail(msg) : "",
                             "; ", hint.fix));
    }
  }
  const std::string& at = call.controller;
  std::string text;
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
      text = absl::StrCat("cannot reach the controller at ", at, " (",
                          TransportCause(msg),
                          "); is fleet-controller running? set --controller "
                          "or FLEET_CONTROLLER");
      break;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      text = absl::StrCat("the controller at ", at, " did not answer ",
                          call.action, " within ",
                          absl::FormatDuration(call.timeout),
                          "; is it overloaded or stuck? check its log or "
                          "raise --timeout");
      break;
    case grpc::StatusCode::UNIMPLEMENTED:
      text = absl::StrCat("the server at ", at, " cannot ", call.action,
                          Detail(msg),
                          "; is it a fleet-controller of the same version as "
                          "this fleetctl?");
      break;
    case grpc::StatusCode::INVALID_ARGUMENT:
      text = absl::StrCat("the controller rejected the request to ",
                          call.action, ": ", msg);
      break;
    case grpc::StatusCode::FAILED_PRECONDITION:
      text = absl::StrCat("the controller refused to ", call.action, ": ", msg);
      break;
    case grpc::StatusCode::NOT_FOUND:
      text = absl::StrCat("cannot ", call.action,
                          ": not found on the "
                          "controller",
                          Detail(msg));
      break;
    case grpc::StatusCode::ALREADY_EXISTS:
      text = absl::StrCat("cannot ", call.action, ": it already exists",
                          Detail(msg));
      break;
    case grpc::StatusCode::PERMISSION_DENIED:
    case grpc::StatusCode::UNAUTHENTICATED:
      text = absl::StrCat("the controller at ", at, " denied the request to ",
                          call.action, Detail(msg));
      break;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      text = absl::StrCat("the controller at ", at,
                          " ran out of resources "
                          "to ",
                          call.action, Detail(msg),
                          "; check its disk space and log");
      break;
    case grpc::StatusCode::CANCELLED:
      text = absl::StrCat(call.action, " was cancelled", Detail(msg));
      break;
    default:
      text = absl::StrCat("the controller at ", at, " failed to ", call.action,
                          " (", absl::StatusCodeToString(code), ": ", msg,
                          "); check fleet-controller's log");
      break;
  }
  return absl::Status(code, text);
}

}  // namespace fleet::cli
