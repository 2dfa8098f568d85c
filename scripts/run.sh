#!/usr/bin/env bash
# The main job: set up and build, then
#  - on any machine: start a private ligerd, show `ligerctl status`, stop it (SIGTERM);
#  - on a machine with a GPU and PyTorch: build the Python client and run examples/rmsnorm_demo.py,
#    which starts its own private ligerd when none is running (LIGERD_AUTOSTART, on by default).
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

if python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  if [ -f examples/rmsnorm_demo.py ]; then
    bash python_client/build.sh "$build_dir"
    PYTHONPATH="$PWD/python_client${PYTHONPATH:+:$PYTHONPATH}" LIGERD_BIN="$build_dir/server/ligerd" \
      python3 examples/rmsnorm_demo.py
  fi
else
  echo "run: no CUDA GPU with PyTorch on this machine: the GPU part of the demo (examples/rmsnorm_demo.py) needs one"
fi
