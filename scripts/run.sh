#!/usr/bin/env bash
# The main job: set up and build, then
#  - on any machine: start a private ligerd, show `ligerctl status`, stop it with SIGTERM;
#  - without one (but with PyTorch and transformers): the demo's CPU smoke run, a tiny model with
#    ligerd's ops on its float64 reference executor (out/train_llama_cpu);
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
elif [ -n "$py" ] && "$py" -c 'import torch, transformers' 2>/dev/null; then
  # No CUDA GPU: the demo's CPU smoke run, a tiny LLaMA with ligerd's ops on its float64 reference
  # executor (the same patched model code; the CUDA kernels, speed and memory need a GPU).
  echo "run: no CUDA GPU with PyTorch here: a CPU smoke run of the training demo (tiny model, ligerd's" \
       "reference executor); the GPU demo compares speed and memory" >&2
  PYTHONPATH="$PWD/python_client${PYTHONPATH:+:$PYTHONPATH}" LIGERD_BIN="$PWD/$build_dir/server/ligerd" \
    "$py" examples/train_llama.py --device cpu --model-size tiny --steps 12 --batch 2 --seq 64 \
    --tokenizer byte --dispatch local --out out/train_llama_cpu --no-plot "$@"
else
  echo "run: no CUDA GPU and no PyTorch + transformers here, so the training demo (examples/train_llama.py) did not run: it needs PyTorch and transformers (bash scripts/test.sh installs them), and a CUDA GPU for its speed and memory figures" >&2
  exit 2
fi
