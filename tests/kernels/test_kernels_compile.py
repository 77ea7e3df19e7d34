"""The Triton kernels compile for the GPU they are built for (Hopper, sm_90) on any machine, GPU or not.

The other kernel tests run under Triton's interpreter where there is no GPU, and the interpreter accepts
code that a GPU compile refuses (a kernel reading a module global that is not a ``tl.constexpr``, say).
Triton's compiler runs without a device, so each kernel is compiled here for sm_90, down to its cubin, for
every argument type and compile-time flag the dispatcher launches it with. The interpreter patches
``triton.language`` once loaded, so the compile runs in a fresh interpreter without it.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

TARGET = ("cuda", 90, 32)  # backend, compute capability, warp size


def compile_all() -> list[str]:
    """Compile every launch configuration; the name of each one compiled."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from genret.kernels import triton_ops

    target = GPUTarget(*TARGET)
    done = []
    for src, tok, child_logits, has_bias in itertools.product(
            ("fp32", "bf16"), ("i16", "i32"), (False, True), (False, True)):
        if has_bias and not child_logits:
            continue
        signature = {
            "src_ptr": f"*{src}", "src_stride": "i64", "weight_ptr": f"*{src}", "weight_stride": "i64",
            "bias_ptr": f"*{src}", "beam_ptr": "*fp32", "node_ptr": "*i64", "done_ptr": "*i1",
            "row_ptr_ptr": "*i32", "token_ptr": f"*{tok}", "live_ptr": "*i32", "out_score_ptr": "*fp32",
            "out_token_ptr": "*i64", "out_node_ptr": "*i64", "num_roots": "i32", "vocab": "i32", "hidden": "i32",
            "WIDTH": "constexpr", "BLOCK_C": "constexpr", "BLOCK_V": "constexpr", "BLOCK_H": "constexpr",
            "CHILD_LOGITS": "constexpr", "HAS_BIAS": "constexpr"}
        constants = {"WIDTH": 20, "BLOCK_C": 16, "BLOCK_V": 1024, "BLOCK_H": 64, "CHILD_LOGITS": child_logits,
                     "HAS_BIAS": has_bias}
        triton.compile(ASTSource(triton_ops._row_topk_kernel, signature, constants), target=target)
        done.append(f"row_topk {src} {tok} child_logits={child_logits} bias={has_bias}")
    signature = {"score_ptr": "*fp32", "token_ptr": "*i64", "node_ptr": "*i64", "out_score_ptr": "*fp32",
                 "out_token_ptr": "*i64", "out_node_ptr": "*i64", "out_parent_ptr": "*i64", "per_query": "i32",
                 "row_width": "i32", "K": "constexpr", "BLOCK": "constexpr"}
    triton.compile(ASTSource(triton_ops._beam_select_kernel, signature, {"K": 20, "BLOCK": 512}), target=target)
    done.append("beam_select")
    return done


def test_the_kernels_compile_for_hopper() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    run = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    compiled = run.stdout.split("\n")
    assert "beam_select" in compiled and sum(x.startswith("row_topk") for x in compiled) == 12, run.stdout


if __name__ == "__main__":
    print("\n".join(compile_all()))
