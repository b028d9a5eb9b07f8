"""The persistent engine: one launch runs a layer's whole time loop, for the LSTM, GRU and Elman cells.

Each program owns BLOCK_J hidden units and BLOCK_B batch rows. Its rows of W_hh (all the cell's
gates for its units, gate-interleaved, see `plan.interleave`) are loaded once and stay on chip
for all steps. Step t needs all of h_{t-1}, which every program of the same batch rows wrote, so
the programs of one batch tile meet at a barrier after every step (the batch tiles never wait
for each other: their rows are independent). h_{t-1} is read from slot t of the exchange buffer
and h_t written to slot t+1, never the same buffer, so one barrier per step is enough.

What differs between the cells is only the element-wise math after the product (`CELL`):
  0 LSTM   product rows (i, f, g, o) per unit; c carried in registers       saved: i, f, g, o
  1 GRU    product rows (r, z, n, 0) per unit (the 4th is zero padding);    saved: r, z, n, hn
           hn = W_hn h + b_hn kept apart, multiplied by r (as torch.nn.GRU)
  2/3 Elman tanh / relu, one row per unit                                   saved: nothing (h)
The cells' math is the per-step kernels' own (`kernels/<cell>/triton_kernels.py`).

Backward: each program multiplies its gate gradients by its own rows of W_hh, which gives its
share of dh_{t-1} for every hidden unit; shares go to a (2, slices, B, H) buffer (slot t % 2) and
after the barrier every program sums the shares of its own units: no atomics on data, deterministic.

Variants (constexprs, see `plan.VARIANTS`; all correct, they differ in speed only):
  BARRIER 0 every spin is an atomic read of one counter per batch tile (the first GPU-measured design)
          1 one release atomic to arrive; spin on plain volatile loads; one acquire atomic after
          2 a flag per program (its step count, release store); one vector load of all flags to wait
  SPLIT   arrive right after h_t is stored, load the next step's input projection, then wait
  SWAP    the product as (gate rows, K) x (K, batch): gate rows as M (wgmma needs M % 64 == 0)
  KSPLIT  the forward product as KSPLIT products over slabs of K, summed (warps work on different slabs)
A plan (not a variant) may stream the weights from L1/L2 in K blocks (STREAM_K) instead of keeping
them in registers: slower per step, but any H and batch fit without spilling (PTB's 650 and 1500).
The exchange dtype of h (fp32 or the compute dtype) is the dtype of the `hs` buffer.

Lengths (HAS_LENGTHS, a per-row int32 tensor on the device): a row at a step past its length keeps h
(and c), so the exchange buffer's last slot holds every row's h_n (torch.nn's for packed input); the
backward gives such a step no gate gradient and passes dstate through. The host zeroes the outputs
and dy there and adds dh_n at each row's last valid step (kernels/lengths.py).

Two directions (TWO_DIRS, a bidirectional layer): the reverse direction is a forward-direction problem
on inputs reversed within each row's length (kernels/lengths.py), so the two are independent problems
of one shape with different weights. The grid gets a third axis of 2 (program_id(2) = direction): every
per-direction buffer is stacked (2, ...) on the host and a program moves its pointers to its direction's
half (`_dir_offset`: sizes from `dir_steps`, the buffers' steps); each direction's batch tiles have their
own barrier words (direction 1's after direction 0's), the error word after all. Without TWO_DIRS no
offset is computed: the one-direction build is the same as before.

Every pointer is offset to the launch's first (backward: last) step on the host and moved one
step per iteration, so no index is t * B * 4H (which passes 2^31 for long sequences).

No wait is unbounded (`_wait`): a program whose partner never arrives (a grid that is not resident at
once) gives up after `max_polls` polls, writes the launch's error word (after the sync words) and
waits no more; the host reads the word and falls back (kernels/persistent/run.py). The step counts
and the bound are not specialized on, so the build a shape gets does not depend on T.
"""
from __future__ import annotations

import triton
import triton.language as tl

from kernels.gru.triton_kernels import _gru_cell_backward, _gru_cell_forward
from kernels.lstm.triton_kernels import _cell_backward, _cell_forward, _load_gates, _store_gates
from kernels.rnn.triton_kernels import _activate, _activation_grad

LSTM, GRU, ELMAN_TANH, ELMAN_RELU = 0, 1, 2, 3


# --- the barrier ----------------------------------------------------------------------------------------

#: Polls between two reads of the error word while a wait lasts (a power of two): a program stuck at a
#: barrier whose partner gave up leaves after this many polls instead of after its own bound.
ERROR_CHECK_POLLS = tl.constexpr(1024)


