"""Plain PyTorch reference for one Elman RNN layer: the same math as the Triton kernels.

The readable specification of `kernels.rnn.function.rnn_layer`, the float64 oracle of the
tests, and the fallback the layers use where neither Triton nor torch.nn.RNN can run.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def rnn_cell(x: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None = None,
             b_hh: Tensor | None = None, nonlinearity: str = "tanh") -> Tensor:
    """One Elman step: act(x W_ih^T + b_ih + h W_hh^T + b_hh). x (B, I), h (B, H) -> (B, H)."""
    pre = F.linear(x, w_ih, b_ih) + F.linear(h, w_hh, b_hh)
    return torch.tanh(pre) if nonlinearity == "tanh" else torch.relu(pre)


def rnn_layer_reference(x: Tensor, h0: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None = None,
                        b_hh: Tensor | None = None, nonlinearity: str = "tanh") -> tuple[Tensor, Tensor]:
    """One layer over a sequence, one `rnn_cell` per step. x (T, B, I), h0 (B, H) -> (y (T, B, H), h_T)."""
    h = h0
    outputs = []
    for x_t in x.unbind(0):
        h = rnn_cell(x_t, h, w_ih, w_hh, b_ih, b_hh, nonlinearity)
        outputs.append(h)
    return torch.stack(outputs, 0), h
