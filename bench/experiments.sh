#!/usr/bin/env bash
# Performance questions of issue 4, each one GPU measurement, in stages that fit one device call
# (600 s) each. Writes under OUT (default ./out/experiments). Sessions 6 and 7's answers:
# docs/perf/ (rms_norm.md, layer_norm.md, cross_entropy.md, fused_linear_cross_entropy.md).
#   bash bench/experiments.sh kernels [OUT]   norm-forward and cross-entropy kernels of this tree
#                                             against those of $BASE (default HEAD~1) at the
#                                             planners' shapes, Liger's forwards beside them
#                                             (bench/micro/run_variants.sh; ~1 min; builds the
#                                             daemon alongside for flce)
#   bash bench/experiments.sh gemm [OUT]      cuBLASLt configs beyond the heuristic's offers for
#                                             the fused loss's three GEMMs (lt_gemm_algos --search)
#   bash bench/experiments.sh flce [OUT]      the fused loss in the op: chunk 768 / 640 x GEMM
#                                             workspace 4 / 32 MiB, beside torch.compile (builds
#                                             the daemon into $LIGERD_BUILD, default /tmp/b)
#   bash bench/experiments.sh norms [OUT]     where the norm forwards' gaps to Liger come from
#                                             (session 7, docs/perf/rms_norm.md): the
#                                             benchmark's path (norm_fwd_paths.py), the timing
#                                             order (run_kernels.py --impls), the state after
#                                             torch.compile (liger_after_compile.py); ~3 min
set -uo pipefail
STAGE=${1:?usage: bench/experiments.sh kernels|gemm|flce|norms [OUT]}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
OUT=${2:-$ROOT/out/experiments}
mkdir -p "$OUT"
BUILD=${LIGERD_BUILD:-/tmp/b}
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv >"$OUT/gpu_$STAGE.txt" 2>&1

# The daemon and its Python extension, unless already built (the flce stage needs them; the
# kernels stage starts the build in the background so that a following flce call finds it ready).
build_daemon() {
  if [[ ! -x $BUILD/server/ligerd || ! -f $BUILD/python/ligerd/__init__.py ]]; then
    cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLIGERD_BUILD_PYTHON=ON \
      "-DPython3_EXECUTABLE=$(command -v python3)" >"$OUT/configure.log" 2>&1 &&
      cmake --build "$BUILD" -j "$(nproc)" >"$OUT/build.log" 2>&1 || { tail -20 "$OUT/build.log"; return 1; }
  fi
}

case "$STAGE" in
  kernels)
    build_daemon &
    build=$!
    # Liger's forwards beside ours: from LIGER_SITE, else the wheel in .whl/ when there is one.
    if [[ -z ${LIGER_SITE:-} ]] && compgen -G ".whl/liger_kernel-*.whl" >/dev/null; then
      LIGER_SITE=/tmp/liger-site
      python3 -m pip install -q --no-index --no-deps --target "$LIGER_SITE" .whl/liger_kernel-*.whl >/dev/null 2>&1
    fi
    LIGER_SITE=${LIGER_SITE:-} bash bench/micro/run_variants.sh "${BASE:-HEAD~1}" "$OUT/variants"
    wait $build && echo "daemon built in $BUILD"
    ;;
  gemm)
    nvcc -O3 -arch=sm_90 -std=c++17 bench/micro/lt_gemm_algos.cu -lcublasLt -o "$OUT/lt_gemm_algos" || exit 1
    "$OUT/lt_gemm_algos" --search 640 768 2>&1 | tee "$OUT/lt_gemm_search.txt"
    ;;
  flce)
    build_daemon || exit 1
    export PYTHONPATH=$BUILD/python:${PYTHONPATH:-} LIGERD_BIN=$BUILD/server/ligerd
    # The default (768-token chunks, 4 MiB) beside torch.compile, then the alternatives alone.
    timeout 150 python3 bench/flce.py --impls ligerd torch.compile --out "$OUT/flce_c768_ws4" >"$OUT/flce_c768_ws4.log" 2>&1
    for cfg in 640:32 768:32 640:4; do
      c=${cfg%%:*} ws=${cfg#*:}
      LIGERD_FLCE_CHUNK=$c LIGERD_GEMM_WORKSPACE_MIB=$ws timeout 90 \
        python3 bench/flce.py --impls ligerd --out "$OUT/flce_c${c}_ws$ws" >"$OUT/flce_c${c}_ws$ws.log" 2>&1
    done
    grep -H "\[flce\]" "$OUT"/flce_*.log
    ;;
  norms)
    build_daemon || exit 1
    export LIGERD_PEER_SITE=${LIGERD_PEER_SITE:-$BUILD/peers}
    if compgen -G ".whl/liger_kernel-*.whl" >/dev/null && [[ ! -d $LIGERD_PEER_SITE/liger_kernel ]]; then
      python3 -m pip install -q --no-index --no-deps --target "$LIGERD_PEER_SITE" .whl/liger_kernel-*.whl >/dev/null 2>&1
    fi
    export PYTHONPATH=$BUILD/python:$LIGERD_PEER_SITE:${PYTHONPATH:-} LIGERD_BIN=$BUILD/server/ligerd
    timeout 120 python3 bench/micro/norm_fwd_paths.py --json "$OUT/norm_fwd_paths.json" >"$OUT/norm_fwd_paths.txt" 2>&1
    A="--quick --ops rms_norm layer_norm fused_add_rms_norm rope --passes fwd --no-memory --no-overhead --no-eager-launch"
    for order in "ligerd liger" "liger ligerd" "eager torch.compile liger ligerd"; do
      tag=${order// /_}
      # shellcheck disable=SC2086
      timeout 120 python3 bench/run_kernels.py --out "$OUT/order_$tag" $A --impls $order >"$OUT/order_$tag.log" 2>&1
    done
    timeout 120 python3 bench/micro/liger_after_compile.py >"$OUT/liger_after_compile.txt" 2>&1
    grep -h "graph\|ms  regs" "$OUT/norm_fwd_paths.txt" "$OUT/liger_after_compile.txt"
    ;;
  *)
    echo "unknown stage $STAGE (kernels, gemm, flce or norms)"
    exit 2
    ;;
esac
