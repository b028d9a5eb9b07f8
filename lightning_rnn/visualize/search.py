"""Find interpretable units: correlate every unit with every text feature.

A unit is one coordinate of one signal of one layer (``h`` for every cell, and ``c`` for the
LSTM, where Karpathy et al. found their quote and line-length cells). Its score for a feature
is the Pearson correlation over the text's tokens; a strongly negative unit is as
interpretable as a positive one, so units are ranked by ``|r|``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_rnn.visualize.activations import Activations

SEARCHED_SIGNALS = ("h", "c")


@dataclass(frozen=True)
class Unit:
    """One hidden unit: ``layer`` (0-based), ``signal`` (``"h"`` or ``"c"``) and ``index``."""

    layer: int
    signal: str
    index: int

    @property
    def name(self) -> str:
        return f"L{self.layer}.{self.signal}[{self.index}]"

    def values(self, acts: Activations) -> Tensor:
        """This unit's activation at every token, ``(T,)``."""
        return acts.layers[self.layer][self.signal][:, self.index]

    def display_values(self, acts: Activations) -> Tensor:
        """The activation mapped into [-1, 1] for colouring: tanh cells' ``h`` as it is, LSTM cell
        states as ``tanh(c)`` (what the output gate sees; they are unbounded), a ReLU RNN's ``h``
        divided by its largest value."""
        values = self.values(acts)
        if self.signal == "c":
            return torch.tanh(values)
        peak = values.abs().max()
        return values / peak if peak > 1 else values


@dataclass(frozen=True)
class Match:
    feature: str
    unit: Unit
    r: float


def pearson(signals: Tensor, feature: Tensor) -> Tensor:
    """Correlation of each column of ``signals (T, N)`` with ``feature (T,)``: ``(N,)``.
    A constant column has correlation 0 (it cannot track anything)."""
    x = signals.double() - signals.double().mean(0)
    y = feature.double() - feature.double().mean()
    norms = x.norm(dim=0) * y.norm()
    r = (x * y[:, None]).sum(0) / norms.clamp_min(1e-12)
    return torch.where(norms > 1e-12, r, torch.zeros_like(r)).float()


def best_units(acts: Activations, features: dict[str, Tensor], top: int = 3,
               layers: list[int] | None = None) -> dict[str, list[Match]]:
    """``{feature: the top units by |r|, best first}`` over ``layers`` (default: all).
    Features that are constant over the text (nothing to correlate with) are left out."""
    layers = list(range(len(acts.layers))) if layers is None else layers
    units, columns = [], []
    for layer in layers:
        for signal in SEARCHED_SIGNALS:
            if signal in acts.layers[layer]:
                values = acts.layers[layer][signal]
                units += [Unit(layer, signal, k) for k in range(values.shape[1])]
                columns.append(values)
    signals = torch.cat(columns, dim=1)
    found = {}
    for name, feature in features.items():
        if feature.std() == 0:
            continue
        r = pearson(signals, feature)
        order = r.abs().argsort(descending=True)[:top]
        found[name] = [Match(name, units[k], float(r[k])) for k in order.tolist()]
    return found


def most_varying(acts: Activations, layer: int, signal: str, count: int) -> list[Unit]:
    """The ``count`` units of ``signal`` in ``layer`` whose displayed activation (see
    ``Unit.display_values``) varies most over the text."""
    values = acts.layers[layer][signal]
    spread = (torch.tanh(values) if signal == "c" else values).std(0)
    return [Unit(layer, signal, k) for k in spread.argsort(descending=True)[:count].tolist()]


def format_table(found: dict[str, list[Match]]) -> str:
    """The search results as a plain-text table, one line per (feature, rank)."""
    lines = [f"{'feature':<18} {'rank':>4}  {'unit':<14} {'correlation':>11}", "-" * 51]
    for feature, matches in found.items():
        for rank, m in enumerate(matches, 1):
            lines.append(f"{feature:<18} {rank:>4}  {m.unit.name:<14} {m.r:>+11.3f}")
    return "\n".join(lines)
