// The fleet-agent release this source builds.
#ifndef FLEET_AGENT_VERSION_H_
#define FLEET_AGENT_VERSION_H_

namespace fleet::agent {

inline constexpr char kAgentVersion[] = "0.1.0";

}  // namespace fleet::agent

#endif  // FLEET_AGENT_VERSION_H_
