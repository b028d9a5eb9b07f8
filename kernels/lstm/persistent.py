"""Persistent whole-sequence LSTM kernels (forward and backward), behind a flag.

The per-step kernels of `triton_kernels.py` pay a launch and a reload of W_hh at every time
step. Here one launch runs the whole time loop: each program owns BLOCK_J hidden units, keeps
their part of W_hh on chip for all T steps, and the programs meet at a grid-wide barrier after
every step (an atomic counter), because step t+1 needs the h_t that every other program wrote.

Layout, chosen so that the slice fits one SM with no spills (see `python -m kernels.resources`):
- W_hh's rows are reordered once on the host so that a program's rows are contiguous and
  gate-interleaved: row (p, j, q) is gate q of hidden unit p*BLOCK_J + j. All four gates of a
  program's units are then one (B, K) x (K, 4*BLOCK_J) product, kept in the weights' own dtype.
- K (= H) is split into at most four power-of-two chunks (768 = 512 + 256), so little is padded;
  the host zero-pads the reordered copy, so the weight loads need no masks.
- The grid is sized from the SM count: the smallest BLOCK_J in {4, 8, 16} whose grid fits the SMs
  (H 768 -> 96 programs of 8 units, H 1024 -> 128, H 512 -> 128 of 4).
- Backward: each program multiplies its own gate gradients by its own rows of W_hh, which gives its
  share of dh_{t-1} for every hidden unit; the shares go to a (2, programs, B, H) buffer (slot t % 2)
  and after the barrier every program sums the shares of its own units. Same slice, same grid, no
  atomics on data, deterministic.

The barrier needs every program resident at once. On a GPU the dispatcher checks that with the
rule of `kernels.resources` on the compiled kernel, and launches with `launch_cooperative_grid`
where the installed Triton has it, so a grid that cannot be co-resident fails instead of hanging.
In Triton's CPU interpreter programs run one after another, so a barrier between two of them
would never open: there the grid is one program (BLOCK_J covers all of H). Tests also run the real
multi-program grid in the interpreter, one time step per launch: no barrier follows a launch's
last step, so such a launch never waits. Not for proj_size.

Every kernel takes its buffers already offset to its first step and moves its pointers one step
per iteration, so no index is t * B * 4H (which passes 2^31 for long sequences and large batches).
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor

from .triton_kernels import _cell_backward, _cell_forward, _load_gates, _store_gates


#: K is split into at most this many power-of-two chunks, each at most K_CHUNK_MAX wide.
MAX_K_CHUNKS = 4
K_CHUNK_MAX = 512
NUM_WARPS = 8
NUM_STAGES = 1
BLOCK_B = 16
#: Programs whose shares of dh one backward program sums per load.
P_BLOCK = 16


def persistent_enabled() -> bool:
    return os.environ.get("LIGHTNING_RNN_PERSISTENT", "0") == "1"


@dataclass(frozen=True)
class Plan:
    """How the persistent kernels are launched for one (B, H)."""

    programs: int
    block_b: int
    block_j: int  # hidden units per program; its product has N = 4 * block_j columns
    k_chunks: tuple[int, int, int, int]  # power-of-two chunk widths of K (0: unused)
    num_warps: int
    num_stages: int = 1

    @property
    def k_total(self) -> int:
        return sum(self.k_chunks)

    def constexprs(self) -> dict:
        k0, k1, k2, k3 = self.k_chunks
        return dict(BLOCK_B=self.block_b, BLOCK_J=self.block_j, K0=k0, K1=k1, K2=k2, K3=k3)


def k_chunks(H: int) -> tuple[int, int, int, int]:
    """H as at most MAX_K_CHUNKS powers of two (>= 16, the smallest tl.dot), padding only the last."""
    chunks, rest = [], H
    while rest >= 16 and len(chunks) < MAX_K_CHUNKS - 1:
        chunk = min(1 << (rest.bit_length() - 1), K_CHUNK_MAX)
        chunks.append(chunk)
        rest -= chunk
    if rest > 0:
        chunks.append(max(16, triton.next_power_of_2(rest)))
    return tuple(chunks + [0] * (MAX_K_CHUNKS - len(chunks)))  # type: ignore[return-value]


def plan(B: int, H: int, sms: int, gpu_tiles: bool) -> Plan:
    """GPU: the smallest slice (4, 8 or 16 units) whose grid fits `sms` programs. Interpreter: one program."""
    if not gpu_tiles:
        return Plan(1, max(16, min(triton.next_power_of_2(B), 64)), max(4, triton.next_power_of_2(H)), k_chunks(H),
                    NUM_WARPS)
    block_j = 4
    while triton.cdiv(H, block_j) > sms and block_j < 16:
        block_j *= 2
    return Plan(triton.cdiv(H, block_j), BLOCK_B, block_j, k_chunks(H), NUM_WARPS, NUM_STAGES)


def gate_interleaved(w_hh: Tensor, p: Plan) -> Tensor:
    """W_hh (4H, H) -> (programs * 4 * block_j, k_total), row (program, unit, gate), zero-padded."""
    H = w_hh.shape[0] // 4
    out = w_hh.new_zeros(4, p.programs * p.block_j, p.k_total)
    out[:, :H, :H] = w_hh.view(4, H, H)
    return out.view(4, p.programs, p.block_j, p.k_total).permute(1, 2, 0, 3).reshape(-1, p.k_total)


# --- kernels --------------------------------------------------------------------------------------------


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
def _w_chunk_kn(w_ptr, K_TOTAL, k0, KC: tl.constexpr, N: tl.constexpr):
    """Columns k0..k0+KC of this program's N gate rows, transposed to (KC, N)."""
    return tl.load(w_ptr + tl.arange(0, N)[None, :] * K_TOTAL + (k0 + tl.arange(0, KC))[:, None])