@triton.jit
def _arrive(sync_ptr, pid_j, step, BARRIER: tl.constexpr):
    """This program has stored its h_t (step `step`): tell the others."""
    tl.debug_barrier()  # every thread of the program has issued its stores
    if BARRIER == 2:
        tl.atomic_xchg(sync_ptr + pid_j, step + 1, sem="release")
    else:
        tl.atomic_add(sync_ptr, 1, sem="release")


@triton.jit
def _progress(sync_ptr, step, n_programs, BARRIER: tl.constexpr, P_POW2: tl.constexpr):
    """How far this batch tile is, the same in every thread of the program (an atomic's result is
    broadcast, a reduction's too): arrivals (BARRIER 0) or the slowest program's flag (2)."""
    if BARRIER == 2:
        offs_p = tl.arange(0, P_POW2)
        return tl.min(tl.load(sync_ptr + offs_p, mask=offs_p < n_programs, other=step + 1, volatile=True), axis=0)
    else:
        return tl.atomic_add(sync_ptr, 0, sem="acquire")


@triton.jit
def _spin_loads(sync_ptr, target):
    """BARRIER 1: plain volatile loads of the counter, at most ERROR_CHECK_POLLS of them (each thread on
    its own: nothing in here may synchronize the program's threads)."""
    arrived = tl.load(sync_ptr, volatile=True)
    polls = tl.full([], 1, tl.int32)
    while (arrived < target) & (polls < ERROR_CHECK_POLLS):
        arrived = tl.load(sync_ptr, volatile=True)
        polls += 1


@triton.jit
def _wait(sync_ptr, step, n_programs, error_ptr, max_polls, gave_up, BARRIER: tl.constexpr, P_POW2: tl.constexpr):
    """Until every program of this batch tile has arrived after step `step`; returns whether this program
    has given up (`gave_up`: at an earlier step): after `max_polls` polls, or sooner once another program
    has set the error word. The first program to give up sets the error word to its step + 1 (the host
    reads it: the launch's results are invalid); a program that gave up runs its remaining steps without waiting (Triton has
    no `break`, and a while loop over the steps builds a slower kernel: twice the registers).

    A program that is not resident never arrives (no cooperative launch), so no wait may be unbounded.
    Every branch below is taken alike by all threads of the program (their conditions are atomics'
    or reductions' results): a barrier or a broadcast inside a branch some threads skip would hang."""
    target = step + 1 if BARRIER == 2 else (step + 1) * n_programs
    if BARRIER == 1:
        seen = target - 1  # one round at least: the loads' spin, then the acquire that orders h_t
    else:
        seen = _progress(sync_ptr, step, n_programs, BARRIER, P_POW2)
    polls = tl.where(gave_up, max_polls, 0)
    while (seen < target) & (polls < max_polls):
        if BARRIER == 1:
            # The arrivals form one release sequence on the counter: one acquire read of it orders
            # every program's h_t before this program's next loads.
            _spin_loads(sync_ptr, target)
            polls += ERROR_CHECK_POLLS
        else:
            polls += 1
        seen = _progress(sync_ptr, step, n_programs, BARRIER, P_POW2)
        if (polls % ERROR_CHECK_POLLS == 0) & (seen < target):  # slow: has another program given up?
            if tl.atomic_add(error_ptr, 0) != 0:
                polls = max_polls
    if (seen < target) & ~gave_up:  # the first program to give up writes its step
        tl.atomic_cas(error_ptr, 0, step + 1)
    if BARRIER == 2:
        offs_p = tl.arange(0, P_POW2)
        tl.atomic_add(sync_ptr + offs_p, 0, mask=offs_p < n_programs, sem="acquire")
    tl.debug_barrier()
    return gave_up | (seen < target)


# --- loads and the product ------------------------------------------------------------------------------


@triton.jit
def _w_chunk(w_ptr, K_TOTAL, k0, KC: tl.constexpr, N: tl.constexpr, KN: tl.constexpr):
    """Columns k0..k0+KC of this program's N rows of W_hh: (KC, N) if KN else (N, KC)."""
    if KN:
        return tl.load(w_ptr + tl.arange(0, N)[None, :] * K_TOTAL + (k0 + tl.arange(0, KC))[:, None])
    else:
        return tl.load(w_ptr + tl.arange(0, N)[:, None] * K_TOTAL + (k0 + tl.arange(0, KC))[None, :])


