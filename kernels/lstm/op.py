"""The Triton LSTM layer as torch.library custom ops, so that torch.compile sees one opaque op,
and `lstm_layer`, the differentiable entry point that calls them.

    lightning_rnn::lstm_layer_train      forward that keeps what backward needs (differentiable)
    lightning_rnn::lstm_layer_backward   its backward
    lightning_rnn::lstm_layer_inference  forward that keeps nothing (no autograd)

Dynamo cannot trace into a Triton launch loop over time steps, and torch.nn.LSTM cannot be
compiled with fullgraph=True at all; as custom ops with fake (shape-only) implementations and a
registered autograd formula, `torch.compile(model, fullgraph=True)` works on a model using
`lightning_rnn.nn.LSTM(backend="triton")`. The launchers they call live in `kernels.lstm.function`.

(No `from __future__ import annotations` here: custom_op reads the annotations as the schema.)
"""
from typing import Optional

import torch
from torch import Tensor

from .function import layer_backward, layer_forward


def _empty_like_none(ref: Tensor) -> Tensor:
    """A custom op cannot return None: an empty tensor stands for "not computed"."""
    return ref.new_empty(0)


@torch.library.custom_op("lightning_rnn::lstm_layer_train", mutates_args=())
def lstm_layer_train(
    x: Tensor, h0: Tensor, c0: Tensor, w_ih: Tensor, w_hh: Tensor, bias: Optional[Tensor], w_hr: Optional[Tensor],
    lengths: Optional[Tensor] = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(y, h_T, c_T, cs, gates, h_cell) of `layer_forward(save=True)`; h_cell is empty without w_hr."""
    y, h_T, c_T, cs, gates, h_cell = layer_forward(x, h0, c0, w_ih, w_hh, bias, w_hr, save=True, lengths=lengths)
    return y, h_T, c_T, cs, gates, h_cell if h_cell is not None else _empty_like_none(x)


@torch.library.custom_op("lightning_rnn::lstm_layer_inference", mutates_args=())
def lstm_layer_inference(
    x: Tensor, h0: Tensor, c0: Tensor, w_ih: Tensor, w_hh: Tensor, bias: Optional[Tensor], w_hr: Optional[Tensor],
    lengths: Optional[Tensor] = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """(y, h_T, c_T), keeping nothing for a backward."""
    y, h_T, c_T, _, _, _ = layer_forward(x, h0, c0, w_ih, w_hh, bias, w_hr, save=False, lengths=lengths)
    return y, h_T, c_T


@torch.library.custom_op("lightning_rnn::lstm_layer_backward", mutates_args=())
def lstm_layer_backward(
    dy: Tensor, dh_T: Tensor, dc_T: Tensor, x: Tensor, h0: Tensor, w_ih: Tensor, w_hh: Tensor,
    w_hr: Optional[Tensor], y: Tensor, cs: Tensor, gates: Tensor, h_cell: Tensor, needs: list[bool],
    lengths: Optional[Tensor] = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """[dx, dh0, dc0, dw_ih, dw_hh, db, dw_hr]; an empty tensor where needs[i] is False."""
    grads = layer_backward(dy, dh_T, dc_T, x, h0, w_ih, w_hh, w_hr, y, cs, gates,
                           h_cell if w_hr is not None else None, needs, lengths)
    return tuple(g if g is not None else _empty_like_none(x) for g in grads)  # type: ignore[return-value]


# Fake implementations: output shapes and dtypes only, for torch.compile's tracing.

def _forward_shapes(x: Tensor, w_hh: Tensor) -> tuple[int, int, int, int]:
    T, B, _ = x.shape
    return T, B, w_hh.shape[0] // 4, w_hh.shape[1]


@lstm_layer_train.register_fake
def _(x, h0, c0, w_ih, w_hh, bias, w_hr, lengths=None):
    T, B, H, R = _forward_shapes(x, w_hh)
    f32 = torch.float32
    h_cell = x.new_empty(T, B, H) if w_hr is not None else x.new_empty(0)
    return (x.new_empty(T, B, R), x.new_empty(B, R), x.new_empty(B, H), x.new_empty(T + 1, B, H, dtype=f32),
            x.new_empty(T, B, 4 * H, dtype=f32), h_cell)


@lstm_layer_inference.register_fake
def _(x, h0, c0, w_ih, w_hh, bias, w_hr, lengths=None):
    T, B, H, R = _forward_shapes(x, w_hh)
    return x.new_empty(T, B, R), x.new_empty(B, R), x.new_empty(B, H)


@lstm_layer_backward.register_fake
def _(dy, dh_T, dc_T, x, h0, w_ih, w_hh, w_hr, y, cs, gates, h_cell, needs, lengths=None):
    T, B, H, R = _forward_shapes(x, w_hh)
    f32 = torch.float32
    shapes = [(x.shape, x.dtype), (h0.shape, x.dtype), ((B, H), f32), (w_ih.shape, x.dtype),
              (w_hh.shape, x.dtype), ((4 * H,), f32), ((R, H), f32)]
    needs = list(needs[:6]) + [needs[6] and w_hr is not None]
    return tuple(x.new_empty(shape, dtype=dt) if need else x.new_empty(0) for (shape, dt), need in zip(shapes, needs))


# Autograd: the train op's backward is the backward op; grads go back in each input's dtype.

def _setup_context(ctx, inputs, output):
    x, h0, c0, w_ih, w_hh, bias, w_hr, lengths = inputs
    y, _, _, cs, gates, h_cell = output
    ctx.save_for_backward(x, h0, w_ih, w_hh, w_hr, y, cs, gates, h_cell, lengths)
    ctx.c0_dtype = c0.dtype
    ctx.bias_dtype = bias.dtype if bias is not None else None
    ctx.mark_non_differentiable(cs, gates, h_cell)


def _backward(ctx, dy, dh_T, dc_T, *_unused):
    x, h0, w_ih, w_hh, w_hr, y, cs, gates, h_cell, lengths = ctx.saved_tensors
    needs = list(ctx.needs_input_grad)[:7]
    needs[5] = needs[5] and ctx.bias_dtype is not None
    needs[6] = needs[6] and w_hr is not None
    grads = lstm_layer_backward(dy, dh_T, dc_T, x, h0, w_ih, w_hh, w_hr, y, cs, gates, h_cell, needs, lengths)
    dtypes = [x.dtype, h0.dtype, ctx.c0_dtype, w_ih.dtype, w_hh.dtype, ctx.bias_dtype,
              w_hr.dtype if w_hr is not None else None]
    return (*(g.to(dt) if need else None for g, dt, need in zip(grads, dtypes, needs)), None)  # none for lengths


lstm_layer_train.register_autograd(_backward, setup_context=_setup_context)


# The entry point.

def _check_same_device(tensors: dict[str, Tensor | None]) -> None:
    x = tensors["x"]
    for name, t in tensors.items():
        if t is not None and t.device != x.device:
            raise ValueError(f"lstm_layer: {name} is on {t.device} but x is on {x.device}; "
                             "the input, the states and the weights must be on one device")


def lstm_layer(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
    w_hr: Tensor | None = None,
    lengths: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One LSTM layer over a sequence with the Triton kernels; differentiable in every argument.
    `lengths` ((B,) integer tensor, each in 1..T, or None): per-row lengths, as kernels.lengths says
    (zero outputs past them, h_T/c_T each row's state at its last step). Not checked here: the modules
    (lightning_rnn.nn) check what users give them (lightning_rnn.nn.validation.check_lengths).

    Shapes: x (T, B, I), h0 (B, R), c0 (B, H), w_ih (4H, I), w_hh (4H, R), b_ih/b_hh (4H,),
    w_hr (R, H) or None, with R = proj_size if w_hr is given else H.
    Returns (y (T, B, R), h_T (B, R), c_T (B, H)) in the compute dtype: the autocast dtype under
    `torch.autocast` (x, h0 and the weights are cast to it, as autocast does for torch.nn.LSTM;
    gradients flow back to the original fp32 parameters), else x's dtype.

    When no gradient is needed (torch.no_grad, or nothing requires grad) the forward allocates only
    what it returns plus one step's cell state and the input projection.
    """
    _check_same_device({"x": x, "h0": h0, "c0": c0, "w_ih": w_ih, "w_hh": w_hh, "b_ih": b_ih, "b_hh": b_hh,
                        "w_hr": w_hr})
    device_type = x.device.type
    dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else x.dtype
    x, h0, w_ih, w_hh = x.to(dtype), h0.to(dtype), w_ih.to(dtype), w_hh.to(dtype)
    w_hr = w_hr.to(dtype) if w_hr is not None else None
    bias = None
    if b_ih is not None or b_hh is not None:
        bias = sum(b.float() for b in (b_ih, b_hh) if b is not None)
    inputs = (x, h0, c0, w_ih, w_hh, bias, w_hr)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs)
    inputs += (lengths.to(x.device) if lengths is not None else None,)
    with torch.autocast(device_type, enabled=False):
        if not needs_grad:
            return lstm_layer_inference(*inputs)
        y, h_T, c_T = lstm_layer_train(*inputs)[:3]
        return y, h_T, c_T
