#!/usr/bin/env bash
# One command on the GPU machine, from the repository root (with .device taken along):
#
#   source .device/env.sh && bash tests/gpu/run.sh
#
# Builds (CMake, Release, into $LIGERD_BUILD, default /tmp/b) with the Python extension, runs
# ctest (the CPU suites), precompiles every kernel variant for this GPU into the shared JIT cache,
# checks that `pip install` of python_client works (non-fatal), installs the carried peer wheels
# (.whl/: Liger-Kernel, for the parity checks; non-fatal) into $LIGERD_PEER_SITE, runs the CPU
# pytest suite (the sources, with the built ligerd._C) and the GPU suite (the built package,
# <build>/python on PYTHONPATH), then the kernel benchmark. Logs, JUnit XML, CSV, JSON and PNG go
# under $OUT (default ./out); the step table and the test report (scripts/test_report.py: counts,
# every skip reason, and the skip policy: on a GPU machine only multi-GPU tests may skip) are
# printed last.
#
# Knobs: LIGERD_BUILD, OUT, PYTHON (default python3), JOBS (default nproc),
#        LIGERD_PEER_SITE (where peer wheels are installed; default <build>/peers),
#        SKIP_CTEST=1, SKIP_PIP=1, SKIP_PYTEST_CPU=1, SKIP_PYTEST_GPU=1, SKIP_BENCH=1,
#        BENCH_ARGS="--quick", BENCH_TIMEOUT (seconds, default 420),
#        LIGERD_RESULTS (default $OUT/results.csv), CMAKE_ARGS (extra configure arguments),
#        GPU_TESTS (pytest targets, default "tests/gpu"; e.g. "tests/gpu/test_rope.py -k bf16"),
#        GPU_PART=k/n (only the k-th of n parts of tests/gpu: its test_*.py files in name order,
#          every n-th from the k-th; not with GPU_TESTS; logs and XML named pytest-gpu-kofn),
#        PYTEST_GPU_TIMEOUT (seconds, default 1500: the whole suite in one process, with room for a
#          cold JIT cache; docs/history.md has its measured duration),
#        RUN_BUDGET (seconds for this whole script, e.g. 570 inside a 600 s device call: the GPU
#          suite and the benchmark then get at most what is left of it, less 75 s to stop and
#          report; a GPU suite left no time fails the run),
#        SKIP_PRECOMPILE=1 (kernels then compile on first use),
#        BUILD_TARGETS="ligerd ligerd_python" (build only these CMake targets: the daemon and the
#          Python package are all the GPU tests and the benchmarks need; not with ctest),
#        GPU_WORKERS=n (the GPU suite in n pytest-xdist processes sharing the GPU, one test file
#          per process at a time (--dist loadfile, or GPU_DIST=load: test by test, for a few long
#          files); needs .whl/pytest_xdist-*.whl and execnet-*.whl, installed into
#          <build>/test-tools; without them it runs in one process). 4 processes fit the whole
#          suite on one 80 GB H100; 8 with GPU_DIST=load ran it out of memory, and so did 4 with
#          GPU_DIST=load for test_chunked_loss.py alone, whose large shapes take 17-21 GiB each).
#
# The GPU suite alone outlasts one 600 s device call: run it in parts, one call each, on the warm
# machine (the build under $LIGERD_BUILD and the JIT cache are kept; the build step is then a
# no-op), e.g. in two calls (or GPU_PART=k/3 in three, where a part still runs out):
#   1: SKIP_BENCH=1 GPU_PART=1/2 RUN_BUDGET=570 bash tests/gpu/run.sh
#   2: SKIP_CTEST=1 SKIP_PIP=1 SKIP_PYTEST_CPU=1 SKIP_PRECOMPILE=1 SKIP_BENCH=1 GPU_PART=2/2 \
#      RUN_BUDGET=570 bash tests/gpu/run.sh
#   then the benchmark: SKIP_CTEST=1 SKIP_PIP=1 SKIP_PYTEST_CPU=1 SKIP_PRECOMPILE=1 SKIP_PYTEST_GPU=1 ...
#
# A GPU suite stopped by its timeout still names its failures: pytest runs with -v and unbuffered
# output, so each test's id and outcome are in the log as it finishes (even if the process is
# killed outright), and the timeout sends SIGINT first (SIGKILL 60 s later), on which pytest stops
# as on Ctrl-C: it prints the tracebacks and the summary of the tests run so far and writes the
# JUnit XML. The step then shows FAILED(124), and run.sh prints the failed ids and the test that
# was running.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/out}
OUT=$(mkdir -p "$OUT" && cd "$OUT" && pwd)
BUILD=${LIGERD_BUILD:-/tmp/b}
PY=$(command -v "${PYTHON:-python3}")
JOBS=${JOBS:-$(nproc)}
export LIGERD_CACHE_DIR=${LIGERD_CACHE_DIR:-$BUILD/ligerd-cache}
export LIGERD_PEER_SITE=${LIGERD_PEER_SITE:-$BUILD/peers}
T_START=$(date +%s)

