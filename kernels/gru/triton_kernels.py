"""Triton kernels for one GRU time step, forward and backward, with torch.nn.GRU's equations:

    r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h' = (1 - z) * n + z * h

r multiplies the recurrent part of the n gate only, so that part (hn = W_hn h + b_hn) is kept
apart from the input part: the host folds b_ih and b_hr, b_hz into one GEMM over all steps,
and the kernel adds b_hn itself. Each program owns a BLOCK_B x BLOCK_H tile of h and computes
the three gates for it (the gate nonlinearities fused with the recurrent product). The time
loop is on the host; accumulation is fp32 whatever the weight dtype; all loads are masked.
"""
from __future__ import annotations

import triton
import triton.language as tl

from kernels.lstm.triton_kernels import _sigmoid, _tanh


@triton.jit
def _gru_cell_forward(pre_r, pre_z, x_n, hn, h_prev):
    """(r, z, n, h') from the pre-activations of r and z, the input part of n, and hn."""
    r = _sigmoid(pre_r)
    z = _sigmoid(pre_z)
    n = _tanh(x_n + r * hn)
    return r, z, n, (1.0 - z) * n + z * h_prev


@triton.jit
def _gru_cell_backward(dh, r, z, n, hn, h_prev):
    """From dL/dh': the pre-activation grads of r and z, of n's input part and of hn, and the
    part of dL/dh that flows straight through z * h."""
    d_npre = dh * (1.0 - z) * (1.0 - n * n)
    d_rpre = d_npre * hn * r * (1.0 - r)
    d_zpre = dh * (h_prev - n) * z * (1.0 - z)
    return d_rpre, d_zpre, d_npre, d_npre * r, dh * z


