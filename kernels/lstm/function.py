"""Autograd wrapper around the Triton LSTM step kernels: one layer, one direction, whole sequence.

Forward:  xg = x @ W_ih^T + b               one GEMM for all T steps
          for t in 0..T-1: step kernel      h_t, c_t, gates_t    (+ h_t = h_t @ W_hr^T with proj_size)
Backward: for t in T-1..0: step kernel      dgates_t, dc_{t-1}   (dh_t's recurrent part fused in)
          dx, dW_ih, dW_hh, db, dW_hr       large GEMMs over all steps

Everything saved for backward (h, c, activated gates) is fp32, and so are the GEMMs, whatever the
input dtype: fp16/bf16 inputs lose precision only where they are stored.
"""
from __future__ import annotations

import logging
import os

import torch
import triton
from torch import Tensor

from . import persistent as _persistent
from .persistent import persistent_backward, persistent_enabled, persistent_forward
from .triton_kernels import lstm_backward_step_kernel, lstm_forward_step_kernel

#: Whether triton.jit compiled these kernels for its CPU interpreter (read once, at import).
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"

#: Tile sizes of the per-step kernels: the GPU's unless interpreted (tests force the GPU's in the
#: interpreter too, so that the multi-tile indexing and the K loop the GPU runs are exercised).
GPU_TILES = not INTERPRETED

log = logging.getLogger(__name__)

#: Tests set this to fill every buffer a kernel writes with NaN first, so that an element
#: the kernel forgets to write shows up as NaN instead of as stale zeros.
POISON_BUFFERS = False


def _empty(*shape: int, device: torch.device) -> Tensor:
    if POISON_BUFFERS:
        return torch.full(shape, float("nan"), dtype=torch.float32, device=device)
    return torch.empty(shape, dtype=torch.float32, device=device)


#: Warps per program of the per-step kernels (what `kernels.resources` compiles them with).
STEP_NUM_WARPS = 4


def _block_sizes(batch: int, hidden: int, reduce: int, gpu_tiles: bool | None = None) -> tuple[int, int, int]:
    """Tile sizes (BLOCK_B, BLOCK_H, BLOCK_K); tl.dot wants every dimension >= 16."""

    def fit(n: int, cap: int) -> int:
        return max(16, min(triton.next_power_of_2(n), cap))

    if not (GPU_TILES if gpu_tiles is None else gpu_tiles):
        # The interpreter runs programs one after another: few, large tiles are fastest.
        return fit(batch, 64), fit(hidden, 128), fit(reduce, 128)
    return fit(batch, 16), fit(hidden, 32), fit(reduce, 64)


def _persistent_plan(B: int, H: int, has_proj: bool, dtype: torch.dtype, device: torch.device):
    """The persistent kernels' launch plan if they are enabled and fit this layer, else None (reason logged)."""
    if not persistent_enabled():
        return None
    plan, reason = _persistent.choose_plan(B, H, has_proj, dtype, device, INTERPRETED)
    if plan is None:
        _log_once(f"persistent LSTM not used for B={B} H={H} {dtype}: {reason}; running the per-step kernels")
    return plan


_logged: set[str] = set()


def _log_once(message: str) -> None:
    if message not in _logged:
        _logged.add(message)
        log.warning(message)


