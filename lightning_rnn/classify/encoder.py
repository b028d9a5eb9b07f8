"""A recurrent encoder for right-padded batches that never reads the padding.

A forward recurrence over ``[tokens..., pad, pad]`` is causal: its outputs at the valid
positions are what the sentence alone would give, whatever follows. The backward direction of
a bidirectional layer is not: run over the padded row it would start on the padding. Packing
(``pack_padded_sequence``) avoids that, but our Triton kernels take no ``PackedSequence``
(``lightning_rnn.nn`` falls back to torch.nn for one, and ``backend="triton"`` refuses it). So
the backward direction here runs its own one-layer module on each row *reversed within its
length* (``[t3, t2, t1, pad, pad]``), and its outputs are reversed back: every recurrence starts
on a real token, any backend serves every call, and the result equals the packed one.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from lightning_rnn.nn import GRU, LSTM, RNN

Cell = Literal["lstm", "gru", "rnn"]
LAYERS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}


def reverse_within_length(x: Tensor, lengths: Tensor) -> Tensor:
    """``x [B, T, F]`` with each row's first ``lengths[b]`` steps reversed, padding left in place.

    Its own inverse. ``lengths [B]`` (int64, on any device) must lie in ``1..T``."""
    steps = torch.arange(x.shape[1], device=x.device).unsqueeze(0)  # [1, T]
    lengths = lengths.to(x.device).unsqueeze(1)  # [B, 1]
    source = torch.where(steps < lengths, lengths - 1 - steps, steps)  # [B, T]
    return x.gather(1, source.unsqueeze(-1).expand_as(x))


def valid_mask(lengths: Tensor, steps: int) -> Tensor:
    """``[B, steps]`` bool, True at the first ``lengths[b]`` positions of each row."""
    return torch.arange(steps, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


class LengthAwareRNN(nn.Module):
    """Stacked, optionally bidirectional LSTM/GRU/RNN from ``lightning_rnn.nn`` over padded rows.

    Args:
        input_size, hidden_size, num_layers, bidirectional: as for ``torch.nn.LSTM``.
        cell: ``"lstm"``, ``"gru"`` or ``"rnn"`` (Elman, tanh).
        dropout: on each layer's output except the last (as ``torch.nn.LSTM``'s ``dropout``).
        backend: ``"auto"``, ``"triton"`` or ``"torch"`` for every recurrent module.

    Shapes: ``forward(x [B, T, input_size], lengths [B])`` -> ``(outputs [B, T, D*H], last [B, D*H])``
    with D = 2 if bidirectional else 1, H = hidden_size. ``outputs`` is zero at padded positions;
    ``last`` is the forward direction's output at each row's last token, then (bidirectional) the
    backward direction's at its first token: each direction's summary of the whole sentence.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bidirectional: bool = False,
                 cell: Cell = "lstm", dropout: float = 0.0, backend: str = "auto") -> None:
        super().__init__()
        if cell not in LAYERS:
            raise ValueError(f"cell must be one of {sorted(LAYERS)}, got {cell!r}")
        self.directions = 2 if bidirectional else 1
        self.hidden_size = hidden_size
        width = hidden_size * self.directions
        # layers[i][0] reads forward, layers[i][1] reads each row reversed within its length
        self.layers = nn.ModuleList(
            nn.ModuleList(LAYERS[cell](input_size if i == 0 else width, hidden_size, batch_first=True, backend=backend)
                          for _ in range(self.directions))
            for i in range(num_layers)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        if x.dim() != 3 or lengths.shape != x.shape[:1]:
            raise ValueError(f"expected x [B, T, F] and lengths [B], got {list(x.shape)} and {list(lengths.shape)}")
        if len(lengths) and (int(lengths.min()) < 1 or int(lengths.max()) > x.shape[1]):
            raise ValueError(f"lengths must lie in 1..{x.shape[1]} (the padded length), got {lengths.tolist()}")
        mask = valid_mask(lengths.to(x.device), x.shape[1]).unsqueeze(-1)  # [B, T, 1]
        for depth, directions in enumerate(self.layers):
            if depth:
                x = self.dropout(x)
            forward_out, _ = directions[0](x)
            outputs = [forward_out]
            if self.directions == 2:
                backward_out, _ = directions[1](reverse_within_length(x, lengths))
                outputs.append(reverse_within_length(backward_out, lengths))
            x = torch.cat(outputs, dim=-1).masked_fill(~mask, 0.0)  # [B, T, D*H]
        rows = torch.arange(x.shape[0], device=x.device)
        last = x[rows, lengths.to(x.device) - 1, :self.hidden_size]  # forward: at the last token
        if self.directions == 2:
            last = torch.cat([last, x[:, 0, self.hidden_size:]], dim=-1)  # backward: at the first token
        return x, last
