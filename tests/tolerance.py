"""The error criterion of every parity test, after flash-attention's Triton tests.

PyTorch itself is inexact in float32/float16; what we ask is that our error against a float64
reference (run on the same inputs, rounded to the tested dtype, as flash-attention's tests do)
is no worse than twice PyTorch's own error in the same dtype, plus a small atol
(scaled by the reference's magnitude, since gradients summed over many steps grow).

Where implementations may legitimately differ (where a stacked RNN rounds to 16 bits; which side
of relu's kink a unit within rounding of 0 takes), the reference may be several float64 results,
each exact for one such choice; each result's error is then taken against the nearest of them
(see test_gru_rnn_module.check_module_parity for why).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

ATOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-2}


def rounded_to(dtype: torch.dtype, t: Tensor | None) -> Tensor | None:
    """`t` with only the precision of `dtype` (rounded to it), held in float64 for the exact reference."""
    return None if t is None else t.to(dtype).double()


def assert_no_worse_than_torch(name: str, ours: Tensor, theirs: Tensor, reference: Tensor | Sequence[Tensor]) -> None:
    references = [reference] if isinstance(reference, Tensor) else list(reference)
    for ref in references:
        assert ours.shape == ref.shape, f"{name}: shape {tuple(ours.shape)} != {tuple(ref.shape)}"
    assert ours.dtype == theirs.dtype, f"{name}: dtype {ours.dtype}, torch gives {theirs.dtype}"
    assert torch.isfinite(ours).all(), f"{name}: non-finite values (unwritten output?)"
    refs = [ref.double() for ref in references]
    err_ours = min((ours.double() - ref).abs().max().item() for ref in refs)
    err_torch = min((theirs.double() - ref).abs().max().item() for ref in refs)
    atol = ATOL[ours.dtype] * max(1.0, *(ref.abs().max().item() for ref in refs))
    assert err_ours <= 2 * err_torch + atol, (
        f"{name}: max error {err_ours:.3e} > 2 x torch's {err_torch:.3e} + atol {atol:.1e}"
    )
