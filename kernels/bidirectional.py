"""A bidirectional layer's two directions in one engine launch (forward and backward), for all three cells.

The reverse direction is a forward-direction problem on inputs reversed within each row's length
(kernels.lengths.reverse_within, done by the caller), so the two directions are two problems of one
shape with different weights: `kernels.persistent.run.forward_two` / `backward_two` run them on two
halves of one grid. Around that launch this module does what each cell's one-direction wrapper does
(kernels/lstm/function.py, kernels/gru/function.py, kernels/rnn/function.py): the input projections
as one batched GEMM for both directions, and the weight, input and state gradients as batched GEMMs.

`bidirectional_layer` is the entry point (lightning_rnn.nn's stacked loop calls it for a bidirectional
layer on the Triton backend); it returns None where the two directions must run as two launches (no
plan for both fits the SMs, the engine is off or does not serve the layer, under torch.compile), with
the reason recorded in kernels.paths where there is one: the caller then runs each direction's own
layer as before. A failure of the joint launch found in the forward falls back the same way (and
sticks for the shape); one in the backward raises (the plans' builds were compiled and checked
before the forward, so only a launch-time failure can get there).
"""
from __future__ import annotations

import os
from typing import Sequence

import torch
from torch import Tensor

from kernels import paths
from kernels.device import on_input_device
from kernels.lengths import grad_in, valid_steps
from kernels.persistent import plan as P
from kernels.persistent import run as engine

#: Whether triton.jit compiled the kernels for its CPU interpreter (read once, at import).
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"
#: Tests set this to fill every buffer the kernels write with NaN first (as the cells' POISON_BUFFERS).
POISON_BUFFERS = False
#: lightning_rnn's cell names -> the engine's cells (the Elman cell by its nonlinearity).
_FAMILY = {P.LSTM: "lstm", P.GRU: "gru", P.ELMAN_TANH: "rnn", P.ELMAN_RELU: "rnn"}
#: Input-projection rows per hidden unit: LSTM i, f, g, o; GRU r, z, n; Elman one.
_X_ROWS = {P.LSTM: 4, P.GRU: 3, P.ELMAN_TANH: 1, P.ELMAN_RELU: 1}


def _bmm_t(a: Tensor, b: Tensor) -> Tensor:
    """a (2, M, K) @ b (2, N, K)^T per direction: (2, M, N)."""
    return torch.bmm(a, b.transpose(1, 2))


