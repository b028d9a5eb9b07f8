"""Triton kernels for one LSTM time step, forward and backward.

The time loop lives on the host (`kernels.lstm.function`): one launch per step, because the
step t+1 needs all of h_t, which programs working on other hidden units produce. Everything
that is not sequential (the input projection, dW, dx) is a large GEMM outside these kernels.

Each program owns a tile of BLOCK_B batch rows x BLOCK_H hidden units and computes all four
gates for it, so the gate nonlinearities and the c/h update are fused with the recurrent
product. The recurrent product takes its operands in the compute dtype (fp16/bf16 on the
tensor cores; fp32 as IEEE fp32, or TF32 where the user allowed it) and accumulates in fp32;
the cell state and all gate math are fp32 whatever the dtype.

Sizes need not be powers of two: every load and store is masked.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tanh(x):
    # 2*sigmoid(2x) - 1 stays finite for any |x| (exp(2x)-based forms overflow to inf/inf).
    return 2.0 * _sigmoid(2.0 * x) - 1.0


# The per-element LSTM math, shared by the per-step kernels here and the persistent kernels.


@triton.jit
def _load_gates(ptr, H, mask):
    """The four (i, f, g, o) tiles of a row-major (B, 4H) buffer; `ptr` points at gate i."""
    return (tl.load(ptr, mask=mask, other=0.0), tl.load(ptr + H, mask=mask, other=0.0),
            tl.load(ptr + 2 * H, mask=mask, other=0.0), tl.load(ptr + 3 * H, mask=mask, other=0.0))


@triton.jit
def _store_gates(ptr, H, i, f, g, o, mask):
    tl.store(ptr, i, mask=mask)
    tl.store(ptr + H, f, mask=mask)
    tl.store(ptr + 2 * H, g, mask=mask)
    tl.store(ptr + 3 * H, o, mask=mask)


@triton.jit
def _cell_forward(pre_i, pre_f, pre_g, pre_o, c_prev):
    """Gate activations and the c/h update: returns (i, f, g, o, c, h)."""
    i = _sigmoid(pre_i)
    f = _sigmoid(pre_f)
    g = _tanh(pre_g)
    o = _sigmoid(pre_o)
    c = f * c_prev + i * g
    return i, f, g, o, c, o * _tanh(c)


@triton.jit
def _cell_backward(dh, dc, i, f, g, o, c, c_prev):
    """Pre-activation gate gradients and dL/dc_{t-1}, from dL/dh_t and dL/dc_t (the part from t+1)."""
    tanh_c = _tanh(c)
    dc = dc + dh * o * (1.0 - tanh_c * tanh_c)
    d_i = dc * g * i * (1.0 - i)
    d_f = dc * c_prev * f * (1.0 - f)
    d_g = dc * i * (1.0 - g * g)
    d_o = dh * tanh_c * o * (1.0 - o)
    return d_i, d_f, d_g, d_o, dc * f


@triton.jit
def lstm_forward_step_kernel(
    xg_ptr,  # (B, 4H) compute dtype: x_t @ W_ih^T + b_ih + b_hh, precomputed for all steps
    h_prev_ptr,  # (B, R) compute dtype
    c_prev_ptr,  # (B, H) fp32
    w_hh_ptr,  # (4H, R) compute dtype
    h_out_ptr,  # (B, H) compute dtype: o * tanh(c), before any projection
    c_out_ptr,  # (B, H) fp32
    gates_ptr,  # (B, 4H) fp32: activated i, f, g, o, saved for backward (unused without STORE_GATES)
    B,
    H,
    R,
    stride_w,  # row stride of w_hh (its column stride is 1)
    STORE_GATES: tl.constexpr,  # False for inference: nothing is kept for a backward pass
    DOT_PRECISION: tl.constexpr,  # tl.dot input_precision for fp32 operands: "ieee" or "tf32"
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    offs_b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_j = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    mask_b = offs_b < B
    mask_j = offs_j < H
    mask_bj = mask_b[:, None] & mask_j[None, :]

    acc_i = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    acc_f = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    acc_g = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    acc_o = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    # gates[b, q*H + j] += sum_k h[b, k] * W_hh[q*H + j, k]: W tiles are read transposed (k, j).
    for k0 in range(0, R, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < R
        h = tl.load(
            h_prev_ptr + offs_b[:, None] * R + offs_k[None, :],
            mask=mask_b[:, None] & mask_k[None, :],
            other=0.0,
        )
        w_tile = w_hh_ptr + offs_j[None, :] * stride_w + offs_k[:, None]
        mask_w = mask_k[:, None] & mask_j[None, :]
        # h and W_hh both in the compute dtype: a tensor-core product for fp16/bf16, fp32 accumulator.
        w_i = tl.load(w_tile, mask=mask_w, other=0.0)
        w_f = tl.load(w_tile + H * stride_w, mask=mask_w, other=0.0)
        w_g = tl.load(w_tile + 2 * H * stride_w, mask=mask_w, other=0.0)
        w_o = tl.load(w_tile + 3 * H * stride_w, mask=mask_w, other=0.0)
        acc_i = tl.dot(h, w_i, acc_i, input_precision=DOT_PRECISION)
        acc_f = tl.dot(h, w_f, acc_f, input_precision=DOT_PRECISION)
        acc_g = tl.dot(h, w_g, acc_g, input_precision=DOT_PRECISION)
        acc_o = tl.dot(h, w_o, acc_o, input_precision=DOT_PRECISION)

    gate_tile = offs_b[:, None] * (4 * H) + offs_j[None, :]
    x_i, x_f, x_g, x_o = _load_gates(xg_ptr + gate_tile, H, mask_bj)
    bj = offs_b[:, None] * H + offs_j[None, :]
    i, f, g, o, c, h_new = _cell_forward(
        acc_i + x_i.to(tl.float32), acc_f + x_f.to(tl.float32), acc_g + x_g.to(tl.float32),
        acc_o + x_o.to(tl.float32), tl.load(c_prev_ptr + bj, mask=mask_bj, other=0.0),
    )
    tl.store(c_out_ptr + bj, c, mask=mask_bj)
    tl.store(h_out_ptr + bj, h_new, mask=mask_bj)  # rounded to the compute dtype by the store
    if STORE_GATES:
        _store_gates(gates_ptr + gate_tile, H, i, f, g, o, mask_bj)


@triton.jit
def lstm_backward_step_kernel(
    dh_ptr,  # (B, H) fp32: dL/dh_t from above (dy_t; with FUSE_RECURRENT the recurrent part is added here)
    dgates_next_ptr,  # (B, 4H) compute dtype: pre-activation gate grads of step t+1 (zeros after the last)
    w_hh_ptr,  # (4H, H) compute dtype, read only when FUSE_RECURRENT
    gates_ptr,  # (B, 4H) fp32: activated gates of step t
    c_ptr,  # (B, H) fp32: c_t
    c_prev_ptr,  # (B, H) fp32: c_{t-1}
    dc_ptr,  # (B, H) fp32: in dL/dc_t (from step t+1), out dL/dc_{t-1}
    dgates_ptr,  # (B, 4H) compute dtype out: pre-activation gate grads of step t
    B,
    H,
    stride_w,
    FUSE_RECURRENT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
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

    dh = tl.load(dh_ptr + bj, mask=mask_bj, other=0.0)
    if FUSE_RECURRENT:
        # dh_t += dgates_{t+1} @ W_hh restricted to this tile's columns j: a (B, 4H) x (4H, BLOCK_H)
        # product, so the step needs no separate GEMM launch.
        acc = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
        for q in tl.static_range(4):
            for k0 in range(0, H, BLOCK_K):
                offs_k = k0 + tl.arange(0, BLOCK_K)
                mask_k = offs_k < H
                dg = tl.load(
                    dgates_next_ptr + offs_b[:, None] * (4 * H) + q * H + offs_k[None, :],
                    mask=mask_b[:, None] & mask_k[None, :],
                    other=0.0,
                )
                w = tl.load(
                    w_hh_ptr + (q * H + offs_k[:, None]) * stride_w + offs_j[None, :],
                    mask=mask_k[:, None] & mask_j[None, :],
                    other=0.0,
                )
                acc = tl.dot(dg, w, acc, input_precision=DOT_PRECISION)
        dh += acc

    gate_tile = offs_b[:, None] * (4 * H) + offs_j[None, :]
    i, f, g, o = _load_gates(gates_ptr + gate_tile, H, mask_bj)
    d_i, d_f, d_g, d_o, dc_prev = _cell_backward(
        dh, tl.load(dc_ptr + bj, mask=mask_bj, other=0.0), i, f, g, o,
        tl.load(c_ptr + bj, mask=mask_bj, other=0.0), tl.load(c_prev_ptr + bj, mask=mask_bj, other=0.0),
    )
    tl.store(dc_ptr + bj, dc_prev, mask=mask_bj)
    _store_gates(dgates_ptr + gate_tile, H, d_i, d_f, d_g, d_o, mask_bj)