# The GPU suite's targets (GPU_TESTS, or GPU_PART's share of tests/gpu) and its step name.
GPU_STEP=pytest-gpu
GPU_TARGETS=()
if [[ -n "${GPU_PART:-}" ]]; then
  if [[ ! "$GPU_PART" =~ ^([0-9]+)/([0-9]+)$ ]] || (( BASH_REMATCH[1] < 1 || BASH_REMATCH[1] > BASH_REMATCH[2] )) \
     || [[ -n "${GPU_TESTS:-}" ]]; then
    echo "run.sh: GPU_PART must be k/n with 1 <= k <= n (e.g. 1/2), without GPU_TESTS; got GPU_PART='$GPU_PART'" \
         "GPU_TESTS='${GPU_TESTS:-}'" >&2
    exit 2
  fi
  part_k=${BASH_REMATCH[1]} part_n=${BASH_REMATCH[2]}
  GPU_STEP=pytest-gpu-${part_k}of${part_n}
  all_files=(tests/gpu/test_*.py)
  for i in "${!all_files[@]}"; do
    (( i % part_n == part_k - 1 )) && GPU_TARGETS+=("${all_files[$i]}")
  done
  echo "run.sh: GPU part $GPU_PART: ${GPU_TARGETS[*]:-(no files)}"
else
  # shellcheck disable=SC2206
  GPU_TARGETS=(${GPU_TESTS:-tests/gpu})  # split and globbed, as before: "tests/gpu/test_r*.py -k bf16"
fi

if [[ ":${CMAKE_PREFIX_PATH:-}:" != *":/opt/devdeps/usr:"* && -f .device/env.sh ]]; then
  echo "run.sh: sourcing .device/env.sh"
  # shellcheck disable=SC1091
  source .device/env.sh
fi

declare -a STEP_NAMES STEP_STATUS STEP_SECS STEP_NOTE
FAILED=0

# step NAME REQUIRED(1|0) CMD...: runs CMD with output in $OUT/NAME.log, records status and time.
step() {
  local name=$1 required=$2; shift 2
  local t0=$(date +%s) rc
  echo "== $name: $*"
  "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  local secs=$(( $(date +%s) - t0 ))
  local status=ok
  if [[ $rc -ne 0 ]]; then
    if [[ $required == 1 ]]; then status="FAILED($rc)"; FAILED=1; else status="failed($rc), non-fatal"; fi
    echo "   -> $status after ${secs}s; last lines of $OUT/$name.log:"
    tail -n 25 "$OUT/$name.log" | sed 's/^/   | /'
  fi
  STEP_NAMES+=("$name"); STEP_STATUS+=("$status"); STEP_SECS+=("$secs")
  STEP_NOTE+=("$(grep -E 'tests passed|passed|failed|error|compiled|variants' "$OUT/$name.log" 2>/dev/null | tail -n 1 | cut -c1-90)")
  return $rc
}

skip() { STEP_NAMES+=("$1"); STEP_STATUS+=("skipped"); STEP_SECS+=("0"); STEP_NOTE+=("$2"); }