class _BidirectionalLayer(torch.autograd.Function):
    """Both directions of one layer; every tensor stacked over the directions (leading axis 2).

    x (2, T, B, I) (direction 1's already reversed), h0 (2, B, H), c0 (2, B, H) LSTM else None,
    w_ih (2, X*H, I), w_hh (2, G*H, H), bias_x (2, X*H) fp32 or None (LSTM: b_ih + b_hh; GRU: b_ih +
    (b_hr, b_hz, 0); Elman: b_ih + b_hh), b_hn (2, H) GRU or None; lengths (B,) or None.
    Returns y (2, T, B, H) (direction 1's in its own, reversed, time order; zero past the lengths),
    h_T (2, B, H), and c_T (2, B, H) for the LSTM (else an empty tensor), in x's dtype.
    """

    @staticmethod
    @on_input_device
    def forward(ctx, x: Tensor, h0: Tensor, c0: Tensor | None, w_ih: Tensor, w_hh: Tensor,  # type: ignore[override]
                bias_x: Tensor | None, b_hn: Tensor | None, lengths: Tensor | None, plan: P.Plan,
                save: bool) -> tuple[Tensor, Tensor, Tensor]:
        _, T, B, I = x.shape
        cell, dtype = plan.cell, x.dtype
        H = w_hh.shape[2]
        lstm = cell == P.LSTM
        w_hh = w_hh.contiguous()
        x2 = x.reshape(2, T * B, I)
        # All steps' input projections, both directions, one batched GEMM: the LSTM's in the compute dtype
        # (fp32 accumulation inside), the GRU's and Elman's in fp32 (as their one-direction wrappers).
        if lstm:
            xg = _bmm_t(x2, w_ih) if bias_x is None else \
                torch.baddbmm(bias_x.to(dtype)[:, None], x2, w_ih.transpose(1, 2))
        else:
            xg = _bmm_t(x2.float(), w_ih.float())
            if bias_x is not None:
                xg += bias_x[:, None]
        xg = xg.view(2, T, B, _X_ROWS[cell] * H)
        state0 = c0 if lstm else h0 if cell == P.GRU else None
        lengths32 = lengths.to(torch.int32) if lengths is not None else None
        hs, cs, saved = engine.forward_two(plan, xg, h0, state0, w_hh, b_hn, save and cell in (P.LSTM, P.GRU),
                                           INTERPRETED, POISON_BUFFERS, lengths32)
        y = hs[:, 1:]
        if lengths is not None:  # (a select, not a product: what a step past a length holds may be inf)
            y = torch.where(valid_steps(lengths, T)[None, ..., None], y, 0.0)
        ctx.save_for_backward(x, h0, w_ih, w_hh, hs, cs, saved, lengths)
        ctx.plan = plan
        ctx.dtypes = (h0.dtype, c0.dtype if c0 is not None else None)
        ctx.has_bias = (bias_x is not None, b_hn is not None)
        c_T = cs[:, -1].to(dtype, copy=True) if lstm else x.new_empty(0)
        return y.to(dtype, copy=True), hs[:, T].to(dtype, copy=True), c_T

    @staticmethod
    @on_input_device
    def backward(ctx, dy: Tensor, dh_T: Tensor, dc_T: Tensor):  # type: ignore[override]
        x, h0, w_ih, w_hh, hs, cs, saved, lengths = ctx.saved_tensors
        plan = ctx.plan
        cell, dtype = plan.cell, x.dtype
        _, T, B, I = x.shape
        H = w_hh.shape[2]
        lstm, gru = cell == P.LSTM, cell == P.GRU
        # dL/dh_t from above, dh_T joining each row's last step (kernels.lengths.grad_in), per direction.
        dh_in = torch.stack([grad_in(dy[d], dh_T[d], lengths) for d in range(2)])
        if lstm:
            dstate = dc_T.to(torch.float32, memory_format=torch.contiguous_format, copy=True)
        else:  # the GRU's dL/dh through z*h comes out here; the Elman cell carries nothing else
            dstate = torch.zeros(2, B, H, dtype=torch.float32, device=x.device) if gru else None
        lengths32 = lengths.to(torch.int32) if lengths is not None else None
        dg = engine.backward_two(plan, dh_in, dstate, None if lstm else hs, cs if lstm else None, saved, w_hh,
                                 INTERPRETED, POISON_BUFFERS, lengths32)
        need = ctx.needs_input_grad
        x2 = x.reshape(2, T * B, I)
        h_prev = hs[:, :T].reshape(2, T * B, H)  # h_{t-1} of every step (h0 first)
        grads: list[Tensor | None] = [None] * 10
        if lstm:  # the GEMMs in the compute dtype, as kernels.lstm.function.layer_backward
            d = dg.to(dtype).view(2, T * B, 4 * H)
            dx_all = dw_hh_rows = d_bias = d  # (d_bias summed in fp32 below)
            dh0 = torch.bmm(d[:, :B], w_hh)
            w_ih_c, x_c, h_prev_c = w_ih, x2, h_prev.to(dtype)
        else:
            if gru:  # d(r, z) pre, d(n's input part), d(hn): the input GEMMs take the first three, W_hh r, z, hn
                dx_all = dg[..., : 3 * H].reshape(2, T * B, 3 * H)
                dw_hh_rows = torch.cat([dg[..., : 2 * H], dg[..., 3 * H:]], -1).view(2, T * B, 3 * H)
            else:
                dx_all = dw_hh_rows = dg.view(2, T * B, H)
            d_bias = dx_all
            dh0 = torch.bmm(dw_hh_rows[:, :B], w_hh.float()) + (dstate if gru else 0.0)
            w_ih_c, x_c, h_prev_c = w_ih.float(), x2.float(), h_prev.float()
        if need[0]:
            grads[0] = torch.bmm(dx_all, w_ih_c).view(2, T, B, I).to(dtype)
        if need[1]:
            grads[1] = dh0.to(ctx.dtypes[0])
        if lstm and need[2]:
            grads[2] = dstate.to(ctx.dtypes[1])
        if need[3]:
            grads[3] = torch.bmm(dx_all.transpose(1, 2), x_c).to(w_ih.dtype)
        if need[4]:
            grads[4] = torch.bmm(dw_hh_rows.transpose(1, 2), h_prev_c).to(w_hh.dtype)
        if ctx.has_bias[0] and need[5]:
            grads[5] = d_bias.sum(1, dtype=torch.float32)
        if ctx.has_bias[1] and need[6]:
            grads[6] = dw_hh_rows[..., 2 * H:].sum(1, dtype=torch.float32)
        return tuple(grads)