@triton.jit
def gru_forward_step_kernel(
    xg_ptr,  # (B, 3H) fp32: x_t @ W_ih^T + b_ih, plus b_hr and b_hz, precomputed for all steps
    h_prev_ptr,  # (B, H) fp32
    w_hh_ptr,  # (3H, H), any float dtype
    b_hn_ptr,  # (H,) fp32, read only when HAS_B_HN
    h_out_ptr,  # (B, H) fp32
    gates_ptr,  # (B, 4H) fp32 out: r, z, n, hn, saved for backward
    B,
    H,
    stride_w,  # row stride of w_hh (its column stride is 1)
    HAS_B_HN: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    offs_b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_j = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    mask_b = offs_b < B
    mask_j = offs_j < H
    mask_bj = mask_b[:, None] & mask_j[None, :]

    acc_r = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    acc_z = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    acc_n = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    # acc_q[b, j] = sum_k h[b, k] * W_hh[q*H + j, k]: W tiles are read transposed, (k, j).
    for k0 in range(0, H, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < H
        h = tl.load(h_prev_ptr + offs_b[:, None] * H + offs_k[None, :],
                    mask=mask_b[:, None] & mask_k[None, :], other=0.0)
        w_tile = w_hh_ptr + offs_j[None, :] * stride_w + offs_k[:, None]
        mask_w = mask_k[:, None] & mask_j[None, :]
        w_r = tl.load(w_tile, mask=mask_w, other=0.0).to(tl.float32)
        w_z = tl.load(w_tile + H * stride_w, mask=mask_w, other=0.0).to(tl.float32)
        w_n = tl.load(w_tile + 2 * H * stride_w, mask=mask_w, other=0.0).to(tl.float32)
        acc_r = tl.dot(h, w_r, acc_r, input_precision="ieee")
        acc_z = tl.dot(h, w_z, acc_z, input_precision="ieee")
        acc_n = tl.dot(h, w_n, acc_n, input_precision="ieee")
    if HAS_B_HN:
        acc_n += tl.load(b_hn_ptr + offs_j, mask=mask_j, other=0.0)[None, :]

    xg = xg_ptr + offs_b[:, None] * (3 * H) + offs_j[None, :]
    bj = offs_b[:, None] * H + offs_j[None, :]
    r, z, n, h_new = _gru_cell_forward(
        acc_r + tl.load(xg, mask=mask_bj, other=0.0), acc_z + tl.load(xg + H, mask=mask_bj, other=0.0),
        tl.load(xg + 2 * H, mask=mask_bj, other=0.0), acc_n, tl.load(h_prev_ptr + bj, mask=mask_bj, other=0.0),
    )
    tl.store(h_out_ptr + bj, h_new, mask=mask_bj)
    gates = gates_ptr + offs_b[:, None] * (4 * H) + offs_j[None, :]
    tl.store(gates, r, mask=mask_bj)
    tl.store(gates + H, z, mask=mask_bj)
    tl.store(gates + 2 * H, n, mask=mask_bj)
    tl.store(gates + 3 * H, acc_n, mask=mask_bj)


@triton.jit
def gru_backward_step_kernel(
    dy_ptr,  # (B, H) fp32: dL/dh_t from above (the output's gradient; + dL/dh_T at the last step)
    dh_direct_ptr,  # (B, H) fp32: in z_{t+1} * dL/dh_{t+1} (the path through z*h), out z_t * dL/dh_t
    dhh_next_ptr,  # (B, 3H) fp32: grads of step t+1's recurrent products (zeros after the last step)
    w_hh_ptr,  # (3H, H)
    gates_ptr,  # (B, 4H) fp32: r, z, n, hn of step t
    h_prev_ptr,  # (B, H) fp32: h_{t-1}
    dxg_ptr,  # (B, 3H) fp32 out: grads of the input parts of r, z, n (pre-activation)
    dhh_ptr,  # (B, 3H) fp32 out: grads of the recurrent products W_hr h + b_hr, W_hz h + b_hz, hn
    B,
    H,
    stride_w,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    offs_b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_j = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    mask_b = offs_b < B
    mask_j = offs_j < H
    mask_bj = mask_b[:, None] & mask_j[None, :]
    bj = offs_b[:, None] * H + offs_j[None, :]

    # dL/dh_t = dy_t + z_{t+1} dL/dh_{t+1} + dhh_{t+1} @ W_hh, the last restricted to columns j:
    # a (B, 3H) x (3H, BLOCK_H) product, so the step needs no separate GEMM launch.
    dh = tl.load(dy_ptr + bj, mask=mask_bj, other=0.0) + tl.load(dh_direct_ptr + bj, mask=mask_bj, other=0.0)
    for q in tl.static_range(3):
        for k0 in range(0, H, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            mask_k = offs_k < H
            d = tl.load(dhh_next_ptr + offs_b[:, None] * (3 * H) + q * H + offs_k[None, :],
                        mask=mask_b[:, None] & mask_k[None, :], other=0.0)
            w = tl.load(w_hh_ptr + (q * H + offs_k[:, None]) * stride_w + offs_j[None, :],
                        mask=mask_k[:, None] & mask_j[None, :], other=0.0).to(tl.float32)
            dh = tl.dot(d, w, dh, input_precision="ieee")

    gates = gates_ptr + offs_b[:, None] * (4 * H) + offs_j[None, :]
    d_rpre, d_zpre, d_npre, d_hn, dh_direct = _gru_cell_backward(
        dh, tl.load(gates, mask=mask_bj, other=0.0), tl.load(gates + H, mask=mask_bj, other=0.0),
        tl.load(gates + 2 * H, mask=mask_bj, other=0.0), tl.load(gates + 3 * H, mask=mask_bj, other=0.0),
        tl.load(h_prev_ptr + bj, mask=mask_bj, other=0.0),
    )
    tl.store(dh_direct_ptr + bj, dh_direct, mask=mask_bj)
    gate_tile = offs_b[:, None] * (3 * H) + offs_j[None, :]
    tl.store(dxg_ptr + gate_tile, d_rpre, mask=mask_bj)
    tl.store(dxg_ptr + gate_tile + H, d_zpre, mask=mask_bj)
    tl.store(dxg_ptr + gate_tile + 2 * H, d_npre, mask=mask_bj)
    tl.store(dhh_ptr + gate_tile, d_rpre, mask=mask_bj)
    tl.store(dhh_ptr + gate_tile + H, d_zpre, mask=mask_bj)
    tl.store(dhh_ptr + gate_tile + 2 * H, d_hn, mask=mask_bj)
