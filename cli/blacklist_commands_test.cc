#include "cli/blacklist_commands.h"

#include <sstream>

#include "cli/command_context.h"
#include "cli/errors.h"
#include "cli/testing/fake_admin_service.h"
#include "common/testing/fake_clock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace fleet::cli {
namespace {

using ::fleet::cli::testing::FakeAdminServer;

BlacklistOptions Web120() {
  return {.product = "web", .version = "1.2.0", .reason = "crashes on start"};
}

class BlacklistCommandsTest : public ::testing::Test {
 protected:
  CommandContext Context(OutputFormat format = OutputFormat::kTable) {
    GlobalOptions options;
    options.controller = server_.address();
    options.output = format;
    return CommandContext(options, io_);
  }

  FakeAdminServer server_;
  std::ostringstream out_;
  std::ostringstream err_;
  FakeClock clock_;
  Io io_{out_, err_, false, clock_};
};

TEST_F(BlacklistCommandsTest, AddSendsTheReasonAndListsAbortedRollouts) {
  server_.service().SetAbortedRollouts({"ro-0000000000000001"});
  CommandContext ctx = Context();
  ASSERT_TRUE(BlacklistAdd(Web120(), ctx).ok()) << err_.str();
  EXPECT_EQ(out_.str(),
            "blacklisted web 1.2.0\n"
            "aborted rollout ro-0000000000000001\n");
  ASSERT_TRUE(server_.service().last_add_blacklist().has_value());
  EXPECT_EQ(server_.service().last_add_blacklist()->product(), "web");
  EXPECT_EQ(server_.service().last_add_blacklist()->version(), "1.2.0");
  EXPECT_EQ(server_.service().last_add_blacklist()->reason(),
            "crashes on start");
}

TEST_F(BlacklistCommandsTest, AddJsonIsTheResponse) {
  server_.service().SetStoredAtMs(1700000000000);
  CommandContext ctx = Context(OutputFormat::kJson);
  ASSERT_TRUE(BlacklistAdd(Web120(), ctx).ok()) << err_.str();
  nlohmann::json json = nlohmann::json::parse(out_.str());
  EXPECT_EQ(json["entry"]["version"], "1.2.0");
  EXPECT_EQ(json["entry"]["created_by"], "operator");
}

TEST_F(BlacklistCommandsTest, BadFlagsAreUsageErrorsBeforeAnyRpc) {
  struct Case {
    const char* flag;
    BlacklistOptions options;
  };
  const Case cases[] = {
      {"--product", {.product = "Web", .version = "1.2.0", .reason = "x"}},
      {"--version", {.product = "web", .version = "1.2", .reason = "x"}},
      {"--reason", {.product = "web", .version = "1.2.0", .reason = ""}},
  };
  for (const Case& c : cases) {
    CommandContext ctx = Context();
    absl::Status s = BlacklistAdd(c.options, ctx);
    EXPECT_TRUE(IsUsageError(s)) << c.flag << ": " << s;
    EXPECT_NE(s.message().find(c.flag), std::string::npos) << s.message();
  }
  CommandContext ctx = Context();
  EXPECT_TRUE(IsUsageError(BlacklistRemove({.product = "web"}, ctx)));
  EXPECT_TRUE(IsUsageError(BlacklistList("Web", ctx)));
  EXPECT_EQ(server_.service().calls(), 0);
}

TEST_F(BlacklistCommandsTest, AddOfABlacklistedVersionPointsAtTheList) {
  server_.service().FailWith(grpc::Status(grpc::StatusCode::ALREADY_EXISTS,
                                          "web 1.2.0 is already blacklisted"));
  CommandContext ctx = Context();
  absl::Status s = BlacklistAdd(Web120(), ctx);
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(s.message(),
            "web 1.2.0 is already blacklisted; see `fleetctl blacklist list`");
}

TEST_F(BlacklistCommandsTest, RemoveSaysWhatItRemovedOrThatItWasNotThere) {
  v1::ListBlacklistResponse list;
  v1::BlacklistEntry* e = list.add_entries();
  e->set_product("web");
  e->set_version("1.2.0");
  server_.service().SetBlacklist(list);
  CommandContext ctx = Context();
  ASSERT_TRUE(BlacklistRemove(Web120(), ctx).ok()) << err_.str();
  EXPECT_EQ(out_.str(), "removed web 1.2.0 from the blacklist\n");

  absl::Status s = BlacklistRemove({.product = "web", .version = "9.9.9"}, ctx);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s.message(),
            "web 9.9.9 is not blacklisted; see `fleetctl blacklist list`");
}

TEST_F(BlacklistCommandsTest, ListPrintsOneRowPerVersionOrANote) {
  CommandContext ctx = Context();
  ASSERT_TRUE(BlacklistList("", ctx).ok());
  EXPECT_EQ(out_.str(), "");
  EXPECT_EQ(err_.str(), "no blacklisted versions\n");

  v1::ListBlacklistResponse list;
  v1::BlacklistEntry* e = list.add_entries();
  e->set_product("web");
  e->set_version("1.2.0");
  e->set_reason("crashes on start");
  e->set_created_by("operator");
  e->set_created_unix_ms(absl::ToUnixMillis(clock_.Now() - absl::Hours(3)));
  server_.service().SetBlacklist(list);
  ASSERT_TRUE(BlacklistList("web", ctx).ok());
  EXPECT_EQ(out_.str(),
            "PRODUCT   VERSION   REASON             BY         ADDED\n"
            "web       1.2.0     crashes on start   operator   3h ago\n");
  EXPECT_EQ(server_.service().last_list_blacklist()->product(), "web");
}

}  // namespace
}  // namespace fleet::cli
