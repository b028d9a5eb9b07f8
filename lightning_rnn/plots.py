"""Figures with matplotlib (the optional ``plot`` dependency group), and ``lightning-rnn plot``.

    lightning-rnn plot runs/char_lm/version_0                  # training curves from metrics.csv
    lightning-rnn plot benchmarks/results/NAME/results.json    # the benchmark plot, without re-running it

- ``plot_speedups``: a benchmark's speed-up of each provider vs ``torch.nn.LSTM``, one bar per
  (shape, provider), one panel per (mode, dtype), log scale, device and versions in the title.
- ``plot_training``: loss, perplexity and accuracy against the step, train and validation, from
  the ``metrics.csv`` a ``CSVLogger`` run writes.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

PROVIDER_STYLE = {  # name -> (colour, legend label if results.json has none)
    "triton": ("tab:red", "ours (Triton)"),
    "fallback": ("tab:orange", "ours (PyTorch fallback)"),
    "naive": ("tab:blue", "naive nn.LSTMCell loop"),
    "autocast": ("tab:green", "ours under bf16 autocast"),
}
MODE_TITLES = {"fwd": "forward (inference, no grad)", "fwdbwd": "forward + backward"}
SHORT_DTYPE = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
INSTALL_HINT = "matplotlib is needed for plots: pip install 'lightning-rnn[plot]' (or pip install matplotlib)"


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend, or an ImportError saying how to install it."""
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# -- benchmark ---------------------------------------------------------------------------------

def _shape(row: dict) -> str:
    cell = row.get("cell", "lstm")  # one benchmark may time LSTM, GRU and Elman RNN side by side
    shape = f"B{row['batch']} H{row['hidden']} T{row['seq_len']}" + (f" L{row['layers']}" if row["layers"] > 1 else "")
    return shape if cell == "lstm" else f"{cell} {shape}"


def benchmark_title(meta: dict) -> str:
    versions = ", ".join(f"{name} {meta[key]}" for name, key in (("torch", "torch"), ("Triton", "triton"),
                                                                   ("cuDNN", "cudnn"), ("driver", "driver")) if meta.get(key))
    commit = (meta.get("git_commit") or "")[:8]
    return (f"Speed-up vs torch.nn (cuDNN on GPU): {meta.get('device', '?')} ({meta.get('device_type', '?')})\n"
            f"{versions}" + (f", commit {commit}" if commit else "") + (f", preset {meta['preset']}" if meta.get("preset") else ""))


def plot_speedups(payload: dict, path: Path) -> Path | None:
    """Write ``speedup_figure(payload)`` to ``path``; None when there is nothing to draw."""
    fig = speedup_figure(payload)
    if fig is None:
        return None
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path