@triton.jit
def _w_chunk_nk(w_ptr, K_TOTAL, k0, KC: tl.constexpr, N: tl.constexpr):
    """Columns k0..k0+KC of this program's N gate rows, (N, KC)."""
    return tl.load(w_ptr + tl.arange(0, N)[:, None] * K_TOTAL + (k0 + tl.arange(0, KC))[None, :])


@triton.jit
def _h_chunk(h_ptr, offs_b, mask_b, H, k0, KC: tl.constexpr):
    """h[b, k0:k0+KC] of the previous step, written by every program: read from L2 (.cg), not L1."""
    offs_k = k0 + tl.arange(0, KC)
    return tl.load(h_ptr + offs_b[:, None] * H + offs_k[None, :], mask=mask_b[:, None] & (offs_k < H)[None, :],
                   other=0.0, cache_modifier=".cg")


@triton.jit
def _store_share(share_ptr, share, offs_b, mask_b, H, k0, KC: tl.constexpr):
    offs_k = k0 + tl.arange(0, KC)
    tl.store(share_ptr + offs_b[:, None] * H + offs_k[None, :], share, mask=mask_b[:, None] & (offs_k < H)[None, :])


@triton.jit
def _split_gates(acc, BLOCK_B: tl.constexpr, BLOCK_J: tl.constexpr):
    """(BLOCK_B, 4*BLOCK_J) with columns (unit, gate) -> the i, f, g, o tiles (BLOCK_B, BLOCK_J)."""
    even, odd = tl.split(tl.reshape(acc, (BLOCK_B, BLOCK_J, 2, 2)))  # gate q = 2a + b; split takes b
    i, g = tl.split(even)
    f, o = tl.split(odd)
    return i, f, g, o


@triton.jit
def _join_gates(i, f, g, o, BLOCK_B: tl.constexpr, BLOCK_J: tl.constexpr):
    """Inverse of `_split_gates`."""
    return tl.reshape(tl.join(tl.join(i, g), tl.join(f, o)), (BLOCK_B, 4 * BLOCK_J))


