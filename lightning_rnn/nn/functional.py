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
from kernels.lengths import reverse_within
from kernels.lstm.reference import lstm_cell, lstm_layer_reference
from kernels.rnn.reference import rnn_cell

State = tuple[Tensor, ...]
#: layer_fn(x (T, B, I), state, weights, lengths=None) -> (y (T, B, R), final state); with lengths
#: ((B,) on x's device) as kernels.lengths says: zeros past them, each row's state at its last step.
LayerFn = Callable[..., tuple[Tensor, State]]
#: pair_fn(x, x_reversed, (state, state_reverse), (weights, weights_reverse), lengths) -> ((y, final),
#: (y_reverse, final_reverse)) or None: both directions of one layer at once (the Triton engine's one
#: launch, kernels.bidirectional), y_reverse in its own reversed time order; None: run them apart.
PairFn = Callable[..., tuple[tuple[Tensor, State], tuple[Tensor, State]] | None]


def _masked_loop(step: Callable[[Tensor, State], State], x: Tensor, state: State,
                 lengths: Tensor | None) -> tuple[Tensor, State]:
    """Run `step(x_t, state) -> state` (h first) over time; past a row's length its state is kept
    and its output is zero (a torch.where per step)."""
    outputs = []
    for t, x_t in enumerate(x.unbind(0)):
        new = step(x_t, state)
        if lengths is None:
            state = new
            outputs.append(new[0])
            continue
        valid = (t < lengths)[:, None]
        state = tuple(torch.where(valid, n, s) for n, s in zip(new, state))
        outputs.append(torch.where(valid, new[0], 0.0))
    return torch.stack(outputs, 0), state


def lstm_layer_loop(x: Tensor, state: State, weights: Sequence[Tensor | None],
                    lengths: Tensor | None = None) -> tuple[Tensor, State]:
    if lengths is None:
        y, h, c = lstm_layer_reference(x, state[0], state[1], *weights)
        return y, (h, c)
    return _masked_loop(lambda x_t, s: lstm_cell(x_t, s[0], s[1], *weights), x, state, lengths)


def single_state_layer_loop(cell: Callable[..., Tensor]) -> LayerFn:
    """A layer function that runs `cell` (GRU or Elman) over time."""

    def run(x: Tensor, state: State, weights: Sequence[Tensor | None],
            lengths: Tensor | None = None) -> tuple[Tensor, State]:
        return _masked_loop(lambda x_t, s: (cell(x_t, s[0], *weights),), x, state, lengths)

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
    lengths: Tensor | None = None,
    pair_fn: PairFn | None = None,
) -> tuple[Tensor, State]:
    """Run `layer_fn` over layers and directions like torch.nn's RNN modules do.

    x (T, B, I); each state tensor (num_layers * D, B, *); weights[layer * D + direction].
    The reverse direction reads the sequence backwards and its output is flipped back in time
    (with `lengths`, each row's own steps: reversed within its length, on the device).
    Dropout (if training) is applied to the outputs of every layer except the last.
    `pair_fn` (bidirectional only): tried first for each layer's two directions together.
    Returns (y (T, B, D * R), final state with the same shapes as `state`).
    """
    num_directions = 2 if bidirectional else 1
    finals: list[State] = []

    def reverse(t: Tensor) -> Tensor:
        return t.flip(0) if lengths is None else reverse_within(t, lengths)

    extra = {} if lengths is None else {"lengths": lengths}
    for layer in range(num_layers):
        outputs = []
        inputs = [x, reverse(x)][:num_directions]
        first = layer * num_directions
        states = [tuple(s[first + d] for s in state) for d in range(num_directions)]
        pair = None
        if pair_fn is not None and num_directions == 2:
            pair = pair_fn(x, inputs[1], states, weights[first:first + 2], lengths)
        for direction in range(num_directions):
            if pair is not None:
                y, final = pair[direction]
            else:
                y, final = layer_fn(inputs[direction], states[direction], weights[first + direction], **extra)
            outputs.append(y if direction == 0 else reverse(y))
            finals.append(final)
        x = outputs[0] if num_directions == 1 else torch.cat(outputs, dim=-1)
        if dropout > 0 and training and layer < num_layers - 1:
            x = F.dropout(x, p=dropout, training=True)
    final_state = tuple(torch.stack([f[k] for f in finals], 0) for k in range(len(state)))
    return x, final_state


__all__ = ["PairFn", "lstm_cell", "gru_cell", "rnn_cell", "stacked_rnn", "lstm_layer_loop", "single_state_layer_loop"]
