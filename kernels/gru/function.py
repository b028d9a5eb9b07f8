"""Autograd wrapper around the Triton GRU kernels: one layer, one direction, whole sequence.

Forward:  xg = x @ W_ih^T + b_ih + [b_hr, b_hz, 0]   one GEMM for all T steps
          the persistent engine (kernels/persistent): all T steps in one launch, where a plan fits;
          else for t in 0..T-1: step kernel          h_t and (r, z, n, hn)_t, hn = W_hn h + b_hn
Backward: the engine, or for t in T-1..0: step kernel               dxg_t (input parts), dhh_t (recurrent products)
          dx, dW_ih, dW_hh, biases, dh_0             large GEMMs over all steps

Saved for backward: h and the four per-unit values r, z, n, hn, all fp32 whatever the input dtype.
"""
from __future__ import annotations

import torch
from torch import Tensor

from kernels import paths
from kernels.device import on_input_device
from kernels.lengths import grad_in, valid_steps, zero_past
from kernels.persistent import plan as engine_plan
from kernels.persistent import run as engine
from kernels.rnn import common
from kernels.rnn.common import INTERPRETED, block_sizes, empty, step_grid  # noqa: F401  (INTERPRETED: backend checks it)

from .triton_kernels import gru_backward_step_kernel, gru_forward_step_kernel


def resource_configs(B: int, H: int, dtype: str, sms: int) -> list:
    """The launches `gru_layer` makes on a GPU for (B, H, weight dtype), for `kernels.resources`."""
    return [common.resource_config("gru", "forward", gru_forward_step_kernel, B, H, dtype, {"HAS_B_HN": True}),
            common.resource_config("gru", "backward", gru_backward_step_kernel, B, H, dtype, {}),
            *engine.resource_configs("gru", B, H, dtype, sms)]