{ nvidia-smi || true; } > "$OUT/nvidia-smi.txt" 2>&1
"$PY" - > "$OUT/env.txt" 2>&1 <<'EOF'
import platform, sys
print("python", sys.version.replace("\n", " "))
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.version.cuda, "gpus", torch.cuda.device_count())
    if torch.cuda.is_available():
        print("device", torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))
except Exception as e:
    print("torch: not importable:", e)
EOF
cat "$OUT/env.txt"

# 1. configure + build (everything, including the ligerd_python target; BUILD_TARGETS narrows it)
step configure 1 cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DLIGERD_BUILD_PYTHON=ON "-DPython3_EXECUTABLE=$PY" ${CMAKE_ARGS:-} || true
if [[ $FAILED == 0 ]]; then
  # shellcheck disable=SC2086  # BUILD_TARGETS is a list of target names
  step build 1 cmake --build "$BUILD" -j "$JOBS" ${BUILD_TARGETS:+--target $BUILD_TARGETS} || true
fi
if [[ $FAILED != 0 ]]; then
  echo "run.sh: the build failed; see $OUT/configure.log and $OUT/build.log"
fi
LIGERD_DAEMON_BIN=$(find "$BUILD" -maxdepth 3 -type f -name ligerd -perm -u+x 2>/dev/null | head -n 1)

# 2. precompile every kernel variant for this GPU (in the background, while ctest runs)
ARCH=$("$PY" -c 'import torch; c = torch.cuda.get_device_capability(0); print(f"sm_{c[0]}{c[1]}")' 2>/dev/null || echo sm_90)
PRE_PID=
if [[ $FAILED == 0 && -n "$LIGERD_DAEMON_BIN" && "${SKIP_PRECOMPILE:-0}" != 1 ]]; then
  ( step_t0=$(date +%s)
    "$LIGERD_DAEMON_BIN" --precompile_arch="$ARCH" --cache_dir="$LIGERD_CACHE_DIR" > "$OUT/precompile.log" 2>&1
    echo $? > "$OUT/precompile.rc"; echo $(( $(date +%s) - step_t0 )) > "$OUT/precompile.secs" ) &
  PRE_PID=$!
fi

# 3. ctest (CPU suites)
if [[ $FAILED == 0 && "${SKIP_CTEST:-0}" != 1 ]]; then
  step ctest 1 ctest --test-dir "$BUILD" -j 8 --output-on-failure --timeout 150 \
    --output-junit "$OUT/ctest.xml" || true
else
  skip ctest "${SKIP_CTEST:+SKIP_CTEST=1}"
fi

if [[ -n "$PRE_PID" ]]; then
  wait "$PRE_PID"
  rc=$(cat "$OUT/precompile.rc" 2>/dev/null || echo 1)
  STEP_NAMES+=("precompile-$ARCH"); STEP_SECS+=("$(cat "$OUT/precompile.secs" 2>/dev/null || echo ?)")
  STEP_NOTE+=("$(tail -n 1 "$OUT/precompile.log" | cut -c1-90)")
  if [[ $rc == 0 ]]; then STEP_STATUS+=("ok"); else STEP_STATUS+=("failed($rc), non-fatal"); tail -n 20 "$OUT/precompile.log"; fi
elif [[ "${SKIP_PRECOMPILE:-0}" == 1 ]]; then
  skip "precompile" "SKIP_PRECOMPILE=1"
elif [[ $FAILED == 0 ]]; then
  skip "precompile" "no ligerd binary under $BUILD"
fi

