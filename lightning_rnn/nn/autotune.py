"""`backend="auto"` on a GPU: time the candidates once per configuration, keep the faster on disk.

Whether our Triton kernel or cuDNN is faster depends on batch, hidden size, length, dtype and the
GPU. Rather than a rule that is right on one machine, the first call with a new configuration
times each candidate and remembers the winner, so choosing lightning-rnn never leaves a user
slower than torch.nn for more than that first call. What makes the measurement cheap and harmless:

- the key holds only what changes the answer (the caller's shapes, dtype, with/without backward;
  sequence lengths bucketed to powers of two, so length-trimmed batches do not re-time), and the
  GPU model and torch/triton versions;
- at most one timing per key per process, and decisions are kept in a small JSON file,
  `$XDG_CACHE_HOME/lightning_rnn/autotune.json` (default `~/.cache/...`; `LIGHTNING_RNN_CACHE_DIR`
  overrides the folder), so the next process does not time again; `clear_cache()` or deleting the
  file forgets them;
- the timed runs leave the random number generators as they found them (callers run them with
  dropout off and outside the user's autograd graph);
- under DDP, rank 0 times and publishes its decision in the process group's store; the other ranks
  take rank 0's decision once it is there (until then the caller's `default`, not remembered), so
  no rank ever waits for another;
- while torch.compile traces, nothing is timed (the remembered decision, else `default`).

`LIGHTNING_RNN_AUTOTUNE=0` turns timing off (then "auto" means Triton wherever it can run).
The API is generic in the module kind: `choose(key, candidates, device, default)`.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

logger = logging.getLogger("lightning_rnn")

Timer = Callable[[Callable[[], None]], float]
#: A configuration: a tuple of str/int/float/bool/None (it is stored as JSON).
Key = Sequence[Any]

_winners: dict[str, str] = {}  # this process's decisions, by key string
_disk_read = False
_STORE_PREFIX = "lightning_rnn/autotune/"
_CACHE_VERSION = 1


def autotune_enabled(device: torch.device) -> bool:
    return device.type == "cuda" and os.environ.get("LIGHTNING_RNN_AUTOTUNE", "1") != "0"


def length_bucket(length: int) -> int:
    """The power of two >= `length`: one timing serves every length in (2^(k-1), 2^k]."""
    return 1 << max(0, int(length) - 1).bit_length()


def cache_path() -> Path:
    folder = os.environ.get("LIGHTNING_RNN_CACHE_DIR")
    if not folder:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        folder = os.path.join(base, "lightning_rnn")
    return Path(folder) / "autotune.json"


def cuda_timer(fn: Callable[[], None], warmup: int = 1, reps: int = 3) -> float:
    """Median seconds of `fn` over `reps` runs after `warmup` runs, synchronising the device."""
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


@functools.lru_cache(maxsize=None)
def _environment(device: torch.device) -> str:
    """What else changes the answer: the GPU model and the software versions."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "none"
    return f"{name}|torch {torch.__version__}|triton {triton_version}"


def _key_string(key: Key, device: torch.device) -> str:
    return json.dumps([_environment(device), *key])


def _read_disk() -> None:
    """Merge the decisions of earlier processes (once per process; a broken file is ignored)."""
    global _disk_read
    _disk_read = True
    path = cache_path()
    try:
        data = json.loads(path.read_text())
        if data.get("version") == _CACHE_VERSION:
            for k, v in data.get("winners", {}).items():
                _winners.setdefault(k, v)
    except FileNotFoundError:
        pass
    except (OSError, ValueError, AttributeError) as err:
        logger.debug("lightning_rnn autotune: ignoring the cache file %s (%s)", path, err)


def _write_disk(key: str, winner: str) -> None:
    """Add one decision to the file: read, merge, write a temporary file and rename it over."""
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            data = json.loads(path.read_text())
            winners = data["winners"] if data.get("version") == _CACHE_VERSION else {}
        except (OSError, ValueError, KeyError, AttributeError):
            winners = {}
        winners[key] = winner
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".autotune-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump({"version": _CACHE_VERSION, "winners": winners}, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError as err:  # a read-only home, say: keep the decision for this process only
        logger.debug("lightning_rnn autotune: could not write %s (%s)", path, err)


def _distributed_store() -> tuple[int | None, Any]:
    """(rank, the process group's key-value store) under DDP with more than one process, else (None, None)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None, None
    try:
        store = dist.distributed_c10d._get_default_store()
    except (AttributeError, RuntimeError, ValueError):  # a private API: without it, ranks > 0 never time
        store = None
    return dist.get_rank(), store


def _time_candidates(candidates: dict[str, Callable[[], None]], timer: Timer, device: torch.device) -> dict:
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # the user's random stream is left as it was
        return {name: timer(fn) for name, fn in candidates.items()}


def cached(key: Key, device: torch.device) -> str | None:
    """The decision already made for `key` (this process's, or an earlier one's from disk), else None."""
    k = _key_string(key, device)
    if k not in _winners and not _disk_read:
        _read_disk()
    return _winners.get(k)


def choose(key: Key, candidates: dict[str, Callable[[], None]], device: torch.device, default: str,
           timer: Timer | None = None) -> str:
    """The name of the fastest of `candidates` (each runs the same computation once) for `key`.

    Timed at most once per key and process (and not at all if an earlier process or DDP rank 0 has
    decided); `default` is the answer where nothing can be timed now (see the module docstring).
    """
    k = _key_string(key, device)
    if k not in _winners and not _disk_read:
        _read_disk()
    if k in _winners:
        return _winners[k]
    if torch.compiler.is_compiling():
        return default
    rank, store = _distributed_store()
    if rank is not None and rank != 0:
        if store is not None and store.check([_STORE_PREFIX + k]):
            _winners[k] = store.get(_STORE_PREFIX + k).decode()
            return _winners[k]
        return default  # rank 0 has not decided yet: ask again next time
    times = _time_candidates(candidates, timer or cuda_timer, device)
    winner = _winners[k] = min(times, key=times.__getitem__)
    logger.debug("lightning_rnn autotune %s: %s -> %s", k, times, winner)
    if store is not None:
        store.set(_STORE_PREFIX + k, winner)
    _write_disk(k, winner)
    return winner


def clear_cache(disk: bool = True) -> None:
    """Forget every decision: this process's, and (with `disk`) the cache file's."""
    global _disk_read
    _winners.clear()
    _disk_read = False
    if disk:
        cache_path().unlink(missing_ok=True)
