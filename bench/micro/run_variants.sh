#!/usr/bin/env bash
# The measurement switches of the norm-forward and cross-entropy kernel sources (see
# kernels/ops/rowwise.cuh and cross_entropy.cuh), timed against their defaults at the LLaMA-3-8B
# shapes of bench/run_kernels.py, each crossed with the launch shapes the planner or the tuner
# could pick. Needs a GPU (sm_90) and nvcc; nothing of the daemon. About a minute.
#   bash bench/micro/run_variants.sh [OUT_DIR]      (default /tmp/variants; writes variants.txt)
# Each line: ms, GB/s by the op's minimal bytes, % of a device copy of the same bytes measured in
# the same process, and a hash of the outputs (equal hashes: the same results).
set -uo pipefail
OUT=${1:-/tmp/variants}
B=$OUT/bin
mkdir -p "$B"
cd "$(dirname "$0")/../.."
ARCH=${ARCH:-sm_90}

nvcc -O3 -std=c++17 -arch=$ARCH -I. bench/micro/kernel_variants.cu -lcuda -o "$B/kv" || exit 1

BF="-DLIGERD_XT=ligerd::bf16 -DLIGERD_WT=ligerd::bf16"
RMS="-DLIGERD_RMS_BWD=0 -DLIGERD_RMS_ADD=0 -DLIGERD_HAS_W=1 -DLIGERD_CAST=0"
LN="-DLIGERD_LN_BWD=0"
# Norm switches: W early (0/1) x register bounds (none, or 256 threads with 5, 6 or 8 blocks/SM).
BOUNDS=("" "-DLIGERD_ROW_FWD_MAXT=256 -DLIGERD_ROW_FWD_MINB=5" "-DLIGERD_ROW_FWD_MAXT=256 -DLIGERD_ROW_FWD_MINB=6"
        "-DLIGERD_ROW_FWD_MAXT=256 -DLIGERD_ROW_FWD_MINB=8")
BNAME=(lb1024 lb256x5 lb256x6 lb256x8)
for we in 0 1; do
  for i in "${!BOUNDS[@]}"; do
    nvcc -cubin -arch=$ARCH -I. -x cu $BF $RMS -DLIGERD_ROW_W_EARLY=$we ${BOUNDS[$i]} kernels/ops/rms_norm.cuh \
      -o "$B/rms_we${we}_${BNAME[$i]}.cubin" &
    nvcc -cubin -arch=$ARCH -I. -x cu $BF $LN -DLIGERD_ROW_W_EARLY=$we ${BOUNDS[$i]} kernels/ops/layer_norm.cuh \
      -o "$B/ln_we${we}_${BNAME[$i]}.cubin" &
  done
done
for a in 0 1 2; do
  nvcc -cubin -arch=$ARCH -I. -x cu -DLIGERD_XT=ligerd::bf16 -DLIGERD_CE_PART=0 -DLIGERD_CE_SOFTCAP=0 \
    -DLIGERD_CE_ASYNC=$a kernels/ops/cross_entropy.cuh -o "$B/ce_async$a.cubin" &
done
wait

: > "$OUT/variants.txt"
for op in rms ln; do
  prefix=$([ $op = rms ] && echo rms_norm_fwd || echo layer_norm_fwd)
  args=()
  for rep in 1 2; do  # twice, interleaved: the spread between the two is the noise
    for we in 0 1; do
      for bn in "${BNAME[@]}"; do
        # i<iters>:<threads per row>.<rows per block> (the planner's default at 4096 is i4:128.2)
        for cfg in i4:128.2 i2:256.1 i2:256.2 i1:512.1 i4:128.1 i8:64.4; do
          k=${cfg%%:*} b=${cfg#*:}
          args+=("label=${op}_we${we}_${bn}_${k}_${b}_r$rep,cubin=$B/${op}_we${we}_${bn}.cubin,kernel=${prefix}_${k}_v,block=$b")
        done
      done
    done
  done
  "$B/kv" $op 16384 4096 "${args[@]}" 2>&1 | tee -a "$OUT/variants.txt"
done

args=()
for rep in 1 2; do
  for a in 0 1 2; do
    # cluster:slice bytes of a 128256-wide bf16 row (ceil(16032 vectors / cluster) x 16 B)
    for cs in 8:32064 6:42752 4:64128 3:85504; do
      c=${cs%%:*} smem=${cs#*:}
      [ $a = 2 ] && smem=$((smem * 2))  # two buffers
      [ $smem -gt 232448 ] && continue  # an H100 CTA's opt-in maximum (227 KiB)
      for t in 256 512; do
        args+=("label=ce_async${a}_c${c}_t${t}_r$rep,cubin=$B/ce_async$a.cubin,kernel=ce_fwd_cluster,block=$t.1,cluster=$c,smem=$smem")
      done
    done
  done
done
"$B/kv" ce 16384 128256 "${args[@]}" 2>&1 | tee -a "$OUT/variants.txt"
