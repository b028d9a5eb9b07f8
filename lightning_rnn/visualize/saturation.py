"""Gate saturation (Karpathy, Johnson and Fei-Fei 2015, section 4.2 and its figure).

A sigmoid gate is *left-saturated* at a step when its value is below 0.1 (nearly shut) and
*right-saturated* above 0.9 (nearly open). Per unit, the fraction of steps spent in each
regime places it on a scatter plot: a forget-gate unit at the right edge is an integrator that
remembers across the whole text; units near the origin are the usual, input-driven ones.
"""
from __future__ import annotations

from pathlib import Path

from torch import Tensor

from lightning_rnn.visualize.activations import SIGMOID_GATES, Activations

LEFT, RIGHT = 0.1, 0.9
GATE_NAMES = {"i": "input gate", "f": "forget gate", "o": "output gate", "r": "reset gate", "z": "update gate"}


def gate_saturation(acts: Activations) -> dict[int, dict[str, tuple[Tensor, Tensor]]]:
    """``{layer: {gate: (left fraction (units,), right fraction (units,))}}``; empty for an RNN."""
    return {
        layer: {gate: ((signals[gate] < LEFT).float().mean(0), (signals[gate] > RIGHT).float().mean(0))
                for gate in SIGMOID_GATES[acts.cell]}
        for layer, signals in enumerate(acts.layers)
    }


def summary(stats: dict[int, dict[str, tuple[Tensor, Tensor]]]) -> list[dict]:
    """One row per (layer, gate): mean fractions, and how many units sit in one regime most of the time."""
    rows = []
    for layer, gates in stats.items():
        for gate, (left, right) in gates.items():
            rows.append({
                "layer": layer, "gate": gate, "units": int(left.numel()),
                "mean_left": float(left.mean()), "mean_right": float(right.mean()),
                "mostly_left": int((left > 0.5).sum()), "mostly_right": int((right > 0.5).sum()),
            })
    return rows


def format_summary(rows: list[dict]) -> str:
    lines = [f"{'layer':>5} {'gate':<12} {'left <0.1':>10} {'right >0.9':>11} {'units mostly left/right':>24}",
             "-" * 66]
    for r in rows:
        lines.append(f"{r['layer']:>5} {GATE_NAMES[r['gate']]:<12} {r['mean_left']:>10.1%} {r['mean_right']:>11.1%} "
                     f"{r['mostly_left']:>12} / {r['mostly_right']:<4} of {r['units']}")
    return "\n".join(lines)


def plot_saturation(stats: dict[int, dict[str, tuple[Tensor, Tensor]]], path: Path, title: str) -> None:
    """One scatter per gate: fraction right-saturated (x) vs left-saturated (y), a dot per unit,
    coloured by layer. Every dot lies in the triangle x + y <= 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gates = list(next(iter(stats.values())))
    fig, axes = plt.subplots(1, len(gates), figsize=(3.6 * len(gates), 3.9), sharey=True, squeeze=False)
    for ax, gate in zip(axes[0], gates):
        for layer, per_gate in stats.items():
            left, right = per_gate[gate]
            ax.scatter(right.numpy(), left.numpy(), s=12, alpha=0.6, label=f"layer {layer + 1}")
        ax.plot([0, 1], [1, 0], color="0.7", linewidth=0.8, zorder=0)
        ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), title=GATE_NAMES[gate],
               xlabel=f"fraction right-saturated (> {RIGHT})")
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"fraction left-saturated (< {LEFT})")
    if len(stats) > 1:
        axes[0][-1].legend(loc="upper right", fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
