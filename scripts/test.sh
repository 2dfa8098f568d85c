#!/usr/bin/env bash
# Runs ligerd's test suites: the C++ suites through CTest (no GPU needed: GPU tests skip and say
# so), then the Python client's CPU tests with pytest. GPU suites and benchmarks run on a GPU
# machine with tests/gpu/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
build_type=${LIGERD_BUILD_TYPE:-Release}
build_dir=${LIGERD_BUILD_DIR:-build/$(echo "$build_type" | tr '[:upper:]' '[:lower:]')}

ctest --test-dir "$build_dir" -j"$(nproc)" --output-on-failure --timeout 900

# Python client, CPU side. pytest, grpcio and transformers 5.x come from PyPI. torch: the one
# installed is used (CUDA or not); where there is none, the CPU-only wheel from PyTorch's CPU index
# (~200 MB, not PyPI's multi-GB CUDA build) is installed, so the op-wiring and Hugging Face
# patching tests run. SKIP_TORCH_INSTALL=1 skips that (tests that need torch then skip, saying so).
if command -v python3 >/dev/null; then
  pip_q() { python3 -m pip install -q --disable-pip-version-check "$@" 2>&1 | grep -v "^WARNING: Running pip as" || true; }
  pip_q pytest grpcio
  if [ "${SKIP_TORCH_INSTALL:-0}" != 1 ]; then
    python3 -c "import torch" 2>/dev/null || pip_q --index-url https://download.pytorch.org/whl/cpu torch
    python3 -c "import torch" 2>/dev/null && pip_q "transformers>=5,<6"
  fi
  LIGERD_BIN="$PWD/$build_dir/server/ligerd" LIGERD_BUILD_DIR="$build_dir" \
    python3 -m pytest tests/python -q -ra -p no:cacheprovider
else
  echo "test: no python3: Python client tests skipped"
fi

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "test: no GPU on this machine: GPU suites skipped (C++ GPU tests above reported SKIPPED);"
  echo "      run 'bash tests/gpu/run.sh' on a GPU machine for them and the benchmarks"
fi
