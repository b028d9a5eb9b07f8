"""The error criterion of every parity test, after flash-attention's Triton tests.

PyTorch itself is inexact in float32/float16; what we ask is that our error against a float64
reference (run on the same inputs, rounded to the tested dtype, as flash-attention's tests do)
is no worse than twice PyTorch's own error in the same dtype, plus a small atol
(scaled by the reference's magnitude, since gradients summed over many steps grow).
"""
from __future__ import annotations

import torch
from torch import Tensor

ATOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-2}


def rounded_to(dtype: torch.dtype, t: Tensor | None) -> Tensor | None:
    """`t` with only the precision of `dtype` (rounded to it), held in float64 for the exact reference."""
    return None if t is None else t.to(dtype).double()


def assert_no_worse_than_torch(name: str, ours: Tensor, theirs: Tensor, reference: Tensor) -> None:
    assert ours.shape == reference.shape, f"{name}: shape {tuple(ours.shape)} != {tuple(reference.shape)}"
    assert ours.dtype == theirs.dtype, f"{name}: dtype {ours.dtype}, torch gives {theirs.dtype}"
    assert torch.isfinite(ours).all(), f"{name}: non-finite values (unwritten output?)"
    ref = reference.double()
    err_ours = (ours.double() - ref).abs().max().item()
    err_torch = (theirs.double() - ref).abs().max().item()
    atol = ATOL[ours.dtype] * max(1.0, ref.abs().max().item())
    assert err_ours <= 2 * err_torch + atol, (
        f"{name}: max error {err_ours:.3e} > 2 x torch's {err_torch:.3e} + atol {atol:.1e}"
    )
