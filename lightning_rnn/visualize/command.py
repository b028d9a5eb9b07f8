"""``lightning-rnn visualize``: look inside a language model while it reads a text.

    lightning-rnn visualize --ckpt runs/char_lm/version_0/checkpoints/best.ckpt --text some_file.py
    lightning-rnn visualize --ckpt best.ckpt --prompt 'x = "a string" + f(y)' --units 3,17 --out viz

Writes to ``--out`` (default: ``visualize/`` beside the checkpoint's ``checkpoints/`` folder):
``heatmap.png`` (units x tokens), ``units.html`` (the text coloured by each unit, offline),
``saturation.png`` (LSTM and GRU gates) and ``summary.json`` (everything as numbers), and
prints the interpretable-unit table and the gate saturation summary.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lightning_rnn.visualize.activations import Activations, capture
from lightning_rnn.visualize.features import FEATURES, guess_kind, token_features
from lightning_rnn.visualize.heatmap import plot_heatmap
from lightning_rnn.visualize.page import write_page
from lightning_rnn.visualize.saturation import format_summary, gate_saturation, plot_saturation, summary
from lightning_rnn.visualize.search import Unit, best_units, format_table, most_varying, pearson


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lightning-rnn visualize", description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, help="LanguageModel checkpoint (best.ckpt, last.ckpt)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", type=Path, help="file whose text the model reads")
    source.add_argument("--prompt", help="text the model reads, given on the command line")
    p.add_argument("--out", type=Path, help="output folder (default: visualize/ beside the checkpoints/ folder)")
    p.add_argument("--units", help="comma-separated unit indices to show (of --layer); default: the best unit per "
                                   "feature, then the most varying units")
    p.add_argument("--layer", type=int, help="only this layer (0-based; default: search all, show the last)")
    p.add_argument("--max_chars", type=int, default=2000,
                   help="read at most this many tokens (characters for a character-level model)")
    p.add_argument("--kind", choices=("auto", "code", "prose"), default="auto", help="which text features to search")
    p.add_argument("--top", type=int, default=3, help="best units reported per feature")
    p.add_argument("--show", type=int, default=8, help="units in the heatmap and page when --units is not given")
    p.add_argument("--heatmap_chars", type=int, default=200, help="tokens drawn in the heatmap (100 per panel)")
    return p


def _positive(parser: argparse.ArgumentParser, opts: argparse.Namespace, *names: str) -> None:
    for name in names:
        if getattr(opts, name) < 1:
            parser.error(f"--{name} must be a positive integer, got {getattr(opts, name)}")


def _load_model(parser: argparse.ArgumentParser, path: str):
    if not Path(path).is_file():
        parser.error(f"--ckpt: no such checkpoint file: {path}")
    from lightning_rnn.lm import LanguageModel

    try:
        model = LanguageModel.load_from_checkpoint(path, map_location="cpu", backend="torch")
    except Exception as err:  # unpickling, missing keys, another model family: all one message
        parser.error(f"--ckpt {path}: cannot load a LanguageModel from this file ({type(err).__name__}: {err})")
    if model.vocab is None:
        parser.error(f"--ckpt {path}: the checkpoint holds no vocabulary (not written by lightning-rnn fit)")
    return model.eval()


def _read_text(parser: argparse.ArgumentParser, opts: argparse.Namespace) -> str:
    if opts.prompt is not None:
        text = opts.prompt
    else:
        try:
            text = opts.text.read_text(encoding="utf-8", errors="replace")
        except OSError as err:
            parser.error(f"--text: cannot read {opts.text} ({err.strerror or err})")
    if not text.strip():
        parser.error("--text/--prompt: the text is empty")
    return text


def _describe(acts: Activations, unit: Unit, features: dict) -> str:
    """The unit's name and the feature it follows best, e.g. 'L0.c[17]  in_string +0.81'."""
    scores = {name: float(pearson(unit.values(acts)[:, None], f)[0]) for name, f in features.items() if f.std() > 0}
    if not scores:
        return unit.name
    feature = max(scores, key=lambda name: abs(scores[name]))
    return f"{unit.name:<12} {feature} {scores[feature]:+.2f}"


