#!/usr/bin/env bash
# Installs the Debian 12 (bookworm) packages fleet needs to build, test and
# run its demo: Bazel 4.2.3 with its offline rule sets, the C++ toolchain,
# gRPC/Protobuf/Abseil and the other system libraries that
# third_party/system/BUILD.bazel links, and the tools the scripts call.
#
# Usage: deploy/setup.sh
#
# Idempotent and quiet: each package's status is read with dpkg-query; when all
# are installed it prints nothing and exits 0. Otherwise it runs
# `apt-get update` and `apt-get install -y` for the missing ones only,
# non-interactively, as root or through sudo.
#
# Exit status: 0 everything installed; 1 something could not be installed
# (not root and no sudo, apt failed, or a package is still missing after).
set -euo pipefail

packages=(
  # Build: Bazel 4.2.3 and the local repositories WORKSPACE points at.
  bazel-bootstrap
  bazel-rules-java
  bazel-platforms
  build-essential
  # RPC and serialization: headers, libraries, protoc and grpc_cpp_plugin.
  libgrpc++-dev
  libgrpc-dev
  protobuf-compiler-grpc
  libprotobuf-dev
  protobuf-compiler
  libabsl-dev
  libre2-dev
  libc-ares-dev
  # Storage, crypto, compression.
  libsqlite3-dev
  libssl-dev
  zlib1g-dev
  libbrotli-dev
  libzstd-dev
  # Header-only and small libraries.
  libcli11-dev
  nlohmann-json3-dev
  libcpp-httplib-dev
  libyaml-cpp-dev
  # Tests and benchmarks.
  libgtest-dev
  libgmock-dev
  libbenchmark-dev
  # Tools: sqlite3 to inspect stores, clang-format for style, python3 for
  # tests/count_results.py and deploy/demo.sh.
  sqlite3
  clang-format
  python3
  # systemd-analyze verifies the units in deploy/systemd.
  systemd
  # Packaging (deploy/packaging): dpkg-deb and dpkg-shlibdeps build the
  # .debs, help2man writes their man pages, lintian checks them, and the
  # package test installs them with dpkg --root (under fakeroot where root
  # cannot chown, as in Bazel's sandbox).
  dpkg-dev
  fakeroot
  help2man
  lintian
  # Peers the tests and benchmarks run beside fleet: a real Prometheus
  # scrapes the controller's /metrics; nginx serves the same artifact the
  # download benchmark fetches through FetchArtifact.
  prometheus
  nginx-light
)

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  # The header comment, without its "# ".
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  exit 0
fi

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "deploy/setup.sh: dpkg-query not found; fleet builds on Debian 12" \
    "(bookworm) packages" >&2
  exit 1
fi

# Prints the packages of the list that are not fully installed, in order.
# One dpkg-query for all of them: it prints a status per known package and
# nothing for one it has never heard of.
missing_packages() {
  local -A installed=()
  local pkg status
  while read -r pkg status; do
    if [[ "$status" == "install ok installed" ]]; then
      installed[$pkg]=1
    fi
  done < <(dpkg-query -W -f='${Package} ${Status}\n' "${packages[@]}" \
    2>/dev/null || true)
  for pkg in "${packages[@]}"; do
    if [[ -z "${installed[$pkg]:-}" ]]; then
      printf '%s\n' "$pkg"
    fi
  done
}

mapfile -t missing < <(missing_packages)
if ((${#missing[@]} == 0)); then
  exit 0
fi

as_root=()
if ((EUID != 0)); then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "deploy/setup.sh: missing packages: ${missing[*]}; run this script" \
      "as root or install sudo" >&2
    exit 1
  fi
  as_root=(sudo)
fi

echo "deploy/setup.sh: installing ${missing[*]}" >&2
# sudo drops the environment; env passes the frontend through.
apt_get=("${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -y)
if ! "${apt_get[@]}" -qq update; then
  echo "deploy/setup.sh: apt-get update failed; check the network and" \
    "/etc/apt/sources.list" >&2
  exit 1
fi
if ! "${apt_get[@]}" -o Dpkg::Use-Pty=0 install --no-install-recommends \
  "${missing[@]}" >/dev/null; then
  echo "deploy/setup.sh: apt-get install failed for: ${missing[*]}" >&2
  exit 1
fi

mapfile -t still_missing < <(missing_packages)
if ((${#still_missing[@]} != 0)); then
  echo "deploy/setup.sh: still not installed: ${still_missing[*]}" >&2
  exit 1
fi
echo "deploy/setup.sh: installed ${#missing[@]} package(s)" >&2
