"""A recurrent encoder for right-padded batches that never reads the padding.

Each layer is one (optionally bidirectional) module of ``lightning_rnn.nn`` called with the rows'
``lengths`` (our addition to torch.nn's signature): the forward direction stops at each row's last
token and the backward direction starts there, as for a packed batch, on every backend (our
kernels freeze a row past its length; torch.nn runs the packed batch). Outputs at the padding are
zero. Checkpoints of the former layout (one module per direction) still load.
"""

from __future__ import annotations

import re
from typing import Literal

import torch
from torch import Tensor, nn

from lightning_rnn.nn import GRU, LSTM, RNN

Cell = Literal["lstm", "gru", "rnn"]
LAYERS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}


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
        self.layers = nn.ModuleList(
            LAYERS[cell](input_size if i == 0 else width, hidden_size, batch_first=True, bidirectional=bidirectional,
                         backend=backend)
            for i in range(num_layers)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        if x.dim() != 3 or lengths.shape != x.shape[:1]:
            raise ValueError(f"expected x [B, T, F] and lengths [B], got {list(x.shape)} and {list(lengths.shape)}")
        lengths = lengths.to(x.device)
        for depth, layer in enumerate(self.layers):
            if depth:
                x = self.dropout(x)
            x, _ = layer(x, lengths=lengths)  # [B, T, D*H], zero past each row's length
        rows = torch.arange(x.shape[0], device=x.device)
        last = x[rows, lengths - 1, :self.hidden_size]  # forward: at the last token
        if self.directions == 2:
            last = torch.cat([last, x[:, 0, self.hidden_size:]], dim=-1)  # backward: at the first token
        return x, last

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """The former layout, one module per direction (``layers.i.0.weight_ih_l0``, ``layers.i.1....``),
        renamed to one bidirectional module per layer (``layers.i.weight_ih_l0[_reverse]``)."""
        old = re.compile(re.escape(prefix) + r"layers\.(\d+)\.([01])\.(\w+_l0)$")
        for key in [k for k in state_dict if old.match(k)]:
            layer, direction, name = old.match(key).groups()
            state_dict[f"{prefix}layers.{layer}.{name}{'_reverse' if direction == '1' else ''}"] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
