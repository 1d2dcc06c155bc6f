#include "cli/command_context.h"

#include "cli/errors.h"
#include "gtest/gtest.h"

namespace fleet::cli {
namespace {

TEST(ValidateControllerTargetTest, AcceptsHostPortAndGrpcUris) {
  for (const char* target :
       {"127.0.0.1:7443", "controller.example.com:1", "[::1]:7443",
        "dns:///controller:7443", "unix:/run/fleet.sock", "localhost:65535"}) {
    EXPECT_TRUE(ValidateControllerTarget(target).ok()) << target;
  }
}

TEST(ValidateControllerTargetTest, RejectsMalformedAsUsageErrors) {
  for (const char* target : {"controller", ":7443", "host:", "host:0",
                             "host:65536", "host:http", "::1:7443"}) {
    absl::Status s = ValidateControllerTarget(target);
    EXPECT_TRUE(IsUsageError(s)) << target;
    EXPECT_NE(s.message().find("--controller"), std::string::npos) << target;
  }
}

}  // namespace
}  // namespace fleet::cli
