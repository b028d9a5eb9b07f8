"""What each kernel launch costs an H100, measured without one: registers, spills, shared memory, fit.

Triton compiles for sm_90 on any machine whose wheel carries the NVIDIA backend; `cuobjdump
-res-usage` (shipped in that wheel) reads the registers per thread and the spill stack from the
cubin, and the compiled metadata gives the shared memory. From those and the launch's grid this
module says whether a launch fits an SM, and for a persistent kernel (whose programs wait for
each other at a grid barrier) whether the whole grid can be resident at once.

Kernel families register the launches their dispatcher can choose:

    register("lstm", "kernels.lstm.function:resource_configs")   # or the function itself

A configs function takes (B, H, dtype, sms) and returns a list of `LaunchConfig`. The dispatcher
applies the same rule (`fits`) to the kernel the GPU compiled, so what this reports is what runs.

    python -m kernels.resources                  # readable table over the full grid
    python -m kernels.resources --json           # one JSON object per configuration
    python -m kernels.resources --hidden 768 --batch 16 --dtype bf16

Under TRITON_INTERPRET=1 (the CPU tests) `triton.jit` builds interpreter objects that cannot be
compiled, so there the measurement runs in a child Python without it.
"""
from __future__ import annotations

import argparse
import functools
import importlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class DeviceLimits:
    """Per-SM limits of the target GPU (defaults: H100 SXM, sm_90)."""

    sms: int = 132
    smem_per_block: int = 232_448  # 227 KB opt-in maximum for one block
    smem_per_sm: int = 233_472  # 228 KB
    smem_reserved_per_block: int = 1024  # the driver keeps 1 KB per resident block
    regs_per_sm: int = 65_536
    regs_per_thread: int = 255
    threads_per_sm: int = 2048
    blocks_per_sm: int = 32
    arch: int = 90


H100 = DeviceLimits()


@dataclass(frozen=True)
class LaunchConfig:
    """One kernel launch as its dispatcher would make it: what to compile and the grid size."""

    kernel: str  # readable name, e.g. "lstm.persistent.forward"
    family: str
    B: int
    H: int
    dtype: str  # "fp32" | "fp16" | "bf16": the weights' dtype
    fn_path: str  # "module:attribute" of the @triton.jit function
    signature: tuple[tuple[str, str], ...]  # (argument, Triton type) in order; constexprs as "constexpr"
    constexprs: tuple[tuple[str, object], ...]
    num_warps: int
    programs: int  # grid size
    persistent: bool  # all programs must be resident at once (grid barrier)
    num_stages: int = 3
    #: Launches that are alternatives: the dispatcher tries candidate 0, 1, ... of a group and takes the
    #: first whose launches all fit (the persistent engine's plans); "" for a launch that always runs.
    group: str = ""
    candidate: int = 0
    #: ptxas' register ceiling per thread (Triton's `maxnreg`), None: its own choice. A persistent kernel
    #: owns its SM, so it may take every register; left alone, Triton 3.6's ptxas stopped at 128 and spilled.
    maxnreg: int | None = None
    #: The integer arguments' values at this launch: Triton specializes on them as a launch does (see
    #: `specialization`); an integer left out compiles as a plain i32, as one named in do_not_specialize.
    ints: tuple[tuple[str, int], ...] = ()

    def key(self) -> tuple:
        return (self.kernel, self.B, self.H, self.dtype, self.signature, self.constexprs, self.num_warps,
                self.num_stages, self.maxnreg, self.ints)


@dataclass(frozen=True)
class Usage:
    """What the sm_90 compiler reports for one kernel."""

    regs: int
    spill_bytes: int
    smem_bytes: int


@dataclass
class Report:
    config: LaunchConfig
    usage: Usage | None
    fits: bool
    reason: str = ""  # why it does not fit (or why it could not be measured)
    blocks_per_sm: int = 0
    extra: dict = field(default_factory=dict)
    chosen: bool = False  # the dispatcher's choice among its group's candidates (or a launch without a group)

    def row(self) -> dict:
        c, u = self.config, self.usage
        return {"kernel": c.kernel, "dtype": c.dtype, "B": c.B, "H": c.H,
                "regs": u.regs if u else None, "spill_bytes": u.spill_bytes if u else None,
                "smem_bytes": u.smem_bytes if u else None, "programs": c.programs,
                "num_warps": c.num_warps, "blocks_per_sm": self.blocks_per_sm,
                "persistent": c.persistent, "fits": self.fits, "reason": self.reason,
                "group": c.group, "candidate": c.candidate, "chosen": self.chosen,
                "constexprs": dict(c.constexprs)}


