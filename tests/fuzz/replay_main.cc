// Runs a fuzz target (fuzz_target.h) without libFuzzer: over its seeds,
// every file under the corpus directories given as arguments, and a
// fixed-seed batch of mutations of them. CI runs this as a test, so every
// crash once found and checked into the corpus stays fixed.
//
//   replay DIR...                 replay and mutate; exit 1 on a failure
//   replay --write-seeds DIR      write FuzzSeeds() into DIR and exit
//
// FLEET_FUZZ_SEED and FLEET_FUZZ_MUTATIONS override the mutation seed
// (printed, so a failure reproduces) and count.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "tests/fuzz/fuzz_target.h"

namespace {

void Run(const std::string& input) {
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()),
                         input.size());
}

std::string Mutate(std::string input, std::mt19937_64& rng) {
  std::uniform_int_distribution<int> op(0, 4);
  std::uniform_int_distribution<int> byte(0, 255);
  const int rounds = 1 + static_cast<int>(rng() % 4);
  for (int i = 0; i < rounds; ++i) {
    const size_t pos = input.empty() ? 0 : rng() % input.size();
    switch (op(rng)) {
      case 0:  // flip a bit
        if (!input.empty()) input[pos] ^= static_cast<char>(1 << (rng() % 8));
        break;
      case 1:  // random byte
        if (!input.empty()) input[pos] = static_cast<char>(byte(rng));
        break;
      case 2:  // insert
        input.insert(input.begin() + static_cast<long>(pos),
                     static_cast<char>(byte(rng)));
        break;
      case 3:  // delete
        if (!input.empty()) input.erase(pos, 1);
        break;
      case 4:  // truncate
        input.resize(pos);
        break;
    }
  }
  return input;
}

uint64_t EnvOr(const char* name, uint64_t fallback) {
  const char* value = std::getenv(name);
  return value != nullptr ? std::strtoull(value, nullptr, 10) : fallback;
}

}  // namespace

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  std::vector<std::string> seeds = fleet::fuzz::FuzzSeeds();
  if (argc == 3 && std::string(argv[1]) == "--write-seeds") {
    fs::create_directories(argv[2]);
    for (size_t i = 0; i < seeds.size(); ++i) {
      std::ofstream(fs::path(argv[2]) / ("seed-" + std::to_string(i)),
                    std::ios::binary)
          << seeds[i];
    }
    return 0;
  }

  std::vector<std::string> inputs = seeds;
  for (int i = 1; i < argc; ++i) {
    if (!fs::is_directory(argv[i])) {
      std::fprintf(stderr, "replay: corpus directory %s not found\n", argv[i]);
      return 2;
    }
    for (const auto& entry : fs::recursive_directory_iterator(argv[i])) {
      if (!entry.is_regular_file()) continue;
      std::ifstream in(entry.path(), std::ios::binary);
      std::stringstream content;
      content << in.rdbuf();
      inputs.push_back(content.str());
    }
  }
  for (const std::string& input : inputs) Run(input);

  const uint64_t seed = EnvOr("FLEET_FUZZ_SEED", 20261123);
  const uint64_t mutations = EnvOr("FLEET_FUZZ_MUTATIONS", 5000);
  std::printf("replayed %zu inputs; %llu mutations with FLEET_FUZZ_SEED=%llu\n",
              inputs.size(), static_cast<unsigned long long>(mutations),
              static_cast<unsigned long long>(seed));
  std::fflush(stdout);
  std::mt19937_64 rng(seed);
  for (uint64_t i = 0; i < mutations; ++i) {
    Run(Mutate(inputs[rng() % inputs.size()], rng));
  }
  std::printf("ok\n");
  return 0;
}
