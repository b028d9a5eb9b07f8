"""PackedSequence <-> a padded batch plus per-row lengths, for the layers that run our kernels; and
torch.nn's fused RNN on a padded batch with lengths, exact without packing (`chunked_torch_layer`).

A PackedSequence's batch_sizes live on the CPU (torch keeps them there), so the lengths in sorted
order are computed on the CPU without touching the device; sorted_indices/unsorted_indices live with
the data and are applied there (index_select), so nothing waits for the GPU. torch.nn's own
pad_packed_sequence would read unsorted_indices on the host (a sync per call).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from kernels.lengths import zero_past


def _sorted_lengths(batch_sizes: Tensor) -> Tensor:
    """The rows' lengths in the packed (longest first) order, on the CPU, from batch_sizes (CPU)."""
    rows = torch.arange(int(batch_sizes[0]))
    return (batch_sizes[None, :] > rows[:, None]).sum(1)


def padded_from_packed(packed: PackedSequence, batch_first: bool) -> tuple[Tensor, Tensor]:
    """(padded (L, B, .) or (B, L, .), lengths (B,) int64 on the data's device), rows in the user's order
    (the order hx and h_n have, as torch.nn gives them)."""
    padded, lengths = pad_packed_sequence(PackedSequence(packed.data, packed.batch_sizes), batch_first=batch_first)
    lengths = lengths.to(packed.data.device)  # from the CPU: a copy, not a wait for the GPU
    if packed.unsorted_indices is not None:
        padded = padded.index_select(0 if batch_first else 1, packed.unsorted_indices)
        lengths = lengths.index_select(0, packed.unsorted_indices)
    return padded, lengths


def pack_like(padded: Tensor, like: PackedSequence, batch_first: bool) -> PackedSequence:
    """`padded` (rows in the user's order) packed as `like` is: its batch_sizes and indices."""
    if like.sorted_indices is not None:
        padded = padded.index_select(0 if batch_first else 1, like.sorted_indices)
    data = pack_padded_sequence(padded, _sorted_lengths(like.batch_sizes), batch_first=batch_first).data
    return PackedSequence(data, like.batch_sizes, like.sorted_indices, like.unsorted_indices)


def torch_forward_with_lengths(torch_forward: Callable, x: Tensor, states, lengths: Tensor, batch_first: bool):
    """torch.nn's forward for a padded input with lengths (the torch backend): packed around it.
    pack_padded_sequence wants the lengths on the CPU (a copy: a host sync on a GPU, torch.nn's cost)."""
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=batch_first, enforce_sorted=False)
    y, final = torch_forward(packed, states)
    y, _ = pad_packed_sequence(y, batch_first=batch_first, total_length=x.shape[1 if batch_first else 0])
    return y, final


def chunked_torch_layer(fused: Callable) -> Callable:
    """A layer function (lightning_rnn.nn.functional.LayerFn) for torch's fused one-layer RNN `fused`
    (torch.lstm, torch.gru, torch.rnn_tanh, torch.rnn_relu) that honours per-row lengths without
    packing: the padded batch runs in one fused call per distinct length, each chunk starting from the
    state the one before left, and each row's final state is taken where its chunk ends. The same
    arithmetic as the padded run, and exact: torch.nn's packed LSTM on the CPU takes about 1.6x as long
    (B 32, T ~22, H 150). Needs the distinct lengths on the host: one sync (CPU tensors: none)."""

    def run(x: Tensor, state: tuple[Tensor, ...], weights, lengths: Tensor | None = None):
        params = [w for w in weights if w is not None]
        has_biases = weights[2] is not None
        hx = tuple(s.unsqueeze(0) for s in state)
        if lengths is None:
            y, *final = fused(x, hx if len(hx) == 2 else hx[0], params, has_biases, 1, 0.0, False, False, False)
            return y, tuple(f.squeeze(0) for f in final)
        outputs, finals, start = [], [torch.zeros_like(s) for s in state], 0
        for end in torch.unique(lengths).tolist():  # ascending
            y, *hx = fused(x[start:end], hx if len(hx) == 2 else hx[0], params, has_biases, 1, 0.0, False, False,
                           False)
            ends_here = (lengths == end)[:, None]
            finals = [torch.where(ends_here, h.squeeze(0), f) for h, f in zip(hx, finals)]
            outputs.append(y)
            hx, start = tuple(hx), end
        y = torch.cat(outputs + [y.new_zeros(x.shape[0] - start, *y.shape[1:])])
        return zero_past(y, lengths), tuple(finals)

    return run