@triton.jit
def lstm_forward_persistent_kernel(
    xg_ptr,  # (n_steps, B, 4H) fp32, from the first step on
    hs_ptr,  # (n_steps+1, B, H) fp32: hs[0] = h before the first step
    cs_ptr,  # (n_steps+1, B, H) fp32: cs[0] = c before the first step
    gates_ptr,  # (n_steps, B, 4H) fp32 out: activated i, f, g, o
    w_ptr,  # (programs * 4 * BLOCK_J, K_TOTAL): W_hh gate-interleaved, see gate_interleaved()
    sync_ptr,  # int32 counter, zero
    n_steps,
    B,
    H,
    K_TOTAL,
    BLOCK_B: tl.constexpr,
    BLOCK_J: tl.constexpr,
    K0: tl.constexpr,
    K1: tl.constexpr,
    K2: tl.constexpr,
    K3: tl.constexpr,
):
    N: tl.constexpr = 4 * BLOCK_J
    pid = tl.program_id(0)
    n_programs = tl.num_programs(0)
    # This program's rows of W_hh, loaded once for all steps, in their own dtype.
    w_ptr += pid * N * K_TOTAL
    w0 = _w_chunk_kn(w_ptr, K_TOTAL, 0, K0, N)
    if K1 > 0:
        w1 = _w_chunk_kn(w_ptr, K_TOTAL, K0, K1, N)
    if K2 > 0:
        w2 = _w_chunk_kn(w_ptr, K_TOTAL, K0 + K1, K2, N)
    if K3 > 0:
        w3 = _w_chunk_kn(w_ptr, K_TOTAL, K0 + K1 + K2, K3, N)
    offs_j = pid * BLOCK_J + tl.arange(0, BLOCK_J)
    mask_j = offs_j < H

    for step in range(n_steps):
        for b0 in range(0, B, BLOCK_B):
            offs_b = b0 + tl.arange(0, BLOCK_B)
            mask_b = offs_b < B
            acc = tl.dot(_h_chunk(hs_ptr, offs_b, mask_b, H, 0, K0).to(w0.dtype), w0, input_precision="ieee")
            if K1 > 0:
                acc = tl.dot(_h_chunk(hs_ptr, offs_b, mask_b, H, K0, K1).to(w1.dtype), w1, acc,
                             input_precision="ieee")
            if K2 > 0:
                acc = tl.dot(_h_chunk(hs_ptr, offs_b, mask_b, H, K0 + K1, K2).to(w2.dtype), w2, acc,
                             input_precision="ieee")
            if K3 > 0:
                acc = tl.dot(_h_chunk(hs_ptr, offs_b, mask_b, H, K0 + K1 + K2, K3).to(w3.dtype), w3, acc,
                             input_precision="ieee")
            pre_i, pre_f, pre_g, pre_o = _split_gates(acc, BLOCK_B, BLOCK_J)

            mask_bj = mask_b[:, None] & mask_j[None, :]
            gate_tile = offs_b[:, None] * (4 * H) + offs_j[None, :]
            x_i, x_f, x_g, x_o = _load_gates(xg_ptr + gate_tile, H, mask_bj)
            bj = offs_b[:, None] * H + offs_j[None, :]
            i, f, g, o, c, h_new = _cell_forward(pre_i + x_i, pre_f + x_f, pre_g + x_g, pre_o + x_o,
                                                 tl.load(cs_ptr + bj, mask=mask_bj, other=0.0))
            tl.store(cs_ptr + B * H + bj, c, mask=mask_bj)
            tl.store(hs_ptr + B * H + bj, h_new, mask=mask_bj)
            _store_gates(gates_ptr + gate_tile, H, i, f, g, o, mask_bj)
        xg_ptr += B * 4 * H
        gates_ptr += B * 4 * H
        hs_ptr += B * H
        cs_ptr += B * H
        if step + 1 < n_steps:  # none after the last step: a one-step launch never waits
            _grid_barrier(sync_ptr, (step + 1) * n_programs)


