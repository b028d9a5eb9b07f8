"""`backend="auto"` on a GPU: measure once per shape, then always take the faster implementation.

Whether our Triton kernel or cuDNN is faster depends on batch, hidden size, length and dtype, and
on the GPU. Rather than a rule that is right on one machine, the first call with a new
configuration times both (forward, plus backward when autograd is recording) and caches the
winner for the process, so choosing lightning-rnn never makes a user slower than torch.nn.LSTM
for more than that first call. LIGHTNING_RNN_AUTOTUNE=0 turns it off (then "auto" means Triton
wherever it can run).
"""
from __future__ import annotations

import logging
import os
import time
from typing import Callable, Hashable

import torch

logger = logging.getLogger("lightning_rnn")
_winners: dict[Hashable, str] = {}

Timer = Callable[[Callable[[], None]], float]


def autotune_enabled(device: torch.device) -> bool:
    return device.type == "cuda" and os.environ.get("LIGHTNING_RNN_AUTOTUNE", "1") != "0"


def cuda_timer(fn: Callable[[], None], warmup: int = 2, reps: int = 5) -> float:
    """Median seconds of `fn` over `reps` runs, after `warmup` runs (synchronising the device)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def pick_fastest(key: Hashable, candidates: dict[str, Callable[[], None]], timer: Timer = cuda_timer) -> str:
    """The name of the fastest candidate for `key`, timing them only the first time `key` is seen."""
    if key not in _winners:
        times = {name: timer(fn) for name, fn in candidates.items()}
        _winners[key] = min(times, key=times.__getitem__)
        logger.debug("lightning_rnn autotune %s: %s -> %s", key, times, _winners[key])
    return _winners[key]


def clear_cache() -> None:
    _winners.clear()
