#!/usr/bin/env bash
# The main job: set up and build, then
#  - on any machine: start a private ligerd, show `ligerctl status`, stop it with SIGTERM;
#  - with a CUDA GPU and PyTorch: build the Python client (ligerd._C) and run
#    examples/rmsnorm_demo.py, whose client starts its own private ligerd when none is running.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
build_type=${LIGERD_BUILD_TYPE:-Release}
build_dir=${LIGERD_BUILD_DIR:-build/$(echo "$build_type" | tr '[:upper:]' '[:lower:]')}

run_dir=$(mktemp -d /tmp/ligerd-run-XXXXXX)
trap 'rm -rf "$run_dir"' EXIT
socket=$run_dir/ligerd.sock
"$build_dir/server/ligerd" --socket="$socket" --cache_dir="$run_dir/cache" &
daemon=$!
for _ in $(seq 100); do
  "$build_dir/client/ligerctl" --socket="$socket" --timeout_ms=200 status >/dev/null 2>&1 && break
  sleep 0.05
done
"$build_dir/client/ligerctl" --socket="$socket" status
kill -TERM "$daemon"
wait "$daemon"
echo "run: ligerd stopped cleanly"

py=$(command -v python3 || true)
if [ -n "$py" ] && "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  cmake -S . -B "$build_dir" -DLIGERD_BUILD_PYTHON=ON -DPython3_EXECUTABLE="$py" > "$build_dir/configure-python.log" 2>&1 \
    || { cat "$build_dir/configure-python.log" >&2; exit 1; }
  cmake --build "$build_dir" --target ligerd_python -j"$(nproc)"
  PYTHONPATH="$PWD/$build_dir/python${PYTHONPATH:+:$PYTHONPATH}" LIGERD_BIN="$PWD/$build_dir/server/ligerd" \
    "$py" examples/rmsnorm_demo.py
else
  echo "run: no CUDA GPU with PyTorch here, so the GPU part (examples/rmsnorm_demo.py) did not run; it needs one" >&2
  exit 2
fi