class _GRULayerFunction(torch.autograd.Function):
    @staticmethod
    @on_input_device
    def forward(ctx, x: Tensor, h0: Tensor, w_ih: Tensor, w_hh: Tensor,  # type: ignore[override]
                bias_x: Tensor | None, b_hn: Tensor | None, save: bool,
                lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        T, B, I = x.shape
        H = w_hh.shape[1]
        w_hh = w_hh.contiguous()
        xg = (x.reshape(T * B, I).float() @ w_ih.float().t()).view(T, B, 3 * H)  # all steps, one GEMM
        if bias_x is not None:
            xg += bias_x
        hs = gates = None
        plan = engine.plan_or_log(engine_plan.GRU, B, H, w_hh.dtype, x.device, INTERPRETED,
                                  lengths=lengths is not None)
        if plan is not None:
            try:
                hs, _, gates = engine.forward(plan, xg, h0, h0, w_hh, b_hn, save, INTERPRETED,
                                              common.POISON_BUFFERS, common.int32_or_none(lengths))
                paths.record("gru", "persistent", plan.describe() + paths.lengths_note(lengths))
            except Exception as error:  # a compiler or launch report: the per-step kernels run instead
                engine.fall_back(engine_plan.GRU, B, H, w_hh.dtype, x.device, error)
        if hs is None:
            hs = empty(T + 1, B, H, device=x.device)  # hs[t] = h_{t-1}; hs[0] = h0
            hs[0] = h0
            gates = empty(T, B, 4 * H, device=x.device)
            b_hn32 = b_hn.float().contiguous() if b_hn is not None else xg  # (any pointer when unused)
            blocks = block_sizes(B, H, H)
            grid = step_grid(B, H, blocks)
            paths.record("gru", "step", paths.lengths_note(lengths))
            valid = valid_steps(lengths, T) if lengths is not None else None
            for t in range(T):
                gru_forward_step_kernel[grid](
                    xg[t], hs[t], w_hh, b_hn32, hs[t + 1], gates[t], B, H, w_hh.stride(0),
                    HAS_B_HN=b_hn is not None, BLOCK_B=blocks[0], BLOCK_H=blocks[1], BLOCK_K=blocks[2],
                    num_warps=common.NUM_WARPS,
                )
                common.freeze_past_length(valid, hs, t)
        ctx.save_for_backward(x, w_ih, w_hh, hs, gates, lengths)
        ctx.has_bias = (bias_x is not None, b_hn is not None)
        ctx.state_dtype = h0.dtype
        # Copies: the caller may modify y, hs must stay intact. hs[T] is every row's last state.
        return zero_past(hs[1:], lengths).to(x.dtype, copy=True), hs[T].to(x.dtype, copy=True)

    @staticmethod
    @on_input_device
    def backward(ctx, dy: Tensor, dh_T: Tensor):  # type: ignore[override]
        x, w_ih, w_hh, hs, gates, lengths = ctx.saved_tensors
        T, B, I = x.shape
        H = w_hh.shape[1]
        dev = x.device
        dh_in = grad_in(dy, dh_T, lengths)  # with lengths: dh_T at each row's last step, dy ignored past it
        dh_direct = torch.zeros(B, H, dtype=torch.float32, device=dev)  # nothing flows in after step T-1
        dhh = empty(T + 1, B, 3 * H, device=dev)
        dhh[T] = 0.0
        dxg = None
        plan = engine.plan_or_log(engine_plan.GRU, B, H, w_hh.dtype, dev, INTERPRETED, lengths=lengths is not None)
        if plan is not None:
            try:  # d(r, z) pre, d(n's input part), d(hn)
                dg = engine.backward(plan, dh_in, dh_direct, hs, None, gates, w_hh, INTERPRETED,
                                     common.POISON_BUFFERS, common.int32_or_none(lengths))
                dxg = dg[..., : 3 * H]
                dhh[:T, :, : 2 * H] = dg[..., : 2 * H]
                dhh[:T, :, 2 * H:] = dg[..., 3 * H:]
            except Exception as error:  # a compiler or launch report: the per-step kernels run instead
                engine.fall_back(engine_plan.GRU, B, H, w_hh.dtype, dev, error)
                dh_direct.zero_()
        hs = hs.float()  # the engine may have exchanged h in 16 bits
        if dxg is None:  # (past a row's length everything the step kernel gets is zero, so is what it gives)
            dxg = empty(T, B, 3 * H, device=dev)
            blocks = block_sizes(B, H, H)
            grid = step_grid(B, H, blocks)
            for t in range(T - 1, -1, -1):
                gru_backward_step_kernel[grid](
                    dh_in[t], dh_direct, dhh[t + 1], w_hh, gates[t], hs[t], dxg[t], dhh[t], B, H, w_hh.stride(0),
                    BLOCK_B=blocks[0], BLOCK_H=blocks[1], BLOCK_K=blocks[2], num_warps=common.NUM_WARPS,
                )
        dx_all = dxg.reshape(T * B, 3 * H)
        dh_all = dhh[:T].view(T * B, 3 * H)
        need = ctx.needs_input_grad
        dx = (dx_all @ w_ih.float()).view(T, B, I).to(x.dtype) if need[0] else None
        dh0 = (dh_direct + dhh[0] @ w_hh.float()).to(ctx.state_dtype) if need[1] else None
        dw_ih = (dx_all.t() @ x.reshape(T * B, I).float()).to(w_ih.dtype) if need[2] else None
        dw_hh = (dh_all.t() @ hs[:T].reshape(T * B, H)).to(w_hh.dtype) if need[3] else None
        d_bias_x = dx_all.sum(0) if ctx.has_bias[0] and need[4] else None
        d_b_hn = dh_all[:, 2 * H:].sum(0) if ctx.has_bias[1] and need[5] else None
        return dx, dh0, dw_ih, dw_hh, d_bias_x, d_b_hn, None, None


def gru_layer(
    x: Tensor,
    h0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
    lengths: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One GRU layer over a sequence with the Triton kernels; differentiable in every argument.
    `lengths`: per-row lengths, as for kernels.lstm.op.lstm_layer.

    Shapes: x (T, B, I), h0 (B, H), w_ih (3H, I), w_hh (3H, H), b_ih/b_hh (3H,); gate order r, z, n
    as torch.nn.GRU. Returns (y (T, B, H), h_T (B, H)) in the dtype of x.
    Under `torch.autocast` input and weights are cast to the autocast dtype (as for torch.nn.GRU);
    gradients flow back to the original parameters.
    """
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        x, w_ih, w_hh = x.to(dtype), w_ih.to(dtype), w_hh.to(dtype)
    H = w_hh.shape[1]
    # b_hr and b_hz add to their gates like b_ih does, so they join the input GEMM; b_hn is
    # multiplied by r and stays with the recurrent product (autograd splits the gradients).
    parts = []
    if b_ih is not None:
        parts.append(b_ih.float())
    if b_hh is not None:
        parts.append(torch.cat([b_hh[: 2 * H].float(), b_hh.new_zeros(H, dtype=torch.float32)]))
    bias_x = sum(parts) if parts else None
    b_hn = b_hh[2 * H:] if b_hh is not None else None
    with torch.autocast(device_type, enabled=False):
        # Without a backward to come the engine keeps no r, z, n, hn history.
        save = torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                               for t in (x, h0, w_ih, w_hh, bias_x, b_hn))
        return _GRULayerFunction.apply(x, h0, w_ih, w_hh, bias_x, b_hn, save,
                                       lengths.to(x.device) if lengths is not None else None)