# --- the fit rule, shared with the dispatchers --------------------------------------------------------


def blocks_per_sm(regs: int, smem_bytes: int, num_warps: int, limits: DeviceLimits = H100) -> int:
    """How many blocks of this kernel one SM holds at once (0: not even one)."""
    if regs > limits.regs_per_thread or smem_bytes > limits.smem_per_block:
        return 0
    # Registers are handed out per warp in units of 256 (8 per thread).
    regs_per_warp = math.ceil(max(regs, 1) * 32 / 256) * 256
    by_regs = (limits.regs_per_sm // regs_per_warp) // num_warps
    by_smem = limits.smem_per_sm // (smem_bytes + limits.smem_reserved_per_block)
    by_threads = limits.threads_per_sm // (32 * num_warps)
    return min(by_regs, by_smem, by_threads, limits.blocks_per_sm)


def fits(regs: int, smem_bytes: int, num_warps: int, programs: int, persistent: bool,
         sms: int | None = None, limits: DeviceLimits = H100, spill_bytes: int = 0) -> tuple[bool, str]:
    """(fits, reason): a block must fit an SM; a persistent grid must be co-resident and spill nothing
    (a spill there is paid at every one of the T steps, and the per-step kernels are the fallback)."""
    sms = limits.sms if sms is None else sms
    if persistent and spill_bytes > 0:
        return False, f"spills {spill_bytes} B of registers to local memory at every step"
    if regs > limits.regs_per_thread:
        return False, f"{regs} registers per thread > {limits.regs_per_thread}"
    if smem_bytes > limits.smem_per_block:
        return False, f"{smem_bytes} B shared memory > {limits.smem_per_block} B per block"
    per_sm = blocks_per_sm(regs, smem_bytes, num_warps, limits)
    if per_sm < 1:
        return False, f"one block ({num_warps} warps, {regs} regs, {smem_bytes} B smem) does not fit an SM"
    if persistent and programs > sms * per_sm:
        return False, f"{programs} programs > {sms} SMs x {per_sm} resident blocks: the grid barrier would hang"
    return True, ""


# --- the registry ---------------------------------------------------------------------------------------

ConfigsFn = Callable[..., list[LaunchConfig]]
#: family -> configs function (B, H, dtype, sms) -> [LaunchConfig], or its "module:attribute" path
#: (imported only when used, so this module never imports a kernel at import time).
FAMILIES: dict[str, ConfigsFn | str] = {
    "lstm": "kernels.lstm.function:resource_configs",
    "gru": "kernels.gru.function:resource_configs",
    "rnn": "kernels.rnn.function:resource_configs",
}


def register(family: str, configs_fn: ConfigsFn | str) -> None:
    """Add a kernel family: `configs_fn(B, H, dtype, sms)` lists the launches its dispatcher may make."""
    FAMILIES[family] = configs_fn


def _resolve(path_or_obj):
    if not isinstance(path_or_obj, str):
        return path_or_obj
    module, _, attr = path_or_obj.partition(":")
    return getattr(importlib.import_module(module), attr)


def launch_configs(B: int, H: int, dtype: str, families: Sequence[str] | None = None,
                   sms: int = H100.sms) -> list[LaunchConfig]:
    """Every launch the registered dispatchers could make for (B, H, dtype) on a GPU with `sms` SMs."""
    out: list[LaunchConfig] = []
    for name in families or list(FAMILIES):
        out.extend(_resolve(FAMILIES[name])(B, H, dtype, sms))
    return out


# --- compiling for sm_90 --------------------------------------------------------------------------------


def _cuobjdump() -> str | None:
    try:
        import triton.backends.nvidia as nvidia
    except ImportError:
        return None
    path = Path(nvidia.__file__).parent / "bin" / "cuobjdump"
    return str(path) if path.exists() else shutil.which("cuobjdump")


def unavailable_reason() -> str | None:
    """Why sm_90 kernels cannot be compiled here, or None if they can."""
    try:
        import triton  # noqa: F401
        from triton.backends.compiler import GPUTarget  # noqa: F401
        from triton.compiler import ASTSource  # noqa: F401
    except ImportError as e:
        return f"triton cannot compile here ({e})"
    if _cuobjdump() is None:
        return "the triton wheel has no NVIDIA backend with cuobjdump (triton/backends/nvidia/bin)"
    return None


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _res_usage(cubin: bytes) -> tuple[int, int]:
    """(registers per thread, stack bytes) from `cuobjdump -res-usage`; the stack is where spills go."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        text = subprocess.run([_cuobjdump(), "-res-usage", str(path)], capture_output=True, text=True,
                              check=True).stdout
    match = re.search(r"REG:(\d+)\s+STACK:(\d+)", text)
    if match is None:
        raise RuntimeError(f"cannot read cuobjdump -res-usage output:\n{text}")
    return int(match.group(1)), int(match.group(2))


def specialization(signature: Sequence[tuple[str, str]], ints: dict[str, int],
                   do_not_specialize: Sequence[str] = ()) -> tuple[dict, dict, dict]:
    """(signature, constexprs, attrs) as Triton's launcher builds them from a launch's arguments
    (`BaseBackend.get_int_specialization` / `get_tensor_specialization` with align=True): an integer equal
    to 1 becomes the constexpr 1, one divisible by 16 and every pointer get tt.divisibility 16 (the
    host's buffers are 16-byte aligned); integers in `do_not_specialize` and those without a value, neither.
    Without this the offline build is another kernel than the launched one (the LSTM forward at B16 H768
    bf16: 144 registers and 48 scalar h loads offline, 104 registers and 12 vector loads launched).

    The pointers' alignment is an assumption: the engine's pointers are offset by whole steps, so it
    holds where a step's buffer is a multiple of 16 bytes (B*H a multiple of 4 for fp32 buffers, of 8
    for h exchanged in 16 bits: with the default fp32 exchange, every H of the grid but 650, at any B).
    Elsewhere a launch whose offsets are not aligned gets a build without divisibility on those pointers."""
    sig, consts, attrs = {}, {}, {}
    for i, (name, ty) in enumerate(signature):
        value = ints.get(name) if name not in do_not_specialize else None
        sig[name] = "constexpr" if value == 1 else ty
        if value == 1:
            consts[name] = 1
        elif ty.startswith("*") or (value is not None and value % 16 == 0):
            attrs[(i,)] = [["tt.divisibility", 16]]
    return sig, consts, attrs


@functools.lru_cache(maxsize=None)
def _compile(fn_path: str, signature: tuple, constexprs: tuple, num_warps: int, num_stages: int,
             arch: int, maxnreg: int | None = None, ints: tuple = ()) -> Usage:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = _resolve(fn_path)
    sig, consts, attrs = specialization(signature, dict(ints), [str(n) for n in getattr(fn, "do_not_specialize", ())])
    src = ASTSource(fn, sig, {**dict(constexprs), **consts}, attrs)
    options = {"num_warps": num_warps, "num_stages": num_stages}
    if maxnreg is not None:
        options["maxnreg"] = maxnreg
    compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)
    regs, stack = _res_usage(compiled.asm["cubin"])
    return Usage(regs=regs, spill_bytes=stack, smem_bytes=int(compiled.metadata.shared))


def _measure_one(c: LaunchConfig, limits: DeviceLimits) -> Report:
    try:
        usage = _compile(c.fn_path, c.signature, c.constexprs, c.num_warps, c.num_stages, limits.arch, c.maxnreg,
                         c.ints)
    except Exception as e:  # a compile error is a finding about that configuration, not a crash
        return Report(c, None, False, f"compile failed: {type(e).__name__}: {str(e)[:300]}")
    ok, reason = fits(usage.regs, usage.smem_bytes, c.num_warps, c.programs, c.persistent, limits=limits,
                      spill_bytes=usage.spill_bytes)
    return Report(c, usage, ok, reason, blocks_per_sm(usage.regs, usage.smem_bytes, c.num_warps, limits))


def _measure_here(configs: Sequence[LaunchConfig], limits: DeviceLimits) -> list[Report]:
    """Each launch's report; in a group of alternatives, candidates in order until one fits entirely
    (that one is `chosen`, as the dispatcher would choose it; later ones are not compiled)."""
    reports: list[Report] = []
    by_candidate: dict[tuple[str, int], list[LaunchConfig]] = {}
    for c in configs:
        if c.group:
            by_candidate.setdefault((c.group, c.candidate), []).append(c)
    settled: set[str] = set()
    for c in configs:
        if not c.group:
            reports.append(_measure_one(c, limits))
            reports[-1].chosen = True
            continue
        if c.group in settled or c is not by_candidate[(c.group, c.candidate)][0]:
            continue
        candidate = [_measure_one(x, limits) for x in by_candidate[(c.group, c.candidate)]]
        reports.extend(candidate)
        if all(r.fits for r in candidate):
            settled.add(c.group)
            for r in candidate:
                r.chosen = True
    return reports


def dispatcher_summary(rows: Sequence[dict]) -> dict[str, str]:
    """group -> what the dispatcher runs there: "candidate N" or "falls back: <reasons>"."""
    out: dict[str, str] = {}
    for r in rows:
        if not r.get("group"):
            continue
        if r["chosen"]:
            out[r["group"]] = f"candidate {r['candidate']}"
        elif not out.get(r["group"], "").startswith("candidate"):
            reasons = out.get(r["group"], "falls back:")
            out[r["group"]] = f"{reasons} [{r['candidate']}: {r['kernel']} {r['reason']}]"
    return out


@functools.lru_cache(maxsize=None)
def _measure_in_child(points: tuple[tuple[int, int, str], ...], families: tuple[str, ...] | None) -> tuple:
    """Run `python -m kernels.resources --json` without the interpreter; returns its rows."""
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(Path(__file__).resolve().parent.parent),
                                                    env.get("PYTHONPATH", "")] if p)
    cmd = [sys.executable, "-m", "kernels.resources", "--json", "--points",
           ",".join(f"{b}x{h}x{d}" for b, h, d in points)]
    if families:
        cmd += ["--families", ",".join(families)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return tuple(json.loads(line) for line in done.stdout.splitlines() if line.startswith("{"))


def measure_points(points: Sequence[tuple[int, int, str]], families: Sequence[str] | None = None,
                   limits: DeviceLimits = H100) -> list[dict]:
    """One row (see `Report.row`) per launch configuration at each (B, H, dtype) point."""
    if _interpreted():
        return list(_measure_in_child(tuple(points), tuple(families) if families else None))
    configs = [c for b, h, d in points for c in launch_configs(b, h, d, families, limits.sms)]
    return [r.row() for r in _measure_here(configs, limits)]


# --- command line ---------------------------------------------------------------------------------------

GRID = {"hidden": [128, 256, 512, 768, 1024, 2048], "batch": [1, 16, 64, 128], "dtype": ["fp32", "fp16", "bf16"]}
COLUMNS = ["kernel", "dtype", "B", "H", "regs", "spill_bytes", "smem_bytes", "programs", "fits", "chosen"]


def format_table(rows: Sequence[dict]) -> str:
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in COLUMNS}
    lines = ["  ".join(c.rjust(widths[c]) for c in COLUMNS)]
    for r in rows:
        line = "  ".join(str(r[c]).rjust(widths[c]) for c in COLUMNS)
        lines.append(line + (f"  ({r['reason']})" if r["reason"] else ""))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ints = lambda s: [int(v) for v in s.split(",") if v]  # noqa: E731
    p = argparse.ArgumentParser(prog="python -m kernels.resources", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="one JSON object per configuration")
    p.add_argument("--hidden", type=ints, default=GRID["hidden"])
    p.add_argument("--batch", type=ints, default=GRID["batch"])
    p.add_argument("--dtype", type=lambda s: s.split(","), default=GRID["dtype"])
    p.add_argument("--families", type=lambda s: s.split(","), default=None)
    p.add_argument("--points", default=None, help="explicit BxHxdtype list, e.g. 16x768xbf16,1x128xfp32")
    args = p.parse_args(argv)

    reason = unavailable_reason()
    if reason:
        print(f"kernels.resources: {reason}", file=sys.stderr)
        return 2
    if args.points:
        points = [(int(b), int(h), d) for b, h, d in (s.split("x") for s in args.points.split(","))]
    else:
        points = [(b, h, d) for h in args.hidden for b in args.batch for d in args.dtype]
    rows = measure_points(points, args.families)
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
