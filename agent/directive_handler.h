// Where the session hands what the controller sends about updates. The
// Updater implements it; the later supervisor/worker split can forward it
// across the process boundary instead.
#ifndef FLEET_AGENT_DIRECTIVE_HANDLER_H_
#define FLEET_AGENT_DIRECTIVE_HANDLER_H_

#include <string>
#include <vector>

#include "proto/fleet/v1/agent.pb.h"

namespace fleet::agent {

class DirectiveHandler {
 public:
  virtual ~DirectiveHandler() = default;
  // Must return at once (called on the stream's reader thread).
  virtual void Submit(v1::UpdateDirective directive) = 0;
  virtual void Cancel(const std::string& directive_id,
                      const std::string& reason) = 0;
  // The controller's complete current blacklist of this agent's products
  // (from Welcome or a BlacklistUpdate), replacing what was known. Directives
  // handled after this returns see it. May do one short journal write; no
  // other waiting.
  virtual void SetBlacklist(std::vector<v1::BlacklistedVersion> entries) = 0;
};

}  // namespace fleet::agent

#endif  // FLEET_AGENT_DIRECTIVE_HANDLER_H_
