"""Persistent whole-sequence LSTM kernels (forward and backward), behind a flag.

The per-step kernels of `triton_kernels.py` pay a launch and a reload of W_hh at every time
step. Here one launch runs the whole time loop: each program owns BLOCK_H hidden units, loads
its slice of W_hh once and keeps it on chip for all T steps, and the programs meet at a
grid-wide barrier after every step (an atomic counter) because step t+1 needs the h_t (or, going
backward, the gate gradients) that every other program wrote.

The barrier is only safe if all programs are resident at once, so the grid is never larger than
the number of SMs, and only one program per hidden-unit slice exists. In Triton's CPU
interpreter programs run one after another, so a barrier between two of them would never open:
there the grid is always a single program (BLOCK_H covers all of H), which still runs the
barrier code. Not for proj_size (the projection is a second product per step).

Status: correct in the interpreter (tests/test_lstm_persistent.py); not yet measured on a GPU,
so `lstm_layer` uses it only when LIGHTNING_RNN_PERSISTENT=1 is set.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from .triton_kernels import _cell_backward, _cell_forward, _load_gates, _store_gates


def persistent_enabled() -> bool:
    return os.environ.get("LIGHTNING_RNN_PERSISTENT", "0") == "1"


@triton.jit
def _grid_barrier(sync_ptr, target):
    """Wait until every program has arrived `target` times in total (counter starts at 0)."""
    tl.debug_barrier()  # this program's threads have all issued their stores
    tl.atomic_add(sync_ptr, 1, sem="release")
    arrived = tl.atomic_add(sync_ptr, 0, sem="acquire")
    while arrived < target:
        arrived = tl.atomic_add(sync_ptr, 0, sem="acquire")
    tl.debug_barrier()


@triton.jit
def lstm_forward_persistent_kernel(
    xg_ptr,  # (T, B, 4H) fp32
    hs_ptr,  # (T+1, B, H) fp32, hs[0] = h0
    cs_ptr,  # (T+1, B, H) fp32, cs[0] = c0
    gates_ptr,  # (T, B, 4H) fp32 out
    w_hh_ptr,  # (4H, H)
    sync_ptr,  # int32 counter, zero
    T,
    B,
    H,
    stride_w,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    K_PAD: tl.constexpr,  # next power of two >= H: the whole reduction in one tile
):
    n_programs = tl.num_programs(0)
    offs_j = tl.program_id(0) * BLOCK_H + tl.arange(0, BLOCK_H)
    offs_k = tl.arange(0, K_PAD)
    mask_j = offs_j < H
    mask_k = offs_k < H
    # This program's slice of W_hh, transposed to (k, j), loaded once for all T steps and kept in
    # its own dtype (fp16/bf16 halves the registers it takes; the products accumulate in fp32).
    w_tile = w_hh_ptr + offs_j[None, :] * stride_w + offs_k[:, None]
    mask_w = mask_k[:, None] & mask_j[None, :]
    w_i = tl.load(w_tile, mask=mask_w, other=0.0)
    w_f = tl.load(w_tile + H * stride_w, mask=mask_w, other=0.0)
    w_g = tl.load(w_tile + 2 * H * stride_w, mask=mask_w, other=0.0)
    w_o = tl.load(w_tile + 3 * H * stride_w, mask=mask_w, other=0.0)

    for t in range(T):
        for b0 in range(0, B, BLOCK_B):
            offs_b = b0 + tl.arange(0, BLOCK_B)
            mask_b = offs_b < B
            mask_bj = mask_b[:, None] & mask_j[None, :]
            # h_{t-1} was written by every program: read it from L2, not a stale L1 line.
            h = tl.load(hs_ptr + t * B * H + offs_b[:, None] * H + offs_k[None, :],
                        mask=mask_b[:, None] & mask_k[None, :], other=0.0, cache_modifier=".cg").to(w_i.dtype)
            gate_tile = t * B * 4 * H + offs_b[:, None] * (4 * H) + offs_j[None, :]
            x_i, x_f, x_g, x_o = _load_gates(xg_ptr + gate_tile, H, mask_bj)
            bj = offs_b[:, None] * H + offs_j[None, :]
            i, f, g, o, c, h_new = _cell_forward(
                tl.dot(h, w_i, input_precision="ieee") + x_i, tl.dot(h, w_f, input_precision="ieee") + x_f,
                tl.dot(h, w_g, input_precision="ieee") + x_g, tl.dot(h, w_o, input_precision="ieee") + x_o,
                tl.load(cs_ptr + t * B * H + bj, mask=mask_bj, other=0.0),
            )
            tl.store(cs_ptr + (t + 1) * B * H + bj, c, mask=mask_bj)
            tl.store(hs_ptr + (t + 1) * B * H + bj, h_new, mask=mask_bj)
            _store_gates(gates_ptr + gate_tile, H, i, f, g, o, mask_bj)
        _grid_barrier(sync_ptr, (t + 1) * n_programs)


@triton.jit
def lstm_backward_persistent_kernel(
    dh_ptr,  # (T, B, H) fp32: dL/dh_t from above (dh_T already added to the last step)
    dgates_ptr,  # (T+1, B, 4H) fp32 out; dgates[T] must be zero
    w_hh_ptr,  # (4H, H)
    gates_ptr,  # (T, B, 4H) fp32
    cs_ptr,  # (T+1, B, H) fp32
    dc_ptr,  # (B, H) fp32: in dL/dc_T, out dL/dc_0
    sync_ptr,  # int32 counter, zero
    T,
    B,
    H,
    stride_w,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    K_PAD: tl.constexpr,
):
    n_programs = tl.num_programs(0)
    offs_j = tl.program_id(0) * BLOCK_H + tl.arange(0, BLOCK_H)
    offs_k = tl.arange(0, K_PAD)
    mask_j = offs_j < H
    mask_k = offs_k < H
    # Columns j of W_hh's four gate blocks, (k, j): dh[:, j] = sum_q dgates_q @ W_hh[qH:(q+1)H, j].
    w_tile = w_hh_ptr + offs_k[:, None] * stride_w + offs_j[None, :]
    mask_w = mask_k[:, None] & mask_j[None, :]
    w_i = tl.load(w_tile, mask=mask_w, other=0.0)
    w_f = tl.load(w_tile + H * stride_w, mask=mask_w, other=0.0)
    w_g = tl.load(w_tile + 2 * H * stride_w, mask=mask_w, other=0.0)
    w_o = tl.load(w_tile + 3 * H * stride_w, mask=mask_w, other=0.0)

    for step in range(T):
        t = T - 1 - step
        for b0 in range(0, B, BLOCK_B):
            offs_b = b0 + tl.arange(0, BLOCK_B)
            mask_b = offs_b < B
            mask_bj = mask_b[:, None] & mask_j[None, :]
            mask_bk = mask_b[:, None] & mask_k[None, :]
            bj = offs_b[:, None] * H + offs_j[None, :]
            nxt = dgates_ptr + (t + 1) * B * 4 * H + offs_b[:, None] * (4 * H) + offs_k[None, :]
            dh = tl.load(dh_ptr + t * B * H + bj, mask=mask_bj, other=0.0)
            dh += tl.dot(tl.load(nxt, mask=mask_bk, other=0.0, cache_modifier=".cg").to(w_i.dtype), w_i, input_precision="ieee")
            dh += tl.dot(tl.load(nxt + H, mask=mask_bk, other=0.0, cache_modifier=".cg").to(w_i.dtype), w_f, input_precision="ieee")
            dh += tl.dot(tl.load(nxt + 2 * H, mask=mask_bk, other=0.0, cache_modifier=".cg").to(w_i.dtype), w_g,
                         input_precision="ieee")
            dh += tl.dot(tl.load(nxt + 3 * H, mask=mask_bk, other=0.0, cache_modifier=".cg").to(w_i.dtype), w_o,
                         input_precision="ieee")

            gate_tile = t * B * 4 * H + offs_b[:, None] * (4 * H) + offs_j[None, :]
            i, f, g, o = _load_gates(gates_ptr + gate_tile, H, mask_bj)
            d_i, d_f, d_g, d_o, dc_prev = _cell_backward(
                dh, tl.load(dc_ptr + bj, mask=mask_bj, other=0.0), i, f, g, o,
                tl.load(cs_ptr + (t + 1) * B * H + bj, mask=mask_bj, other=0.0),
                tl.load(cs_ptr + t * B * H + bj, mask=mask_bj, other=0.0),
            )
            tl.store(dc_ptr + bj, dc_prev, mask=mask_bj)
            _store_gates(dgates_ptr + gate_tile, H, d_i, d_f, d_g, d_o, mask_bj)
        _grid_barrier(sync_ptr, (step + 1) * n_programs)


def _launch_shape(B: int, H: int, device: torch.device, interpreted: bool) -> tuple[int, int, int, int] | None:
    """(programs, BLOCK_B, BLOCK_H, K_PAD), or None where a co-resident grid is not possible."""
    k_pad = max(16, triton.next_power_of_2(H))
    block_b = max(16, min(triton.next_power_of_2(B), 32 if not interpreted else 64))
    if interpreted:
        return 1, block_b, k_pad, k_pad  # one program: programs run sequentially there
    if k_pad > 1024:
        return None  # the W_hh slice would not fit on chip
    block_h = 16
    programs = triton.cdiv(H, block_h)
    if programs > torch.cuda.get_device_properties(device).multi_processor_count:
        return None
    return programs, block_b, block_h, k_pad


def can_run_persistent(B: int, H: int, has_proj: bool, device: torch.device, interpreted: bool) -> bool:
    return not has_proj and _launch_shape(B, H, device, interpreted) is not None


def persistent_forward(xg: Tensor, hs: Tensor, cs: Tensor, gates: Tensor, w_hh: Tensor, interpreted: bool) -> None:
    """Fill hs[1:], cs[1:], gates for all T steps in one launch (shapes as in the kernel)."""
    T, B, H = xg.shape[0], xg.shape[1], xg.shape[2] // 4
    programs, bb, bh, kp = _launch_shape(B, H, xg.device, interpreted)  # type: ignore[misc]
    sync = torch.zeros(1, dtype=torch.int32, device=xg.device)
    lstm_forward_persistent_kernel[(programs,)](
        xg, hs, cs, gates, w_hh, sync, T, B, H, w_hh.stride(0),
        BLOCK_B=bb, BLOCK_H=bh, K_PAD=kp, num_warps=8,
    )


def persistent_backward(dh: Tensor, dgates: Tensor, w_hh: Tensor, gates: Tensor, cs: Tensor, dc: Tensor,
                        interpreted: bool) -> None:
    """Fill dgates[:T] and turn dc from dL/dc_T into dL/dc_0 in one launch."""
    T, B, H = dh.shape
    programs, bb, bh, kp = _launch_shape(B, H, dh.device, interpreted)  # type: ignore[misc]
    sync = torch.zeros(1, dtype=torch.int32, device=dh.device)
    lstm_backward_persistent_kernel[(programs,)](
        dh, dgates, w_hh, gates, cs, dc, sync, T, B, H, w_hh.stride(0),
        BLOCK_B=bb, BLOCK_H=bh, K_PAD=kp, num_warps=8,
    )