@triton.jit
def lstm_backward_persistent_kernel(
    dh_ptr,  # (., B, H) fp32 at the LAST step of this launch: dL/dh_t from above (dh_T included)
    dgates_ptr,  # (., B, 4H) fp32 out at the last step: pre-activation gate gradients
    gates_ptr,  # (., B, 4H) fp32 at the last step: activated gates
    cs_ptr,  # (., B, H) fp32 at c_t of the last step t (c_{t-1} is one step before)
    dc_ptr,  # (B, H) fp32: in dL/dc after the last step, out dL/dc before the first
    w_ptr,  # gate-interleaved W_hh, as in the forward kernel
    share_ptr,  # (2, programs, B, H) fp32: each program's share of dh_{t-1}, slot t % 2; zero at first
    sync_ptr,  # int32 counter, zero
    t_last,  # the time index of the last step (selects the share slots)
    n_steps,
    B,
    H,
    K_TOTAL,
    BLOCK_B: tl.constexpr,
    BLOCK_J: tl.constexpr,
    K0: tl.constexpr,
    K1: tl.constexpr,
    K2: tl.constexpr,
    K3: tl.constexpr,
    P_BLOCK: tl.constexpr,
):
    N: tl.constexpr = 4 * BLOCK_J
    pid = tl.program_id(0)
    n_programs = tl.num_programs(0)
    w_ptr += pid * N * K_TOTAL
    w0 = _w_chunk_nk(w_ptr, K_TOTAL, 0, K0, N)
    if K1 > 0:
        w1 = _w_chunk_nk(w_ptr, K_TOTAL, K0, K1, N)
    if K2 > 0:
        w2 = _w_chunk_nk(w_ptr, K_TOTAL, K0 + K1, K2, N)
    if K3 > 0:
        w3 = _w_chunk_nk(w_ptr, K_TOTAL, K0 + K1 + K2, K3, N)
    offs_j = pid * BLOCK_J + tl.arange(0, BLOCK_J)
    mask_j = offs_j < H
    slot_size = n_programs * B * H

    for step in range(n_steps):
        t = t_last - step
        share_in = share_ptr + ((t + 1) % 2) * slot_size  # written by every program at step t+1
        share_out = share_ptr + (t % 2) * slot_size + pid * B * H
        for b0 in range(0, B, BLOCK_B):
            offs_b = b0 + tl.arange(0, BLOCK_B)
            mask_b = offs_b < B
            mask_bj = mask_b[:, None] & mask_j[None, :]
            bj = offs_b[:, None] * H + offs_j[None, :]
            dh = tl.load(dh_ptr + bj, mask=mask_bj, other=0.0)
            for p0 in range(0, n_programs, P_BLOCK):  # + sum over programs of their shares of dh_t
                offs_p = p0 + tl.arange(0, P_BLOCK)
                shares = tl.load(share_in + offs_p[:, None, None] * (B * H) + bj[None, :, :],
                                 mask=(offs_p < n_programs)[:, None, None] & mask_bj[None, :, :], other=0.0,
                                 cache_modifier=".cg")
                dh += tl.sum(shares, axis=0)

            gate_tile = offs_b[:, None] * (4 * H) + offs_j[None, :]
            i, f, g, o = _load_gates(gates_ptr + gate_tile, H, mask_bj)
            d_i, d_f, d_g, d_o, dc_prev = _cell_backward(
                dh, tl.load(dc_ptr + bj, mask=mask_bj, other=0.0), i, f, g, o,
                tl.load(cs_ptr + bj, mask=mask_bj, other=0.0), tl.load(cs_ptr - B * H + bj, mask=mask_bj, other=0.0),
            )
            tl.store(dc_ptr + bj, dc_prev, mask=mask_bj)
            _store_gates(dgates_ptr + gate_tile, H, d_i, d_f, d_g, d_o, mask_bj)

            # This program's share of dh_{t-1}: its gate gradients times its rows of W_hh.
            dg = _join_gates(d_i, d_f, d_g, d_o, BLOCK_B, BLOCK_J).to(w0.dtype)
            _store_share(share_out, tl.dot(dg, w0, input_precision="ieee"), offs_b, mask_b, H, 0, K0)
            if K1 > 0:
                _store_share(share_out, tl.dot(dg, w1, input_precision="ieee"), offs_b, mask_b, H, K0, K1)
            if K2 > 0:
                _store_share(share_out, tl.dot(dg, w2, input_precision="ieee"), offs_b, mask_b, H, K0 + K1, K2)
            if K3 > 0:
                _store_share(share_out, tl.dot(dg, w3, input_precision="ieee"), offs_b, mask_b, H,
                             K0 + K1 + K2, K3)
        dh_ptr -= B * H
        dgates_ptr -= B * 4 * H
        gates_ptr -= B * 4 * H
        cs_ptr -= B * H
        if step + 1 < n_steps:
            _grid_barrier(sync_ptr, (step + 1) * n_programs)