@triton.jit
def _resident_weights(w_ptr, K_TOTAL, K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr, K3: tl.constexpr,
                      N: tl.constexpr, KN: tl.constexpr, KSPLIT: tl.constexpr):
    """This program's rows of W_hh in up to four K chunks, loaded once for all steps (see `_w_chunk`,
    `_w_split`); a chunk of width 0 is not loaded and its slot repeats the first (never used)."""
    w0 = _w_split(_w_chunk(w_ptr, K_TOTAL, 0, K0, N, KN), K0, N, KSPLIT)
    w1 = w0
    w2 = w0
    w3 = w0
    if K1 > 0:
        w1 = _w_split(_w_chunk(w_ptr, K_TOTAL, K0, K1, N, KN), K1, N, KSPLIT)
    if K2 > 0:
        w2 = _w_split(_w_chunk(w_ptr, K_TOTAL, K0 + K1, K2, N, KN), K2, N, KSPLIT)
    if K3 > 0:
        w3 = _w_split(_w_chunk(w_ptr, K_TOTAL, K0 + K1 + K2, K3, N, KN), K3, N, KSPLIT)
    return w0, w1, w2, w3


@triton.jit
def _h_chunk(h_ptr, offs_b, mask_b, H, k0, KC: tl.constexpr, T: tl.constexpr):
    """h[b, k0:k0+KC] of the previous step, (BLOCK_B, KC), or transposed (KC, BLOCK_B) if T.
    Written by other programs: read from L2 (.cg), never a stale L1 line."""
    offs_k = k0 + tl.arange(0, KC)
    mask_k = offs_k < H
    if T:
        return tl.load(h_ptr + offs_b[None, :] * H + offs_k[:, None], mask=mask_b[None, :] & mask_k[:, None],
                       other=0.0, cache_modifier=".cg")
    else:
        return tl.load(h_ptr + offs_b[:, None] * H + offs_k[None, :], mask=mask_b[:, None] & mask_k[None, :],
                       other=0.0, cache_modifier=".cg")


