"""Do the GRU and Elman step kernels fit an H100? Compile them for sm_90 at the launch
configurations the layers use (`launch_configs` in kernels/gru and kernels/rnn) and read the
registers, stack (spills) and shared memory of each build; no GPU needed.

    python -m kernels.rnn.h100_fit --hidden 768,1024 --batch 16 --dtypes fp32,fp16,bf16

Exit status 0: every build fits with zero spills; 1: some do not; 2: cannot check here (no
cuobjdump in the Triton wheel, or run under TRITON_INTERPRET=1). H100 limits: 255 registers per
thread, 227 KB shared memory per block.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

MAX_REGISTERS = 255
MAX_SHARED = 227 * 1024


def build_usage(cfg: dict, weight_dtype: str) -> tuple[int, int, int]:
    """(registers, stack bytes, shared bytes) of one sm_90 build of cfg's kernel."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernel = cfg["kernel"]
    signature = {p.name: "constexpr" if p.is_constexpr else
                 ("*" + weight_dtype if p.name == "w_hh_ptr" else "*fp32") if p.name.endswith("_ptr") else "i32"
                 for p in kernel.params}
    compiled = triton.compile(ASTSource(kernel, signature, cfg["constexprs"]), target=GPUTarget("cuda", 90, 32),
                              options={"num_warps": cfg["num_warps"]})
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        usage = subprocess.run([str(cuobjdump), "-res-usage", f.name], capture_output=True, text=True, check=True)
    regs, stack = map(int, re.search(r"REG:(\d+) STACK:(\d+)", usage.stdout).groups())
    return regs, stack, compiled.metadata.shared


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", default="768,1024")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--dtypes", default="fp32,fp16,bf16", help="weight dtypes (activations are fp32)")
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("cannot check: TRITON_INTERPRET=1 compiles the kernels for the interpreter")
        return 2
    import triton

    if not (Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump").exists():
        print("cannot check: this Triton wheel has no cuobjdump")
        return 2
    from kernels.gru.function import launch_configs as gru_configs
    from kernels.rnn.function import launch_configs as rnn_configs

    failures = 0
    for hidden in (int(h) for h in args.hidden.split(",")):
        for dtype in args.dtypes.split(","):
            for cfg in gru_configs(args.batch, hidden) + rnn_configs(args.batch, hidden):
                regs, stack, shared = build_usage(cfg, dtype)
                fits = stack == 0 and regs <= MAX_REGISTERS and shared <= MAX_SHARED
                failures += not fits
                print(f"{'ok' if fits else 'DOES NOT FIT'}: H={hidden} B={args.batch} w_hh {dtype} "
                      f"{cfg['kernel'].fn.__name__} {cfg['constexprs']} warps={cfg['num_warps']} grid={cfg['grid']}: "
                      f"{regs} registers, {stack} B stack, {shared} B shared")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