# --- host side ------------------------------------------------------------------------------------------


def _cooperative_option() -> dict:
    """launch_cooperative_grid=True where this Triton's CUDA backend has the option (3.2+)."""
    try:
        from triton.backends.nvidia.compiler import CUDAOptions
    except ImportError:
        return {}
    return {"launch_cooperative_grid": True} if "launch_cooperative_grid" in CUDAOptions.__dataclass_fields__ else {}


def _launch_options(p: Plan, interpreted: bool) -> dict:
    return {} if interpreted else {"num_warps": p.num_warps, "num_stages": p.num_stages, **_cooperative_option()}


def forward_steps(xg: Tensor, hs: Tensor, cs: Tensor, gates: Tensor, w_rows: Tensor, p: Plan, interpreted: bool,
                  t_begin: int, t_end: int) -> None:
    """Steps t_begin..t_end-1 in one launch of `p.programs` programs (buffers as in `lstm_layer`)."""
    B, H = hs.shape[1], cs.shape[2]
    sync = torch.zeros(1, dtype=torch.int32, device=xg.device)
    lstm_forward_persistent_kernel[(p.programs,)](
        xg[t_begin], hs[t_begin], cs[t_begin], gates[t_begin], w_rows, sync, t_end - t_begin, B, H, p.k_total,
        **p.constexprs(), **_launch_options(p, interpreted),
    )


def backward_steps(dh: Tensor, dgates: Tensor, gates: Tensor, cs: Tensor, dc: Tensor, w_rows: Tensor,
                   shares: Tensor, p: Plan, interpreted: bool, t_begin: int, t_end: int) -> None:
    """Steps t_end-1 down to t_begin in one launch; `shares` (2, programs, B, H) starts zeroed."""
    B, H = dc.shape
    sync = torch.zeros(1, dtype=torch.int32, device=dh.device)
    t = t_end - 1
    lstm_backward_persistent_kernel[(p.programs,)](
        dh[t], dgates[t], gates[t], cs[t + 1], dc, w_rows, shares, sync, t, t_end - t_begin, B, H, p.k_total,
        **p.constexprs(), P_BLOCK=P_BLOCK, **_launch_options(p, interpreted),
    )


def persistent_forward(xg: Tensor, hs: Tensor, cs: Tensor, gates: Tensor, w_hh: Tensor, p: Plan,
                       interpreted: bool) -> None:
    """Fill hs[1:], cs[1:], gates for all T steps in one launch."""
    forward_steps(xg, hs, cs, gates, gate_interleaved(w_hh, p), p, interpreted, 0, xg.shape[0])


def persistent_backward(dh: Tensor, dgates: Tensor, w_hh: Tensor, gates: Tensor, cs: Tensor, dc: Tensor, p: Plan,
                        interpreted: bool) -> None:
    """Fill dgates[:T] and turn dc from dL/dc_T into dL/dc_0 in one launch."""
    T, B, H = dh.shape
    shares = torch.zeros(2, p.programs, B, H, dtype=torch.float32, device=dh.device)
    backward_steps(dh, dgates, gates, cs, dc, gate_interleaved(w_hh, p), shares, p, interpreted, 0, T)


# --- choosing the persistent path -----------------------------------------------------------------------


def _resident(kernel_fn, args: tuple, p: Plan, extra: dict, sms: int) -> tuple[bool, str]:
    """Compile (no launch) and apply the rule of `kernels.resources` to what the GPU compiler made."""
    from kernels.resources import fits

    compiled = kernel_fn.warmup(*args, grid=(p.programs,), **p.constexprs(), **extra, **_launch_options(p, False))
    if hasattr(compiled, "_init_handles"):
        compiled._init_handles()
    return fits(compiled.n_regs, compiled.metadata.shared, p.num_warps, p.programs, persistent=True, sms=sms,
                spill_bytes=getattr(compiled, "n_spills", 0))


