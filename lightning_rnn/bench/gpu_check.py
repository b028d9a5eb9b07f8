"""One command for a fresh GPU machine: tests, resource check, benchmarks; everything lands in one folder.

    python -m lightning_rnn.bench.gpu_check OUT            # on the GPU machine (under 15 minutes)
    python -m lightning_rnn.bench.gpu_check OUT --only gpu-tests,bench-variants   # some of the steps
    python -m lightning_rnn.bench.gpu_check OUT --dry-run  # the same steps, tiny, on the CPU (CI)
    benchmarks/gpu_check.sh OUT [--dry-run]                # the same

Steps, each a child process with its own log (OUT/<step>.log) and time limit:
1. gpu-tests         `pytest -m gpu` (the GPU-marked tests; --dry-run: the engine's, which collect and skip)
2. resources         `kernels.resources` (sm_90, offline) beside what the GPU's own compiler reports for the
                     same kernels (n_regs, n_spills, metadata.shared) -> OUT/resources.json
3. bench-target      the target benchmark with the defaults (the persistent engine where it fits), all providers
4. bench-target-step the same, per-step kernels only (LIGHTNING_RNN_PERSISTENT=0)
5. bench-ptb         the PTB recipes' shapes (B20, T35, two layers, H 650 and 1500; bf16 and fp32), vs cuDNN
6. bench-sweep       the sweep, bf16/fp16/fp32, vs cuDNN
7. bench-variants    every persistent-engine variant, the barrier alone, vs cuDNN (lightning_rnn.bench.variants,
                     about 4 minutes) -> OUT/variants/
All seven take ~15 minutes: more than one device call may run (10 minutes). Two calls:
    python -m lightning_rnn.bench.gpu_check OUT --only gpu-tests,resources,bench-target,bench-target-step,bench-ptb
    python -m lightning_rnn.bench.gpu_check OUT --only bench-variants,bench-sweep
--dry-run runs steps 1-3, tiny, on the CPU (`python -m lightning_rnn.bench.variants DIR --dry-run` is the
variants' own CPU check, in its test).
OUT/summary.json lists every step with its command, exit code and seconds; the exit code is 0
only if every step passed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

TARGET_POINTS = "16x768xbf16,16x768xfp16,16x1024xbf16,64x512xbf16,16x256xfp32"


def _steps(out: Path, dry_run: bool) -> list[tuple[str, list[str], dict, int]]:
    """(name, command, extra environment, time limit in seconds)."""
    py = sys.executable
    if dry_run:
        bench = ["--preset", "cpu-smoke", "--interpreter", "--device", "cpu", "--batch", "2", "--hidden", "16",
                 "--seq-len", "3", "--layers", "1", "--providers", "triton,torch", "--modes", "fwd",
                 "--warmup", "1", "--rep", "2", "--no-plot"]
        return [
            ("gpu-tests", [py, "-m", "pytest", "-q", "-m", "gpu", "tests/test_persistent_engine.py",
                           f"--junitxml={out / 'gpu-tests.xml'}"], {}, 300),
            ("resources", [py, "-m", "lightning_rnn.bench.gpu_check", "--compare-resources", str(out),
                           "--points", "1x16xfp32"], {}, 300),
            ("bench-target", [py, "-m", "lightning_rnn.bench", *bench, "--out", str(out / "target")], {}, 300),
        ]
    bench = [py, "-m", "lightning_rnn.bench"]
    return [
        # A module that cannot be imported there (the GPU machine may lack jsonargparse) must not stop the rest.
        ("gpu-tests", [py, "-m", "pytest", "-q", "-m", "gpu", "-ra", "--continue-on-collection-errors",
                       f"--junitxml={out / 'gpu-tests.xml'}"], {}, 240),
        ("resources", [py, "-m", "lightning_rnn.bench.gpu_check", "--compare-resources", str(out),
                       "--points", TARGET_POINTS], {}, 120),
        ("bench-target", [*bench, "--preset", "target", "--out", str(out / "target")], {}, 90),
        ("bench-target-step", [*bench, "--preset", "target", "--providers", "triton", "--out",
                               str(out / "target-step")], {"LIGHTNING_RNN_PERSISTENT": "0"}, 60),
        ("bench-ptb", [*bench, "--batch", "20", "--seq-len", "35", "--layers", "2", "--hidden", "650,1500",
                       "--dtype", "bf16,fp32", "--providers", "triton,torch", "--out", str(out / "ptb")], {}, 90),
        ("bench-sweep", [*bench, "--preset", "sweep", "--dtype", "bf16,fp16,fp32", "--providers", "triton,torch",
                         "--out", str(out / "sweep")], {}, 240),
        # --time-limit: stop measuring (rows say so) and write the files before the step's limit kills it.
        ("bench-variants", [py, "-m", "lightning_rnn.bench.variants", str(out / "variants"), "--time-limit", "270"],
         {}, 300),
    ]


def compare_resources(out: Path, points: str) -> int:
    """kernels.resources (offline sm_90) beside the GPU compiler's numbers for the same launches."""
    import torch

    from kernels import resources

    parsed = [(int(b), int(h), d) for b, h, d in (p.split("x") for p in points.split(","))]
    rows = resources.measure_points(parsed) if resources.unavailable_reason() is None else []
    for row in rows:
        row["gpu"] = None
    if torch.cuda.is_available():
        configs = [c for b, h, d in parsed for c in resources.launch_configs(b, h, d)]
        for row, config in zip(rows, configs):
            row["gpu"] = _compile_on_gpu(config)
    (out / "resources.json").write_text(json.dumps({"rows": rows, "cuda": torch.cuda.is_available(),
                                                    "offline": resources.unavailable_reason() or "ok"}, indent=1))
    print(resources.format_table(rows) if rows else f"offline compile unavailable: {resources.unavailable_reason()}")
    for row in rows:
        if row["gpu"] and "n_regs" in row["gpu"]:
            g = row["gpu"]
            print(f"{row['kernel']:>26} {row['dtype']} B{row['B']} H{row['H']}: offline regs {row['regs']} "
                  f"spill {row['spill_bytes']} smem {row['smem_bytes']} | GPU regs {g['n_regs']} "
                  f"spills {g['n_spills']} smem {g['shared']}")
    # What the dispatcher launches must fit: launches outside a group, and each group's chosen candidate
    # (the engine's plans that do not fit are skipped for the next, not launched).
    return 0 if all(r["fits"] for r in rows if r.get("chosen", True)) else 1


