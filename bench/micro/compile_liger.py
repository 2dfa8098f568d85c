"""Compiles Liger-Kernel's RMSNorm and LayerNorm forward kernels (the PyPI wheel's Triton source)
to sm_90 cubins, so that bench/micro/kernel_variants.cu can time them in the same process as
ligerd's kernels, on the same buffers, beside the same copy. No GPU needed (Triton compiles
for a named target). Specialised as Liger's own launch at 16384 x 4096 bf16 would be: BLOCK_SIZE
4096, 8 warps, strides of 1 as constants, the other strides and pointers 16-divisible.

  python3 bench/micro/compile_liger.py OUT_DIR [LIGER_SITE]

Writes liger_rms_fwd.cubin / liger_ln_fwd.cubin and, for each, the kernel name, its shared
memory and its parameter list (kernel_variants.cu's abi=liger_rms / abi=liger_ln pass exactly
these). Needs triton and liger_kernel importable (LIGER_SITE is put first on sys.path).
"""
import json
import os
import sys


def main():
    out = sys.argv[1]
    if len(sys.argv) > 2:
        sys.path.insert(0, sys.argv[2])
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from liger_kernel.ops import layer_norm, rms_norm

    os.makedirs(out, exist_ok=True)
    block, warps = 4096, 8

    def build(fn, types, consts, name):
        idx = {n: i for i, n in enumerate(fn.arg_names)}
        sig = {n: ("constexpr" if n in consts else types[n]) for n in fn.arg_names}
        # Pointers and the runtime integers are multiples of 16, as Triton's launcher would note.
        attrs = {(idx[n],): [["tt.divisibility", 16]] for n, t in types.items()
                 if n not in consts and (t.startswith("*") or t == "i32")}
        src = ASTSource(fn=fn, signature=sig, constexprs={(idx[k],): v for k, v in consts.items()}, attrs=attrs)
        k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
        with open(os.path.join(out, name + ".cubin"), "wb") as f:
            f.write(k.asm["cubin"])
        params = [line.strip() for line in k.asm["ptx"].splitlines() if line.strip().startswith(".param")]
        info = {"kernel": k.metadata.name, "shared": k.metadata.shared, "threads": warps * 32,
                "params": params}
        with open(os.path.join(out, name + ".json"), "w") as f:
            json.dump(info, f, indent=1)
        print(name, info["kernel"], "shared", info["shared"], "params", len(params))

    build(rms_norm._rms_norm_forward_kernel,
          {"Y_ptr": "*bf16", "Y_row_stride": "i32", "X_ptr": "*bf16", "X_row_stride": "i32", "W_ptr": "*bf16",
           "W_row_stride": "i32", "RSTD_ptr": "*fp32", "RSTD_row_stride": "i32", "n_cols": "i32", "eps": "fp32",
           "offset": "fp32"},
          {"W_row_stride": 1, "RSTD_row_stride": 1, "casting_mode": rms_norm._CASTING_MODE_LLAMA.value,
           "elementwise_affine": True, "BLOCK_SIZE": block},
          "liger_rms_fwd")
    build(layer_norm._layer_norm_forward_kernel,
          {"Y_ptr": "*bf16", "Y_row_stride": "i32", "X_ptr": "*bf16", "X_row_stride": "i32", "W_ptr": "*bf16",
           "W_row_stride": "i32", "B_ptr": "*bf16", "B_row_stride": "i32", "Mean_ptr": "*bf16",
           "Mean_row_stride": "i32", "RSTD_ptr": "*bf16", "RSTD_row_stride": "i32", "n_cols": "i32", "eps": "fp32"},
          {"W_row_stride": 1, "B_row_stride": 1, "Mean_row_stride": 1, "RSTD_row_stride": 1, "BLOCK_SIZE": block},
          "liger_ln_fwd")


if __name__ == "__main__":
    main()
