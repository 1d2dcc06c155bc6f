#!/usr/bin/env bash
# Sets up a Debian 12 machine (apt packages) and runs every test.
#
# Usage: deploy/test.sh [extra bazel test flags...]
#
# The last line printed is `N passed, N failed`, counted over test cases from
# the test.xml files this run produced (tests/count_results.py). Exits
# non-zero when the build or any test failed.
set -euo pipefail
cd "$(dirname "$0")/.."

deploy/setup.sh

bep_file=$(mktemp /tmp/fleet-bep.XXXXXX.json)
trap 'rm -f "$bep_file"' EXIT

flags=(--build_event_json_file="$bep_file" --keep_going)
if [[ "${CI:-}" == "true" || ! -t 1 ]]; then
  flags+=(--curses=no --color=no --show_progress_rate_limit=30)
fi

set +e
bazel test //... "${flags[@]}" "$@"
bazel_rc=$?
python3 tests/count_results.py "$bep_file"
count_rc=$?
set -e

if [[ $bazel_rc -ne 0 ]]; then
  exit "$bazel_rc"
fi
exit "$count_rc"