def _biases(cell: int, H: int, b_ih: Tensor | None, b_hh: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
    """(bias_x, b_hn) of one direction, as the cells' wrappers fold them: everything into the input
    projection but the GRU's b_hn, which is multiplied by r and stays with the recurrent product."""
    if cell != P.GRU:
        if b_ih is None and b_hh is None:
            return None, None
        return sum(b.float() for b in (b_ih, b_hh) if b is not None), None
    parts = [b_ih.float()] if b_ih is not None else []
    if b_hh is not None:
        parts.append(torch.cat([b_hh[: 2 * H].float(), b_hh.new_zeros(H, dtype=torch.float32)]))
    return (sum(parts) if parts else None), (b_hh[2 * H:].float() if b_hh is not None else None)


def bidirectional_layer(cell_name: str, x: Tensor, x_reversed: Tensor, states: Sequence[Sequence[Tensor]],
                        weights: Sequence[Sequence[Tensor | None]], lengths: Tensor | None = None
                        ) -> tuple[tuple[Tensor, tuple[Tensor, ...]], tuple[Tensor, tuple[Tensor, ...]]] | None:
    """Both directions of one layer in one engine launch, or None (then two launches: see the module).

    cell_name "lstm", "gru", "rnn_tanh" or "rnn_relu"; x (T, B, I) and x_reversed (the reverse
    direction's input: flipped, or reversed within each row's length); states[d] the direction's
    state ((h0, c0) LSTM, (h0,) else, (B, H) each); weights[d] (w_ih, w_hh, b_ih, b_hh) as torch.nn
    names them (an LSTM with proj_size is not served). Returns ((y, state_T) forward, (y, state_T)
    reverse), y (T, B, H) each, the reverse one in its own (reversed) time order, as its one-direction
    layer would return it.
    """
    cell = P.CELLS[cell_name]
    family = _FAMILY[cell]
    if torch.compiler.is_compiling():
        # Not a custom op (as the LSTM's one-direction layer is): Dynamo cannot trace the launches, so a
        # compiled graph runs each direction's own layer (two launches) and keeps fullgraph=True possible.
        return None
    if len(weights[0]) > 4 and weights[0][4] is not None:
        return None  # proj_size: the engine does not serve it (each direction's layer says so)
    device_type = x.device.type
    w = [list(ws[:4]) for ws in weights]
    if torch.is_autocast_enabled(device_type):  # as the one-direction layers: operands in the autocast dtype
        dtype = torch.get_autocast_dtype(device_type)
    else:
        dtype = x.dtype
    T, B, _ = x.shape
    H = w[0][1].shape[1]
    plan, reason = engine.choose(cell, B, H, dtype, x.device, INTERPRETED, lengths=lengths is not None, directions=2)
    if plan is None:
        if reason != "LIGHTNING_RNN_PERSISTENT=0":
            paths.record(family, "two-launches", reason + paths.lengths_note(lengths))
        return None
    lstm = cell == P.LSTM
    xs = torch.stack([x, x_reversed]).to(dtype)
    h0 = torch.stack([s[0] for s in states])
    h0 = h0.to(dtype) if lstm else h0  # (the GRU and Elman layers take h0 in its own dtype, as theirs do)
    c0 = torch.stack([s[1] for s in states]) if lstm else None
    w_ih = torch.stack([ws[0] for ws in w]).to(dtype)
    w_hh = torch.stack([ws[1] for ws in w]).to(dtype)
    folded = [_biases(cell, H, ws[2], ws[3]) for ws in w]
    bias_x = torch.stack([f[0] for f in folded]) if folded[0][0] is not None else None
    b_hn = torch.stack([f[1] for f in folded]) if folded[0][1] is not None else None
    inputs = (xs, h0, c0, w_ih, w_hh, bias_x, b_hn)
    save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs)
    with torch.autocast(device_type, enabled=False):
        try:
            y, h_T, c_T = _BidirectionalLayer.apply(*inputs, lengths, plan, save)
        except Exception as error:  # a compiler or launch report: the two directions run apart instead
            engine.fall_back_to_two_launches(cell, B, H, dtype, x.device, error)
            return None
    paths.record(family, "persistent", plan.describe() + " 2 directions, one launch" + paths.lengths_note(lengths))
    finals = [(h_T[d], c_T[d]) if lstm else (h_T[d],) for d in range(2)]
    return (y[0], finals[0]), (y[1], finals[1])
