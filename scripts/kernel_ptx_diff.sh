#!/usr/bin/env bash
# Which NVRTC kernel modules a source change actually changes: compiles every module source in
# kernels/ops/ to PTX with nvcc (no GPU needed) under a matrix of the -D defines the daemon's
# catalogue uses (every dtype, pass and feature flag; see the MakeVariant functions in
# kernels/ops/*.cc), at BASE and in the working tree, and lists the combinations whose PTX
# differs. "0 differ" means the GPU code the daemon builds is byte-for-byte what was measured and
# GPU-tested at BASE, whatever the diff looks like: the check for a refactor or for a
# default-off switch made on a machine without a GPU.
#   scripts/kernel_ptx_diff.sh [BASE_REV]     (default HEAD; sm_90, about 2 minutes on 2 cores)
set -uo pipefail
BASE=${1:-HEAD}
ARCH=${ARCH:-sm_90}
ROOT=$(git rev-parse --show-toplevel)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/base" "$WORK/ptx/base" "$WORK/ptx/tree"
git -C "$ROOT" archive "$BASE" kernels | tar -x -C "$WORK/base" || { echo "cannot read $BASE"; exit 2; }

combos=()
for xt in float ligerd::bf16 ligerd::f16; do
  for bwd in 0 1; do
    for add in 0 1; do
      for cast in 0 1 2; do
        combos+=("rms_norm.cuh -DLIGERD_RMS_BWD=$bwd -DLIGERD_RMS_ADD=$add -DLIGERD_XT=$xt -DLIGERD_WT=$xt -DLIGERD_HAS_W=1 -DLIGERD_CAST=$cast")
      done
    done
    combos+=("rms_norm.cuh -DLIGERD_RMS_BWD=$bwd -DLIGERD_RMS_ADD=0 -DLIGERD_XT=$xt -DLIGERD_WT=float -DLIGERD_HAS_W=1 -DLIGERD_CAST=0")
    combos+=("rms_norm.cuh -DLIGERD_RMS_BWD=$bwd -DLIGERD_RMS_ADD=0 -DLIGERD_XT=$xt -DLIGERD_WT=$xt -DLIGERD_HAS_W=0 -DLIGERD_CAST=1")
    for wt in $xt float; do combos+=("layer_norm.cuh -DLIGERD_LN_BWD=$bwd -DLIGERD_XT=$xt -DLIGERD_WT=$wt"); done
    for act in 0 1; do combos+=("glu.cuh -DLIGERD_GLU_BWD=$bwd -DLIGERD_GLU_ACT=$act -DLIGERD_XT=$xt"); done
    for ct in $xt float; do combos+=("rope.cuh -DLIGERD_ROPE_BWD=$bwd -DLIGERD_XT=$xt -DLIGERD_CT=$ct"); done
  done
  for part in 0 1 2; do
    for sc in 0 1; do
      for f in 0 1; do
        combos+=("cross_entropy.cuh -DLIGERD_CE_PART=$part -DLIGERD_XT=$xt -DLIGERD_CE_SOFTCAP=$sc -DLIGERD_CE_FEATURES=$f")
      done
    done
  done
  for op in 0 1 2 3 4; do combos+=("distill.cuh -DLIGERD_DISTILL_OP=$op -DLIGERD_XT=$xt"); done
  for bwd in 0 1; do combos+=("relu_squared.cuh -DLIGERD_RELU2_BWD=$bwd -DLIGERD_XT=$xt"); done
  for bwd in 0 1; do for pairs in 0 1; do combos+=("clamped_glu.cuh -DLIGERD_CGLU_BWD=$bwd -DLIGERD_CGLU_PAIRS=$pairs -DLIGERD_XT=$xt"); done; done
done

compile() {  # tree-root out-file module defines...
  local root=$1 out=$2 module=$3
  shift 3
  [ -f "$root/kernels/ops/$module" ] || { echo "ABSENT" >"$out"; return; }
  # The launch-bound macros (LIGERD_LB_*) come from the planner's launch config; empty on both
  # sides here, so the comparison is of the code.
  local lb
  lb=$(grep -ohE 'LIGERD_LB_[A-Z0-9_]+' "$ROOT"/kernels/ops/*.cuh "$root"/kernels/ops/*.cuh 2>/dev/null | sort -u | sed 's/.*/-D&=/')
  # shellcheck disable=SC2086
  nvcc -arch="$ARCH" -I"$root" -ptx -x cu $lb "$@" "$root/kernels/ops/$module" -o "$out" 2>"$out.log" || echo "FAILED" >"$out"
}
jobs_max=$(nproc)
for i in "${!combos[@]}"; do
  read -r module defs <<<"${combos[$i]}"
  compile "$WORK/base" "$WORK/ptx/base/$i.ptx" "$module" $defs &
  compile "$ROOT" "$WORK/ptx/tree/$i.ptx" "$module" $defs &
  while (($(jobs -rp | wc -l) >= jobs_max)); do wait -n; done
done
wait

differ=0
for i in "${!combos[@]}"; do
  if grep -qx ABSENT "$WORK/ptx/base/$i.ptx"; then
    echo "new since $BASE: ${combos[$i]}"
  elif grep -qx FAILED "$WORK/ptx/tree/$i.ptx"; then
    echo "does not compile in the working tree: ${combos[$i]}"; sed -n 1,5p "$WORK/ptx/tree/$i.ptx.log"; differ=$((differ + 1))
  elif ! cmp -s "$WORK/ptx/base/$i.ptx" "$WORK/ptx/tree/$i.ptx"; then
    echo "differs: ${combos[$i]} ($(diff "$WORK/ptx/base/$i.ptx" "$WORK/ptx/tree/$i.ptx" | grep -c '^[<>]') lines)"
    differ=$((differ + 1))
  fi
done
echo "${#combos[@]} module builds compared against $BASE: $differ differ"
[ $differ -eq 0 ]
