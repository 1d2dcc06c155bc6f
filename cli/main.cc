// fleetctl's entry point; the commands are in cli/command_line.h.
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "cli/command_context.h"
#include "cli/command_line.h"
#include "common/clock.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  const char* controller = std::getenv("FLEET_CONTROLLER");
  fleet::cli::Io io{
      std::cout, std::cerr, isatty(STDERR_FILENO) == 1, fleet::RealClock::Get(),
      fleet::cli::WantsColor(isatty(STDOUT_FILENO) == 1,
                             std::getenv("NO_COLOR"), std::getenv("TERM"))};
  return fleet::cli::RunFleetctl(args, io,
                                 controller == nullptr ? "" : controller);
}
