"""Kernel benchmark harness: ours (Triton) vs our PyTorch fallback vs torch.nn vs a naive cell loop,
for the LSTM (default), the GRU and the Elman RNN (--cell lstm,gru,rnn).

    python -m lightning_rnn.bench --preset target          # B=16 T=1024 H=768, 1 layer, bf16 and fp16
    python -m lightning_rnn.bench --preset sweep           # B in 8..128 x H in 256..1024, T=512
    python -m lightning_rnn.bench --preset cpu-smoke       # tiny, seconds on a CPU
    python -m lightning_rnn.bench --batch 16,32 --hidden 512 --seq-len 256 --dtype bf16 --modes fwd
    python -m lightning_rnn.bench --preset target --cell gru,rnn   # the GRU and Elman kernels vs cuDNN
    python -m lightning_rnn.bench --preset variants --out DIR      # every persistent-engine variant
                                                           # (lightning_rnn.bench.variants; --dry-run on a CPU)
    python -m lightning_rnn.bench --preset awd --out DIR      # weight drop / recurrent dropout vs AWD's WeightDrop
                                                           # (lightning_rnn.bench.regularized; --dry-run on a CPU)
    lightning-rnn bench ...                                # the same (lightning_rnn.cli dispatches here)

Writes results.json, results.csv and plot.png to benchmarks/results/<name>/ (or --out) and
prints a table with each provider's speed-up vs torch.nn (same cell) and vs the naive loop.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

import torch

PRESETS: dict[str, dict] = {
    # The headline point: ours bf16 vs cuDNN (bf16 if this cuDNN has it, else fp16), T=1024.
    "target": {"batch": [16], "hidden": [768], "seq_len": [1024], "layers": [1], "dtype": ["bfloat16", "float16"]},
    # The 20-point sweep, T=512.
    "sweep": {"batch": [8, 16, 32, 64, 128], "hidden": [256, 512, 768, 1024], "seq_len": [512], "layers": [1],
              "dtype": ["bfloat16", "float16"]},
    # Tiny and short: an end-to-end check of the harness on a CPU.
    "cpu-smoke": {"batch": [4], "hidden": [32], "seq_len": [16], "layers": [1, 2], "dtype": ["float32"],
                  "warmup": 5.0, "rep": 20.0, "threads": 1},  # tiny ops: one thread is least noisy
    # CPU bf16 autocast (Lightning's bf16-mixed) against torch.nn in fp32: the ratio should be ~1.
    "cpu-autocast": {"batch": [20, 32], "hidden": [200, 256], "seq_len": [35], "layers": [2], "dtype": ["float32"],
                     "providers": ["torch", "autocast"], "modes": ["fwdbwd"], "threads": 1},
}
#: Presets with a harness of their own: `--preset NAME` hands every other argument to that module's
#: main(argv, program) (see its --help).
DELEGATED_PRESETS: dict[str, str] = {"variants": "lightning_rnn.bench.variants", "awd": "lightning_rnn.bench.regularized"}
DEFAULTS = {"cell": ["lstm"], "providers": ["triton", "fallback", "torch", "naive"], "modes": ["fwd", "fwdbwd"],
            "warmup": 25.0, "rep": 100.0}


def _list(kind: type):
    """argparse type for '8,16' (also usable as '8 16' thanks to nargs='+')."""
    return lambda text: [kind(v) for v in text.split(",") if v]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lightning-rnn bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted([*PRESETS, *DELEGATED_PRESETS]),
                   help="named configuration (default: target on CUDA, cpu-smoke on the CPU); "
                        "the list options below override its fields. 'variants' runs "
                        "lightning_rnn.bench.variants with the other arguments (see its --help)")
    helps = {"--input-size": "default: = hidden", "--dtype": "float32|float16|bfloat16 (fp32, fp16, bf16)",
             "--providers": "triton,fallback,torch,naive,autocast (default: the first four)", "--modes": "fwd,fwdbwd (default: both)",
             "--cell": "lstm|gru|rnn (Elman, tanh), default lstm"}
    for flag, kind in (("--cell", str), ("--batch", int), ("--hidden", int), ("--seq-len", int), ("--layers", int),
                       ("--input-size", int), ("--dtype", str), ("--providers", str), ("--modes", str)):
        p.add_argument(flag, type=_list(kind), nargs="+", metavar="V[,V...]", help=helps.get(flag))
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--warmup", type=float, help="warm-up budget per measurement, ms (default 25)")
    p.add_argument("--rep", type=float, help="timed budget per measurement, ms (default 100)")
    p.add_argument("--threads", type=int, help="CPU intra-op threads (torch.set_num_threads)")
    p.add_argument("--interpreter", action="store_true",
                   help="on the CPU, time the Triton kernels in Triton's interpreter (slow; labelled so)")
    p.add_argument("--out", type=Path, help="output folder (default benchmarks/results/<name>)")
    p.add_argument("--name", help="results folder name (default <timestamp>-<preset>)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-plot", action="store_true", help="skip plot.png")
    return p


def resolve_options(args: argparse.Namespace, device: torch.device) -> dict:
    """Preset, then explicit flags on top; flattens '8,16 32' into [8, 16, 32]."""
    from lightning_rnn.bench.providers import CELLS, PROVIDERS, canonical_dtype
    from lightning_rnn.bench.runner import MODES

    preset = args.preset or ("target" if device.type == "cuda" else "cpu-smoke")
    opts = {**DEFAULTS, **PRESETS[preset], "preset": preset}
    for key in ("cell", "batch", "hidden", "seq_len", "layers", "input_size", "dtype", "providers", "modes"):
        value = getattr(args, key)
        if value is not None:
            opts[key] = [v for chunk in value for v in chunk]
    for key in ("warmup", "rep", "threads"):
        if getattr(args, key) is not None:
            opts[key] = getattr(args, key)
    opts["dtype"] = [canonical_dtype(d) for d in opts["dtype"]]
    for key, known in (("cell", CELLS), ("providers", PROVIDERS), ("modes", MODES)):
        unknown = [v for v in opts[key] if v not in known]
        if unknown:
            raise ValueError(f"unknown {key} {unknown}; choose from {list(known)}")
    return opts


def _plot(payload: dict, path: Path) -> Path | None:
    """plot.png via lightning_rnn.plots (`lightning-rnn plot results.json` redraws it later);
    without matplotlib the results are still written, and the hint says how to get the plot."""
    from lightning_rnn.plots import plot_speedups

    try:
        return plot_speedups(payload, path)
    except ImportError as err:
        print(f"no plot.png: {err}")
        return None


def _delegated_preset(argv: list[str]) -> tuple[str, list[str]] | None:
    """(preset, the other arguments) where `--preset` names a harness of its own, else None."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset")
    known, rest = pre.parse_known_args(argv)
    return (known.preset, rest) if known.preset in DELEGATED_PRESETS else None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    delegated = _delegated_preset(argv)
    if delegated is not None:
        import importlib

        from lightning_rnn.bench.report import _program

        preset, rest = delegated
        return importlib.import_module(DELEGATED_PRESETS[preset]).main(rest, program=[*_program(), "--preset", preset])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and args.interpreter and os.environ.get("TRITON_INTERPRET") != "1":
        if "triton" in sys.modules:
            # Triton was imported without its interpreter (`lightning-rnn` imports Lightning, which imports
            # Triton), and it does not switch later: run in a fresh Python with TRITON_INTERPRET=1 from the start.
            import subprocess

            return subprocess.call([sys.executable, "-m", "lightning_rnn.bench", *argv],
                                   env={**os.environ, "TRITON_INTERPRET": "1"})
        # Must precede the first import of kernels.lstm.function (triton.jit reads it then).
        os.environ["TRITON_INTERPRET"] = "1"

    from lightning_rnn.bench import report
    from lightning_rnn.bench.providers import PROVIDERS, Point
    from lightning_rnn.bench.runner import MODES, Config, run_benchmark

    try:
        opts = resolve_options(args, device)
    except ValueError as err:
        parser.error(str(err))
    points = [Point(b, h, t, n, d, i or h, c)
              for c in opts["cell"] for d in opts["dtype"] for n in opts["layers"] for t in opts["seq_len"]
              for h in opts["hidden"] for b in opts["batch"] for i in opts.get("input_size", [None])]
    if opts.get("threads"):
        torch.set_num_threads(opts["threads"])
    meta = report.collect_metadata(device, argv)
    print(f"device: {meta['device']} ({device.type}); torch {meta['torch']}, triton {meta['triton']}, "
          f"cuDNN {meta['cudnn']}, driver {meta['driver']}, commit {meta['git_commit']}")
    print(f"kernel-path variables: {report.format_path_env(meta['path_env']) or 'none set'}")
    print(f"preset {opts['preset']}: {len(points)} points x {opts['providers']} x {opts['modes']}")
    for mode in opts["modes"]:
        print(f"  {mode}: {MODES[mode]}")

    cfg = Config(points, opts["providers"], opts["modes"], device, opts["warmup"], opts["rep"],
                 interpreter=args.interpreter, seed=args.seed)
    rows, skipped = run_benchmark(cfg)
    report.add_speedups(rows, cudnn_only=device.type == "cuda")

    name = args.name or f"{dt.datetime.now():%Y%m%d-%H%M%S}-{opts['preset']}"
    out = args.out or Path("benchmarks") / "results" / name
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "metadata": {**meta, "preset": opts["preset"], "warmup_ms": opts["warmup"], "rep_ms": opts["rep"],
                     "seed": args.seed, "layout": "time-major input (T, B, I), I = hidden unless --input-size"},
        "modes": {m: MODES[m] for m in opts["modes"]},
        "providers": {n: {"label": " / ".join(dict.fromkeys(PROVIDERS[n].label(device, c) for c in opts["cell"])),
                          "description": PROVIDERS[n].description,
                          "skipped": next((s["reason"] for s in skipped if s["provider"] == n), None)}
                      for n in opts["providers"]},
        "speedup": "baseline median / this median, same cell, shape and mode; baseline at this dtype, else "
                   "at float16, else float32 (see *_baseline_dtype)",
        "skipped": skipped,
        "results": rows,
    }
    report.write_json(out / "results.json", payload)
    plotted = None if args.no_plot else _plot(payload, out / "plot.png")
    report.write_csv(out / "results.csv", rows, meta)

    print()
    print(report.format_table(rows))
    if skipped:
        print("\nskipped:")
        for s in skipped:
            print(f"  {s['label']}: {s['reason']}")
    print(f"\nwrote {out}/results.json, results.csv" + (", plot.png" if plotted else ""))
    return 0 if any(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