def speedup_figure(payload: dict):
    """The speed-up bar chart of a benchmark's ``results.json`` payload (a matplotlib Figure).
    Bars above the black 1x line are faster than ``torch.nn.LSTM``; a bar compared with
    torch.nn.LSTM at another dtype (no cuDNN bf16 RNNs) carries that dtype, e.g. ``@fp16``.
    None when no row has a speed-up (nothing to draw)."""
    rows = [r for r in payload["results"] if r.get("speedup_vs_torch") and r["provider"] in PROVIDER_STYLE]
    if not rows:
        return None
    plt = pyplot()
    labels = {name: info.get("label") for name, info in payload.get("providers", {}).items()}
    panels = list(dict.fromkeys((r["mode"], r["dtype"]) for r in rows))
    shapes = list(dict.fromkeys(_shape(r) for r in rows))
    bars_per_panel = len(shapes) * len({r["provider"] for r in rows})
    values = [r["speedup_vs_torch"] for r in rows] + [1.0]
    fig, axes = plt.subplots(len(panels), 1, squeeze=False,
                             figsize=(max(7.0, 2.5 + 0.4 * bars_per_panel), 1.0 + 2.6 * len(panels)))
    legend: dict = {}
    for ax, (mode, dtype) in zip(axes[:, 0], panels):
        panel_rows = [r for r in rows if (r["mode"], r["dtype"]) == (mode, dtype)]
        providers = [p for p in PROVIDER_STYLE if any(r["provider"] == p for r in panel_rows)]
        width = 0.8 / len(providers)
        for k, provider in enumerate(providers):
            by_shape = {_shape(r): r for r in panel_rows if r["provider"] == provider}
            drawn = [s for s in shapes if s in by_shape]
            xs = [shapes.index(s) + (k - (len(providers) - 1) / 2) * width for s in drawn]
            ys = [by_shape[s]["speedup_vs_torch"] for s in drawn]
            colour, default_label = PROVIDER_STYLE[provider]
            bars = ax.bar(xs, ys, width, color=colour)
            legend[labels.get(provider) or default_label] = bars
            if bars_per_panel <= 16:  # room to write each value on its bar
                notes = [f"{by_shape[s]['speedup_vs_torch']:.2f}x" + ("" if by_shape[s]["torch_baseline_dtype"] == dtype
                         else f"@{SHORT_DTYPE.get(by_shape[s]['torch_baseline_dtype'])}") for s in drawn]
                ax.bar_label(bars, notes, fontsize=7, padding=1)
        legend["torch.nn.LSTM (1x)"] = ax.axhline(1.0, color="black", linewidth=1)
        ax.set_yscale("log")
        ax.set_ylim(min(values) / 1.6, max(values) * 1.6)
        ax.set_xlim(-0.6, len(shapes) - 0.4)
        ax.set_xticks(range(len(shapes)))
        slanted = len(shapes) > 6 or sum(map(len, shapes)) > 12 * len(shapes)  # long labels would overlap
        ax.set_xticklabels(shapes, rotation=30 if slanted else 0, ha="right" if slanted else "center", fontsize=8)
        ax.set_ylabel("speed-up (log scale)")
        baselines = sorted({r["torch_baseline_dtype"] for r in panel_rows} - {dtype})
        ax.set_title(f"{MODE_TITLES.get(mode, mode)}, {dtype}" + (f" (torch.nn.LSTM baseline in {', '.join(baselines)} "
                     "where it has no " + dtype + ")" if baselines else ""), fontsize=9)
        ax.grid(axis="y", which="both", alpha=0.3)
    order = ["torch.nn.LSTM (1x)"] + [name for name in legend if name != "torch.nn.LSTM (1x)"]
    axes[0, 0].legend([legend[name] for name in order], order, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(benchmark_title(payload.get("metadata", {})), fontsize=9)
    fig.tight_layout()
    return fig


# -- training curves ---------------------------------------------------------------------------

def read_metrics(path: Path) -> dict[str, list[tuple[int, float]]]:
    """``{column: [(step, value), ...]}`` for every numeric column of a CSVLogger ``metrics.csv``
    (a row holds only the metrics logged at that step; the others are empty)."""
    series: dict[str, list[tuple[int, float]]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            step = int(float(row.get("step") or 0))
            for name, value in row.items():
                if name in ("step", "epoch") or value in ("", None):
                    continue
                try:
                    series.setdefault(name, []).append((step, float(value)))
                except ValueError:
                    pass
    return series


def _panel(name: str) -> str | None:
    """Which panel a metric belongs to: loss, perplexity or accuracy (None: not drawn)."""
    if name.endswith("_ppl"):
        return "perplexity"
    if name.endswith("loss"):
        return "loss"
    if "acc" in name or name.endswith("exact_match"):
        return "accuracy"
    return None


def plot_training(run_dir: Path, path: Path | None = None) -> Path:
    """Write ``training_figure(run_dir)`` to ``path`` (default ``RUN_DIR/training.png``)."""
    fig = training_figure(run_dir)
    out = path or Path(run_dir) / "training.png"
    fig.savefig(out, dpi=110)
    pyplot().close(fig)
    return out


def training_figure(run_dir: Path):
    """One panel each for loss, perplexity and accuracy against the optimizer step, train and
    validation (and test) as separate lines, from ``RUN_DIR/metrics.csv`` (a matplotlib Figure)."""
    metrics = Path(run_dir) / "metrics.csv"
    if not metrics.is_file():
        raise FileNotFoundError(f"no metrics.csv in {run_dir} (a run folder written by `lightning-rnn fit`, e.g. "
                                "runs/char_lm/version_0)")
    series = read_metrics(metrics)
    panels: dict[str, list[str]] = {}
    for name in series:
        if _panel(name):
            panels.setdefault(_panel(name), []).append(name)
    if not panels:
        raise ValueError(f"{metrics} has no loss, perplexity or accuracy column (columns: {sorted(series)})")
    if "perplexity" in panels and "train_loss" in series and "train_ppl" not in series:
        # a language model logs the training loss only; its exp is the training perplexity
        series["train_ppl (exp train_loss)"] = [(step, math.exp(v)) for step, v in series["train_loss"]]
        panels["perplexity"].append("train_ppl (exp train_loss)")
    plt = pyplot()
    order = [p for p in ("loss", "perplexity", "accuracy") if p in panels]
    fig, axes = plt.subplots(1, len(order), figsize=(4.6 * len(order), 3.6), squeeze=False)
    for ax, panel in zip(axes[0], order):
        for name in sorted(panels[panel], key=lambda n: ("train", "val", "test").index(n.split("_")[0])
                           if n.split("_")[0] in ("train", "val", "test") else 3):
            steps, values = zip(*series[name])
            few = len(values) < 30  # validation points are few: show each one
            ax.plot(steps, values, marker="o" if few else None, markersize=3, linewidth=1.2 if few else 0.9, label=name)
        if panel == "perplexity":
            ax.set_yscale("log")
        ax.set(xlabel="step", ylabel=panel, title=panel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Training curves: {Path(run_dir).resolve().name} ({Path(run_dir).resolve().parent.name})", fontsize=10)
    fig.tight_layout()
    return fig


# -- the command ---------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lightning-rnn plot", description=__doc__.split("\n\n")[0],
                                     epilog="RUN_DIR -> RUN_DIR/training.png; results.json -> plot.png beside it")
    parser.add_argument("source", type=Path, help="a run folder (with metrics.csv) or a benchmark results.json")
    parser.add_argument("--out", type=Path, help="PNG to write (default: beside the source)")
    opts = parser.parse_args(sys.argv[1:] if argv is None else argv)
    source: Path = opts.source
    try:
        if source.is_dir():
            written = plot_training(source, opts.out)
        elif source.suffix == ".json" and source.is_file():
            try:
                payload = json.loads(source.read_text())
                payload["results"]
            except (ValueError, KeyError, TypeError):
                parser.error(f"source: {source} is not a benchmark results.json (no 'results' list)")
            written = plot_speedups(payload, opts.out or source.with_name("plot.png"))
            if written is None:
                parser.error(f"source: {source} has no row with a speed-up vs torch.nn.LSTM to plot")
        else:
            parser.error(f"source: {source} is neither a run folder nor a results.json file")
    except (FileNotFoundError, ValueError, ImportError) as err:
        parser.error(str(err))
    print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
