"""Triton kernels for one Elman RNN time step, forward and backward (tanh or relu).

    h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)

As for the LSTM (kernels/lstm/triton_kernels.py, whose _tanh this shares) the time loop is on
the host, one launch per step; x_t W_ih^T + b for all steps is one GEMM before the loop, and
dx, dW_ih, dW_hh, db are GEMMs after it. Each program owns a BLOCK_B x BLOCK_H tile of h_t.
Accumulation is fp32 whatever the weight dtype; every load and store is masked, so any B and H.
"""
from __future__ import annotations

import triton
import triton.language as tl

from kernels.lstm.triton_kernels import _tanh

@triton.jit
def _activate(pre, NONLINEARITY: tl.constexpr):
    if NONLINEARITY == 0:
        return _tanh(pre)
    else:
        return tl.maximum(pre, 0.0)


@triton.jit
def _activation_grad(h, NONLINEARITY: tl.constexpr):
    """d act / d pre, written in terms of the output h = act(pre)."""
    if NONLINEARITY == 0:
        return 1.0 - h * h
    else:
        return tl.where(h > 0.0, 1.0, 0.0)  # relu'(0) = 0, as torch's threshold_backward


@triton.jit
def rnn_forward_step_kernel(
    xg_ptr,  # (B, H) fp32: x_t @ W_ih^T + b_ih + b_hh, precomputed for all steps
    h_prev_ptr,  # (B, H) fp32
    w_hh_ptr,  # (H, H), any float dtype
    h_out_ptr,  # (B, H) fp32
    B,
    H,
    stride_w,  # row stride of w_hh (its column stride is 1)
    NONLINEARITY: tl.constexpr,  # 0 tanh, 1 relu
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

    acc = tl.load(xg_ptr + bj, mask=mask_bj, other=0.0)
    # pre[b, j] += sum_k h[b, k] * W_hh[j, k]: the W tile is read transposed, (k, j).
    for k0 in range(0, H, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < H
        h = tl.load(h_prev_ptr + offs_b[:, None] * H + offs_k[None, :],
                    mask=mask_b[:, None] & mask_k[None, :], other=0.0)
        w = tl.load(w_hh_ptr + offs_j[None, :] * stride_w + offs_k[:, None],
                    mask=mask_k[:, None] & mask_j[None, :], other=0.0).to(tl.float32)
        acc = tl.dot(h, w, acc, input_precision="ieee")
    tl.store(h_out_ptr + bj, _activate(acc, NONLINEARITY), mask=mask_bj)


@triton.jit
def rnn_backward_step_kernel(
    dh_ptr,  # (B, H) fp32: dL/dh_t from above (the output's gradient; + dL/dh_T at the last step)
    dpre_next_ptr,  # (B, H) fp32: dL/dpre_{t+1} (zeros after the last step)
    w_hh_ptr,  # (H, H)
    h_ptr,  # (B, H) fp32: h_t
    dpre_ptr,  # (B, H) fp32 out: dL/dpre_t
    B,
    H,
    stride_w,
    NONLINEARITY: tl.constexpr,
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

    # dh_t = dy_t + dpre_{t+1} @ W_hh, restricted to this tile's columns j.
    dh = tl.load(dh_ptr + bj, mask=mask_bj, other=0.0)
    for k0 in range(0, H, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < H
        dp = tl.load(dpre_next_ptr + offs_b[:, None] * H + offs_k[None, :],
                     mask=mask_b[:, None] & mask_k[None, :], other=0.0)
        w = tl.load(w_hh_ptr + offs_k[:, None] * stride_w + offs_j[None, :],
                    mask=mask_k[:, None] & mask_j[None, :], other=0.0).to(tl.float32)
        dh = tl.dot(dp, w, dh, input_precision="ieee")
    h = tl.load(h_ptr + bj, mask=mask_bj, other=0.0)
    tl.store(dpre_ptr + bj, dh * _activation_grad(h, NONLINEARITY), mask=mask_bj)
