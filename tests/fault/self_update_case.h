// One agent self-update, end to end, with real processes: a real
// fleet-controller, a fleet-agent running from its own copy of the real
// binary and managing a real sample program, a new agent release (a real
// fleet-agent with bytes appended, or a bad binary) pushed signed and
// rolled out as product fleet-agent. Optionally a failpoint kills (or
// stops) a role at one step of the self-update; the test restarts the
// supervisor as systemd would. Shared by tests/self_update (good, crashing
// and hanging new agents, the supervisor killed mid-trial) and
// tests/fault (kills at every self-update phase).
#ifndef FLEET_TESTS_FAULT_SELF_UPDATE_CASE_H_
#define FLEET_TESTS_FAULT_SELF_UPDATE_CASE_H_

#include <string>
#include <vector>

#include "proto/fleet/v1/agent.pb.h"

namespace fleet::testing {

enum class NewAgent {
  kGood,     // the real fleet-agent, a different digest
  kCrashes,  // a script that exits 1 at once
  kHangs,    // a script that sleeps, never connecting
};

struct SelfUpdateCase {
  const char* name;
  NewAgent new_agent = NewAgent::kGood;
  // FLEET_AGENT_FAILPOINT ("" for none) and whether it SIGSTOPs the
  // process instead (the test then SIGKILLs the supervisor and restarts
  // it: "the supervisor killed during the trial").
  const char* failpoint = "";
  bool stop_then_kill_supervisor = false;
  bool ends_on_new = true;  // else rolled back
  // The rollback's reported error must contain this ("" unchecked).
  const char* error_contains = "";
  // Every phase the controller must have stored (empty: unchecked).
  std::vector<v1::UpdatePhase> phases;
  // The supervisor keeps its pid and the program is never restarted
  // (false where the supervisor itself is killed).
  bool supervisor_and_program_kept = true;
};

// The phases of a committed self-update.
std::vector<v1::UpdatePhase> AllSelfUpdatePhases();
// Up to STAGED, then ROLLED_BACK (the trial never got to report).
std::vector<v1::UpdatePhase> RolledBackBeforeTrialPhases();
// Up to RESTARTED (the trial worker reported), then ROLLED_BACK.
std::vector<v1::UpdatePhase> RolledBackInTrialPhases();

// Runs the case with gtest assertions (call from a TEST body; returns
// early on a fatal failure).
void RunSelfUpdateCase(const SelfUpdateCase& c);

}  // namespace fleet::testing

#endif  // FLEET_TESTS_FAULT_SELF_UPDATE_CASE_H_
