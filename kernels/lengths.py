"""Per-row sequence lengths on the host side, shared by the three cells' layers and their fallbacks.

A batch of rows of different lengths is a padded (T, B, .) tensor plus `lengths` (B,), each in 1..T.
Every path (the persistent engine, the per-step kernels, the PyTorch cell loops) gives what
torch.nn gives for the packed batch: a row past its length keeps its state (so the last step's
state is its h_n, c_n), its outputs there are zero, and the gradients there are ignored. All of it
stays on the device: masks and gathers, no host sync, no loop over rows.
"""
from __future__ import annotations

import torch
from torch import Tensor


def valid_steps(lengths: Tensor, T: int) -> Tensor:
    """(T, B) bool: step t of row b is within its length."""
    return torch.arange(T, device=lengths.device)[:, None] < lengths[None, :]


def zero_past(y: Tensor, lengths: Tensor | None) -> Tensor:
    """y (T, B, .) with zeros past each row's length (a new tensor; y itself where no lengths)."""
    if lengths is None:
        return y
    return torch.where(valid_steps(lengths, y.shape[0])[..., None], y, 0.0)  # (not a product: inf * 0 is NaN)


def last_valid(seq: Tensor, lengths: Tensor) -> Tensor:
    """seq[lengths[b] - 1, b] for every row b: (B, .) from seq (T, B, .)."""
    index = (lengths - 1).view(1, -1, 1).expand(1, seq.shape[1], seq.shape[2])
    return seq.gather(0, index.to(seq.device, torch.int64)).squeeze(0)


def grad_in(dy: Tensor, dh_T: Tensor, lengths: Tensor | None) -> Tensor:
    """dL/dh_t arriving from above, fp32, contiguous (the kernels index it densely; upstream gradients
    may come with any strides): dy, plus dh_T at the last step (at each row's last valid step with
    lengths, dy being ignored past the length)."""
    dh = dy.to(torch.float32, memory_format=torch.contiguous_format, copy=True)
    if lengths is None:
        dh[-1] += dh_T.float()
        return dh
    dh *= valid_steps(lengths, dh.shape[0])[..., None]
    index = (lengths - 1).view(1, -1, 1).expand(1, dh.shape[1], dh.shape[2]).to(torch.int64)
    return dh.scatter_add_(0, index, dh_T.float().unsqueeze(0))


def reverse_within(x: Tensor, lengths: Tensor) -> Tensor:
    """x (T, B, .) with each row's first lengths[b] steps in reverse order (the rest as they were):
    the reverse direction's input, and, applied again, its output back in time order (an involution)."""
    T = x.shape[0]
    t = torch.arange(T, device=x.device)[:, None]
    lengths = lengths.to(x.device)
    index = torch.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)  # (T, B)
    return x.gather(0, index[..., None].expand(x.shape))

