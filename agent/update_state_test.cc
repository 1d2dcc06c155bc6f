#include "agent/update_state.h"

#include <vector>

#include "gtest/gtest.h"

namespace fleet::agent {
namespace {

using S = UpdateState;

const std::vector<S>& AllStates() {
  static const auto* all = new std::vector<S>{
      S::kReceived, S::kDownloading, S::kDownloaded, S::kVerified,
      S::kStaged,   S::kSwapped,     S::kRestarted,  S::kHealthy,
      S::kFailed,   S::kRolledBack};
  return *all;
}

TEST(UpdateStateTest, NamesRoundTripAndMatchPhases) {
  for (S state : AllStates()) {
    EXPECT_EQ(UpdateStateFromString(ToString(state)), state);
    EXPECT_EQ(v1::UpdatePhase_Name(ToPhase(state)),
              "UPDATE_PHASE_" + std::string(ToString(state)));
  }
  EXPECT_EQ(UpdateStateFromString("healthy"), std::nullopt);
  EXPECT_EQ(UpdateStateFromString(""), std::nullopt);
}

TEST(UpdateStateTest, FinalStatesHaveNoWayOut) {
  for (S from : {S::kHealthy, S::kFailed, S::kRolledBack}) {
    EXPECT_TRUE(IsFinal(from));
    for (S to : AllStates()) {
      EXPECT_FALSE(CheckTransition(from, to).ok())
          << ToString(from) << " -> " << ToString(to);
    }
  }
}

struct Case {
  S from;
  S to;
  bool allowed;
};

TEST(UpdateStateTest, TransitionTable) {
  const Case cases[] = {
      {S::kReceived, S::kDownloading, true},
      {S::kReceived, S::kHealthy, true},
      {S::kReceived, S::kFailed, true},
      {S::kReceived, S::kSwapped, false},
      {S::kDownloading, S::kDownloaded, true},
      {S::kDownloading, S::kVerified, false},
      {S::kDownloaded, S::kVerified, true},
      {S::kVerified, S::kStaged, true},
      {S::kStaged, S::kSwapped, true},
      {S::kStaged, S::kRolledBack, false},  // nothing swapped yet
      {S::kSwapped, S::kRestarted, true},
      {S::kSwapped, S::kRolledBack, true},
      {S::kSwapped, S::kFailed, true},
      {S::kSwapped, S::kHealthy, false},  // never healthy without a restart
      {S::kRestarted, S::kHealthy, true},
      {S::kRestarted, S::kRolledBack, true},
      {S::kRestarted, S::kFailed, false},  // after the swap it is a rollback
      {S::kDownloaded, S::kDownloading, false},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(CheckTransition(c.from, c.to).ok(), c.allowed)
        << ToString(c.from) << " -> " << ToString(c.to);
  }
}

TEST(UpdateStateTest, OnlySwappedAndRestartedMayHoldTheNewExecutable) {
  for (S state : AllStates()) {
    EXPECT_EQ(MayBeSwapped(state),
              state == S::kSwapped || state == S::kRestarted)
        << ToString(state);
  }
}

}  // namespace
}  // namespace fleet::agent
