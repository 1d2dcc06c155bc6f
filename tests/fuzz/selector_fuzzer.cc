// Rollout selectors as an operator sends them in CreateRollout, matched
// against agents as they report themselves.
// The input is a Selector message; the agent is built from the same bytes
// read as an Agent message (fields overlap by number: platform, labels).
#include <string>
#include <vector>

#include "controller/rollout.h"
#include "proto/fleet/v1/admin.pb.h"
#include "tests/fuzz/fuzz_target.h"

namespace fleet::fuzz {

std::vector<std::string> FuzzSeeds() {
  v1::Selector selector;
  selector.set_platform("linux/amd64");
  (*selector.mutable_labels())["region"] = "eu";
  (*selector.mutable_labels())["channel"] = "beta";
  v1::Selector empty;
  return {selector.SerializeAsString(), empty.SerializeAsString()};
}

}  // namespace fleet::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fleet::v1::Selector selector;
  if (!selector.ParseFromArray(data, static_cast<int>(size))) return 0;
  if (!fleet::controller::ValidateSelector(selector).ok()) return 0;

  // A valid selector overlaps itself and the empty selector, symmetrically.
  fleet::v1::Selector everything;
  FUZZ_CHECK(fleet::controller::SelectorsOverlap(selector, selector));
  FUZZ_CHECK(fleet::controller::SelectorsOverlap(selector, everything));
  FUZZ_CHECK(fleet::controller::SelectorsOverlap(everything, selector));

  // An agent carrying exactly the selector's platform and labels matches.
  fleet::v1::Agent agent;
  agent.set_platform(selector.platform().empty() ? "linux/amd64"
                                                 : selector.platform());
  for (const auto& [key, value] : selector.labels()) {
    (*agent.mutable_labels())[key] = value;
  }
  FUZZ_CHECK(fleet::controller::SelectorMatches(selector, agent));
  FUZZ_CHECK(fleet::controller::SelectorMatches(everything, agent));
  return 0;
}
