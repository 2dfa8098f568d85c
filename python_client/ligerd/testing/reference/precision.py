"""Rounding constants per dtype, for tolerances written as bounds per element."""

import torch

# Unit roundoff (half an ulp, relative) of each dtype: one rounding to it moves a value by at most
# u * |value| (in the normal range).
U = {torch.float32: 2.0 ** -24, torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11}
# Spacing of the dtype's subnormals: below the smallest normal, rounding errors are absolute
# (half of this per rounding), not relative. Matters for fp16 (2^-24 = 6e-8): small |x| * rstd
# values land there.
TINY = {torch.float32: 2.0 ** -149, torch.bfloat16: 2.0 ** -133, torch.float16: 2.0 ** -24}
