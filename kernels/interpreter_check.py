"""Can Triton's CPU interpreter run our kernels in this environment?

Our kernels loop over a runtime bound (`for k0 in range(0, K, BLOCK_K)`). Triton 3.6's
interpreter turns that bound into a one-element numpy array and numpy 2.4 refuses to use it
as an index, so every launch fails with an opaque InterpreterError (numpy 2.2 works; Triton 3.9
works with both). Rather than fail inside the first kernel, run a tiny kernel of the same shape
once and report what went wrong, so `backend="auto"` can fall back and `backend="triton"` can
say why. Call this only with TRITON_INTERPRET=1 set before Triton was imported.
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl


@triton.jit
def _sum_blocks_kernel(x_ptr, out_ptr, K, BLOCK: tl.constexpr):
    total = tl.zeros([BLOCK], tl.float32)
    for k0 in range(0, K, BLOCK):  # the runtime-bounded loop every LSTM kernel has
        offs = k0 + tl.arange(0, BLOCK)
        total += tl.load(x_ptr + offs, mask=offs < K, other=0.0)
    tl.store(out_ptr + tl.arange(0, BLOCK), total)


@functools.lru_cache(maxsize=None)
def interpreter_problem() -> str | None:
    """None if the interpreter runs a runtime-bounded loop correctly, else what went wrong."""
    x = torch.arange(40, dtype=torch.float32)
    out = torch.full((16,), float("nan"))
    try:
        _sum_blocks_kernel[(1,)](x, out, 40, BLOCK=16)
    except Exception as err:  # noqa: BLE001 - any failure here means the kernels cannot run
        import numpy

        return (f"Triton {triton.__version__}'s CPU interpreter fails here with numpy {numpy.__version__} "
                f"({type(err).__name__}: {err}); numpy 2.2 or a newer Triton avoids it")
    expected = torch.cat([x, torch.zeros(8)]).view(3, 16).sum(0)  # blocks of 16, 16 and 8 values
    if not torch.equal(out, expected):
        return f"Triton {triton.__version__}'s CPU interpreter computed a wrong result on a probe kernel"
    return None