@functools.lru_cache(maxsize=None)
def _gpu_choice(B: int, H: int, dtype: torch.dtype, device: torch.device) -> tuple[Plan | None, str]:
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    p = plan(B, H, sms, gpu_tiles=True)
    if p.programs > sms:
        return None, f"H={H} needs {p.programs} programs of {p.block_j} units > {sms} SMs"
    if B * 4 * H >= 2**31:
        return None, f"B*4H = {B * 4 * H} elements per step passes 32-bit offsets"
    f32 = dict(dtype=torch.float32, device=device)
    w = torch.empty(p.programs * 4 * p.block_j, p.k_total, dtype=dtype, device=device)
    one, sync = torch.empty(1, B, 4 * H, **f32), torch.zeros(1, dtype=torch.int32, device=device)
    state, dc = torch.empty(2, B, H, **f32), torch.empty(B, H, **f32)
    shares = torch.empty(2, p.programs, B, H, **f32)
    for name, fn, args, extra in (
        ("forward", lstm_forward_persistent_kernel, (one, state, state, one, w, sync, 1, B, H, p.k_total), {}),
        ("backward", lstm_backward_persistent_kernel,
         (state, one, one, state, dc, w, shares, sync, 0, 1, B, H, p.k_total), {"P_BLOCK": P_BLOCK}),
    ):
        ok, reason = _resident(fn, args, p, extra, sms)
        if not ok:
            return None, f"{name} kernel: {reason}"
    return p, ""


def choose_plan(B: int, H: int, has_proj: bool, dtype: torch.dtype, device: torch.device,
                interpreted: bool) -> tuple[Plan | None, str]:
    """(plan, "") if the persistent kernels can run this layer, else (None, why not)."""
    if has_proj:
        return None, "proj_size is not supported by the persistent kernels"
    if interpreted:
        return plan(B, H, 1, gpu_tiles=False), ""
    if device.type != "cuda":
        return None, f"no persistent kernel for device {device.type}"
    return _gpu_choice(B, H, dtype, device)


def resource_configs(B: int, H: int, dtype: str, sms: int) -> list:
    """The persistent launches for `kernels.resources` (empty where the grid exceeds the SMs)."""
    from kernels.resources import LaunchConfig

    p = plan(B, H, sms, gpu_tiles=True)
    w, f32, i32, c = "*" + dtype, "*fp32", "i32", "constexpr"
    consts = tuple(p.constexprs().items())
    names = tuple(consts_name for consts_name, _ in consts)
    fwd = (("xg_ptr", f32), ("hs_ptr", f32), ("cs_ptr", f32), ("gates_ptr", f32), ("w_ptr", w),
           ("sync_ptr", "*i32"), ("n_steps", i32), ("B", i32), ("H", i32), ("K_TOTAL", i32))
    bwd = (("dh_ptr", f32), ("dgates_ptr", f32), ("gates_ptr", f32), ("cs_ptr", f32), ("dc_ptr", f32),
           ("w_ptr", w), ("share_ptr", f32), ("sync_ptr", "*i32"), ("t_last", i32), ("n_steps", i32),
           ("B", i32), ("H", i32), ("K_TOTAL", i32))
    common = dict(family="lstm", B=B, H=H, dtype=dtype, num_warps=p.num_warps, num_stages=p.num_stages,
                  programs=p.programs,
                  persistent=True)
    return [
        LaunchConfig(kernel="lstm.persistent.forward", fn_path=f"{__name__}:lstm_forward_persistent_kernel",
                     signature=fwd + tuple((n, c) for n in names), constexprs=consts, **common),
        LaunchConfig(kernel="lstm.persistent.backward", fn_path=f"{__name__}:lstm_backward_persistent_kernel",
                     signature=bwd + tuple((n, c) for n in names) + (("P_BLOCK", c),),
                     constexprs=consts + (("P_BLOCK", P_BLOCK),), **common),
    ]
