"""What deciding costs per call once decided: `backend="auto"`'s cache hit and the engine's plan lookup.

    python -m lightning_rnn.bench.dispatch [OUT_DIR]

`auto` times Triton against torch.nn once per configuration (lightning_rnn.nn.autotune); every later
call only looks the winner up. That lookup, and the persistent engine's `choose` (environment,
variant, cached plan), run on every forward: they must cost microseconds, not a fraction of a step
(a step of the engine is ~5 us at B16 H768 on an H200). Measured on the CPU: the lookups are host
code and cost the same in front of a GPU launch (the GPU's plan cache is the same dict).
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch


def _per_call_us(fn, calls: int = 2000) -> float:
    """Median over 5 rounds of the mean time of one call, in microseconds."""
    for _ in range(50):
        fn()
    rounds = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        rounds.append((time.perf_counter() - start) / calls * 1e6)
    return sorted(rounds)[2]


def measure() -> list[dict]:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # the engine's lookup without a GPU
    os.environ["LIGHTNING_RNN_CACHE_DIR"] = tempfile.mkdtemp()  # its fake decision never reaches the user's cache
    from kernels.persistent import plan as P
    from kernels.persistent import run
    from lightning_rnn.nn import LSTM, autotune

    rows = []
    model = LSTM(32, 64, backend="auto")
    x = torch.randn(5, 3, 32)
    # A decision already made (as after the first call): the later calls only look it up.
    key_calls = []
    original = autotune.choose

    def first_choice(key, candidates, device, default, timer=None):
        key_calls.append(key)
        return original(key, candidates, device, default, timer=lambda fn: 1.0 if "torch" in str(fn) else 2.0)

    autotune.choose = first_choice
    try:
        model._faster_backend(x, None, True)
    finally:
        autotune.choose = original
    rows.append({"what": "auto: cache hit in LSTM._faster_backend (the key, then the lookup)",
                 "us_per_call": _per_call_us(lambda: model._faster_backend(x, None, True))})
    key = key_calls[0]
    rows.append({"what": "auto: autotune.choose cache hit alone",
                 "us_per_call": _per_call_us(lambda: autotune.choose(key, {}, x.device, "torch"))})
    rows.append({"what": "engine: run.choose (environment, variant, plan)",
                 "us_per_call": _per_call_us(lambda: run.choose(P.LSTM, 16, 768, torch.bfloat16, x.device, True))})
    return rows


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    rows = measure()
    for r in rows:
        print(f"{r['us_per_call']:8.2f} us  {r['what']}")
    if args:
        out = Path(args[0])
        out.mkdir(parents=True, exist_ok=True)
        from lightning_rnn.bench.report import collect_metadata

        meta = collect_metadata(torch.device("cpu"), args)
        meta["command"] = " ".join(["python -m lightning_rnn.bench.dispatch", *args])
        (out / "results.json").write_text(json.dumps({"metadata": meta, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
