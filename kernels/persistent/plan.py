"""How the persistent engine is launched: the variant, the grid, the tiles, the weights' layout.

A `Variant` is a design choice measured against the others (`lightning_rnn.bench.variants`);
a `Plan` is what one layer launches: programs along H (`slices`, BLOCK_J hidden units each)
times programs along the batch (`tiles`, BLOCK_B rows each), K split in power-of-two chunks.

The GPU plan is the smallest slice of hidden units whose grid fits the SMs with the batch
worked in parallel (rows inside the product, more tiles where SMs are left), and whose weights
stay in registers; the dispatcher then compiles it and checks the real register and shared
memory use (`kernels.resources.fits`), trying the next candidate where one does not fit.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, replace
from typing import Iterator

import torch
import triton
from torch import Tensor

from .engine import ELMAN_RELU, ELMAN_TANH, GRU, LSTM

CELLS = {"lstm": LSTM, "gru": GRU, "rnn_tanh": ELMAN_TANH, "rnn_relu": ELMAN_RELU}
#: W_hh rows per hidden unit in the product: LSTM i, f, g, o; GRU r, z, n and a zero row; Elman one.
ROWS_PER_UNIT = {LSTM: 4, GRU: 4, ELMAN_TANH: 1, ELMAN_RELU: 1}
#: W_hh's own rows per unit (the GRU's fourth product row is padding).
GATES = {LSTM: 4, GRU: 3, ELMAN_TANH: 1, ELMAN_RELU: 1}

MAX_K_CHUNKS = 4
#: Elements of h one program loads per chunk (BLOCK_B x KC): bounds the registers the load takes.
H_CHUNK_ELEMENTS = 8192
#: Registers per thread the resident weights may take (of 255), leaving room for h, the
#: accumulator and the gate math; above it the plan tries more warps, then larger slices.
WEIGHT_REGS_BUDGET = 112
#: Elements of the programs' shares of dh one backward program loads at once (P_BLOCK x BLOCK_B x BLOCK_J).
SHARE_ELEMENTS = 1024
#: K block of a plan that streams its weights (STREAM_K), 16-bit weights; half of it for fp32 weights (whose
#: products run on FMA units, operands in registers: Triton 3.6 spilled the fp32 backward at 64).
STREAM_BLOCK_K = 64


@dataclass(frozen=True)
class Variant:
    """One design of the engine's step (see kernels/persistent/engine.py)."""

    barrier: int = 0  # 0 atomic spin, 1 arrive + load spin, 2 flag per program
    split: bool = False  # arrive, load the next input projection, then wait
    swap: bool = False  # gate rows as M, batch as N
    h16: bool = False  # exchange h in the compute dtype (fp16/bf16) instead of fp32
    num_warps: int = 8
    min_rows: int = 16  # product rows (gates x units) per program at least
    ksplit: int = 1  # the forward product over this many slabs of K at once (resident weights only)


#: The variants the benchmark compares. "default" is the design measured on the H200 on 2026-12-04.
VARIANTS: dict[str, Variant] = {
    "default": Variant(),
    "barrier-load": Variant(barrier=1),
    "barrier-flags": Variant(barrier=2),
    "split": Variant(barrier=1, split=True),
    "h16": Variant(h16=True),
    "swap": Variant(swap=True, min_rows=64),
    "warps4": Variant(num_warps=4),
    "rows64": Variant(min_rows=64),
    "ksplit4": Variant(ksplit=4),
    "fast": Variant(barrier=1, split=True, h16=True),
    "fast-swap": Variant(barrier=1, split=True, h16=True, swap=True, min_rows=64),
}
DEFAULT_VARIANT = "default"
_forced_variant: list[str] = []


def variant_name() -> str:
    """The variant that runs: `use_variant`'s, else LIGHTNING_RNN_PERSISTENT_VARIANT, else the default."""
    name = _forced_variant[-1] if _forced_variant else os.environ.get("LIGHTNING_RNN_PERSISTENT_VARIANT",
                                                                      DEFAULT_VARIANT)
    if name not in VARIANTS:
        raise ValueError(f"LIGHTNING_RNN_PERSISTENT_VARIANT must be one of {sorted(VARIANTS)}, got {name!r}")
    return name