@triton.jit
def _w_split(w, KC: tl.constexpr, N: tl.constexpr, KSPLIT: tl.constexpr):
    """A (KC, N) weight chunk as KSPLIT slabs (KSPLIT, KC/KSPLIT, N) for the K-split product
    (chunks narrower than KSPLIT x 16 stay whole: tl.dot needs K >= 16)."""
    if KSPLIT > 1 and KC >= 16 * KSPLIT:
        return tl.reshape(w, (KSPLIT, KC // KSPLIT, N))
    else:
        return w


@triton.jit
def _dot_chunk(acc, h_ptr, offs_b, mask_b, H, k0, w, KC: tl.constexpr, SWAP: tl.constexpr,
               PRECISION: tl.constexpr, KSPLIT: tl.constexpr = 1):
    """acc += h[:, k0:k0+KC] @ w-chunk^T, as (B, N); with SWAP the product runs as (N, KC) x (KC, B);
    with KSPLIT > 1, as KSPLIT independent products over slabs of K (a rank-3 dot) summed after:
    the slabs go to different warps instead of one chain of KC/16 dependent MMAs."""
    if SWAP:
        h = _h_chunk(h_ptr, offs_b, mask_b, H, k0, KC, True).to(w.dtype)
        return acc + tl.trans(tl.dot(w, h, input_precision=PRECISION))
    elif KSPLIT > 1 and KC >= 16 * KSPLIT:
        KS: tl.constexpr = KC // KSPLIT
        offs_k = k0 + tl.arange(0, KSPLIT)[:, None, None] * KS + tl.arange(0, KS)[None, None, :]
        h = tl.load(h_ptr + offs_b[None, :, None] * H + offs_k, mask=mask_b[None, :, None] & (offs_k < H),
                    other=0.0, cache_modifier=".cg").to(w.dtype)  # (KSPLIT, BLOCK_B, KS)
        return acc + tl.sum(tl.dot(h, w, input_precision=PRECISION), axis=0)
    else:
        h = _h_chunk(h_ptr, offs_b, mask_b, H, k0, KC, False).to(w.dtype)
        return tl.dot(h, w, acc, input_precision=PRECISION)


@triton.jit
def _split4(acc, BLOCK_B: tl.constexpr, BLOCK_J: tl.constexpr):
    """(BLOCK_B, 4*BLOCK_J) with columns (unit, gate) -> the four gate tiles (BLOCK_B, BLOCK_J)."""
    even, odd = tl.split(tl.reshape(acc, (BLOCK_B, BLOCK_J, 2, 2)))  # gate q = 2a + b; split takes b
    q0, q2 = tl.split(even)
    q1, q3 = tl.split(odd)
    return q0, q1, q2, q3


@triton.jit
def _join4(q0, q1, q2, q3, BLOCK_B: tl.constexpr, BLOCK_J: tl.constexpr):
    """Inverse of `_split4`."""
    return tl.reshape(tl.join(tl.join(q0, q2), tl.join(q1, q3)), (BLOCK_B, 4 * BLOCK_J))


@triton.jit
def _load_x(xg_ptr, offs_b, offs_j, mask_bj, H, CELL: tl.constexpr):
    """This tile's input projections of one step (fp32): LSTM 4 gates, GRU 3, Elman 1 (rest zero)."""
    if CELL == 0:
        x0, x1, x2, x3 = _load_gates(xg_ptr + offs_b[:, None] * (4 * H) + offs_j[None, :], H, mask_bj)
        return x0.to(tl.float32), x1.to(tl.float32), x2.to(tl.float32), x3.to(tl.float32)
    elif CELL == 1:
        p = xg_ptr + offs_b[:, None] * (3 * H) + offs_j[None, :]
        x0 = tl.load(p, mask=mask_bj, other=0.0).to(tl.float32)
        x1 = tl.load(p + H, mask=mask_bj, other=0.0).to(tl.float32)
        x2 = tl.load(p + 2 * H, mask=mask_bj, other=0.0).to(tl.float32)
        return x0, x1, x2, x2
    else:
        x0 = tl.load(xg_ptr + offs_b[:, None] * H + offs_j[None, :], mask=mask_bj, other=0.0).to(tl.float32)
        return x0, x0, x0, x0


@triton.jit
def _x_step(H, CELL: tl.constexpr):
    """Elements of the input projection per batch row and step: 4H, 3H or H."""
    if CELL == 0:
        return 4 * H
    elif CELL == 1:
        return 3 * H
    else:
        return H


@triton.jit
def _frozen(h_new, valid, hs_ptr, bj, mask_bj):
    """h_new where the row is within its length, else this program's own units of h_{t-1} (slot t of
    the exchange buffer, written by this program: no barrier needed), so hs[T] holds every row's h_n."""
    h_prev = tl.load(hs_ptr + bj, mask=mask_bj, other=0.0).to(tl.float32)
    return tl.where(valid, h_new, h_prev)


@triton.jit
def _sync_words(sync_ptr, sync_stride, TWO_DIRS: tl.constexpr):
    """(this batch tile's barrier words, the launch's error word): the tiles' words of direction 0, then
    direction 1's (TWO_DIRS), then the error word."""
    tiles = tl.num_programs(1)
    if TWO_DIRS:
        error_ptr = sync_ptr + 2 * tiles * sync_stride
        return sync_ptr + (tl.program_id(2) * tiles + tl.program_id(1)) * sync_stride, error_ptr
    else:
        return sync_ptr + tl.program_id(1) * sync_stride, sync_ptr + tiles * sync_stride


@triton.jit
def _dir_offset(dir_steps, elements):
    """Elements from direction 0's buffer to direction 1's (0 for direction 0), in int64: a direction's
    buffer may pass 2^31 elements where no step does."""
    return tl.program_id(2).to(tl.int64) * dir_steps * elements


# --- forward --------------------------------------------------------------------------------------------


@triton.jit(do_not_specialize=["n_steps", "max_polls", "t0", "dir_steps"])  # the step counts never change the build
def persistent_forward_kernel(
    xg_ptr,  # (n_steps, B, X*H) any float dtype: x @ W_ih^T + biases (X = 4 LSTM, 3 GRU, 1 Elman)
    hs_ptr,  # (n_steps+1, B, H) exchange dtype: hs[0] = h before the first step, hs[t+1] = h_t
    state0_ptr,  # (B, H) fp32: c before the first step (LSTM), h before it (GRU); unused (Elman)
    c_ptr,  # LSTM: (., B, H) fp32: c after step s goes to c_ptr + s * c_stride
    saved_ptr,  # (n_steps, B, 4H) fp32 out if SAVE: LSTM i, f, g, o; GRU r, z, n, hn
    w_ptr,  # (slices * NG * BLOCK_J, K_TOTAL): W_hh gate-interleaved, zero-padded (plan.interleave)
    b_hn_ptr,  # (H,) fp32: GRU's b_hn (zeros without bias); unused otherwise
    sync_ptr,  # int32, zero: per batch tile `sync_stride` words (a counter, or one flag per program); after
    #            the last tile's, the launch's error word (set by a program that gave up at a barrier)
    sync_stride,  # words per batch tile: a multiple of 32 (128 B), >= the programs of a tile
    max_polls,  # polls a barrier wait may take before the program gives up (see `_wait`)
    n_steps,
    B,
    H,
    K_TOTAL,
    c_stride,  # B*H to keep every step's c (training), 0 to keep only the last
    len_ptr,  # (B,) int32 with HAS_LENGTHS: each row's length (steps t >= it keep the state); else unused
    t0,  # the time index of this launch's first step (compared with the lengths)
    dir_steps,  # TWO_DIRS: the steps T of the stacked buffers (xg (2, T, ...), hs (2, T+1, ...)); else unused
    CELL: tl.constexpr,
    SAVE: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_J: tl.constexpr,
    K0: tl.constexpr,
    K1: tl.constexpr,
    K2: tl.constexpr,
    K3: tl.constexpr,
    BARRIER: tl.constexpr,
    SPLIT: tl.constexpr,
    SWAP: tl.constexpr,
    STREAM_K: tl.constexpr,  # 0: the weights stay in registers (K0..K3); else K block of streamed weights
    P_POW2: tl.constexpr,
    PRECISION: tl.constexpr,
    KSPLIT: tl.constexpr = 1,  # > 1: the forward product over KSPLIT slabs of K at once (rank-3 dot)
    HAS_LENGTHS: tl.constexpr = False,
    TWO_DIRS: tl.constexpr = False,  # grid (slices, tiles, 2): program_id(2) is the direction, buffers stacked
):
    NG: tl.constexpr = 1 if CELL >= 2 else 4
    N: tl.constexpr = NG * BLOCK_J
    pid_j = tl.program_id(0)
    n_programs = tl.num_programs(0)
    sync_ptr, error_ptr = _sync_words(sync_ptr, sync_stride, TWO_DIRS)
    if TWO_DIRS:  # this direction's half of each stacked buffer (the lengths are the same for both)
        xg_ptr += _dir_offset(dir_steps, B * _x_step(H, CELL))
        hs_ptr += _dir_offset(dir_steps + 1, B * H)
        state0_ptr += _dir_offset(1, B * H)
        c_ptr += _dir_offset(dir_steps + 1 if c_stride != 0 else 1, B * H)
        saved_ptr += _dir_offset(dir_steps, B * 4 * H)
        w_ptr += _dir_offset(n_programs, N * K_TOTAL)
        b_hn_ptr += _dir_offset(1, H)
    # This program's rows of W_hh, loaded once for all steps, in their own dtype.
    w_ptr += pid_j * N * K_TOTAL
    if STREAM_K == 0:
        w0, w1, w2, w3 = _resident_weights(w_ptr, K_TOTAL, K0, K1, K2, K3, N, not SWAP, KSPLIT)
    offs_j = pid_j * BLOCK_J + tl.arange(0, BLOCK_J)
    offs_b = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    mask_bj = (offs_b < B)[:, None] & (offs_j < H)[None, :]
    mask_b = offs_b < B
    bj = offs_b[:, None] * H + offs_j[None, :]
    X_STEP = B * _x_step(H, CELL)
    b_hn = tl.load(b_hn_ptr + offs_j, mask=offs_j < H, other=0.0)[None, :] if CELL == 1 else 0.0
    state = tl.load(state0_ptr + bj, mask=mask_bj, other=0.0) if CELL <= 1 else tl.zeros((BLOCK_B, BLOCK_J), tl.float32)
    x0, x1, x2, x3 = _load_x(xg_ptr, offs_b, offs_j, mask_bj, H, CELL)
    if HAS_LENGTHS:
        lengths = tl.load(len_ptr + offs_b, mask=mask_b, other=0)

    gave_up = tl.full([], 0, tl.int1)  # at a barrier (see `_wait`): from then on this program waits no more
    for step in range(n_steps):
        if HAS_LENGTHS:  # a row past its length keeps h and c (its h is then its h_n); see _frozen
            valid = ((t0 + step) < lengths)[:, None]
        acc = tl.zeros((BLOCK_B, N), dtype=tl.float32)
        if STREAM_K == 0:
            acc = _dot_chunk(acc, hs_ptr, offs_b, mask_b, H, 0, w0, K0, SWAP, PRECISION, KSPLIT)
            if K1 > 0:
                acc = _dot_chunk(acc, hs_ptr, offs_b, mask_b, H, K0, w1, K1, SWAP, PRECISION, KSPLIT)
            if K2 > 0:
                acc = _dot_chunk(acc, hs_ptr, offs_b, mask_b, H, K0 + K1, w2, K2, SWAP, PRECISION, KSPLIT)
            if K3 > 0:
                acc = _dot_chunk(acc, hs_ptr, offs_b, mask_b, H, K0 + K1 + K2, w3, K3, SWAP, PRECISION, KSPLIT)
        else:  # the weights streamed from L1/L2 in K blocks: any H, few registers
            for k0 in range(0, K_TOTAL, STREAM_K):
                w = _w_chunk(w_ptr, K_TOTAL, k0, STREAM_K, N, not SWAP)
                acc = _dot_chunk(acc, hs_ptr, offs_b, mask_b, H, k0, w, STREAM_K, SWAP, PRECISION)

        if CELL == 0:
            p0, p1, p2, p3 = _split4(acc, BLOCK_B, BLOCK_J)
            i, f, g, o, c_new, h = _cell_forward(p0 + x0, p1 + x1, p2 + x2, p3 + x3, state)
            if HAS_LENGTHS:
                c_new = tl.where(valid, c_new, state)
                h = _frozen(h, valid, hs_ptr, bj, mask_bj)
            state = c_new
            tl.store(c_ptr + bj, state, mask=mask_bj)
            if SAVE:
                _store_gates(saved_ptr + offs_b[:, None] * (4 * H) + offs_j[None, :], H, i, f, g, o, mask_bj)
        elif CELL == 1:
            p0, p1, p2, p3 = _split4(acc, BLOCK_B, BLOCK_J)
            hn = p2 + b_hn
            r, z, n, h_new = _gru_cell_forward(p0 + x0, p1 + x1, x2, hn, state)
            state = tl.where(valid, h_new, state) if HAS_LENGTHS else h_new
            h = state
            if SAVE:
                _store_gates(saved_ptr + offs_b[:, None] * (4 * H) + offs_j[None, :], H, r, z, n, hn, mask_bj)
        else:
            h = _activate(acc + x0, CELL - 2)
            if HAS_LENGTHS:
                h = _frozen(h, valid, hs_ptr, bj, mask_bj)
        tl.store(hs_ptr + B * H + bj, h, mask=mask_bj)  # rounded to the exchange dtype by the store

        xg_ptr += X_STEP
        saved_ptr += B * 4 * H
        hs_ptr += B * H
        c_ptr += c_stride
        if step + 1 < n_steps:  # no barrier after the last step: a one-step launch never waits
            _arrive(sync_ptr, pid_j, step, BARRIER)
            if SPLIT:  # the next step's input projection, loaded while the other programs catch up
                x0, x1, x2, x3 = _load_x(xg_ptr, offs_b, offs_j, mask_bj, H, CELL)
            gave_up = _wait(sync_ptr, step, n_programs, error_ptr, max_polls, gave_up, BARRIER, P_POW2)
            if not SPLIT:
                x0, x1, x2, x3 = _load_x(xg_ptr, offs_b, offs_j, mask_bj, H, CELL)


# --- backward -------------------------------------------------------------------------------------------


@triton.jit
def _masked4(valid, a, b, c, d):
    """The four gate gradients, zero where the row is past its length."""
    return tl.where(valid, a, 0.0), tl.where(valid, b, 0.0), tl.where(valid, c, 0.0), tl.where(valid, d, 0.0)


@triton.jit
def _share_chunk(share_ptr, dg, w, offs_b, mask_b, H, k0, KC: tl.constexpr, SWAP: tl.constexpr,
                 PRECISION: tl.constexpr):
    """Store dg @ w-chunk, this program's share of dh_{t-1}[:, k0:k0+KC]."""
    offs_k = k0 + tl.arange(0, KC)
    mask_k = offs_k < H
    if SWAP:  # (KC, N) x (N, B): the chunk of K as M
        share_t = tl.dot(w, tl.trans(dg), input_precision=PRECISION)
        tl.store(share_ptr + offs_b[None, :] * H + offs_k[:, None], share_t, mask=mask_b[None, :] & mask_k[:, None])
    else:
        share = tl.dot(dg, w, input_precision=PRECISION)
        tl.store(share_ptr + offs_b[:, None] * H + offs_k[None, :], share, mask=mask_b[:, None] & mask_k[None, :])


@triton.jit(do_not_specialize=["t_last", "n_steps", "max_polls", "dir_steps"])  # the step counts never change the build
def persistent_backward_kernel(
    dy_ptr,  # (., B, H) fp32 at the LAST step of this launch: dL/dh_t from above (dh_T included)
    dg_ptr,  # (., B, G*H) fp32 out at the last step: LSTM d(i, f, g, o) pre-activation (G = 4);
    #          GRU d(r, z) pre-activation, d(n's input part), d(hn) (G = 4); Elman d(pre) (G = 1)
    saved_ptr,  # (., B, 4H) fp32 at the last step: what the forward saved (LSTM, GRU)
    hs_ptr,  # (., B, H) exchange dtype at h_t of the last step (h_{t-1} is one step before)
    c_ptr,  # LSTM (., B, H) fp32 at c_t of the last step (c_{t-1} one step before)
    dstate_ptr,  # (B, H) fp32: in dL/dc_T (LSTM) or 0 (GRU: the part of dL/dh through z*h); out: at step 0
    w_ptr,  # gate-interleaved W_hh, as in the forward
    share_ptr,  # (2, slices, B, H) fp32: each program's share of dh_{t-1}, slot t % 2; zero at first
    sync_ptr,  # int32, zero, as in the forward (the error word after the last tile's words)
    sync_stride,
    max_polls,  # as in the forward
    t_last,  # the time index of the last step (selects the share slots)
    n_steps,
    B,
    H,
    K_TOTAL,
    len_ptr,  # (B,) int32 with HAS_LENGTHS: steps t >= a row's length get no gate gradient; else unused
    dir_steps,  # TWO_DIRS: the steps T of the stacked buffers (dy (2, T, ...), hs (2, T+1, ...)); else unused
    CELL: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_J: tl.constexpr,
    K0: tl.constexpr,
    K1: tl.constexpr,
    K2: tl.constexpr,
    K3: tl.constexpr,
    BARRIER: tl.constexpr,
    SWAP: tl.constexpr,
    STREAM_K: tl.constexpr,
    P_POW2: tl.constexpr,
    P_BLOCK: tl.constexpr,
    PRECISION: tl.constexpr,
    HAS_LENGTHS: tl.constexpr = False,
    TWO_DIRS: tl.constexpr = False,  # as in the forward
):
    NG: tl.constexpr = 1 if CELL >= 2 else 4
    N: tl.constexpr = NG * BLOCK_J
    pid_j = tl.program_id(0)
    n_programs = tl.num_programs(0)
    sync_ptr, error_ptr = _sync_words(sync_ptr, sync_stride, TWO_DIRS)
    if TWO_DIRS:  # this direction's half of each stacked buffer, as in the forward (a pointer the cell leaves
        #          unused is some stacked buffer of the host's: moved too, never read)
        dy_ptr += _dir_offset(dir_steps, B * H)
        dg_ptr += _dir_offset(dir_steps, B * NG * H)
        saved_ptr += _dir_offset(dir_steps, B * 4 * H)
        hs_ptr += _dir_offset(dir_steps + 1, B * H)
        c_ptr += _dir_offset(dir_steps + 1, B * H)
        dstate_ptr += _dir_offset(1, B * H)
        w_ptr += _dir_offset(n_programs, N * K_TOTAL)
        share_ptr += _dir_offset(2 * n_programs, B * H)
    w_ptr += pid_j * N * K_TOTAL
    if STREAM_K == 0:
        w0, w1, w2, w3 = _resident_weights(w_ptr, K_TOTAL, K0, K1, K2, K3, N, SWAP, 1)
    W_DTYPE = w_ptr.dtype.element_ty
    offs_j = pid_j * BLOCK_J + tl.arange(0, BLOCK_J)
    offs_b = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    mask_b = offs_b < B
    mask_bj = mask_b[:, None] & (offs_j < H)[None, :]
    bj = offs_b[:, None] * H + offs_j[None, :]
    gate_tile = offs_b[:, None] * (4 * H) + offs_j[None, :]
    slot_size = n_programs * B * H
    dstate = tl.load(dstate_ptr + bj, mask=mask_bj, other=0.0)
    if HAS_LENGTHS:
        lengths = tl.load(len_ptr + offs_b, mask=mask_b, other=0)

    gave_up = tl.full([], 0, tl.int1)  # as in the forward
    for step in range(n_steps):
        t = t_last - step
        if HAS_LENGTHS:
            # A frozen step passes dstate through and has no gate gradients (so no share of dh_{t-1});
            # the host zeroed dy past the lengths and put dh_n on each row's last valid step.
            valid = (t < lengths)[:, None]
        share_in = share_ptr + ((t + 1) % 2) * slot_size  # written by every program at step t+1
        share_out = share_ptr + (t % 2) * slot_size + pid_j * B * H
        dh = tl.load(dy_ptr + bj, mask=mask_bj, other=0.0)
        for p0 in range(0, n_programs, P_BLOCK):  # + the sum over programs of their shares of dh_t
            offs_p = p0 + tl.arange(0, P_BLOCK)
            shares = tl.load(share_in + offs_p[:, None, None] * (B * H) + bj[None, :, :],
                             mask=(offs_p < n_programs)[:, None, None] & mask_bj[None, :, :], other=0.0,
                             cache_modifier=".cg")
            dh += tl.sum(shares, axis=0)

        if CELL == 0:
            i, f, g, o = _load_gates(saved_ptr + gate_tile, H, mask_bj)
            d0, d1, d2, d3, dstate_new = _cell_backward(dh, dstate, i, f, g, o,
                                                        tl.load(c_ptr + bj, mask=mask_bj, other=0.0),
                                                        tl.load(c_ptr - B * H + bj, mask=mask_bj, other=0.0))
            if HAS_LENGTHS:
                d0, d1, d2, d3 = _masked4(valid, d0, d1, d2, d3)
                dstate_new = tl.where(valid, dstate_new, dstate)
            dstate = dstate_new
            _store_gates(dg_ptr + gate_tile, H, d0, d1, d2, d3, mask_bj)
            dr = _join4(d0, d1, d2, d3, BLOCK_B, BLOCK_J).to(W_DTYPE)
        elif CELL == 1:
            r, z, n, hn = _load_gates(saved_ptr + gate_tile, H, mask_bj)
            h_prev = tl.load(hs_ptr - B * H + bj, mask=mask_bj, other=0.0).to(tl.float32)
            d_r, d_z, d_n, d_hn, dstate_new = _gru_cell_backward(dh + dstate, r, z, n, hn, h_prev)
            if HAS_LENGTHS:
                d_r, d_z, d_n, d_hn = _masked4(valid, d_r, d_z, d_n, d_hn)
                dstate_new = tl.where(valid, dstate_new, dstate)
            dstate = dstate_new
            _store_gates(dg_ptr + gate_tile, H, d_r, d_z, d_n, d_hn, mask_bj)
            dr = _join4(d_r, d_z, d_hn, tl.zeros_like(d_hn), BLOCK_B, BLOCK_J).to(W_DTYPE)
        else:
            h = tl.load(hs_ptr + bj, mask=mask_bj, other=0.0).to(tl.float32)
            dpre = dh * _activation_grad(h, CELL - 2)
            if HAS_LENGTHS:
                dpre = tl.where(valid, dpre, 0.0)
            tl.store(dg_ptr + bj, dpre, mask=mask_bj)
            dr = dpre.to(W_DTYPE)

        # This program's share of dh_{t-1}: its gate gradients times its rows of W_hh.
        if STREAM_K == 0:
            _share_chunk(share_out, dr, w0, offs_b, mask_b, H, 0, K0, SWAP, PRECISION)
            if K1 > 0:
                _share_chunk(share_out, dr, w1, offs_b, mask_b, H, K0, K1, SWAP, PRECISION)
            if K2 > 0:
                _share_chunk(share_out, dr, w2, offs_b, mask_b, H, K0 + K1, K2, SWAP, PRECISION)
            if K3 > 0:
                _share_chunk(share_out, dr, w3, offs_b, mask_b, H, K0 + K1 + K2, K3, SWAP, PRECISION)
        else:
            for k0 in range(0, K_TOTAL, STREAM_K):
                w = _w_chunk(w_ptr, K_TOTAL, k0, STREAM_K, N, SWAP)
                _share_chunk(share_out, dr, w, offs_b, mask_b, H, k0, STREAM_K, SWAP, PRECISION)

        dy_ptr -= B * H
        dg_ptr -= B * NG * H
        saved_ptr -= B * 4 * H
        hs_ptr -= B * H
        c_ptr -= B * H
        if step + 1 < n_steps:
            _arrive(sync_ptr, pid_j, step, BARRIER)
            gave_up = _wait(sync_ptr, step, n_programs, error_ptr, max_polls, gave_up, BARRIER, P_POW2)
    tl.store(dstate_ptr + bj, dstate, mask=mask_bj)


# --- the barrier alone (benchmark) ----------------------------------------------------------------------


@triton.jit
def barrier_kernel(sync_ptr, error_ptr, max_polls, n_steps, BARRIER: tl.constexpr, P_POW2: tl.constexpr):
    """Empty steps: what one step's barrier costs across the grid (lightning_rnn.bench.variants).
    error_ptr: an int32 word, zero; nonzero after the launch where a program gave up (see `_wait`)."""
    pid_j = tl.program_id(0)
    n_programs = tl.num_programs(0)
    gave_up = tl.full([], 0, tl.int1)
    for step in range(n_steps):
        _arrive(sync_ptr, pid_j, step, BARRIER)
        gave_up = _wait(sync_ptr, step, n_programs, error_ptr, max_polls, gave_up, BARRIER, P_POW2)