def choose_units(acts: Activations, found: dict, indices: list[int] | None, layer: int, count: int) -> list[Unit]:
    """``indices`` of ``layer`` (h, and c for the LSTM); or else the search's matches, the best
    of every feature first, then the second best, ..., one signal per unit; then the most
    varying units of ``layer``; ``count`` units in all."""
    signals = [s for s in ("c", "h") if s in acts.layers[layer]]
    if indices is not None:
        return [Unit(layer, s, k) for k in indices for s in signals]
    ranked = [m.unit for rank in zip(*found.values()) for m in rank]
    varying = [u for s in signals for u in most_varying(acts, layer, s, count)]
    chosen: list[Unit] = []
    for unit in ranked + varying:
        if len(chosen) < count and all((unit.layer, unit.index) != (u.layer, u.index) for u in chosen):
            chosen.append(unit)
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    opts = parser.parse_args(sys.argv[1:] if argv is None else argv)
    _positive(parser, opts, "max_chars", "top", "show", "heatmap_chars")
    model = _load_model(parser, opts.ckpt)
    num_layers = model.rnn.num_layers
    if opts.layer is not None and not 0 <= opts.layer < num_layers:
        parser.error(f"--layer must be in [0, {num_layers - 1}] for this {num_layers}-layer model, got {opts.layer}")
    indices = None
    if opts.units:
        try:
            indices = [int(v) for v in opts.units.split(",") if v.strip()]
        except ValueError:
            parser.error(f"--units must be comma-separated integers, got {opts.units!r}")
        bad = [k for k in indices if not 0 <= k < model.rnn.hidden_size]
        if bad or not indices:
            parser.error(f"--units must be in [0, {model.rnn.hidden_size - 1}] (hidden_size), got {opts.units!r}")
    text = _read_text(parser, opts)

    acts = capture(model, text, opts.max_chars)
    kind = guess_kind(text) if opts.kind == "auto" else opts.kind
    features = token_features(acts.tokens, acts.level, kind)
    layers = None if opts.layer is None else [opts.layer]
    found = best_units(acts, features, opts.top, layers)
    shown_layer = num_layers - 1 if opts.layer is None else opts.layer
    units = choose_units(acts, found, indices, shown_layer, opts.show)
    labels = [_describe(acts, u, features) for u in units]

    out = opts.out or Path(opts.ckpt).resolve().parent.parent / "visualize"
    out.mkdir(parents=True, exist_ok=True)
    hp = model.hparams
    title = (f"{hp.cell.upper()} {hp.num_layers}x{hp.hidden_size}, {acts.level}-level, "
             f"{Path(opts.ckpt).name}: {len(acts.tokens)} {acts.level}s of {kind}")
    plot_heatmap(acts, units, labels, out / "heatmap.png", title, opts.heatmap_chars)
    stats = gate_saturation(acts)
    saturation_rows = summary(stats)
    saturation_text = format_summary(saturation_rows) if saturation_rows else ""
    if saturation_rows:
        plot_saturation(stats, out / "saturation.png", f"Gate saturation, {title}")
    write_page(acts, units, labels, found, out / "units.html", title, saturation_text)
    (out / "summary.json").write_text(json.dumps({
        "checkpoint": str(opts.ckpt), "cell": hp.cell, "level": acts.level, "tokens": len(acts.tokens),
        "text_kind": kind, "features": list(FEATURES[kind]),
        "best_units": {f: [{"unit": m.unit.name, "layer": m.unit.layer, "signal": m.unit.signal,
                            "index": m.unit.index, "r": m.r} for m in ms] for f, ms in found.items()},
        "shown_units": [u.name for u in units],
        "saturation": saturation_rows,
    }, indent=2) + "\n")

    print(f"{title}\n\ninterpretable units (Pearson r with each feature, best |r| first):\n{format_table(found)}")
    if saturation_text:
        print(f"\ngate saturation (fraction of steps; per-unit scatter in saturation.png):\n{saturation_text}")
    written = ["heatmap.png", "units.html", "summary.json"] + (["saturation.png"] if saturation_rows else [])
    print(f"\nwrote {', '.join(str(out / name) for name in written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
