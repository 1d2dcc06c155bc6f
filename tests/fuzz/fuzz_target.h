// The contract between fleet's fuzz targets and their two drivers.
//
// Each *_fuzzer.cc defines LLVMFuzzerTestOneInput (the libFuzzer entry
// point) and FuzzSeeds (valid inputs that reach deep into the code under
// test). tests/fuzz/run.sh links each with libFuzzer (clang,
// -fsanitize=fuzzer,address,undefined) for bounded exploratory runs;
// replay_main.cc links the same file with gcc into a cc_test that CI runs
// over the seeds, the checked-in corpus (crashes found become files there)
// and a fixed-seed batch of mutations of both.
//
// A target returns 0; it aborts (FUZZ_CHECK) when an invariant of the code
// under test is broken, which both drivers report as a failure.
#ifndef FLEET_TESTS_FUZZ_FUZZ_TARGET_H_
#define FLEET_TESTS_FUZZ_FUZZ_TARGET_H_

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace fleet::fuzz {

// Valid inputs for this target (each a whole input, mode byte included).
std::vector<std::string> FuzzSeeds();

// A release key the targets sign with, so inputs that are valid manifests
// or roots pass the signature check and reach validation. Test-only.
inline constexpr char kFuzzKeyPem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIDdcXxn+q0beFMRvf2HYYUbvF36qvHA4+pFTL8aPe3/a\n"
    "-----END PRIVATE KEY-----\n";

}  // namespace fleet::fuzz

#define FUZZ_CHECK(condition)                                         \
  do {                                                                \
    if (!(condition)) {                                               \
      std::fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, \
                   __LINE__, #condition);                             \
      std::abort();                                                   \
    }                                                                 \
  } while (0)

#endif  // FLEET_TESTS_FUZZ_FUZZ_TARGET_H_
