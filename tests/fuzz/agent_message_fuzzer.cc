// What an agent (or anything that reached the port) sends up its Connect
// stream: the controller validates every Hello and UpdateEvent before it
// touches the store.
#include <string>
#include <vector>

#include "controller/agent_hub.h"
#include "proto/fleet/v1/agent.pb.h"
#include "tests/fuzz/fuzz_target.h"

namespace fleet::fuzz {

std::vector<std::string> FuzzSeeds() {
  v1::AgentMessage hello;
  v1::Hello* h = hello.mutable_hello();
  h->set_agent_id("agent-0001");
  h->set_agent_version("0.1.0");
  h->set_platform("linux/amd64");
  h->set_hostname("host-1.example.com");
  (*h->mutable_labels())["region"] = "eu";
  v1::InstalledProduct* installed = h->add_installed();
  installed->set_product("app");
  installed->set_version("1.0.0");
  installed->set_sha256(std::string(32, '\x11'));
  installed->add_previous_versions("0.9.0");

  v1::AgentMessage event;
  v1::UpdateEvent* e = event.mutable_event();
  e->set_seq(7);
  e->set_directive_id("d-0001");
  e->set_rollout_id("r-0001");
  e->set_product("app");
  e->set_from_version("1.0.0");
  e->set_to_version("1.1.0");
  e->set_phase(v1::UPDATE_PHASE_ROLLED_BACK);
  e->set_error("health window: exited with status 1");
  e->set_error_class("health");
  e->set_time_unix_ms(1700000000000);
  return {hello.SerializeAsString(), event.SerializeAsString()};
}

}  // namespace fleet::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fleet::v1::AgentMessage message;
  if (!message.ParseFromArray(data, static_cast<int>(size))) return 0;
  switch (message.body_case()) {
    case fleet::v1::AgentMessage::kHello: {
      absl::Status status = fleet::controller::ValidateHello(message.hello());
      if (status.ok()) {
        // Whatever passes names no path outside the state directories.
        FUZZ_CHECK(message.hello().agent_id().find('/') == std::string::npos);
        for (const auto& installed : message.hello().installed()) {
          FUZZ_CHECK(installed.product().find('/') == std::string::npos);
          FUZZ_CHECK(installed.product() != ".." && installed.product() != ".");
        }
      } else {
        FUZZ_CHECK(status.code() == absl::StatusCode::kInvalidArgument);
      }
      break;
    }
    case fleet::v1::AgentMessage::kEvent: {
      absl::Status status = fleet::controller::ValidateEvent(message.event());
      if (status.ok()) {
        FUZZ_CHECK(message.event().seq() > 0);
        FUZZ_CHECK(message.event().product().find('/') == std::string::npos);
      } else {
        FUZZ_CHECK(status.code() == absl::StatusCode::kInvalidArgument);
      }
      break;
    }
    default:
      break;
  }
  return 0;
}
