"""Median and 20/80 % quantiles of a callable's run time, in milliseconds.

On CUDA: `triton.testing.do_bench` (CUDA events, L2 flush between reps, `grad_to_none`), whose
signature `do_bench(fn, warmup, rep, grad_to_none, quantiles, return_mode)` is the same in
triton 3.6 and 3.9; CUDA events by hand if triton cannot be imported. On the CPU:
`time.perf_counter` around each call, after warm-up; the same output either way.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

QUANTILES = (0.5, 0.2, 0.8)


@dataclass
class Timing:
    """One measurement: median and 20/80 % quantiles (ms), and how it was taken."""

    median_ms: float
    q20_ms: float
    q80_ms: float
    reps: int | None  # None where do_bench chose the count itself
    method: str
    samples_ms: list[float] = field(default_factory=list, repr=False)  # CPU only; not written out


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's and torch.quantile's default)."""
    if not values:
        raise ValueError("quantile of no values")
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def time_cpu(
    fn: Callable[[], object],
    warmup_ms: float = 25.0,
    rep_ms: float = 100.0,
    *,
    reset: Callable[[], None] | None = None,
    min_reps: int = 5,
    max_reps: int = 1000,
    clock: Callable[[], float] = time.perf_counter,
) -> Timing:
    """Time `fn` on the CPU like do_bench does on the GPU: budgets in ms, not in calls.

    One call estimates the cost; then warm-up calls fill `warmup_ms` (at least one) and
    timed calls fill `rep_ms` (clamped to [min_reps, max_reps]). `reset` runs before each
    call, untimed (e.g. setting grads to None between fwd+bwd reps).
    """

    def timed_call() -> float:
        if reset is not None:
            reset()
        start = clock()
        fn()
        return (clock() - start) * 1e3

    estimate_ms = max(timed_call(), 1e-6)
    for _ in range(max(1, int(warmup_ms / estimate_ms))):
        timed_call()
    n = min(max_reps, max(min_reps, int(rep_ms / estimate_ms)))
    samples = [timed_call() for _ in range(n)]
    med, q20, q80 = (quantile(samples, q) for q in QUANTILES)
    return Timing(med, q20, q80, n, "time.perf_counter", samples)


def time_cuda(
    fn: Callable[[], object],
    warmup_ms: float = 25.0,
    rep_ms: float = 100.0,
    *,
    grad_to_none: Sequence[torch.Tensor] | None = None,
) -> Timing:
    """Time `fn` on the current CUDA device with triton.testing.do_bench (CUDA events)."""
    try:
        from triton.testing import do_bench
    except ImportError:
        return _time_cuda_events(fn, warmup_ms, rep_ms, grad_to_none)
    med, q20, q80 = do_bench(fn, warmup=warmup_ms, rep=rep_ms, grad_to_none=grad_to_none,
                             quantiles=list(QUANTILES))
    return Timing(float(med), float(q20), float(q80), None, "triton.testing.do_bench")


def _time_cuda_events(fn: Callable[[], object], warmup_ms: float, rep_ms: float,
                      grad_to_none: Sequence[torch.Tensor] | None) -> Timing:
    """CUDA events around each call, for a machine with CUDA but no triton."""

    def reset() -> None:
        for t in grad_to_none or ():
            t.grad = None

    def one() -> float:
        reset()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end)

    estimate = max(one(), 1e-3)
    for _ in range(max(1, int(warmup_ms / estimate))):
        one()
    samples = [one() for _ in range(min(1000, max(5, int(rep_ms / estimate))))]
    med, q20, q80 = (quantile(samples, q) for q in QUANTILES)
    return Timing(med, q20, q80, len(samples), "torch.cuda.Event", samples)
