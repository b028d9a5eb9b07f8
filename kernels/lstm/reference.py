"""Plain PyTorch reference for one LSTM layer: the same math as the Triton kernels.

It is the readable specification of what `kernels.lstm.op.lstm_layer` computes,
the float64 oracle of the tests, and the fallback the layers use where neither the Triton
kernel nor `torch.nn.LSTM` can run (e.g. CPU under bf16 autocast).

Gate order is PyTorch's: input (i), forget (f), cell candidate (g), output (o).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def lstm_cell(
    x: Tensor,
    h: Tensor,
    c: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
    w_hr: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One LSTM step.

    Shapes: x (B, I), h (B, R), c (B, H), w_ih (4H, I), w_hh (4H, R), biases (4H,),
    w_hr (R, H) or None, where R = proj_size if w_hr is given else H.
    Returns (h_new (B, R), c_new (B, H)).
    """
    gates = F.linear(x, w_ih, b_ih) + F.linear(h, w_hh, b_hh)
    i, f, g, o = gates.chunk(4, dim=-1)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_new = torch.sigmoid(o) * torch.tanh(c_new)
    if w_hr is not None:
        h_new = F.linear(h_new, w_hr)
    return h_new, c_new


def lstm_layer_reference(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
    w_hr: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One LSTM layer over a whole sequence, one `lstm_cell` per time step.

    Shapes: x (T, B, I), h0 (B, R), c0 (B, H).
    Returns (y (T, B, R), h_T (B, R), c_T (B, H)).
    """
    h, c = h0, c0
    outputs = []
    for x_t in x.unbind(0):
        h, c = lstm_cell(x_t, h, c, w_ih, w_hh, b_ih, b_hh, w_hr)
        outputs.append(h)
    return torch.stack(outputs, 0), h, c
