"""Two checks to run on a GPU before any timing: the barrier does not hang, and the engine is deterministic.

    python -m lightning_rnn.bench.smoke barrier OUT_DIR        # every BARRIER kind, all SMs, 10k steps
    python -m lightning_rnn.bench.smoke determinism OUT_DIR    # every variant, 10 runs each, bitwise equal
    python -m lightning_rnn.bench.smoke ... --dry-run          # tiny, in Triton's interpreter on the CPU

`benchmarks/gpu_session.sh` runs each in its own process under `timeout`: a barrier that never opens
costs that one step of the session, not the device call. Each writes OUT_DIR/<check>.json (the
harness's metadata and one row per case) and exits 1 if any case failed.

- barrier: `engine.barrier_kernel` (as `lightning_rnn.bench.variants` launches it: cooperative) with one
  program per SM for `steps` steps, for BARRIER 0, 1, 2; the sync words afterwards must be exactly the
  count of arrivals (a counter: steps x programs; flags: steps each).
- determinism: for each variant, an LSTM forward+backward at each shape (one batch tile, and several)
  run `runs` times on the same inputs: y, h_n, c_n and every gradient must be bitwise the same each time
  (the engine sums the shares of dh in a fixed order: no atomics on data). The path that ran is recorded
  (`kernels.paths`): a run the engine did not serve says so.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

# Nothing from `kernels` at import time: --dry-run must set TRITON_INTERPRET first (see main).

#: (T, B, H, dtype): B16 is one batch tile at H768; B128 takes several tiles in the GPU plans.
GPU_SHAPES = [(1024, 16, 768, "bfloat16"), (1024, 128, 768, "bfloat16")]
DRY_SHAPES = [(3, 5, 17, "float32"), (2, 70, 16, "float16")]  # B70: two batch tiles of 64 in the interpreter


def check_barrier(device: torch.device, programs: int, steps: int) -> list[dict]:
    from lightning_rnn.bench.variants import BARRIER_KINDS, _barrier_fn

    rows = []
    for kind, name in BARRIER_KINDS.items():
        row = {"check": "barrier", "barrier": kind, "name": name, "programs": programs, "steps": steps}
        try:
            fn = _barrier_fn(kind, programs, steps, device)
            start = time.perf_counter()
            fn()
            torch.cuda.synchronize(device) if device.type == "cuda" else None
            seconds = time.perf_counter() - start
            sync = fn.sync.cpu()  # type: ignore[attr-defined]
            expected = [steps] * programs if kind == 2 else [steps * programs]
            got = sync[: len(expected)].tolist()
            row.update(ok=got == expected, seconds=round(seconds, 4), us_per_step=seconds * 1e6 / steps,
                       sync_head=got[:4], expected_head=expected[:4])
        except Exception as err:  # noqa: BLE001 - recorded; the next kind still runs
            row.update(ok=False, error=f"{type(err).__name__}: {str(err)[:300]}")
        rows.append(row)
    return rows


def _lstm_run(T: int, B: int, H: int, dtype: torch.dtype, device: torch.device, seed: int) -> list[torch.Tensor]:
    """One forward+backward of a fresh LSTM(backend="triton") on fixed inputs: everything it produced."""
    from lightning_rnn.nn import LSTM

    torch.manual_seed(seed)
    layer = LSTM(H, H, backend="triton").to(device=device, dtype=dtype)
    x = torch.randn(T, B, H, device=device, dtype=dtype, requires_grad=True)
    y, (h, c) = layer(x)
    (y.float().square().mean() + h.float().sum() + c.float().sum()).backward()
    return [y, h, c, x.grad] + [p.grad for p in layer.parameters()]


def check_determinism(device: torch.device, shapes: list[tuple], variants: list[str], runs: int) -> list[dict]:
    from kernels import paths
    from kernels.persistent import use_variant

    rows = []
    for variant in variants:
        for T, B, H, dtype_name in shapes:
            row = {"check": "determinism", "variant": variant, "T": T, "B": B, "H": H, "dtype": dtype_name,
                   "runs": runs}
            try:
                paths.reset()
                with use_variant(variant):
                    first = _lstm_run(T, B, H, getattr(torch, dtype_name), device, seed=0)
                    differing = [i for i in range(1, runs)
                                 if not all(torch.equal(a, b) for a, b in
                                            zip(first, _lstm_run(T, B, H, getattr(torch, dtype_name), device, 0)))]
                records = paths.snapshot()
                row.update(ok=not differing, differing_runs=differing,
                           engine=any(r["path"] == "persistent" for r in records),
                           paths=sorted({f"{r['path']}: {r['detail']}" for r in records}))
            except Exception as err:  # noqa: BLE001 - recorded; the next case still runs
                row.update(ok=False, error=f"{type(err).__name__}: {str(err)[:300]}")
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lightning_rnn.bench.smoke", description=__doc__.splitlines()[0])
    parser.add_argument("check", choices=["barrier", "determinism"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--dry-run", action="store_true", help="tiny, on the CPU in Triton's interpreter")
    parser.add_argument("--steps", type=int, default=10_000, help="barrier: steps per launch")
    parser.add_argument("--runs", type=int, default=10, help="determinism: runs per variant and shape")
    parser.add_argument("--variants", default="all", help="determinism: comma-separated names, or all")
    args = parser.parse_args(argv)
    if args.dry_run:
        import os

        os.environ["TRITON_INTERPRET"] = "1"
    from kernels.persistent import plan as P
    from lightning_rnn.bench import report

    device = torch.device("cpu" if args.dry_run or not torch.cuda.is_available() else "cuda")
    if args.check == "barrier":
        # The interpreter runs programs one after another: a barrier between two would never open there.
        programs = 1 if device.type == "cpu" else torch.cuda.get_device_properties(device).multi_processor_count
        rows = check_barrier(device, programs, args.steps)
    else:
        variants = list(P.VARIANTS) if args.variants == "all" else args.variants.split(",")
        rows = check_determinism(device, DRY_SHAPES if device.type == "cpu" else GPU_SHAPES, variants, args.runs)
    meta = report.collect_metadata(device, sys.argv[1:] if argv is None else argv)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.check}.json").write_text(json.dumps({"metadata": meta, "results": rows}, indent=1,
                                                             default=str))
    failed = [r for r in rows if not r["ok"]]
    print(f"{args.check}: {len(rows) - len(failed)}/{len(rows)} ok" + "".join(f"\n  FAILED {r}" for r in failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