class _LSTMLayerFunction(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        x: Tensor,
        h0: Tensor,
        c0: Tensor,
        w_ih: Tensor,
        w_hh: Tensor,
        bias: Tensor | None,
        w_hr: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        T, B, I = x.shape
        H = w_hh.shape[0] // 4
        R = w_hh.shape[1]
        dev = x.device
        w_hh = w_hh.contiguous()

        xg = (x.reshape(T * B, I).float() @ w_ih.float().t()).view(T, B, 4 * H)  # all steps, one GEMM
        if bias is not None:
            xg += bias

        hs = _empty(T + 1, B, R, device=dev)  # hs[t] = h_{t-1}; hs[0] = h0
        cs = _empty(T + 1, B, H, device=dev)
        gates = _empty(T, B, 4 * H, device=dev)
        hs[0] = h0
        cs[0] = c0
        h_cell = _empty(T, B, H, device=dev) if w_hr is not None else hs[1:]
        w_hr32 = w_hr.float() if w_hr is not None else None

        plan = _persistent_plan(B, H, w_hr is not None, w_hh.dtype, dev)
        if plan is not None:
            persistent_forward(xg, hs, cs, gates, w_hh, plan, INTERPRETED)
        else:
            BB, BH, BK = _block_sizes(B, H, R)
            grid = (triton.cdiv(B, BB), triton.cdiv(H, BH))
            for t in range(T):
                lstm_forward_step_kernel[grid](
                    xg[t], hs[t], cs[t], w_hh, h_cell[t], cs[t + 1], gates[t],
                    B, H, R, w_hh.stride(0),
                    BLOCK_B=BB, BLOCK_H=BH, BLOCK_K=BK, num_warps=STEP_NUM_WARPS,
                )
                if w_hr32 is not None:
                    torch.mm(h_cell[t], w_hr32.t(), out=hs[t + 1])

        ctx.save_for_backward(x, w_ih, w_hh, w_hr, hs, cs, gates, h_cell if w_hr is not None else None)
        ctx.has_bias = bias is not None
        ctx.persistent = plan
        ctx.state_dtypes = (h0.dtype, c0.dtype)
        y = hs[1:].to(x.dtype, copy=True)  # a copy: the caller may modify y, hs must stay intact
        return y, y[-1].clone(), cs[T].to(x.dtype, copy=True)

    @staticmethod
    def backward(ctx, dy: Tensor, dh_T: Tensor, dc_T: Tensor):  # type: ignore[override]
        x, w_ih, w_hh, w_hr, hs, cs, gates, h_cell = ctx.saved_tensors
        T, B, I = x.shape
        H = w_hh.shape[0] // 4
        R = w_hh.shape[1]
        dev = x.device

        # dL/dh_t arriving from above; the final state's gradient joins the last step.
        # (Upstream gradients may arrive with any strides, e.g. transposed for batch_first; the
        # kernels index rows densely, so every buffer they touch is made contiguous here.)
        dh_in = dy.to(torch.float32, memory_format=torch.contiguous_format, copy=True)
        dh_in[T - 1] += dh_T.float()
        dc = dc_T.to(torch.float32, memory_format=torch.contiguous_format, copy=True)
        dgates = _empty(T + 1, B, 4 * H, device=dev)
        dgates[T] = 0.0  # "step T" contributes nothing to dh_{T-1}

        BB, BH, BK = _block_sizes(B, H, H)
        grid = (triton.cdiv(B, BB), triton.cdiv(H, BH))
        if ctx.persistent:
            persistent_backward(dh_in, dgates, w_hh, gates, cs, dc, ctx.persistent, INTERPRETED)
        elif w_hr is None:
            for t in range(T - 1, -1, -1):
                lstm_backward_step_kernel[grid](
                    dh_in[t], dgates[t + 1], w_hh, gates[t], cs[t + 1], cs[t], dc, dgates[t],
                    B, H, w_hh.stride(0),
                    FUSE_RECURRENT=True, BLOCK_B=BB, BLOCK_H=BH, BLOCK_K=BK, num_warps=STEP_NUM_WARPS,
                )
        else:
            # With a projection dh_t (B, P) must pass through W_hr before it reaches the cell, so
            # its recurrent part is a GEMM on the host instead of being fused into the kernel.
            w_hh32, w_hr32 = w_hh.float(), w_hr.float()
            dh_cell = _empty(B, H, device=dev)
            for t in range(T - 1, -1, -1):
                dh_in[t].addmm_(dgates[t + 1], w_hh32)  # dh_t, kept for dW_hr
                torch.mm(dh_in[t], w_hr32, out=dh_cell)
                lstm_backward_step_kernel[grid](
                    dh_cell, dgates[t + 1], w_hh, gates[t], cs[t + 1], cs[t], dc, dgates[t],
                    B, H, w_hh.stride(0),
                    FUSE_RECURRENT=False, BLOCK_B=BB, BLOCK_H=BH, BLOCK_K=BK, num_warps=STEP_NUM_WARPS,
                )

        dg = dgates[:T].view(T * B, 4 * H)
        need = ctx.needs_input_grad
        dx = (dg @ w_ih.float()).view(T, B, I).to(x.dtype) if need[0] else None
        dh0 = (dgates[0] @ w_hh.float()).to(ctx.state_dtypes[0]) if need[1] else None
        dc0 = dc.to(ctx.state_dtypes[1], copy=True) if need[2] else None
        dw_ih = (dg.t() @ x.reshape(T * B, I).float()).to(w_ih.dtype) if need[3] else None
        dw_hh = (dg.t() @ hs[:T].reshape(T * B, R)).to(w_hh.dtype) if need[4] else None
        db = dg.sum(0) if ctx.has_bias and need[5] else None
        dw_hr = None
        if w_hr is not None and need[6]:
            dw_hr = (dh_in.view(T * B, R).t() @ h_cell.view(T * B, H)).to(w_hr.dtype)
        return dx, dh0, dc0, dw_ih, dw_hh, db, dw_hr


def lstm_layer(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
    w_hr: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One LSTM layer over a sequence with the Triton kernels; differentiable in every argument.

    Shapes: x (T, B, I), h0 (B, R), c0 (B, H), w_ih (4H, I), w_hh (4H, R), b_ih/b_hh (4H,),
    w_hr (R, H) or None, with R = proj_size if w_hr is given else H.
    Returns (y (T, B, R), h_T (B, R), c_T (B, H)) in the dtype of x.

    Under `torch.autocast` the input and weights are cast to the autocast dtype (as autocast
    does for `torch.nn.LSTM`); gradients flow back to the original fp32 parameters.
    """
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        x, w_ih, w_hh = x.to(dtype), w_ih.to(dtype), w_hh.to(dtype)
        w_hr = w_hr.to(dtype) if w_hr is not None else None
    bias = None
    if b_ih is not None or b_hh is not None:
        bias = sum(b.float() for b in (b_ih, b_hh) if b is not None)
    with torch.autocast(device_type, enabled=False):
        return _LSTMLayerFunction.apply(x, h0, c0, w_ih, w_hh, bias, w_hr)


_W_TYPE = {"fp32": "fp32", "fp16": "fp16", "bf16": "bf16"}


def resource_configs(B: int, H: int, dtype: str, sms: int) -> list:
    """The launches `lstm_layer` makes on a GPU for (B, H, weight dtype), for `kernels.resources`."""
    from kernels.resources import LaunchConfig

    w = "*" + _W_TYPE[dtype]
    BB, BH, BK = _block_sizes(B, H, H, gpu_tiles=True)
    programs = triton.cdiv(B, BB) * triton.cdiv(H, BH)
    f32, i32 = "*fp32", "i32"
    fwd_sig = (("xg_ptr", f32), ("h_prev_ptr", f32), ("c_prev_ptr", f32), ("w_hh_ptr", w), ("h_out_ptr", f32),
               ("c_out_ptr", f32), ("gates_ptr", f32), ("B", i32), ("H", i32), ("R", i32), ("stride_w", i32),
               ("BLOCK_B", "constexpr"), ("BLOCK_H", "constexpr"), ("BLOCK_K", "constexpr"))
    bwd_sig = (("dh_ptr", f32), ("dgates_next_ptr", f32), ("w_hh_ptr", w), ("gates_ptr", f32), ("c_ptr", f32),
               ("c_prev_ptr", f32), ("dc_ptr", f32), ("dgates_ptr", f32), ("B", i32), ("H", i32),
               ("stride_w", i32), ("FUSE_RECURRENT", "constexpr"), ("BLOCK_B", "constexpr"),
               ("BLOCK_H", "constexpr"), ("BLOCK_K", "constexpr"))
    tiles = (("BLOCK_B", BB), ("BLOCK_H", BH), ("BLOCK_K", BK))
    common = dict(family="lstm", B=B, H=H, dtype=dtype, num_warps=STEP_NUM_WARPS, programs=programs,
                  persistent=False)
    configs = [
        LaunchConfig(kernel="lstm.step.forward", fn_path="kernels.lstm.triton_kernels:lstm_forward_step_kernel",
                     signature=fwd_sig, constexprs=tiles, **common),
        LaunchConfig(kernel="lstm.step.backward", fn_path="kernels.lstm.triton_kernels:lstm_backward_step_kernel",
                     signature=bwd_sig, constexprs=(("FUSE_RECURRENT", True),) + tiles, **common),
    ]
    return configs + _persistent.resource_configs(B, H, dtype, sms)
