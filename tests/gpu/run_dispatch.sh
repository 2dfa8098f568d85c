#!/usr/bin/env bash
# Dispatch overhead on the GPU machine: local vs remote, with and without MPS, into one CSV.
# usage (repo root, after tests/gpu/run.sh built into $LIGERD_BUILD):
#   bash tests/gpu/run_dispatch.sh
set -uo pipefail
BUILD=${LIGERD_BUILD:-/tmp/b}
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
CACHE=${LIGERD_CACHE_DIR:-$BUILD/ligerd-cache}
CSV=$OUT/dispatch_overhead.csv
echo "label,mode,gpu_us_per_op,cpu_us_per_call" > "$CSV"
bench=$BUILD/bench/dispatch_overhead
ligerd=$BUILD/server/ligerd
# Without MPS: a pipe directory with no server in it makes CUDA run without MPS.
mkdir -p /tmp/ligerd-no-mps
CUDA_MPS_PIPE_DIRECTORY=/tmp/ligerd-no-mps timeout 120 "$bench" "$ligerd" "$CACHE" "$CSV" no-mps
bash "$(dirname "$0")/../../.device/with-mps.sh" timeout 120 "$bench" "$ligerd" "$CACHE" "$CSV" mps
echo "== dispatch overhead (us): $CSV"
cat "$CSV"
