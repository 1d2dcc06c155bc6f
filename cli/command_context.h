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
// Results go to out (tables, JSON or YAML, nothing else), so `-o json` and
// `-o yaml` output can be piped; progress and notes go to err. Colour
// (Paint) only when Io::color says the output is a terminal that wants it.
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
#include "nlohmann/json.hpp"
#include "proto/fleet/v1/admin.grpc.pb.h"
#include "proto/fleet/v1/enrollment.grpc.pb.h"

namespace fleet::cli {

inline constexpr absl::string_view kDefaultController = "127.0.0.1:7443";

// -o table|json|yaml. JSON and YAML carry the same document: the .proto
// field names, every field (defaults included), 64-bit integers as strings.
enum class OutputFormat { kTable, kJson, kYaml };

// The terminal colours fleetctl uses: green for healthy states, yellow for
// states that need a look, red for failures, dim for the unimportant.
enum class Color { kGreen, kYellow, kRed, kDim };

// The flags every command accepts.
struct GlobalOptions {
  std::string controller = std::string(kDefaultController);
  OutputFormat output = OutputFormat::kTable;
  absl::Duration timeout = absl::Seconds(30);  // per unary RPC
  // Mutual TLS to the controller: the fleet CA and an admin certificate
  // (fleetctl pki init). `insecure` talks plaintext instead.
  TlsFiles tls;
  bool insecure = false;
  // Whether Paint adds ANSI colours; decided by --color and Io::color.
  bool color = false;
};

// The process around a command. Borrowed; must outlive the command.
struct Io {
  std::ostream& out;  // results only
  std::ostream& err;  // errors, notes, progress
  bool err_is_terminal;
  const Clock& clock;
  // out is a terminal and the user did not turn colour off (NO_COLOR set
  // and non-empty, TERM=dumb): what `--color auto` follows. main.cc
  // decides it; tests leave it false.
  bool color = false;
};

// The "auto" colour decision for a process: `out_is_terminal`, NO_COLOR
// unset or empty (no-color.org), TERM not "dumb". Null means unset.
bool WantsColor(bool out_is_terminal, const char* no_color_env,
                const char* term_env);

// `doc` as YAML (block style, keys in the document's order; strings that
// would read as another type are quoted), ending with a newline.
std::string RenderYaml(const nlohmann::json& doc);

// OK for "host:port", "[v6addr]:port" and gRPC target URIs ("dns:///h:p",
// "unix:/path"); a UsageError naming --controller otherwise.
absl::Status ValidateControllerTarget(absl::string_view target);

class CommandContext {
 public:
  CommandContext(GlobalOptions options, const Io& io);

  const GlobalOptions& options() const { return options_; }
  std::ostream& out() const { return io_.out; }
  std::ostream& err() const { return io_.err; }
  const Io& io() const { return io_; }
  bool err_is_terminal() const { return io_.err_is_terminal; }
  absl::Time Now() const { return io_.clock.Now(); }
  OutputFormat output() const { return options_.output; }
  // -o json or -o yaml: print a document (PrintResult/PrintDocument), not a
  // table.
  bool structured() const { return options_.output != OutputFormat::kTable; }

  // `text` wrapped in the ANSI colour when colours are on, else unchanged.
  // Tables measure cells without the escape codes (DisplayWidth).
  std::string Paint(absl::string_view text, Color color) const;

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

  // Writes `message` to out() in the -o format (JSON indented, or YAML)
  // with the .proto field names and every field (defaults included), then
  // a newline. INTERNAL if the message cannot be rendered.
  absl::Status PrintResult(const google::protobuf::Message& message) const;
  // Writes a document built by the command (not a proto) the same way.
  void PrintDocument(const nlohmann::json& doc) const;
  // One item of a stream (`--watch`): JSON on one line (JSON Lines), or a
  // YAML document starting with "---".
  absl::Status PrintStreamItem(const google::protobuf::Message& message) const;

  // The JSON document PrintResult prints for `message`.
  static absl::StatusOr<nlohmann::json> MessageDocument(
      const google::protobuf::Message& message);

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