# 4. pip install path (scikit-build-core, its own CMake tree $BUILD/wheel; into a scratch
# --target, non-fatal). A machine without scikit-build-core gets it from the carried wheels
# (.whl/scikit_build_core-*.whl and pathspec-*.whl) in $BUILD/build-tools.
if [[ $FAILED == 0 && "${SKIP_PIP:-0}" != 1 ]]; then
  rm -rf "$BUILD/pip-target"
  tools=()
  if ! "$PY" -c 'import scikit_build_core' 2>/dev/null && compgen -G '.whl/scikit_build_core-*.whl' >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --target "$BUILD/build-tools" .whl/scikit_build_core-*.whl \
      .whl/pathspec-*.whl > "$OUT/build-tools.log" 2>&1 || true
    tools=(PYTHONPATH="$BUILD/build-tools")
  fi
  step pip-install 0 env "${tools[@]}" "$PY" -m pip install --no-build-isolation --no-deps --no-index \
    -C build-dir="$BUILD/wheel" --target "$BUILD/pip-target" ./python_client || true
  if [[ -d "$BUILD/pip-target/ligerd" ]]; then
    step pip-import 0 env PYTHONPATH="$BUILD/pip-target" "$PY" -c \
      'import torch, ligerd, ligerd._C as c; print("ligerd", ligerd.__version__, "from", ligerd.__file__, "_C", c.__file__)' || true
  fi
else
  skip pip-install ""
fi

# 4b. the Liger-Kernel wheel, when one was carried in .whl/ (no network on the GPU machine), into
# $LIGERD_PEER_SITE where the GPU tests' parity checks and the benchmark look for it
# (ligerd.testing.gpu and ligerd_bench.common: add_peer_site); without it those checks skip, and
# the report counts that against the run.
if compgen -G ".whl/liger_kernel-*.whl" >/dev/null && [[ ! -d "$LIGERD_PEER_SITE/liger_kernel" ]]; then
  step liger-wheel 0 "$PY" -m pip install --no-index --no-deps --target "$LIGERD_PEER_SITE" .whl/liger_kernel-*.whl || true
fi

export PYTHONPATH="$BUILD/python${PYTHONPATH:+:$PYTHONPATH}"
[[ -n "$LIGERD_DAEMON_BIN" ]] && export LIGERD_BIN="$LIGERD_DAEMON_BIN"

# 5. pytest: CPU suite (package logic, with the built extension) and the GPU suite
if [[ $FAILED == 0 && "${SKIP_PYTEST_CPU:-0}" != 1 ]]; then
  step pytest-cpu 1 env LIGERD_BUILD_DIR="$BUILD" "$PY" -m pytest tests/python -q -ra -p no:cacheprovider \
    --junitxml="$OUT/pytest-cpu.xml" || true
else
  skip pytest-cpu ""
fi
# Under MPS when it can be started (remote dispatch is only fast there: ~5 us per op handoff
# instead of a ~230 us context switch); the local tests are indifferent to it.
MPS_WRAP=()
if [[ -f .device/with-mps.sh ]] && command -v nvidia-cuda-mps-control >/dev/null; then
  MPS_WRAP=(bash .device/with-mps.sh)
fi
# Prints the ids of the tests a pytest -v log says failed (as they finished, or in the summary),
# and the test that was running when pytest was stopped, if any.
report_gpu_failures() {
  local log=$1
  local ids
  # one process: "path::id FAILED" as it finishes, "FAILED path::id - ..." in the summary;
  # xdist: "[gw0] [ 5%] FAILED path::id" as it finishes
  ids=$(grep -aoE '^[^ ]+::[^ ]+ (FAILED|ERROR)|^(FAILED|ERROR) [^ ]+::[^ ]+|\] (FAILED|ERROR) [^ ]+::[^ ]+' "$log" \
        | sed -E 's/^\] //; s/^(FAILED|ERROR) (.*)$/\2 \1/' | sort -u)
  [[ -n "$ids" ]] && { echo "   failed tests:"; echo "$ids" | sed 's/^/   | /'; }
  local last
  last=$(grep -aE '^[^ ]+::[^ ]+' "$log" | tail -n 1)
  if [[ -n "$last" && ! "$last" =~ (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) ]]; then
    echo "   running when stopped: $last"
  fi
}

if [[ "${SKIP_PYTEST_GPU:-0}" == 1 ]]; then
  skip "$GPU_STEP" "SKIP_PYTEST_GPU=1"
