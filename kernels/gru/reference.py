"""Plain PyTorch reference for one GRU layer: the same math as the Triton kernels.

The readable specification of `kernels.gru.function.gru_layer` (torch.nn.GRU's equations, gates
r, z, n), the float64 oracle of the tests, and the fallback the layers use where neither Triton
nor torch.nn.GRU can run (e.g. CPU under bf16 autocast).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def gru_cell(x: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None = None,
             b_hh: Tensor | None = None) -> Tensor:
    """One GRU step. x (B, I), h (B, H), w_ih (3H, I), w_hh (3H, H), biases (3H,) -> h' (B, H)."""
    i_r, i_z, i_n = F.linear(x, w_ih, b_ih).chunk(3, dim=-1)
    h_r, h_z, h_n = F.linear(h, w_hh, b_hh).chunk(3, dim=-1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)  # r multiplies W_hn h + b_hn, not the input part
    return (1 - z) * n + z * h


def gru_layer_reference(x: Tensor, h0: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None = None,
                        b_hh: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One layer over a sequence, one `gru_cell` per step. x (T, B, I), h0 (B, H) -> (y (T, B, H), h_T)."""
    h = h0
    outputs = []
    for x_t in x.unbind(0):
        h = gru_cell(x_t, h, w_ih, w_hh, b_ih, b_hh)
        outputs.append(h)
    return torch.stack(outputs, 0), h
