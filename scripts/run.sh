#!/usr/bin/env bash
# The main job: set up and build, then
#  - on any machine: start a private ligerd, show `ligerctl status`, stop it with SIGTERM;
#  - with a CUDA GPU and PyTorch: build the Python client (ligerd._C) and run the training demo,
#    examples/train_llama.py (a small LLaMA trained on the Python reference manual, HF eager vs
#    ligerd: tokens/s, peak memory, loss curves; PNG/CSV/JSON in out/train_llama), whose client
#    starts its own private ligerd when none is running. Arguments go to train_llama.py
#    (e.g. bash scripts/run.sh --steps 50 --model-size tiny).
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
  # The demo trains with transformers (tokenizers comes with it); tqdm and matplotlib are optional
  # (a plain progress line; no PNG). Installed from PyPI when missing and reachable.
  if ! "$py" -c 'import transformers' 2>/dev/null; then
    "$py" -m pip install -q --disable-pip-version-check transformers tqdm matplotlib \
      || echo "run: could not install transformers; train_llama.py will say what is missing" >&2
  fi
  PYTHONPATH="$PWD/$build_dir/python${PYTHONPATH:+:$PYTHONPATH}" LIGERD_BIN="$PWD/$build_dir/server/ligerd" \
    "$py" examples/train_llama.py "$@"
else
  echo "run: no CUDA GPU with PyTorch here, so the GPU part (examples/train_llama.py, the training demo) did not run; it needs one" >&2
  exit 2
fi
