"""Heatmap of chosen units over the text: a row per unit, a column per token, the token on the axis.

Values are ``Unit.display_values`` (LSTM cell states as ``tanh(c)``, as in Karpathy et al.).
Long texts are cut into panels of ``per_row`` tokens, one under the other.
"""
from __future__ import annotations

from pathlib import Path

import torch

from lightning_rnn.visualize.activations import Activations
from lightning_rnn.visualize.features import surface
from lightning_rnn.visualize.search import Unit

SHOWN = {"\n": "\u21b5", " ": "\u00b7", "\t": "\u21e5"}  # newline, space, tab made visible


def token_label(token: str, level: str) -> str:
    text = surface([token], level)[0].rstrip(" ") or token  # a word's trailing space is not shown
    return "".join(SHOWN.get(ch, ch) for ch in text)


def plot_heatmap(acts: Activations, units: list[Unit], labels: list[str], path: Path, title: str,
                 max_tokens: int = 200, per_row: int = 100) -> None:
    """Write a PNG: ``units`` (rows, labelled by ``labels``) x the first ``max_tokens`` tokens."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = min(max_tokens, len(acts.tokens))
    per_row = min(per_row, count)
    grid = torch.stack([u.display_values(acts)[:count] for u in units]).numpy()
    panels = [(start, min(start + per_row, count)) for start in range(0, count, per_row)]
    cell_w = 0.13 if acts.level == "char" else 0.32
    width = max(6.0, per_row * cell_w + 3.2)
    height = len(panels) * (0.24 * len(units) + 0.55) + 0.9
    fig, axes = plt.subplots(len(panels), 1, figsize=(width, height), squeeze=False)
    image = None
    for ax, (start, end) in zip(axes[:, 0], panels):
        image = ax.imshow(grid[:, start:end], cmap="coolwarm", vmin=-1, vmax=1, aspect="auto",
                          interpolation="nearest", extent=(-0.5, end - start - 0.5, len(units) - 0.5, -0.5))
        ax.set_xlim(-0.5, per_row - 0.5)
        ax.set_xticks(range(end - start))
        ax.set_xticklabels([token_label(t, acts.level) for t in acts.tokens[start:end]],
                           fontsize=8, family="monospace", rotation=0 if acts.level == "char" else 90)
        ax.tick_params(axis="x", length=0, pad=2)
        ax.set_yticks(range(len(units)))
        ax.set_yticklabels(labels, fontsize=8, family="monospace")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.93, 1))
    bar = fig.add_axes((0.945, 0.15, 0.012, 0.7))
    fig.colorbar(image, cax=bar, label="activation (tanh(c) for cells)")
    fig.savefig(path, dpi=100)
    plt.close(fig)
