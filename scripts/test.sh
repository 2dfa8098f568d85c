#!/usr/bin/env bash
# Runs ligerd's test suites: the C++ suites through CTest (no GPU needed), then the Python client's
# CPU tests when Python and pytest are present. GPU suites are run on a GPU machine by
# tests/gpu/run.sh; here they are skipped, and this script says so.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
build_type=${LIGERD_BUILD_TYPE:-Release}
build_dir=${LIGERD_BUILD_DIR:-build/$(echo "$build_type" | tr '[:upper:]' '[:lower:]')}

ctest --test-dir "$build_dir" -j"$(nproc)" --output-on-failure --timeout 120

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "test: no GPU on this machine: GPU suites (tests/gpu) skipped; run tests/gpu/run.sh on a GPU machine"
fi
