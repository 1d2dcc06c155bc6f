// Mutual TLS end to end with the real binaries: a controller started with
// `--pki` from `fleetctl pki init`, agents that enroll with one-time tokens,
// and everything that must be refused — no certificate, a reused token, a
// certificate from another CA, a revoked agent, an agent certificate used
// as an operator's — refused.
#include <sys/stat.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/files.h"
#include "common/pki.h"
#include "common/testing/test_certificates.h"
#include "common/tls.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/process.h"

namespace fleet::testing {
namespace {

class MtlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeTempDir("mtls");
    port_ = PickFreePort();
    RunResult pki = Fleetctl({"pki", "init", "--out", dir_ + "/pki", "--host",
                              "127.0.0.1", "--admin", "alice"},
                             /*with_credentials=*/false);
    ASSERT_EQ(pki.exit_code, 0) << pki.err;
    RunResult keys = Fleetctl({"keys", "generate", "--out", dir_ + "/keys"},
                              /*with_credentials=*/false);
    ASSERT_EQ(keys.exit_code, 0) << keys.err;
    StartController();
  }

  // (Re)starts the controller on the same port and data dir; `extra` flags
  // are appended. A running one is SIGKILLed first (no goodbye to agents).
  void StartController(std::vector<std::string> extra = {}) {
    if (controller_ != nullptr) {
      controller_->Kill();
      old_controller_logs_ += controller_->ReadLog();
    }
    std::vector<std::string> argv = {Runfile("controller/fleet-controller"),
                                     "--data-dir",
                                     dir_ + "/data",
                                     "--listen",
                                     absl::StrCat("127.0.0.1:", port_),
                                     "--http-listen",
                                     "",
                                     "--pki",
                                     dir_ + "/pki",
                                     "--trust-key",
                                     dir_ + "/keys/release.pub",
                                     "--heartbeat-seconds",
                                     "1"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    controller_ = std::make_unique<Subprocess>(
        argv, absl::StrCat(dir_, "/controller", ++controller_starts_, ".log"));
    ASSERT_TRUE(controller_->Start().ok());
    ASSERT_TRUE(WaitFor(
        [&] { return absl::StrContains(controller_->ReadLog(), "listening"); },
        absl::Seconds(20)))
        << controller_->ReadLog();
  }

  void TearDown() override {
    for (auto& agent : agents_) agent->Stop(absl::Seconds(5));
    if (controller_ != nullptr) controller_->Stop(absl::Seconds(5));
    if (HasFailure()) {
      if (controller_ != nullptr) {
        std::cerr << "---- controller log\n"
                  << old_controller_logs_ << controller_->ReadLog();
      }
      for (auto& agent : agents_) {
        std::cerr << "---- " << agent->log_path() << "\n" << agent->ReadLog();
      }
    }
  }

  RunResult Fleetctl(std::vector<std::string> args,
                     bool with_credentials = true) {
    std::vector<std::string> argv = {Runfile("cli/fleetctl"), "--controller",
                                     absl::StrCat("127.0.0.1:", port_)};
    if (with_credentials) {
      argv.push_back("--pki");
      argv.push_back(dir_ + "/pki");
    }
    argv.insert(argv.end(), args.begin(), args.end());
    return testing::Run(argv);
  }

  std::string NewToken(int uses = 1, std::vector<std::string> labels = {}) {
    std::vector<std::string> args = {"enroll-token", "create", "--uses",
                                     std::to_string(uses)};
    for (const std::string& label : labels) {
      args.push_back("--label");
      args.push_back(label);
    }
    RunResult created = Fleetctl(args);
    EXPECT_EQ(created.exit_code, 0) << created.err;
    return std::string(absl::StripAsciiWhitespace(created.out));
  }

  // Starts an agent managing DIR/<name>/bin/app with `extra` flags.
  Subprocess* StartAgent(const std::string& name,
                         std::vector<std::string> extra) {
    std::vector<std::string> argv = {Runfile("agent/fleet-agent"),
                                     "--controller",
                                     absl::StrCat("127.0.0.1:", port_),
                                     "--state-dir",
                                     dir_ + "/" + name + "/state",
                                     "--product",
                                     "app",
                                     "--exec",
                                     dir_ + "/" + name + "/bin/app",
                                     "--trust-key",
                                     dir_ + "/keys/release.pub",
                                     "--health-seconds",
                                     "1"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    agents_.push_back(
        std::make_unique<Subprocess>(argv, dir_ + "/" + name + ".log"));
    EXPECT_TRUE(agents_.back()->Start().ok());
    return agents_.back().get();
  }

  // The agents the controller lists, by id: connected or not.
  std::map<std::string, bool> Agents() {
    RunResult listed = Fleetctl({"agents", "list", "-o", "json"});
    std::map<std::string, bool> agents;
    if (listed.exit_code != 0) return agents;
    nlohmann::json json = nlohmann::json::parse(listed.out, nullptr, false);
    for (const auto& agent : json["agents"]) {
      agents[agent["agent_id"].get<std::string>()] =
          agent.value("connected", false);
    }
    return agents;
  }

  // The id of a connected agent, once the controller lists one (up to
  // 30 s); "" if none connected.
  std::string WaitForConnectedAgent() {
    std::string agent_id;
    WaitFor(
        [&] {
          for (const auto& [id, connected] : Agents()) {
            if (connected) agent_id = id;
          }
          return !agent_id.empty();
        },
        absl::Seconds(30));
    return agent_id;
  }

  // Every listed agent's labels, by id.
  std::map<std::string, std::map<std::string, std::string>> AgentLabels() {
    RunResult listed = Fleetctl({"agents", "list", "-o", "json"});
    std::map<std::string, std::map<std::string, std::string>> labels;
    if (listed.exit_code != 0) return labels;
    nlohmann::json json = nlohmann::json::parse(listed.out, nullptr, false);
    for (const auto& agent : json["agents"]) {
      auto& of = labels[agent["agent_id"].get<std::string>()];
      if (!agent.contains("labels")) continue;
      for (const auto& [key, value] : agent["labels"].items()) {
        of[key] = value.get<std::string>();
      }
    }
    return labels;
  }

  // The agents a rollout of app 1.0.0 to `selector` targets.
  std::set<std::string> Targets(const std::string& selector) {
    RunResult created =
        Fleetctl({"-o", "json", "rollout", "create", "--product", "app",
                  "--version", "1.0.0", "--selector", selector});
    EXPECT_EQ(created.exit_code, 0) << created.err;
    nlohmann::json rollout = nlohmann::json::parse(created.out, nullptr, false);
    const std::string id = rollout.value("rollout_id", "");
    std::set<std::string> targets;
    WaitFor(
        [&] {
          RunResult status = Fleetctl({"-o", "json", "rollout", "status", id});
          nlohmann::json json =
              nlohmann::json::parse(status.out, nullptr, false);
          if (json.is_discarded() || !json.contains("targets")) return false;
          for (const auto& target : json["targets"]) {
            targets.insert(target["agent_id"].get<std::string>());
          }
          return !targets.empty();
        },
        absl::Seconds(10));
    RunResult aborted = Fleetctl({"rollout", "abort", id});
    EXPECT_EQ(aborted.exit_code, 0) << aborted.err;
    return targets;
  }

  // Lines of `log` containing `text`.
  static int Count(const std::string& log, const std::string& text) {
    int n = 0;
    for (size_t at = log.find(text); at != std::string::npos;
         at = log.find(text, at + text.size())) {
      ++n;
    }
    return n;
  }

  std::string dir_;
  int port_ = 0;
  int controller_starts_ = 0;
  std::string old_controller_logs_;
  std::unique_ptr<Subprocess> controller_;
  std::vector<std::unique_ptr<Subprocess>> agents_;
};

TEST_F(MtlsTest, EnrolledAgentConnectsAndEverythingElseIsRefused) {
  const std::string ca = dir_ + "/pki/ca.crt";
  const std::string token = NewToken();
  ASSERT_TRUE(absl::StartsWith(token, "fleet-enroll-")) << token;

  // Enrolls, stores a private key, and connects as the certificate's agent.
  StartAgent("a1", {"--tls-ca", ca, "--enroll-token", token});
  const std::string agent_id = WaitForConnectedAgent();
  ASSERT_FALSE(agent_id.empty()) << "no agent connected within 30 s";
  EXPECT_TRUE(absl::StartsWith(agent_id, "ag-")) << agent_id;
  struct stat st;
  ASSERT_EQ(stat((dir_ + "/a1/state/identity/agent.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600);

  // The token was single-use.
  Subprocess* reuse =
      StartAgent("a2", {"--tls-ca", ca, "--enroll-token", token});
  ASSERT_TRUE(reuse->Wait(absl::Seconds(30)).has_value());
  EXPECT_TRUE(absl::StrContains(reuse->ReadLog(), "UNAUTHENTICATED"))
      << reuse->ReadLog();

  // No token and no identity: the agent says what is missing and exits.
  Subprocess* bare = StartAgent("a3", {"--tls-ca", ca});
  ASSERT_TRUE(bare->Wait(absl::Seconds(30)).has_value());
  EXPECT_TRUE(absl::StrContains(bare->ReadLog(), "enrollment token"))
      << bare->ReadLog();

  // A certificate from another CA never gets a stream.
  ASSERT_EQ(
      Fleetctl({"pki", "init", "--out", dir_ + "/rogue"}, false).exit_code, 0);
  ASSERT_EQ(Fleetctl({"pki", "issue", "--ca", dir_ + "/rogue", "--role",
                      "agent", "--name", "ag-00000000000000aa", "--out",
                      dir_ + "/rogue-agent"},
                     false)
                .exit_code,
            0);
  const std::string rogue_identity = dir_ + "/a4/state/identity";
  ASSERT_TRUE(MakeDirs(rogue_identity, 0700).ok());
  ASSERT_TRUE(WriteFileAtomically(
                  rogue_identity + "/agent.crt",
                  *ReadFile(dir_ + "/rogue-agent/ag-00000000000000aa.crt"))
                  .ok());
  ASSERT_TRUE(WriteFileAtomically(
                  rogue_identity + "/agent.key",
                  *ReadFile(dir_ + "/rogue-agent/ag-00000000000000aa.key"),
                  0600)
                  .ok());
  // It trusts our CA for the server, but its own certificate is the rogue's.
  ASSERT_TRUE(
      WriteFileAtomically(rogue_identity + "/ca.crt", *ReadFile(ca)).ok());
  Subprocess* rogue = StartAgent("a4", {"--tls-ca", ca});
  // Its identity does not check out against the CA it holds: refused
  // locally before any connection, with the fix in the message.
  ASSERT_TRUE(rogue->Wait(absl::Seconds(30)).has_value());
  EXPECT_TRUE(absl::StrContains(rogue->ReadLog(), "enroll again"))
      << rogue->ReadLog();
  EXPECT_EQ(Agents().count("ag-00000000000000aa"), 0u);

  // An agent's certificate is not an operator's.
  RunResult as_agent = testing::Run(
      {Runfile("cli/fleetctl"), "--controller",
       absl::StrCat("127.0.0.1:", port_), "--tls-ca", ca, "--tls-cert",
       dir_ + "/a1/state/identity/agent.crt", "--tls-key",
       dir_ + "/a1/state/identity/agent.key", "agents", "list"});
  EXPECT_NE(as_agent.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(as_agent.err, "admin certificate"))
      << as_agent.err;

  // No credentials at all: a usage error naming the flags.
  RunResult bare_cli = Fleetctl({"agents", "list"}, false);
  EXPECT_EQ(bare_cli.exit_code, 2) << bare_cli.err;
  EXPECT_TRUE(absl::StrContains(bare_cli.err, "--pki")) << bare_cli.err;

  // Revoked: the stream is cut at once and reconnects are refused.
  RunResult revoked =
      Fleetctl({"agents", "revoke", agent_id, "--reason", "test"});
  ASSERT_EQ(revoked.exit_code, 0) << revoked.err;
  EXPECT_TRUE(absl::StrContains(revoked.out, "stream was cut")) << revoked.out;
  ASSERT_TRUE(WaitFor([&] { return !Agents()[agent_id]; }, absl::Seconds(10)));
  absl::SleepFor(absl::Seconds(3));  // several reconnect attempts
  EXPECT_FALSE(Agents()[agent_id]);
  EXPECT_TRUE(absl::StrContains(controller_->ReadLog(), "revoked"));

  // Every change is in the audit log under the operator's name.
  RunResult audit = Fleetctl({"audit", "list", "-o", "json"});
  ASSERT_EQ(audit.exit_code, 0) << audit.err;
  EXPECT_TRUE(absl::StrContains(audit.out, "admin:alice"));
  EXPECT_TRUE(absl::StrContains(audit.out, "RevokeAgent"));
  EXPECT_TRUE(absl::StrContains(audit.out, "Enroll"));
}

// An agent whose certificate (from the right CA) has expired is refused at
// the handshake; it keeps running, says why and what fixes it. The same CA
// issuing a current certificate the same way connects, so the expiry is
// what the controller refuses.
TEST_F(MtlsTest, ExpiredAgentCertificateIsRefused) {
  const std::string ca_file = dir_ + "/pki/ca.crt";
  absl::StatusOr<pki::CertificateAuthority> ca =
      pki::CertificateAuthority::Load(*ReadFile(ca_file),
                                      *ReadFile(dir_ + "/pki/ca.key"));
  ASSERT_TRUE(ca.ok()) << ca.status();
  // The expired one was issued now for one second (the CA backdates by an
  // hour, and cannot issue before its own start), then waited out.
  const absl::Time now = absl::Now();
  struct Case {
    std::string name;
    std::string agent_id;
    absl::Duration validity;
  };
  const Case expired{"expired", "ag-00000000000000e1", absl::Seconds(1)};
  const Case current{"current", "ag-00000000000000c1", absl::Hours(24)};
  std::map<std::string, Subprocess*> agents;
  for (const Case& c : {expired, current}) {
    const std::string identity = dir_ + "/" + c.name + "/state/identity";
    ASSERT_TRUE(MakeDirs(identity, 0700).ok());
    IssueTlsFiles(*ca, ca_file, identity, "agent",
                  {.common_name = c.agent_id,
                   .role = pki::CertificateRole::kAgent,
                   .validity = c.validity},
                  now);
    ASSERT_FALSE(HasFailure());
    ASSERT_TRUE(
        WriteFileAtomically(identity + "/ca.crt", *ReadFile(ca_file)).ok());
  }
  absl::SleepFor(now + absl::Seconds(2) - absl::Now());
  for (const Case& c : {expired, current}) {
    agents[c.name] = StartAgent(c.name, {"--tls-ca", ca_file});
  }

  ASSERT_TRUE(
      WaitFor([&] { return Agents()[current.agent_id]; }, absl::Seconds(30)));
  absl::SleepFor(absl::Seconds(3));  // several connection attempts
  EXPECT_EQ(Agents().count(expired.agent_id), 0u);
  // Still running (its program with it), and the log names the fix.
  EXPECT_FALSE(agents["expired"]->Wait(absl::ZeroDuration()).has_value());
  const std::string log = agents["expired"]->ReadLog();
  EXPECT_TRUE(absl::StrContains(log, "agent certificate expired")) << log;
  EXPECT_TRUE(absl::StrContains(log, "--enroll-token")) << log;
}

// Labels from the enrollment token win over what the agent reports; keys
// the token did not set stay the agent's, and selectors see the result.
TEST_F(MtlsTest, EnrolledLabelsWinOverReportedOnes) {
  const std::string ca = dir_ + "/pki/ca.crt";
  StartAgent("canary",
             {"--tls-ca", ca, "--enroll-token", NewToken(1, {"ring=canary"}),
              "--label", "ring=prod", "--label", "zone=a"});
  StartAgent("plain", {"--tls-ca", ca, "--enroll-token", NewToken(), "--label",
                       "ring=prod"});
  std::string canary, plain;
  std::map<std::string, std::map<std::string, std::string>> labels;
  ASSERT_TRUE(WaitFor(
      [&] {
        std::map<std::string, bool> agents = Agents();
        labels = AgentLabels();
        for (const auto& [id, of] : labels) {
          if (!agents[id]) continue;
          (of.count("zone") ? canary : plain) = id;
        }
        return !canary.empty() && !plain.empty();
      },
      absl::Seconds(30)));
  EXPECT_EQ(labels[canary], (std::map<std::string, std::string>{
                                {"ring", "canary"}, {"zone", "a"}}));
  EXPECT_EQ(labels[plain],
            (std::map<std::string, std::string>{{"ring", "prod"}}));
  // The table shows the effective labels too.
  RunResult table = Fleetctl({"agents", "list"});
  EXPECT_TRUE(absl::StrContains(table.out, "ring=canary")) << table.out;

  // The contradiction is logged and audited, once.
  ASSERT_TRUE(WaitFor(
      [&] {
        return absl::StrContains(Fleetctl({"audit", "list", "-o", "json"}).out,
                                 "LabelOverridden");
      },
      absl::Seconds(10)));
  EXPECT_TRUE(absl::StrContains(controller_->ReadLog(),
                                "contradicts its enrolled one"));

  const std::string artifact = dir_ + "/app-1.0.0";
  ASSERT_TRUE(
      WriteFileAtomically(artifact, "#!/bin/sh\nsleep 1000\n", 0755).ok());
  RunResult pushed =
      Fleetctl({"release", "push", "--product", "app", "--version", "1.0.0",
                "--file", artifact, "--key", dir_ + "/keys/release.key"});
  ASSERT_EQ(pushed.exit_code, 0) << pushed.err;
  EXPECT_EQ(Targets("ring=prod"), std::set<std::string>{plain});
  EXPECT_EQ(Targets("ring=canary"), std::set<std::string>{canary});
  EXPECT_EQ(Targets("zone=a"), std::set<std::string>{canary});
}

// With certificates of a few seconds, the agent renews again and again
// without a restart and keeps its stream and its id; after its first
// certificate has expired, a controller restart shows the reconnect uses
// the renewed one. A revoked agent's renewal is refused.
TEST_F(MtlsTest, AgentRenewsItsCertificateWithoutRestarting) {
  StartController({"--agent-cert-validity", "6s"});
  const std::string ca = dir_ + "/pki/ca.crt";
  Subprocess* agent =
      StartAgent("a1", {"--tls-ca", ca, "--enroll-token",
                        NewToken(1, {"ring=canary"}), "--label", "ring=prod"});
  const std::string agent_id = WaitForConnectedAgent();
  ASSERT_FALSE(agent_id.empty()) << "no agent connected within 30 s";
  const std::string cert_file = dir_ + "/a1/state/identity/agent.crt";
  absl::StatusOr<pki::CertificateInfo> first =
      pki::ParseCertificate(*ReadFile(cert_file));
  ASSERT_TRUE(first.ok()) << first.status();

  // Two renewals (one every ~3.5 s), and the first certificate expires.
  ASSERT_TRUE(WaitFor(
      [&] {
        return Count(agent->ReadLog(), "agent certificate renewed") >= 2 &&
               absl::Now() > first->not_after + absl::Seconds(1);
      },
      absl::Seconds(30)))
      << agent->ReadLog();
  absl::StatusOr<pki::CertificateInfo> renewed =
      pki::ParseCertificate(*ReadFile(cert_file));
  ASSERT_TRUE(renewed.ok()) << renewed.status();
  EXPECT_EQ(renewed->common_name, agent_id);
  EXPECT_EQ(renewed->labels.at("ring"), "canary");
  EXPECT_GT(renewed->not_after, first->not_after);
  EXPECT_NE(renewed->serial_hex, first->serial_hex);
  // Same process, same worker, one stream all along.
  EXPECT_FALSE(agent->Wait(absl::ZeroDuration()).has_value());
  std::string log = agent->ReadLog();
  EXPECT_EQ(Count(log, "fleet-agent worker starting"), 1) << log;
  EXPECT_EQ(Count(log, "connected to controller"), 1) << log;
  EXPECT_TRUE(Agents()[agent_id]);
  EXPECT_EQ(AgentLabels()[agent_id].at("ring"), "canary");

  // The first certificate has expired: reconnecting works only with a
  // renewed one.
  StartController({"--agent-cert-validity", "6s"});
  ASSERT_TRUE(WaitFor([&] { return Agents()[agent_id]; }, absl::Seconds(30)))
      << agent->ReadLog();
  log = agent->ReadLog();
  EXPECT_EQ(Count(log, "fleet-agent worker starting"), 1) << log;
  EXPECT_GE(Count(log, "connected to controller"), 2) << log;
  EXPECT_FALSE(agent->Wait(absl::ZeroDuration()).has_value());

  // Revoked: its next renewal is refused (and it keeps running).
  ASSERT_EQ(
      Fleetctl({"agents", "revoke", agent_id, "--reason", "test"}).exit_code,
      0);
  ASSERT_TRUE(WaitFor(
      [&] {
        return absl::StrContains(agent->ReadLog(), "renewal failed") &&
               absl::StrContains(agent->ReadLog(), "is revoked");
      },
      absl::Seconds(20)))
      << agent->ReadLog();
  EXPECT_FALSE(agent->Wait(absl::ZeroDuration()).has_value());
}

}  // namespace
}  // namespace fleet::testing
