"""What the Elman (kernels/rnn) and GRU (kernels/gru) step kernels share on the host side:
tile sizes, output buffers, and whether Triton runs in its CPU interpreter.

Kept apart from kernels/lstm/function.py on purpose: that file's launch policy (projection, CUDA
graphs) is the LSTM's own. The persistent engine (kernels/persistent) is shared by all three cells.
"""
from __future__ import annotations

import inspect
import os

import torch
import triton
from torch import Tensor

#: Whether triton.jit compiled the kernels for its CPU interpreter (read once, at import).
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"

#: Tests set this to fill every buffer a kernel writes with NaN first, so that an element
#: the kernel forgets to write shows up as NaN instead of as stale zeros.
POISON_BUFFERS = False

#: Largest (BLOCK_B, BLOCK_H, BLOCK_K) on a GPU: small enough that the per-step grid fills the
#: SMs at small batch, and that the weight tiles stay in registers. (sm_90 builds with BLOCK_K = 64
#: used all 255 registers and spilled: the GRU in every dtype, the Elman RNN with 16-bit
#: weights. With 32 none spills: `python -m kernels.resources --families gru,rnn`.)
GPU_BLOCK_CAPS = (16, 32, 32)
INTERPRETER_BLOCK_CAPS = (64, 128, 128)  # the interpreter runs programs one by one: few, large tiles

#: Tests set this to GPU_BLOCK_CAPS to run the interpreter with exactly the GPU's tiles (many
#: programs, masked edges, several k iterations) instead of its usual single big tile.
FORCED_BLOCK_CAPS: tuple[int, int, int] | None = None
#: With 4 warps Triton 3.6's sm_90 build of the bf16/fp16 GRU forward spilled 8 B; with 8 neither 3.6 nor 3.9 spills.
NUM_WARPS = 8


def empty(*shape: int, device: torch.device) -> Tensor:
    """An fp32 buffer a kernel will fill (NaN-filled under POISON_BUFFERS)."""
    if POISON_BUFFERS:
        return torch.full(shape, float("nan"), dtype=torch.float32, device=device)
    return torch.empty(shape, dtype=torch.float32, device=device)


def int32_or_none(lengths: Tensor | None) -> Tensor | None:
    """Per-row lengths as the engine reads them (int32), or None."""
    return lengths.to(torch.int32) if lengths is not None else None


def freeze_past_length(valid: Tensor | None, hs: Tensor, t: int) -> None:
    """After step t of a per-step loop: rows past their length keep h_{t-1} (hs[t+1] = hs[t] there)."""
    if valid is not None:
        hs[t + 1].copy_(torch.where(valid[t][:, None], hs[t + 1], hs[t]))


def block_sizes(batch: int, hidden: int, reduce: int, gpu_tiles: bool | None = None) -> tuple[int, int, int]:
    """Tile sizes (BLOCK_B, BLOCK_H, BLOCK_K); tl.dot wants every dimension >= 16.
    `gpu_tiles` (default: not INTERPRETED) picks the GPU's tiles over the interpreter's."""
    gpu = not INTERPRETED if gpu_tiles is None else gpu_tiles
    caps = FORCED_BLOCK_CAPS or (GPU_BLOCK_CAPS if gpu else INTERPRETER_BLOCK_CAPS)
    return tuple(max(16, min(triton.next_power_of_2(n), cap)) for n, cap in zip((batch, hidden, reduce), caps))


def step_grid(batch: int, hidden: int, blocks: tuple[int, int, int]) -> tuple[int, int]:
    """One program per (BLOCK_B batch rows) x (BLOCK_H hidden units) tile."""
    return triton.cdiv(batch, blocks[0]), triton.cdiv(hidden, blocks[1])


def resource_config(family: str, name: str, kernel, B: int, H: int, dtype: str, constexprs: dict):
    """A `kernels.resources.LaunchConfig` for one step kernel launched at the GPU's tiles for (B, H):
    w_hh in the weights' dtype ("fp32", "fp16", "bf16"), every other pointer fp32, sizes i32 (with
    their values: Triton specializes on them)."""
    from kernels.resources import LaunchConfig

    fn = kernel.fn  # the Python function, under triton.jit or the interpreter alike
    signature = tuple(
        (p.name, "constexpr" if "constexpr" in str(p.annotation) else
         f"*{dtype}" if p.name == "w_hh_ptr" else "*fp32" if p.name.endswith("_ptr") else "i32")
        for p in inspect.signature(fn).parameters.values()
    )
    blocks = block_sizes(B, H, H, gpu_tiles=True)
    tiles = dict(zip(("BLOCK_B", "BLOCK_H", "BLOCK_K"), blocks))
    grid = step_grid(B, H, blocks)
    return LaunchConfig(kernel=f"{family}.step.{name}", family=family, B=B, H=H, dtype=dtype,
                        fn_path=f"{fn.__module__}:{fn.__name__}", signature=signature,
                        constexprs=tuple({**constexprs, **tiles}.items()), num_warps=NUM_WARPS,
                        programs=grid[0] * grid[1], persistent=False,
                        ints=(("B", B), ("H", H), ("stride_w", H)))  # w_hh (G*H, H) is contiguous

