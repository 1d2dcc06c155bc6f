// fleetctl's identity commands against the real IdentityService (plaintext,
// as a controller started with --insecure) over a real migrated fleet.db.
#include "cli/identity_commands.h"

#include <grpcpp/grpcpp.h>

#include <cstdlib>
#include <memory>
#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "cli/command_context.h"
#include "cli/errors.h"
#include "common/files.h"
#include "common/testing/fake_clock.h"
#include "controller/identity/authorizer.h"
#include "controller/identity/identity_service.h"
#include "controller/identity/identity_store.h"
#include "controller/store/store.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace fleet::cli {
namespace {

class IdentityCommandsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string dir = absl::StrCat(std::getenv("TEST_TMPDIR"), "/id-",
                                         absl::ToUnixNanos(absl::Now()));
    ASSERT_TRUE(MakeDirs(dir).ok());
    ASSERT_TRUE(controller::Store::Open(dir + "/fleet.db").ok());
    identities_ = *controller::IdentityStore::Open(dir + "/fleet.db");
    authorizer_ = std::make_unique<controller::Authorizer>(
        /*insecure=*/true, identities_.get(), clock_);
    service_ = std::make_unique<controller::IdentityServiceImpl>(
        *identities_, *authorizer_, clock_,
        [](const std::string&) { return false; });
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    options_.controller = absl::StrCat("127.0.0.1:", port);
    options_.insecure = true;
  }

  void TearDown() override { server_->Shutdown(); }

  // Runs `command` in a fresh context (as one fleetctl invocation would).
  template <typename F>
  absl::Status Run(F command, OutputFormat format = OutputFormat::kTable) {
    out_.str("");
    err_.str("");
    GlobalOptions options = options_;
    options.output = format;
    CommandContext ctx(options, io_);
    absl::Status loaded = ctx.LoadCredentials();
    if (!loaded.ok()) return loaded;
    return command(ctx);
  }

  FakeClock clock_{absl::Now()};
  std::unique_ptr<controller::IdentityStore> identities_;
  std::unique_ptr<controller::Authorizer> authorizer_;
  std::unique_ptr<controller::IdentityServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  GlobalOptions options_;
  std::ostringstream out_;
  std::ostringstream err_;
  Io io_{out_, err_, false, clock_};
};

TEST_F(IdentityCommandsTest, CreateListAndDeleteATokenWithoutLeakingIt) {
  ASSERT_TRUE(Run([](CommandContext& ctx) {
                return EnrollTokenCreate(
                    {.ttl = "2h", .uses = 3, .labels = {"region=eu"}}, ctx);
              }).ok())
      << err_.str();
  const std::string token = out_.str().substr(0, out_.str().find('\n'));
  EXPECT_TRUE(absl::StartsWith(token, "fleet-enroll-")) << out_.str();
  EXPECT_TRUE(absl::StrContains(err_.str(), "--enroll-token " + token));
  EXPECT_TRUE(absl::StrContains(err_.str(), "expires in 2h")) << err_.str();

  ASSERT_TRUE(
      Run([](CommandContext& ctx) { return EnrollTokenList(ctx); }).ok());
  EXPECT_TRUE(absl::StrContains(out_.str(), "region=eu")) << out_.str();
  EXPECT_FALSE(absl::StrContains(out_.str(), token));

  ASSERT_TRUE(Run([](CommandContext& ctx) { return EnrollTokenList(ctx); },
                  OutputFormat::kJson)
                  .ok());
  nlohmann::json listed = nlohmann::json::parse(out_.str());
  ASSERT_EQ(listed["tokens"].size(), 1u);
  const std::string id = listed["tokens"][0]["token_id"];
  EXPECT_EQ(listed["tokens"][0]["uses_left"], "3");  // int64 as JSON string

  ASSERT_TRUE(Run([&](CommandContext& ctx) {
                return EnrollTokenDelete(id, ctx);
              }).ok());
  absl::Status again =
      Run([&](CommandContext& ctx) { return EnrollTokenDelete(id, ctx); });
  EXPECT_EQ(again.code(), absl::StatusCode::kNotFound) << again;
  EXPECT_TRUE(absl::StrContains(again.message(), "enroll-token list")) << again;
}

TEST_F(IdentityCommandsTest, RevokeAndAuditTrail) {
  ASSERT_TRUE(Run([](CommandContext& ctx) {
                return AgentsRevoke("ag-0123456789abcdef", "stolen", ctx);
              }).ok());
  EXPECT_TRUE(
      absl::StrContains(out_.str(), "revoked agent ag-0123456789abcdef"));
  EXPECT_TRUE(*identities_->IsRevoked("ag-0123456789abcdef"));

  ASSERT_TRUE(Run([](CommandContext& ctx) { return AuditList(10, ctx); }).ok());
  EXPECT_TRUE(absl::StrContains(out_.str(), "RevokeAgent")) << out_.str();
  EXPECT_TRUE(absl::StrContains(out_.str(), "stolen")) << out_.str();
}

TEST_F(IdentityCommandsTest, BadFlagsAreUsageErrorsBeforeAnyCall) {
  auto usage = [&](auto command) { return IsUsageError(Run(command)); };
  EXPECT_TRUE(usage([](CommandContext& ctx) {
    return EnrollTokenCreate({.ttl = "31d"}, ctx);
  }));
  EXPECT_TRUE(usage(
      [](CommandContext& ctx) { return EnrollTokenCreate({.uses = 0}, ctx); }));
  EXPECT_TRUE(usage([](CommandContext& ctx) {
    return EnrollTokenCreate({.labels = {"novalue"}}, ctx);
  }));
  EXPECT_TRUE(usage(
      [](CommandContext& ctx) { return AgentsRevoke("../etc", "", ctx); }));
  EXPECT_TRUE(usage([](CommandContext& ctx) { return AuditList(0, ctx); }));
  EXPECT_TRUE(identities_->ListAudit(10)->empty());
}

TEST_F(IdentityCommandsTest, NoCredentialsIsAUsageErrorNamingTheFlags) {
  options_.insecure = false;
  absl::Status status =
      Run([](CommandContext& ctx) { return EnrollTokenList(ctx); });
  EXPECT_TRUE(IsUsageError(status));
  EXPECT_TRUE(absl::StrContains(status.message(), "--pki")) << status;
}

}  // namespace
}  // namespace fleet::cli
