#!/usr/bin/env bash
# The bounded libFuzzer runs (tests/fuzz/README.md), in a clang build directory of their own: only
# the fuzz targets are built there (instrumented for libFuzzer, with ASan and UBSan), then ctest's
# `fuzz_*_bounded` tests fuzz from a copy of the committed corpus for a bounded time. CI runs this
# after scripts/test.sh (whose build, any compiler, already replays the corpus: fuzz_*_corpus).
# A finding fails the run and its input is left under <build dir>/tests/fuzz/*_work/findings/.
#
# Knobs: LIGERD_FUZZ_BUILD_DIR (build/fuzz), LIGERD_FUZZ_SECONDS (60 per fuzzer),
#        LIGERD_FUZZ_RUNS (10^6 inputs per fuzzer at most), LIGERD_TEST_OUT (JUnit XML).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${LIGERD_FUZZ_BUILD_DIR:-build/fuzz}
results=${LIGERD_TEST_OUT:-$build_dir/test-results}
start=$(date +%s)

# Debian's clang and its runtime libraries (libFuzzer, the sanitizers).
if ! command -v clang++ >/dev/null || ! dpkg-query -W -f='${Status}' libclang-rt-dev 2>/dev/null | grep -q "ok installed"; then
  echo "fuzz: installing Debian's clang and libclang-rt-dev (libFuzzer)"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends clang libclang-rt-dev
fi
cuda_home=${CUDA_HOME:-/usr/local/cuda}
export PATH="$cuda_home/bin:$PATH"

mkdir -p "$build_dir" "$results"
CC=clang CXX=clang++ cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLIGERD_BUILD_FUZZERS=ON \
  -DLIGERD_FUZZ_SECONDS="${LIGERD_FUZZ_SECONDS:-60}" -DLIGERD_FUZZ_RUNS="${LIGERD_FUZZ_RUNS:-1000000}" \
  > "$build_dir/configure.log" 2>&1 || { cat "$build_dir/configure.log" >&2; exit 1; }
cmake --build "$build_dir" -j"$(nproc)" --target ring_record_fuzzer
built=$(date +%s)
echo "fuzz: built the fuzz targets in $(( built - start )) s"
status=0
ctest --test-dir "$build_dir" -L fuzz -R _bounded --output-on-failure --timeout 600 \
  --output-junit "$PWD/$results/fuzz.xml" || status=$?
# libFuzzer's closing figures (executions, rate, coverage) of each fuzzer.
grep -E "^(Done [0-9]+ runs|stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb)" \
  "$build_dir/Testing/Temporary/LastTest.log" | sed 's/^/fuzz: /' || true
echo "fuzz: done in $(( $(date +%s) - start )) s (fuzzing $(( $(date +%s) - built )) s)"
exit $status