def _compile_on_gpu(config) -> dict:
    """Compile one launch configuration for this GPU and load it: the driver's n_regs/n_spills."""
    import triton
    from triton.compiler import ASTSource

    from kernels.resources import _resolve

    try:
        compiled = triton.compile(ASTSource(_resolve(config.fn_path), dict(config.signature), dict(config.constexprs)),
                                  options={"num_warps": config.num_warps, "num_stages": config.num_stages})
        compiled._init_handles()
        return {"n_regs": compiled.n_regs, "n_spills": compiled.n_spills, "shared": compiled.metadata.shared}
    except Exception as e:  # recorded, not fatal: the other rows still count
        return {"error": f"{type(e).__name__}: {str(e)[:300]}"}


def run(out: Path, dry_run: bool, only: list[str] | None = None) -> int:
    out.mkdir(parents=True, exist_ok=True)
    root = Path(__file__).resolve().parents[2]
    summary = {"dry_run": dry_run, "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "steps": []}
    steps = _steps(out.resolve(), dry_run)
    if only:
        unknown = sorted(set(only) - {s[0] for s in steps})
        if unknown:
            raise ValueError(f"unknown steps {unknown}; choose from {[s[0] for s in steps]}")
        steps = [s for s in steps if s[0] in only]
    for name, cmd, extra_env, limit in steps:
        env = {**os.environ, **extra_env, "PYTHONPATH": os.pathsep.join(
            p for p in [str(root), os.environ.get("PYTHONPATH", "")] if p)}
        if dry_run:
            env["TRITON_INTERPRET"] = "1"  # the tests' and benchmarks' interpreter path
            env.setdefault("OMP_NUM_THREADS", "1")
        start = time.monotonic()
        with open(out / f"{name}.log", "w") as log:
            log.write("$ " + " ".join(cmd) + "\n")
            log.flush()
            try:
                rc = subprocess.run(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    timeout=limit).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
        seconds = round(time.monotonic() - start, 1)
        summary["steps"].append({"step": name, "command": cmd, "env": extra_env, "returncode": rc,
                                 "seconds": seconds, "log": f"{name}.log"})
        print(f"{name:>24}: {'ok' if rc == 0 else f'FAILED ({rc})'} in {seconds} s", flush=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return 0 if all(s["returncode"] == 0 for s in summary["steps"]) else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lightning_rnn.bench.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="folder for logs, JSON and CSV")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU through the interpreter")
    p.add_argument("--only", type=lambda t: [v for v in t.split(",") if v], metavar="STEP[,STEP...]",
                   help="run only these steps (gpu-tests, resources, bench-target, bench-target-step, "
                        "bench-ptb, bench-sweep, bench-variants)")
    p.add_argument("--compare-resources", action="store_true", help=argparse.SUPPRESS)  # step 2, in a child
    p.add_argument("--points", default=TARGET_POINTS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.compare_resources:
        return compare_resources(args.out, args.points)
    try:
        return run(args.out, args.dry_run, args.only)
    except ValueError as err:
        p.error(str(err))


if __name__ == "__main__":
    sys.exit(main())
