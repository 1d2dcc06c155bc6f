// What every fleetctl command is given: the global flags, the process's
// streams and clock, and a lazily created AdminService stub.
//
//   Io io{std::cout, std::cerr, isatty(STDERR_FILENO) != 0,
//         RealClock::Get()};
//   CommandContext ctx(GlobalOptions{}, io);
//   grpc::ClientContext rpc;
//   ctx.SetDeadline(rpc);
//   grpc::Status s = ctx.admin().ListReleases(&rpc, request, &response);
//
// Results go to out (tables or JSON, nothing else), so `-o json` output can
// be piped; progress and notes go to err.
#ifndef FLEET_CLI_COMMAND_CONTEXT_H_
#define FLEET_CLI_COMMAND_CONTEXT_H_

#include <grpcpp/client_context.h>

#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "cli/errors.h"
#include "common/clock.h"
#include "common/tls.h"
#include "google/protobuf/message.h"
#include "proto/fleet/v1/admin.grpc.pb.h"
#include "proto/fleet/v1/enrollment.grpc.pb.h"

namespace fleet::cli {

inline constexpr absl::string_view kDefaultController = "127.0.0.1:7443";

enum class OutputFormat { kTable, kJson };

// The flags every command accepts.
struct GlobalOptions {
  std::string controller = std::string(kDefaultController);
  OutputFormat output = OutputFormat::kTable;
  absl::Duration timeout = absl::Seconds(30);  // per unary RPC
  // Mutual TLS to the controller: the fleet CA and an admin certificate
  // (fleetctl pki init). `insecure` talks plaintext instead.
  TlsFiles tls;
  bool insecure = false;
};

// The process around a command. Borrowed; must outlive the command.
struct Io {
  std::ostream& out;  // results only
  std::ostream& err;  // errors, notes, progress
  bool err_is_terminal;
  const Clock& clock;
};

// OK for "host:port", "[v6addr]:port" and gRPC target URIs ("dns:///h:p",
// "unix:/path"); a UsageError naming --controller otherwise.
absl::Status ValidateControllerTarget(absl::string_view target);

class CommandContext {
 public:
  CommandContext(GlobalOptions options, const Io& io);

  const GlobalOptions& options() const { return options_; }
  std::ostream& out() const { return io_.out; }
  std::ostream& err() const { return io_.err; }
  bool err_is_terminal() const { return io_.err_is_terminal; }
  absl::Time Now() const { return io_.clock.Now(); }
  bool json() const { return options_.output == OutputFormat::kJson; }

  // Loads the channel credentials from options(): TLS files, or plaintext
  // when options().insecure. Until it is called (unit tests that build a
  // context by hand) the channel is plaintext. UsageError naming the flag
  // when neither is configured or a file is missing or unreadable.
  absl::Status LoadCredentials();

  // Stubs on one channel to options().controller, created on first use (so
  // commands that fail validation never open a connection).
  v1::AdminService::StubInterface& admin();
  v1::IdentityService::StubInterface& identity();

  // Sets the call's deadline to now + timeout() + `extra`.
  void SetDeadline(grpc::ClientContext& rpc,
                   absl::Duration extra = absl::ZeroDuration()) const;

  // An RpcCall for ExplainRpcError naming this controller and `action`.
  RpcCall Call(std::string action, absl::Duration timeout,
               std::vector<RpcHint> hints = {}) const;
  RpcCall Call(std::string action, std::vector<RpcHint> hints = {}) const {
    return Call(std::move(action), options_.timeout, std::move(hints));
  }

  // Writes `message` to out() as indented JSON with the .proto field names
  // and every field (defaults included), then a newline.
  absl::Status PrintJson(const google::protobuf::Message& message) const;

 private:
  GlobalOptions options_;
  const Io& io_;
  std::shared_ptr<grpc::Channel> Channel();

  std::shared_ptr<grpc::ChannelCredentials> credentials_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::AdminService::StubInterface> admin_;
  std::unique_ptr<v1::IdentityService::StubInterface> identity_;
};

}  // namespace fleet::cli

#endif  // FLEET_CLI_COMMAND_CONTEXT_H_
