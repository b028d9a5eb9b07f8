"""Recurrent cells and the multi-layer, bidirectional time loop, in plain PyTorch.

This is the fallback path for where neither the Triton kernel nor torch.nn's fused RNN can run
(for instance on the CPU under bf16 autocast). The LSTM cell is the one the Triton kernels are
tested against (`kernels.lstm.reference`), and likewise the GRU and Elman cells (`kernels.gru.reference`,
`kernels.rnn.reference`); all follow torch.nn's equations.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from kernels.gru.reference import gru_cell
from kernels.lstm.reference import lstm_cell, lstm_layer_reference
from kernels.rnn.reference import rnn_cell

State = tuple[Tensor, ...]
#: layer_fn(x (T, B, I), state, weights) -> (y (T, B, R), final state)
LayerFn = Callable[[Tensor, State, Sequence[Tensor | None]], tuple[Tensor, State]]


def lstm_layer_loop(x: Tensor, state: State, weights: Sequence[Tensor | None]) -> tuple[Tensor, State]:
    y, h, c = lstm_layer_reference(x, state[0], state[1], *weights)
    return y, (h, c)


def single_state_layer_loop(cell: Callable[..., Tensor]) -> LayerFn:
    """A layer function that runs `cell` (GRU or Elman) over time."""

    def run(x: Tensor, state: State, weights: Sequence[Tensor | None]) -> tuple[Tensor, State]:
        h = state[0]
        outputs = []
        for x_t in x.unbind(0):
            h = cell(x_t, h, *weights)
            outputs.append(h)
        return torch.stack(outputs, 0), (h,)

    return run


def stacked_rnn(
    x: Tensor,
    state: State,
    weights: Sequence[Sequence[Tensor | None]],
    layer_fn: LayerFn,
    num_layers: int,
    bidirectional: bool,
    dropout: float,
    training: bool,
) -> tuple[Tensor, State]:
    """Run `layer_fn` over layers and directions like torch.nn's RNN modules do.

    x (T, B, I); each state tensor (num_layers * D, B, *); weights[layer * D + direction].
    The reverse direction reads the sequence backwards and its output is flipped back in time.
    Dropout (if training) is applied to the outputs of every layer except the last.
    Returns (y (T, B, D * R), final state with the same shapes as `state`).
    """
    num_directions = 2 if bidirectional else 1
    finals: list[State] = []
    for layer in range(num_layers):
        outputs = []
        for direction in range(num_directions):
            idx = layer * num_directions + direction
            inp = x if direction == 0 else x.flip(0)
            y, final = layer_fn(inp, tuple(s[idx] for s in state), weights[idx])
            outputs.append(y if direction == 0 else y.flip(0))
            finals.append(final)
        x = outputs[0] if num_directions == 1 else torch.cat(outputs, dim=-1)
        if dropout > 0 and training and layer < num_layers - 1:
            x = F.dropout(x, p=dropout, training=True)
    final_state = tuple(torch.stack([f[k] for f in finals], 0) for k in range(len(state)))
    return x, final_state


__all__ = ["lstm_cell", "gru_cell", "rnn_cell", "stacked_rnn", "lstm_layer_loop", "single_state_layer_loop"]
