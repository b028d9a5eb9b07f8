"""Run metadata, speed-ups, and the outputs: results.json, results.csv and the printed table."""
from __future__ import annotations

import csv
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from kernels.paths import path_env

#: Speed-up baselines: where the baseline failed at the row's dtype (cuDNN before 9.13 has no
#: bf16 RNNs), compare with it at the next dtype here, and say so in *_baseline_dtype.
BASELINE_DTYPE_FALLBACK = ("float16", "float32")

CSV_META = ("device", "driver", "torch", "triton", "cudnn", "git_commit", "path_env")
CSV_FIELDS = (
    "provider", "label", "mode", "cell", "batch", "hidden", "seq_len", "layers", "input_size", "dtype", "status",
    "median_ms", "q20_ms", "q80_ms", "reps", "timing_method", "impl",
    "speedup_vs_torch", "torch_baseline_dtype", "speedup_vs_naive", "naive_baseline_dtype", "error",
) + CSV_META


def _run(cmd: Sequence[str]) -> str | None:
    """First line of a command's output, or None if it is missing or fails."""
    try:
        out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _program() -> list[str]:
    """How the harness was started, for the recorded command line."""
    if Path(sys.argv[0]).name == "lightning-rnn":
        return ["lightning-rnn", "bench"]
    return ["python", "-m", "lightning_rnn.bench"]


def collect_metadata(device: torch.device, argv: Sequence[str]) -> dict:
    """Everything needed to tell two result files apart: hardware, versions, commit, command."""
    try:
        import triton

        triton_version: str | None = triton.__version__
    except ImportError:
        triton_version = None
    cuda = device.type == "cuda"
    return {
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([*_program(), *argv]),
        "device_type": device.type,
        "device": torch.cuda.get_device_name(device) if cuda else _cpu_model(),
        "driver": _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]) if cuda else None,
        "cuda": torch.version.cuda,
        "torch": torch.__version__,
        "triton": triton_version,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
        # Switches that change which kernels run (e.g. LIGHTNING_RNN_PERSISTENT, TRITON_INTERPRET).
        "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith(("LIGHTNING_RNN_", "TRITON_"))
                or k == "CUDA_VISIBLE_DEVICES"},
        # The variables that choose the kernel path (kernels.paths.PATH_ENV_VARS), None where unset;
        # each result row's `impl` and `paths` say which path then ran.
        "path_env": path_env(),
        # A copy of the tree without .git (the GPU machine's) is told its commit by LIGHTNING_RNN_GIT_COMMIT.
        "git_commit": _run(["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "HEAD"])
        or os.environ.get("LIGHTNING_RNN_GIT_COMMIT"),
    }


def add_speedups(rows: list[dict], cudnn_only: bool = False) -> None:
    """speedup_vs_X = X's median / this row's median (> 1: this row is faster), same shape and mode.

    With `cudnn_only` (on CUDA), a torch.nn.LSTM row that did not run cuDNN is no baseline:
    the comparison moves on to the next dtype, as if cuDNN had failed.
    """
    ok = {(r["provider"], r["mode"], r["dtype"], _shape(r)): r for r in rows if r["status"] == "ok"
          and not (cudnn_only and r["provider"] == "torch" and r.get("impl") != "cuDNN")}
    for r in rows:
        for base in ("torch", "naive"):
            r[f"speedup_vs_{base}"] = r[f"{base}_baseline_dtype"] = None
            if r["status"] != "ok":
                continue
            for dtype in (r["dtype"], *BASELINE_DTYPE_FALLBACK):
                b = ok.get((base, r["mode"], dtype, _shape(r)))
                if b is not None:
                    r[f"speedup_vs_{base}"] = b["median_ms"] / r["median_ms"]
                    r[f"{base}_baseline_dtype"] = dtype
                    break


def _shape(r: dict) -> tuple:
    return r.get("cell", "lstm"), r["batch"], r["hidden"], r["seq_len"], r["layers"], r["input_size"]


def write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2) + "\n")


def write_csv(path: Path, rows: list[dict], meta: dict, fields: Sequence[str] = CSV_FIELDS) -> None:
    """One line per row (the columns `fields`, then the metadata columns CSV_META)."""
    fields = tuple(fields) + tuple(k for k in CSV_META if k not in fields)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        per_row = {k: meta.get(k) for k in CSV_META}
        per_row["path_env"] = format_path_env(meta.get("path_env") or {})
        for r in rows:  # metadata on every row: CSVs from several machines concatenate cleanly
            writer.writerow({**per_row, **r})


def format_path_env(env: dict) -> str:
    """'LIGHTNING_RNN_PERSISTENT=1 TRITON_INTERPRET=1': the path variables that are set ('' if none)."""
    return " ".join(f"{k}={v}" for k, v in env.items() if v is not None)


def format_table(rows: list[dict]) -> str:
    """One line per row: times, and speed-ups vs torch.nn.LSTM and vs the naive loop."""
    head = (f"{'cell':<4} {'B':>4} {'H':>5} {'T':>5} {'L':>2} {'dtype':<8} {'mode':<6} {'provider':<28} "
            f"{'median ms':>10} {'q20-q80 ms':>19} {'vs torch':>9} {'vs naive':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        pre = (f"{r.get('cell', 'lstm'):<4} {r['batch']:>4} {r['hidden']:>5} {r['seq_len']:>5} {r['layers']:>2} {r['dtype']:<8} "
               f"{r['mode']:<6} {r['label'][:28]:<28} ")
        if r["status"] != "ok":
            lines.append(pre + f"{r['status']}: {r['error']}")
            continue
        band = f"{r['q20_ms']:.3f}-{r['q80_ms']:.3f}"
        lines.append(pre + f"{r['median_ms']:>10.3f} {band:>19} "
                     f"{_ratio(r, 'torch'):>9} {_ratio(r, 'naive'):>9}")
    return "\n".join(lines)


def _ratio(r: dict, base: str) -> str:
    s = r[f"speedup_vs_{base}"]
    if s is None:
        return "-"
    other = r[f"{base}_baseline_dtype"]
    return f"{s:.2f}x" + ("" if other == r["dtype"] else f"@{_short(other)}")  # e.g. 3.1x@fp16


def _short(dtype: str) -> str:
    return {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}.get(dtype, dtype)
