#include "cli/errors.h"

#include "gtest/gtest.h"

namespace fleet::cli {
namespace {

RpcCall ListCall() {
  return RpcCall{"127.0.0.1:7443", "list releases", absl::Seconds(30), {}};
}

TEST(ExitCodeTest, UsageErrorsExit2OtherFailuresExit1) {
  EXPECT_EQ(ExitCodeFor(absl::OkStatus()), kExitOk);
  EXPECT_EQ(ExitCodeFor(UsageError("bad --version")), kExitUsage);
  // Same code, but not from the command line: the operation failed.
  EXPECT_EQ(ExitCodeFor(absl::InvalidArgumentError("size mismatch")),
            kExitFailed);
  EXPECT_EQ(ExitCodeFor(absl::NotFoundError("no file")), kExitFailed);
  EXPECT_TRUE(IsUsageError(UsageError("x")));
  EXPECT_EQ(UsageError("x").code(), absl::StatusCode::kInvalidArgument);
}

TEST(CheckFlagTest, NamesFlagValueAndReason) {
  EXPECT_TRUE(CheckFlag("--version", "1.0.0", absl::OkStatus()).ok());
  absl::Status s =
      CheckFlag("--version", "1.0",
                absl::InvalidArgumentError("needs MAJOR.MINOR.PATCH"));
  EXPECT_TRUE(IsUsageError(s));
  EXPECT_EQ(s.message(), "invalid --version \"1.0\": needs MAJOR.MINOR.PATCH");
}

TEST(ExplainRpcErrorTest, UnreachableControllerNamesAddressCauseAndFix) {
  grpc::Status refused(grpc::StatusCode::UNAVAILABLE,
                       "failed to connect to all addresses; last error: "
                       "UNKNOWN: ipv4:127.0.0.1:7443: Failed to connect to "
                       "remote host: Connection refused");
  absl::Status s = ExplainRpcError(refused, ListCall());
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(s.message(),
            "cannot reach the controller at 127.0.0.1:7443 (connection "
            "refused); is fleet-controller running? set --controller or "
            "FLEET_CONTROLLER");
}

TEST(ExplainRpcErrorTest, MatchingHintWinsAndKeepsControllerMessage) {
  RpcCall call = ListCall();
  call.hints.push_back({grpc::StatusCode::PERMISSION_DENIED,
                        "the controller does not trust key 0011",
                        "start fleet-controller with --trust-key k.pub"});
  absl::Status s = ExplainRpcError(
      grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "0 of 1 valid"), call);
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(s.message(),
            "the controller does not trust key 0011 (0 of 1 valid); start "
            "fleet-controller with --trust-key k.pub");
  call.hints.push_back({grpc::StatusCode::ALREADY_EXISTS, "it exists",
                        "bump the version", /*with_detail=*/false});
  EXPECT_EQ(ExplainRpcError(grpc::Status(grpc::StatusCode::ALREADY_EXISTS,
                                         "release exists"),
                            call)
                .message(),
            "it exists; bump the version");
  // A hint for another code does not apply.
  absl::Status other = ExplainRpcError(
      grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "digest mismatch"),
      call);
  EXPECT_EQ(other.message(),
            "the controller rejected the request to list releases: digest "
            "mismatch");
}

TEST(ExplainRpcErrorTest, DeadlineNamesTheTimeoutAndTheFlag) {
  RpcCall call = ListCall();
  call.timeout = absl::Milliseconds(200);
  absl::Status s = ExplainRpcError(
      grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "Deadline Exceeded"),
      call);
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(s.message().find("did not answer list releases within 200ms"),
            std::string::npos)
      << s.message();
  EXPECT_NE(s.message().find("--timeout"), std::string::npos);
}

TEST(ExplainRpcErrorTest, EveryCodeGivesOneNonEmptyLine) {
  for (int code = 1; code <= 16; ++code) {
    absl::Status s = ExplainRpcError(
        grpc::Status(static_cast<grpc::StatusCode>(code), "detail"),
        ListCall());
    EXPECT_EQ(static_cast<int>(s.code()), code);
    EXPECT_FALSE(s.message().empty()) << code;
    EXPECT_EQ(s.message().find('\n'), absl::string_view::npos) << code;
  }
}

TEST(TransportCauseTest, ShortensKnownCauses) {
  EXPECT_EQ(TransportCause("... Connection refused"), "connection refused");
  EXPECT_EQ(TransportCause("DNS resolution failed for nohost:7443: C-ares "
                           "status is not ARES_SUCCESS"),
            "cannot resolve the host name");
  EXPECT_EQ(TransportCause("failed to connect to all addresses; last error: "
                           "INTERNAL: ipv4:127.0.0.1:8080: Trying to connect "
                           "an http1.x server"),
            "an HTTP/1 server answered, not gRPC: is this fleet-controller's "
            "--http-listen port instead of its --listen port?");
  EXPECT_EQ(TransportCause(""), "no details");
  EXPECT_EQ(TransportCause("something new"), "something new");
}

}  // namespace
}  // namespace fleet::cli
