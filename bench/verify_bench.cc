// verify_bench: the agent's verification of a downloaded artifact, timed:
// Ed25519 signature check of the signed manifest (common/manifest
// VerifyManifest) plus the streaming sha256 (common/sha256) over the file
// read in 64 KiB pieces, the size FetchArtifact delivers them in, and the
// size and digest compared with the manifest's.
//
// The manifest is signed here with --key (a `fleetctl keys generate` private
// key) over the file's real digest, so the check is a real one; a mismatch
// exits 1. Runs --repeat times (the file stays in the page cache, as the
// peer `openssl dgst -sha256` is timed the same way) and prints one JSON
// line with the best and median seconds.
#include <fcntl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "common/ed25519.h"
#include "common/manifest.h"
#include "common/sha256.h"

namespace {

constexpr size_t kPiece = 64 * 1024;

// Hashes the file as it is read; the size read or -1 with errno set.
int64_t HashFile(const std::string& path, fleet::Digest& digest) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  fleet::Sha256 hasher;
  std::vector<char> buffer(kPiece);
  int64_t total = 0;
  while (true) {
    const ssize_t n = read(fd, buffer.data(), buffer.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      close(fd);
      return -1;
    }
    if (n == 0) break;
    hasher.Update(buffer.data(), n);
    total += n;
  }
  close(fd);
  digest = hasher.Finish();
  return total;
}

}  // namespace

int main(int argc, char** argv) {
  std::string file;
  std::string key_path;
  std::string pub_path;
  int repeat = 5;
  CLI::App app{"verify_bench: time the agent's sha256 + signature check"};
  app.add_option("--file", file, "artifact")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("--key", key_path, "release private key (PEM)")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("--trust-key", pub_path, "release public key (PEM)")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("--repeat", repeat, "runs")
      ->capture_default_str()
      ->check(CLI::Range(1, 100));
  CLI11_PARSE(app, argc, argv);

  absl::StatusOr<fleet::Ed25519PrivateKey> key =
      fleet::Ed25519PrivateKey::LoadPemFile(key_path);
  fleet::TrustedKeys trust;
  absl::Status trust_status = trust.AddPemFile(pub_path);
  if (!key.ok() || !trust_status.ok()) {
    std::fprintf(stderr, "cannot load keys: %s %s\n",
                 key.status().ToString().c_str(),
                 trust_status.ToString().c_str());
    return 2;
  }
  fleet::Digest digest{};
  const int64_t size = HashFile(file, digest);
  if (size <= 0) {
    std::fprintf(stderr, "cannot read %s: %s\n", file.c_str(),
                 std::strerror(errno));
    return 2;
  }
  fleet::v1::ReleaseManifest manifest;
  manifest.set_product("bench");
  manifest.set_version("1.0.0");
  manifest.set_platform("linux/amd64");
  manifest.set_sha256(fleet::DigestToBytes(digest));
  manifest.set_size(size);
  manifest.set_created_unix_seconds(absl::ToUnixSeconds(absl::Now()));
  absl::StatusOr<fleet::v1::SignedManifest> signed_manifest =
      fleet::SignManifest(manifest, *key);
  if (!signed_manifest.ok()) {
    std::fprintf(stderr, "cannot sign: %s\n",
                 signed_manifest.status().ToString().c_str());
    return 2;
  }

  std::vector<double> seconds;
  for (int i = 0; i < repeat; ++i) {
    const absl::Time start = absl::Now();
    absl::StatusOr<fleet::v1::ReleaseManifest> verified =
        fleet::VerifyManifest(*signed_manifest, trust, absl::Now());
    fleet::Digest got{};
    const int64_t got_size = HashFile(file, got);
    const double elapsed = absl::ToDoubleSeconds(absl::Now() - start);
    if (!verified.ok() || got_size != static_cast<int64_t>(verified->size()) ||
        fleet::DigestToBytes(got) != verified->sha256()) {
      std::fprintf(stderr, "verification failed: %s\n",
                   verified.status().ToString().c_str());
      return 1;
    }
    seconds.push_back(elapsed);
  }
  std::sort(seconds.begin(), seconds.end());
  std::printf(
      "{\"bytes\":%lld,\"best_s\":%.4f,\"median_s\":%.4f,\"best_gb_per_s\":%."
      "3f,"
      "\"sha256\":\"%s\"}\n",
      static_cast<long long>(size), seconds.front(),
      seconds[seconds.size() / 2], size / seconds.front() / 1e9,
      fleet::DigestToHex(digest).c_str());
  return 0;
}
