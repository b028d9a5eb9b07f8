"""Autograd wrapper around the Triton Elman RNN kernels: one layer, one direction.

Forward:  xg = x @ W_ih^T + b_ih + b_hh     one GEMM for all T steps
          the persistent engine (kernels/persistent): all T steps in one launch, where a plan fits;
          else for t in 0..T-1: step kernel h_t = act(xg_t + h_{t-1} @ W_hh^T)
Backward: the engine, or for t in T-1..0: step kernel      dpre_t = (dy_t + dpre_{t+1} @ W_hh) * act'(h_t)
          dx, dW_ih, dW_hh, db, dh_0        large GEMMs over all steps

Only h is saved for backward (act' is a function of h for tanh and relu), in fp32.
"""
from __future__ import annotations

import torch
from torch import Tensor

from kernels import paths
from kernels.device import on_input_device
from kernels.lengths import grad_in, valid_steps, zero_past
from kernels.persistent import run as engine
from kernels.persistent.engine import ELMAN_TANH

from . import common
from .common import INTERPRETED, block_sizes, empty, step_grid  # noqa: F401  (INTERPRETED: backend checks it)

from .triton_kernels import rnn_backward_step_kernel, rnn_forward_step_kernel

NONLINEARITIES = {"tanh": 0, "relu": 1}


def resource_configs(B: int, H: int, dtype: str, sms: int) -> list:
    """The launches `rnn_layer` makes on a GPU for (B, H, weight dtype), for `kernels.resources`."""
    steps = [common.resource_config("rnn", f"{name}.{act}", kernel, B, H, dtype, {"NONLINEARITY": code})
             for act, code in NONLINEARITIES.items()
             for name, kernel in (("forward", rnn_forward_step_kernel), ("backward", rnn_backward_step_kernel))]
    return steps + [c for act in NONLINEARITIES for c in engine.resource_configs(f"rnn_{act}", B, H, dtype, sms)]


