#!/usr/bin/env bash
# The norm-forward and cross-entropy kernels of this tree against those of commit BASE, at the
# launch shapes either planner picks (and the neighbours a tuner could pick), in one process per
# op beside a device copy of the same bytes (bench/micro/kernel_variants.cu). Needs a GPU (sm_90)
# and nvcc; nothing of the daemon. About a minute.
#   bash bench/micro/run_variants.sh [BASE] [OUT_DIR]   (defaults: HEAD, /tmp/variants)
# BASE: a commit, or a directory holding a copy of its kernels/ops (where there is no .git).
# Each line: ms, GB/s by the op's minimal bytes, % of the copy, and a hash of the outputs (equal
# hashes: the same results). Every variant runs twice, interleaved: the spread is the noise.
# At 4096 Liger-Kernel's own RMSNorm / LayerNorm forwards run beside them when triton and
# liger_kernel import (bench/micro/compile_liger.py; LIGER_SITE: a directory to import it from).
# Session 6 settled the norm-forward and cross-entropy candidates this way (docs/perf/).
set -uo pipefail
BASE=${1:-HEAD}
OUT=${2:-/tmp/variants}
cd "$(dirname "$0")/../.."
B=$(mktemp -d)  # binaries outside OUT: only the text comes back from a device run
mkdir -p "$OUT" "$B/base/kernels/ops"
ARCH=${ARCH:-sm_90}
if [[ -d $BASE/kernels/ops ]]; then
  cp "$BASE"/kernels/ops/* "$B/base/kernels/ops/"
  base_name=$BASE
else
  for f in kernels/ops/*.cuh kernels/ops/*_params.h; do git show "$BASE:$f" >"$B/base/$f" 2>/dev/null; done
  base_name=$(git rev-parse --short "$BASE")
fi

nvcc -O3 -std=c++17 -arch=$ARCH -I. bench/micro/kernel_variants.cu -lcuda -o "$B/kv" || exit 1
BF="-DLIGERD_XT=ligerd::bf16 -DLIGERD_WT=ligerd::bf16"
RMS="-DLIGERD_RMS_BWD=0 -DLIGERD_RMS_ADD=0 -DLIGERD_HAS_W=1 -DLIGERD_CAST=0"
CE="-DLIGERD_XT=ligerd::bf16 -DLIGERD_CE_PART=0 -DLIGERD_CE_SOFTCAP=0"
for tree in base new; do
  inc=$([ $tree = base ] && echo "$B/base" || echo .)
  nvcc -cubin -arch=$ARCH -I"$inc" -x cu $BF $RMS "$inc/kernels/ops/rms_norm.cuh" -o "$B/rms_$tree.cubin" &
  nvcc -cubin -arch=$ARCH -I"$inc" -x cu $BF -DLIGERD_LN_BWD=0 "$inc/kernels/ops/layer_norm.cuh" -o "$B/ln_$tree.cubin" &
  nvcc -cubin -arch=$ARCH -I"$inc" -x cu $CE "$inc/kernels/ops/cross_entropy.cuh" -o "$B/ce_$tree.cubin" &
done
wait
trees=(new)
[[ -s $B/base/kernels/ops/rms_norm.cuh && -s $B/rms_base.cubin && -s $B/ln_base.cubin && -s $B/ce_base.cubin ]] && trees=(base new) ||
  echo "BASE $BASE's kernels did not compile (no .git here? pass a directory): the tree alone"
liger=0
if python3 bench/micro/compile_liger.py "$B/liger" ${LIGER_SITE:-} >"$B/liger.log" 2>&1; then
  liger=1
else
  echo "Liger's kernels not compiled (skipped): $(tail -n 1 "$B/liger.log")"
fi
: >"$OUT/variants.txt"
echo "base $base_name vs tree $(git rev-parse --short HEAD 2>/dev/null || echo '(no git)')$(git diff --quiet 2>/dev/null || echo +changes)" |
  tee -a "$OUT/variants.txt"

# Norms, per hidden size: i<iters>:<threads per row>.<rows per block>. 4096: i4:128.2 was the
# default before session 6, i2:256.1 after; 5120 and 8192: i4:160.1 / i4:256.1, the defaults
# (i3, which aiming every width at i2 would pick, measured slower). (A shape a cubin's launch
# bounds refuse prints "not launchable".)
declare -A SHAPES=([4096]="i4:128.2 i2:256.1 i1:512.1" [5120]="i4:160.1 i3:224.1" [8192]="i4:256.1 i3:352.1")
for op in rms ln; do
  prefix=$([ $op = rms ] && echo rms_norm_fwd || echo layer_norm_fwd)
  for cols in 4096 5120 8192; do
    args=()
    for rep in 1 2; do
      for tree in "${trees[@]}"; do
        for cfg in ${SHAPES[$cols]}; do
          k=${cfg%%:*} b=${cfg#*:}
          args+=("label=${op}_${tree}_${k}_${b}_r$rep,cubin=$B/${op}_$tree.cubin,kernel=${prefix}_${k}_v,block=$b")
        done
      done
      if [[ $liger == 1 && $cols == 4096 ]]; then  # (compiled for rows of 4096: BLOCK_SIZE 4096, 8 warps)
        kname=$([ $op = rms ] && echo _rms_norm_forward_kernel || echo _layer_norm_forward_kernel)
        args+=("label=${op}_liger_r$rep,cubin=$B/liger/liger_${op}_fwd.cubin,kernel=$kname,block=256.1,smem=32,abi=liger_$op")
      fi
    done
    "$B/kv" $op 16384 $cols "${args[@]}" 2>&1 | tee -a "$OUT/variants.txt"
  done
done

# Cross-entropy at 128256 bf16: cluster:slice bytes (ceil(16032 vectors / cluster) x 16 B).
args=()
for rep in 1 2; do
  for tree in "${trees[@]}"; do
    for cs in 8:32064 6:42752 4:64128 3:85504; do
      c=${cs%%:*} smem=${cs#*:}
      args+=("label=ce_${tree}_c${c}_t256_r$rep,cubin=$B/ce_$tree.cubin,kernel=ce_fwd_cluster,block=256.1,cluster=$c,smem=$smem")
    done
  done
done
"$B/kv" ce 16384 128256 "${args[@]}" 2>&1 | tee -a "$OUT/variants.txt"
rm -rf "$B"
