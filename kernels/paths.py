"""Which kernel path ran: a record the dispatchers write and the benchmark harness reads.

The Triton layers choose between paths at run time (the persistent whole-sequence kernel, the
per-step kernels, the per-step kernels replayed as CUDA graphs, ...) from the environment
variables in `PATH_ENV_VARS` and from whether a plan fits the device. A dispatcher calls
`record(cell, path, detail)` each time a layer runs; `lightning_rnn.bench` calls `reset()`
before a measurement and `snapshot()` after it, and writes what it got into each result row.

Deliberately tiny and free of triton/torch imports: importing it costs nothing, and `record`
is a dict insertion (a lock, a tuple, no formatting beyond what the caller passes).
"""
from __future__ import annotations

import os
import threading

#: Environment variables that choose which implementation or kernel path runs.
PATH_ENV_VARS: tuple[str, ...] = (
    "LIGHTNING_RNN_PERSISTENT",          # 1: the persistent whole-sequence LSTM kernel where it fits
    "LIGHTNING_RNN_PERSISTENT_VARIANT",  # which persistent kernel variant
    "LIGHTNING_RNN_ENGINE_CHECK",        # 1: the engine's error word read after each launch (a synchronization)
    "LIGHTNING_RNN_CUDA_GRAPHS",         # 1: per-step launch loops captured and replayed as CUDA graphs
    "LIGHTNING_RNN_AUTOTUNE",            # 0: backend="auto" does not time, it takes Triton where it can run
    "TRITON_INTERPRET",                  # 1: Triton's CPU interpreter (the kernels on the CPU)
)

#: Distinct records kept between two resets; a caller that never resets cannot grow memory without bound.
MAX_RECORDS = 256

_lock = threading.Lock()
_records: dict[tuple[str, str, str], None] = {}  # insertion-ordered: first seen first


def record(cell: str, path: str, detail: str = "") -> None:
    """Note that a `cell` layer ("lstm", "gru", "rnn") just ran on `path` ("persistent", "step",
    "step+cuda-graphs", ...); `detail` says more (launch plan, variant, or why a fallback was taken).
    Repeats of the same (cell, path, detail) are kept once."""
    key = (str(cell), str(path), str(detail))
    if key in _records:  # the common case: no lock needed to see it is already there
        return
    with _lock:
        if len(_records) < MAX_RECORDS:
            _records.setdefault(key, None)


def lengths_note(lengths: object) -> str:
    """What a record's detail adds where the layer ran with per-row lengths (kernels.lengths)."""
    return " lengths" if lengths is not None else ""


def reset() -> None:
    """Forget every record (the benchmark calls this before each measurement)."""
    with _lock:
        _records.clear()


def snapshot() -> list[dict[str, str]]:
    """The distinct records since the last `reset()`, in first-seen order, as
    {"cell": ..., "path": ..., "detail": ...} dicts (copies: later records do not change them)."""
    with _lock:
        keys = list(_records)
    return [{"cell": c, "path": p, "detail": d} for c, p, d in keys]


def path_env() -> dict[str, str | None]:
    """The current value of each variable in `PATH_ENV_VARS` (None where unset)."""
    return {name: os.environ.get(name) for name in PATH_ENV_VARS}