class _RNNLayerFunction(torch.autograd.Function):
    @staticmethod
    @on_input_device
    def forward(ctx, x: Tensor, h0: Tensor, w_ih: Tensor, w_hh: Tensor, bias: Tensor | None,  # type: ignore[override]
                nonlinearity: int, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        T, B, I = x.shape
        H = w_hh.shape[0]
        w_hh = w_hh.contiguous()
        xg = (x.reshape(T * B, I).float() @ w_ih.float().t()).view(T, B, H)  # all steps, one GEMM
        if bias is not None:
            xg += bias
        hs = None
        cell = ELMAN_TANH + nonlinearity
        plan = engine.plan_or_log(cell, B, H, w_hh.dtype, x.device, INTERPRETED, lengths=lengths is not None)
        if plan is not None:
            try:
                hs = engine.forward(plan, xg, h0, None, w_hh, None, False, INTERPRETED, common.POISON_BUFFERS,
                                    common.int32_or_none(lengths))[0]
                paths.record("rnn", "persistent", plan.describe() + paths.lengths_note(lengths))
            except Exception as error:  # a compiler or launch report: the per-step kernels run instead
                engine.fall_back(cell, B, H, w_hh.dtype, x.device, error)
        if hs is None:
            hs = empty(T + 1, B, H, device=x.device)  # hs[t] = h_{t-1}; hs[0] = h0
            hs[0] = h0
            blocks = block_sizes(B, H, H)
            grid = step_grid(B, H, blocks)
            paths.record("rnn", "step", paths.lengths_note(lengths))
            valid = valid_steps(lengths, T) if lengths is not None else None
            for t in range(T):
                rnn_forward_step_kernel[grid](
                    xg[t], hs[t], w_hh, hs[t + 1], B, H, w_hh.stride(0),
                    NONLINEARITY=nonlinearity, BLOCK_B=blocks[0], BLOCK_H=blocks[1], BLOCK_K=blocks[2],
                    num_warps=common.NUM_WARPS,
                )
                common.freeze_past_length(valid, hs, t)
        ctx.save_for_backward(x, w_ih, w_hh, hs, lengths)
        ctx.has_bias = bias is not None
        ctx.nonlinearity = nonlinearity
        ctx.state_dtype = h0.dtype
        # Copies: the caller may modify y, hs must stay intact. hs[T] is every row's last state.
        return zero_past(hs[1:], lengths).to(x.dtype, copy=True), hs[T].to(x.dtype, copy=True)

    @staticmethod
    @on_input_device
    def backward(ctx, dy: Tensor, dh_T: Tensor):  # type: ignore[override]
        x, w_ih, w_hh, hs, lengths = ctx.saved_tensors
        T, B, I = x.shape
        H = w_hh.shape[0]
        dh_in = grad_in(dy, dh_T, lengths)  # with lengths: dh_T at each row's last step, dy ignored past it
        dpre = empty(T + 1, B, H, device=x.device)
        dpre[T] = 0.0  # "step T" contributes nothing to dh_{T-1}
        cell = ELMAN_TANH + ctx.nonlinearity
        plan = engine.plan_or_log(cell, B, H, w_hh.dtype, x.device, INTERPRETED, lengths=lengths is not None)
        if plan is not None:
            try:
                dpre[:T] = engine.backward(plan, dh_in, None, hs, None, None, w_hh, INTERPRETED,
                                           common.POISON_BUFFERS, common.int32_or_none(lengths))
            except Exception as error:  # a compiler or launch report: the per-step kernels run instead
                engine.fall_back(cell, B, H, w_hh.dtype, x.device, error)
                plan = None
        hs = hs.float()  # the engine may have exchanged h in 16 bits
        if plan is None:  # (past a row's length the step kernel gets zeros only, so gives zeros)
            blocks = block_sizes(B, H, H)
            grid = step_grid(B, H, blocks)
            for t in range(T - 1, -1, -1):
                rnn_backward_step_kernel[grid](
                    dh_in[t], dpre[t + 1], w_hh, hs[t + 1], dpre[t], B, H, w_hh.stride(0),
                    NONLINEARITY=ctx.nonlinearity, BLOCK_B=blocks[0], BLOCK_H=blocks[1], BLOCK_K=blocks[2],
                    num_warps=common.NUM_WARPS,
                )
        dp = dpre[:T].view(T * B, H)
        need = ctx.needs_input_grad
        dx = (dp @ w_ih.float()).view(T, B, I).to(x.dtype) if need[0] else None
        dh0 = (dpre[0] @ w_hh.float()).to(ctx.state_dtype) if need[1] else None
        dw_ih = (dp.t() @ x.reshape(T * B, I).float()).to(w_ih.dtype) if need[2] else None
        dw_hh = (dp.t() @ hs[:T].reshape(T * B, H)).to(w_hh.dtype) if need[3] else None
        db = dp.sum(0) if ctx.has_bias and need[4] else None
        return dx, dh0, dw_ih, dw_hh, db, None, None


def rnn_layer(
    x: Tensor,
    h0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
    nonlinearity: str = "tanh",
    lengths: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One Elman RNN layer over a sequence with the Triton kernels; differentiable in every tensor.
    `lengths`: per-row lengths, as for kernels.lstm.op.lstm_layer.

    Shapes: x (T, B, I), h0 (B, H), w_ih (H, I), w_hh (H, H), b_ih/b_hh (H,).
    Returns (y (T, B, H), h_T (B, H)) in the dtype of x. `nonlinearity` is "tanh" or "relu".
    Under `torch.autocast` input and weights are cast to the autocast dtype (as for torch.nn.RNN);
    gradients flow back to the original parameters.
    """
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        x, w_ih, w_hh = x.to(dtype), w_ih.to(dtype), w_hh.to(dtype)
    bias = None
    if b_ih is not None or b_hh is not None:
        bias = sum(b.float() for b in (b_ih, b_hh) if b is not None)
    with torch.autocast(device_type, enabled=False):
        return _RNNLayerFunction.apply(x, h0, w_ih, w_hh, bias, NONLINEARITIES[nonlinearity],
                                       lengths.to(x.device) if lengths is not None else None)