elif [[ $FAILED == 0 || -f "$BUILD/python/ligerd/__init__.py" ]]; then
  gpu_timeout=${PYTEST_GPU_TIMEOUT:-1500}
  if [[ -n "${RUN_BUDGET:-}" ]]; then
    # Leave 75 s of the budget: the SIGKILL grace (60 s) and the report.
    left=$(( RUN_BUDGET - ($(date +%s) - T_START) - 75 ))
    (( left < gpu_timeout )) && gpu_timeout=$left
  fi
  if (( gpu_timeout < 30 )); then
    STEP_NAMES+=("$GPU_STEP"); STEP_STATUS+=("FAILED(no time)"); STEP_SECS+=("0")
    STEP_NOTE+=("RUN_BUDGET=$RUN_BUDGET left no time for it: split the run (GPU_PART)")
    FAILED=1
  else
    xdist=()
    if [[ -n "${GPU_WORKERS:-}" ]] && compgen -G '.whl/pytest_xdist-*.whl' >/dev/null; then
      [[ -d "$BUILD/test-tools/xdist" ]] || "$PY" -m pip install -q --no-index --no-deps \
        --target "$BUILD/test-tools" .whl/pytest_xdist-*.whl .whl/execnet-*.whl > "$OUT/test-tools.log" 2>&1
      [[ -d "$BUILD/test-tools/xdist" ]] && xdist=(-n "$GPU_WORKERS" --dist "${GPU_DIST:-loadfile}")
    fi
    step "$GPU_STEP" 1 env PYTHONUNBUFFERED=1 PYTHONPATH="$BUILD/test-tools:$PYTHONPATH" \
      timeout -s INT -k 60 "$gpu_timeout" "${MPS_WRAP[@]}" \
      "$PY" -m pytest "${GPU_TARGETS[@]}" "${xdist[@]}" -v -ra -p no:cacheprovider --junitxml="$OUT/$GPU_STEP.xml"
    rc=$?
    if [[ $rc -ne 0 ]]; then
      [[ $rc == 124 || $rc == 137 ]] && echo "   -> stopped by its timeout (${gpu_timeout}s)"
      report_gpu_failures "$OUT/$GPU_STEP.log"
    fi
  fi
fi

# 6. benchmark
if [[ "${SKIP_BENCH:-0}" != 1 && -f "$BUILD/python/ligerd/__init__.py" ]]; then
  # Rows go to $OUT/results.csv (the machine's copy of the tree does not come back); append them
  # to bench/results.csv here with bench/ligerd_bench/results.py.
  bench_timeout=${BENCH_TIMEOUT:-420}
  if [[ -n "${RUN_BUDGET:-}" ]]; then
    left=$(( RUN_BUDGET - ($(date +%s) - T_START) - 15 ))
    (( left < bench_timeout )) && bench_timeout=$(( left > 1 ? left : 1 ))
  fi
  # shellcheck disable=SC2086
  step bench 0 env LIGERD_RESULTS="${LIGERD_RESULTS:-$OUT/results.csv}" timeout "$bench_timeout" \
    "$PY" bench/run_kernels.py --out "$OUT/bench" ${BENCH_ARGS:-} || true
else
  skip bench ""
fi

echo
echo "== ligerd GPU run: $(( $(date +%s) - T_START )) s in all; logs in $OUT"
printf '%-18s %-22s %6s  %s\n' step status seconds detail
for i in "${!STEP_NAMES[@]}"; do
  printf '%-18s %-22s %6s  %s\n' "${STEP_NAMES[$i]}" "${STEP_STATUS[$i]}" "${STEP_SECS[$i]}" "${STEP_NOTE[$i]}"
done
if [[ -f "$OUT/bench/summary.txt" ]]; then
  echo
  cat "$OUT/bench/summary.txt"
fi
reports=()
for suite in ctest pytest-cpu "$GPU_STEP"; do
  [[ -f "$OUT/$suite.xml" ]] && reports+=("$suite=$OUT/$suite.xml")
done
if [[ ${#reports[@]} -gt 0 ]]; then
  "$PY" scripts/test_report.py "${reports[@]}" || FAILED=1
fi
exit $FAILED
