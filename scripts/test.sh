#!/usr/bin/env bash
# Runs ligerd's test suites on any machine, GPU or not:
#  1. installs what the Python suites import from PyPI when it is missing
#     (scripts/test-requirements.txt: torch, transformers, grpcio, numpy, pytest, matplotlib);
#     a failed install stops the run and says why;
#  2. builds the daemon, the C++ suites and the Python extension ligerd._C (scripts/setup.sh);
#  3. runs the C++ suites (ctest) and the Python CPU suite (pytest tests/python), each writing
#     JUnit XML under $LIGERD_TEST_OUT (default build/<type>/test-results);
#  4. prints the report: counts per suite, every skip reason with its count, and fails the run
#     when a test failed or was skipped for any reason but "no GPU on this machine"
#     (scripts/test_report.py has the policy).
# The GPU suites and benchmarks run on a GPU machine with tests/gpu/run.sh.
#
# Knobs: LIGERD_BUILD_TYPE (Release), LIGERD_BUILD_DIR, LIGERD_TEST_OUT,
#        LIGERD_UPGRADE_TEST_DEPS=1 (upgrade torch/transformers/... to PyPI's newest; CI sets it).
set -euo pipefail
cd "$(dirname "$0")/.."
build_type=${LIGERD_BUILD_TYPE:-Release}
build_dir=${LIGERD_BUILD_DIR:-build/$(echo "$build_type" | tr '[:upper:]' '[:lower:]')}
results=${LIGERD_TEST_OUT:-$build_dir/test-results}

# 1. Python and the test dependencies. A distribution's Python that refuses pip installs
# (PEP 668) gets a virtual environment in the build directory, seeing the system's packages.
py=$(command -v python3 || true)
if [ -z "$py" ]; then
  echo "test: python3 is needed (the Python suites and the test report); install it (apt-get install python3 python3-venv)" >&2
  exit 1
fi
if [ -f "$("$py" -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')/EXTERNALLY-MANAGED" ]; then
  venv=$build_dir/test-venv
  if [ ! -x "$venv/bin/python3" ]; then
    mkdir -p "$build_dir"
    "$py" -m venv --system-site-packages "$venv" || {
      echo "test: this Python is externally managed and 'python3 -m venv' failed: apt-get install python3-venv" >&2; exit 1; }
  fi
  py=$PWD/$venv/bin/python3
fi
pip_args=(-m pip install --disable-pip-version-check --progress-bar off)
if [ "${LIGERD_UPGRADE_TEST_DEPS:-0}" = 1 ]; then pip_args+=(--upgrade); fi
start=$(date +%s)
mkdir -p "$build_dir"
if [ "${LIGERD_UPGRADE_TEST_DEPS:-0}" = 1 ] || ! "$py" - <<'EOF' 2>/dev/null
import importlib.metadata as md, re, sys
from pathlib import Path
from packaging.requirements import Requirement
for line in Path("scripts/test-requirements.txt").read_text().splitlines():
    line = line.split("#")[0].strip()
    if line:
        r = Requirement(line)
        if not r.specifier.contains(re.sub(r"\+.*", "", md.version(r.name)), prereleases=True):
            sys.exit(1)
EOF
then
  echo "test: installing the Python suites' dependencies from PyPI (scripts/test-requirements.txt; torch is large, a few minutes)"
  if ! "$py" "${pip_args[@]}" -r scripts/test-requirements.txt > "$build_dir.pip.log" 2>&1; then
    tail -n 30 "$build_dir.pip.log" >&2
    echo "test: installing scripts/test-requirements.txt from PyPI failed (log above, whole in $build_dir.pip.log)" >&2
    exit 1
  fi
  echo "test: Python dependencies ready in $(( $(date +%s) - start )) s"
fi
"$py" -c 'import sys, torch, transformers, grpc
print(f"test: python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}, grpcio {grpc.__version__}")'

# 2. Build: the daemon, the C++ suites and ligerd._C (against this torch).
LIGERD_CMAKE_ARGS="-DLIGERD_BUILD_PYTHON=ON -DPython3_EXECUTABLE=$py ${LIGERD_CMAKE_ARGS:-}" \
  LIGERD_BUILD_TYPE=$build_type LIGERD_BUILD_DIR=$build_dir bash scripts/setup.sh

# Headless Chromium (Debian's) for the dashboard's browser test (tests/python/test_telemetry_metrics.py).
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null; then
  echo "test: installing Debian's chromium (the dashboard's browser test)"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  { $sudo_cmd apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends chromium; } \
    > "$build_dir.chromium.log" 2>&1 || echo "test: could not install chromium (see $build_dir.chromium.log); its test will skip, and the report fails it"
fi

# 3. The suites. Their failures are counted by the report, which runs whatever they return.
rm -rf "$results" && mkdir -p "$results"
LIGERD_FAULTS_TABLE="$PWD/$results/faults.txt" ctest --test-dir "$build_dir" -j"$(nproc)" --output-on-failure \
  --timeout 900 --output-junit "$PWD/$results/ctest.xml" || true
# The fault suite's table of figures (tests/faults/faults_cpu.cc, run by ctest above).
if [ -f "$results/faults.txt" ]; then echo "test: fault suite (CPU part):"; cat "$results/faults.txt"; fi
LIGERD_BIN="$PWD/$build_dir/server/ligerd" LIGERD_BUILD_DIR="$PWD/$build_dir" LIGERD_TEST_OUT="$PWD/$results" \
  "$py" -m pytest tests/python -q --junitxml="$results/pytest-cpu.xml" || true

# 4. The report and the skip policy.
report_args=()
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  report_args+=(--no-gpu)
  echo "test: no GPU on this machine: the GPU tests above skip, saying so; run 'bash tests/gpu/run.sh' on a GPU machine for them and the benchmarks"
fi
"$py" scripts/test_report.py "${report_args[@]}" ctest="$results/ctest.xml" pytest-cpu="$results/pytest-cpu.xml"