@contextlib.contextmanager
def use_variant(name: str) -> Iterator[None]:
    """Run the engine with variant `name` inside the block (benchmarks, tests)."""
    if name not in VARIANTS:
        raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {name!r}")
    _forced_variant.append(name)
    try:
        yield
    finally:
        _forced_variant.pop()


def engine_enabled() -> bool:
    """On unless LIGHTNING_RNN_PERSISTENT=0."""
    return os.environ.get("LIGHTNING_RNN_PERSISTENT", "1") != "0"


@dataclass(frozen=True)
class Plan:
    """One layer's launch of the engine."""

    cell: int
    slices: int  # programs along H
    tiles: int  # programs along the batch
    block_b: int
    block_j: int  # hidden units per program
    k_chunks: tuple[int, int, int, int]  # power-of-two widths of K's chunks (0: unused)
    num_warps: int
    variant: str = DEFAULT_VARIANT
    stream_k: int = 0  # 0: weights resident in registers; else streamed from L1/L2 in K blocks of this
    #: ptxas' register ceiling (Triton's maxnreg), None: its own. Left alone, Triton 3.6's ptxas stopped at
    #: 128 registers and spilled 8 B in the LSTM forward at the target; told 255 it used 172, no spill; but
    #: told 255 it spilled in the Elman kernels it built without spills at 126-232: both are candidates.
    maxnreg: int | None = None

    @property
    def p_block(self) -> int:
        """Programs whose shares of dh one backward program sums per load."""
        return max(1, min(16, triton.next_power_of_2(self.slices),
                          1 << max(0, (SHARE_ELEMENTS // (self.block_b * self.block_j)).bit_length() - 1)))

    @property
    def programs(self) -> int:
        return self.slices * self.tiles

    @property
    def rows(self) -> int:
        """Product rows per program (N): gates x units."""
        return ROWS_PER_UNIT[self.cell] * self.block_j

    @property
    def k_total(self) -> int:
        return sum(self.k_chunks)


    @property
    def p_pow2(self) -> int:
        return triton.next_power_of_2(self.slices)

    @property
    def sync_stride(self) -> int:
        """int32 words per batch tile: its counter or flags, on 128-byte lines of their own."""
        return max(32, triton.cdiv(self.p_pow2, 32) * 32)

    def describe(self) -> str:
        weights = f"streamed K{self.stream_k}" if self.stream_k else "resident"
        return (f"variant={self.variant} programs={self.slices}x{self.tiles} BLOCK_J={self.block_j} "
                f"BLOCK_B={self.block_b} K={'+'.join(str(k) for k in self.k_chunks if k)} warps={self.num_warps} "
                f"weights={weights}" + (f" maxnreg={self.maxnreg}" if self.maxnreg else ""))

    def constexprs(self) -> dict:
        v = VARIANTS[self.variant]
        k0, k1, k2, k3 = self.k_chunks
        return dict(CELL=self.cell, BLOCK_B=self.block_b, BLOCK_J=self.block_j, K0=k0, K1=k1, K2=k2, K3=k3,
                    BARRIER=v.barrier, SWAP=v.swap, STREAM_K=self.stream_k, P_POW2=self.p_pow2)

    def forward_constexprs(self) -> dict:
        """The forward kernel's extra constexprs (the K split applies to resident weights only)."""
        v = VARIANTS[self.variant]
        return dict(SPLIT=v.split, KSPLIT=1 if self.stream_k else v.ksplit)


def k_chunks(H: int, chunk_max: int = 512) -> tuple[int, int, int, int] | None:
    """H as at most four powers of two (each 16..chunk_max), padding only the last; None if it needs more."""
    chunks, rest = [], H
    while rest >= 16 and len(chunks) < MAX_K_CHUNKS - 1:
        chunk = min(1 << (rest.bit_length() - 1), chunk_max)
        chunks.append(chunk)
        rest -= chunk
    if rest > 0:
        last = max(16, triton.next_power_of_2(rest))
        if last > chunk_max:
            return None
        chunks.append(last)
    return tuple(chunks + [0] * (MAX_K_CHUNKS - len(chunks)))  # type: ignore[return-value]


def exchange_dtype(variant: str, dtype: torch.dtype) -> torch.dtype:
    """The dtype h travels between programs in: the compute dtype with `h16`, else fp32."""
    return dtype if VARIANTS[variant].h16 and dtype in (torch.float16, torch.bfloat16) else torch.float32


def interpreter_plan(cell: int, B: int, H: int, variant: str, stream_k: int = 0) -> Plan:
    """Triton's interpreter runs programs one after another, so a barrier between two would never
    open: one program along H (it holds all units); batch tiles are independent, so several may.
    `stream_k` (tests): the weights streamed in K blocks of that size, as GPU plans may."""
    rows = ROWS_PER_UNIT[cell]
    min_rows = max(16, VARIANTS[variant].min_rows)
    block_j = max(triton.next_power_of_2(H), triton.cdiv(min_rows, rows))
    block_b = max(16, min(triton.next_power_of_2(B), 64))
    p = Plan(cell, 1, triton.cdiv(B, block_b), block_b, block_j, k_chunks(H, 1 << 20), 8, variant)
    return _streamed(p, H, stream_k) if stream_k else p


def gpu_plans(cell: int, B: int, H: int, w_bytes: int, sms: int, variant: str) -> list[Plan]:
    """The GPU plans to try, best first: weights resident in registers with small slices (many SMs
    at work) and the batch in parallel; then the same grids with the weights streamed from L1/L2."""
    v = VARIANTS[variant]
    rows = ROWS_PER_UNIT[cell]
    resident, streamed = [], []
    for block_j in (1, 2, 4, 8, 16, 32, 64):
        if rows * block_j < max(16, v.min_rows):
            continue
        slices = triton.cdiv(H, block_j)
        if slices > sms:
            continue
        block_b = next((bb for bb in (16, 32, 64, 128) if triton.cdiv(B, bb) * slices <= sms), None)
        if block_b is None:
            continue
        tiles = triton.cdiv(B, block_b)
        chunks = k_chunks(H, min(512, H_CHUNK_ELEMENTS // block_b))
        if chunks is not None:
            weight_bytes = rows * block_j * sum(chunks) * w_bytes
            warps = next((w for w in (v.num_warps, 2 * v.num_warps)
                          if w <= 16 and weight_bytes / (4 * 32 * w) <= WEIGHT_REGS_BUDGET), None)
            if warps is not None:
                resident.append(Plan(cell, slices, tiles, block_b, block_j, chunks, warps, variant))
        if len(streamed) < 2:
            streamed.append(_streamed(Plan(cell, slices, tiles, block_b, block_j, (0, 0, 0, 0), v.num_warps, variant),
                                      H, STREAM_BLOCK_K if w_bytes == 2 else STREAM_BLOCK_K // 2))
    # Large batch tiles (the accumulator, the input projections and c of 64-128 rows) need more threads
    # (Triton 3.6: B256 H768 bf16 spilled at 8 warps, fitted at 16 with K blocks of 32).
    more_warps = [_streamed(replace(p, num_warps=2 * p.num_warps), H, STREAM_BLOCK_K // 2)
                  for p in streamed if p.block_b >= 64 and p.num_warps < 16]
    # Each plan as ptxas builds it, then with every register of the SM allowed (the program is alone there).
    return [q for p in resident + streamed + more_warps
            for q in (p, replace(p, maxnreg=65536 // (32 * p.num_warps) // 8 * 8 if p.num_warps > 8 else 255))]


def _streamed(p: Plan, H: int, stream_k: int) -> Plan:
    """`p` with its weights streamed in K blocks of `stream_k` (K padded to a multiple of it)."""
    return replace(p, k_chunks=(triton.cdiv(H, stream_k) * stream_k, 0, 0, 0), stream_k=stream_k)


def interleave(w_hh: Tensor, p: Plan) -> Tensor:
    """W_hh (G*H, H) -> (slices * rows, k_total): row (slice, unit, gate), zero-padded (the GRU's
    fourth gate, units past H, K past H), so the kernels' weight loads need no masks."""
    H = w_hh.shape[1]
    gates, rows_per_unit = GATES[p.cell], ROWS_PER_UNIT[p.cell]
    out = w_hh.new_zeros(rows_per_unit, p.slices * p.block_j, p.k_total)
    out[:gates, :H, :H] = w_hh.view(gates, H, H)
    return out.view(rows_per_unit, p.slices, p.block_j, p.k_total).permute(1, 2, 0, 3).reshape(-1, p.k_total)
