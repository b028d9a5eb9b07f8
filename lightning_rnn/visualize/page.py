"""An HTML page, readable offline, that colours the text by units' activations.

One block per unit: the whole text, each token's background coloured from blue (-1) through
white (0) to red (+1). Checkboxes at the top show or hide blocks (a few lines of inline
JavaScript); the interpretable-unit table links to the blocks. Colours are 21 CSS classes
(``a0`` .. ``a20``) rather than a style per token, which keeps long texts small.
"""
from __future__ import annotations

import html
from pathlib import Path

from lightning_rnn.visualize.activations import Activations
from lightning_rnn.visualize.features import surface
from lightning_rnn.visualize.search import Match, Unit

LEVELS = 20  # colour steps across [-1, 1]

STYLE = """
body { font-family: sans-serif; margin: 1.5em; max-width: 70em; }
pre { white-space: pre-wrap; font-size: 13px; line-height: 1.45; border: 1px solid #ddd; padding: .5em; }
table { border-collapse: collapse; } td, th { padding: 2px 10px; border-bottom: 1px solid #eee; text-align: left; }
.nl { color: #bbb; }  #picker label { margin-right: 1em; white-space: nowrap; }
"""
SCRIPT = """
function show(id, on) { document.getElementById(id).style.display = on ? "" : "none"; }
function showAll(on) { for (const box of document.querySelectorAll("#picker input")) { box.checked = on; show(box.value, on); } }
"""


def _colour(level: int) -> str:
    """Blue (level 0 = -1) -> white (LEVELS / 2 = 0) -> red (LEVELS = +1)."""
    x = 2 * level / LEVELS - 1
    blue, red = (49, 104, 209), (213, 50, 43)
    end = red if x > 0 else blue
    r, g, b = (round(255 + abs(x) * (e - 255)) for e in end)
    return f"#{r:02x}{g:02x}{b:02x}"


def _block_id(unit: Unit) -> str:
    return f"L{unit.layer}-{unit.signal}-{unit.index}"


def _coloured_text(acts: Activations, unit: Unit) -> str:
    values = unit.display_values(acts)
    levels = ((values.clamp(-1, 1) + 1) * LEVELS / 2).round().int().tolist()
    spans = []
    for piece, level in zip(surface(acts.tokens, acts.level), levels):
        text = html.escape(piece)
        if piece == "\n":
            text = '<span class="nl">\u21b5</span>\n'
        spans.append(f'<span class="a{level}">{text}</span>')
    return "".join(spans)


def write_page(acts: Activations, units: list[Unit], labels: list[str], found: dict[str, list[Match]],
               path: Path, title: str, saturation_text: str = "") -> None:
    """Write the page: the feature table, a unit picker, then one coloured block per unit."""
    colours = "\n".join(f".a{k} {{ background: {_colour(k)}; }}" for k in range(LEVELS + 1))
    shown = {_block_id(u) for u in units}

    def link(unit: Unit) -> str:  # units without a block below are named, not linked
        return f'<a href="#{_block_id(unit)}">{unit.name}</a>' if _block_id(unit) in shown else unit.name

    rows = "".join(
        f"<tr><td>{html.escape(feature)}</td><td>{rank}</td><td>{link(m.unit)}</td><td>{m.r:+.3f}</td></tr>"
        for feature, matches in found.items() for rank, m in enumerate(matches, 1)
    )
    picker = "".join(
        f'<label><input type="checkbox" value="{_block_id(u)}" checked onchange="show(this.value, this.checked)">'
        f"{html.escape(u.name)}</label> "
        for u in units
    )
    blocks = "".join(
        f'<section id="{_block_id(u)}"><h3>{html.escape(label)}</h3><pre>{_coloured_text(acts, u)}</pre></section>\n'
        for u, label in zip(units, labels)
    )
    saturation = f"<h2>Gate saturation</h2><pre>{html.escape(saturation_text)}</pre>" if saturation_text else ""
    path.write_text(
        f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}{colours}</style><script>{SCRIPT}</script></head>
<body><h1>{html.escape(title)}</h1>
<p>Each {'character' if acts.level == 'char' else 'word'} is coloured by one unit's activation after reading it: <span class="a0">&nbsp;-1&nbsp;</span>
<span class="a10">&nbsp;0&nbsp;</span> <span class="a20">&nbsp;+1&nbsp;</span>
(LSTM cell states <code>c</code> as <code>tanh(c)</code>). Units are named <code>L&lt;layer&gt;.&lt;h|c&gt;[index]</code>.</p>
<h2>Interpretable units</h2>
<p>Pearson correlation of each unit with a feature of the text, best |r| first.</p>
<table><tr><th>feature</th><th>rank</th><th>unit</th><th>correlation</th></tr>{rows}</table>
{saturation}
<h2>Units</h2>
<p id="picker">{picker}<button onclick="showAll(true)">all</button> <button onclick="showAll(false)">none</button></p>
{blocks}</body></html>
""",
        encoding="utf-8",
    )
