"""A PNG bar chart of speed-ups vs torch.nn.LSTM, drawn by hand (no matplotlib on the GPU box).

Layout: one group of bars per (point, dtype, mode), in result order; one bar per provider, in
the colours of `COLORS`; log-scale y axis with a light grey line per decade and a black line at
1x (torch.nn.LSTM). Bars grow up from 1x when faster, down when slower. There is no text in
the image (no font): results.json ("plot") repeats the colour key and the group order.
"""
from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

RGB = tuple[int, int, int]
COLORS: dict[str, RGB] = {
    "triton": (214, 39, 40),  # red: ours (Triton)
    "fallback": (255, 127, 14),  # orange: ours (PyTorch fallback)
    "naive": (31, 119, 180),  # blue: naive nn.LSTMCell loop
    "torch": (44, 160, 44),  # green: torch.nn.LSTM (always 1x, so not drawn)
}
COLOR_NAMES = {"triton": "red", "fallback": "orange", "naive": "blue", "torch": "green"}
BAR_W, GROUP_GAP, MARGIN, HEIGHT = 8, 10, 20, 320


class Canvas:
    """An RGB raster with just enough drawing for bars and lines."""

    def __init__(self, width: int, height: int, bg: RGB = (255, 255, 255)) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(bytes(bg) * (width * height))

    def rect(self, x0: int, y0: int, x1: int, y1: int, color: RGB) -> None:
        """Fill [x0, x1) x [y0, y1), clipped to the canvas."""
        x0, x1 = max(0, min(x0, x1)), min(self.width, max(x0, x1))
        y0, y1 = max(0, min(y0, y1)), min(self.height, max(y0, y1))
        row = bytes(color) * (x1 - x0)
        for y in range(y0, y1):
            start = (y * self.width + x0) * 3
            self.pixels[start:start + len(row)] = row

    def png(self) -> bytes:
        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

        stride = self.width * 3
        raw = b"".join(b"\x00" + bytes(self.pixels[y * stride:(y + 1) * stride]) for y in range(self.height))
        ihdr = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)  # 8-bit RGB
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def plot_groups(rows: list[dict]) -> tuple[list[str], list[tuple[str, list[dict]]]]:
    """(providers drawn, [(group name, its rows)]) for the rows that have a speed-up vs torch."""
    providers = [p for p in COLORS if p != "torch" and any(r["provider"] == p for r in rows)]
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if r["provider"] in providers and r.get("speedup_vs_torch"):
            name = f"{r.get('cell', 'lstm')} B{r['batch']} H{r['hidden']} T{r['seq_len']} L{r['layers']} {r['dtype']} {r['mode']}"
            groups.setdefault(name, []).append(r)
    return providers, list(groups.items())


def draw_speedups(rows: list[dict]) -> Canvas:
    providers, groups = plot_groups(rows)
    values = [r["speedup_vs_torch"] for _, g in groups for r in g] or [1.0]
    lo = min(0, math.floor(math.log10(min(values))))  # decades shown, always including 1x
    hi = max(1, math.ceil(math.log10(max(values))))
    group_w = max(1, len(providers)) * BAR_W + GROUP_GAP
    canvas = Canvas(2 * MARGIN + max(1, len(groups)) * group_w, HEIGHT)
    plot_h = HEIGHT - 2 * MARGIN

    def y_of(value: float) -> int:
        return MARGIN + round((hi - math.log10(value)) / (hi - lo) * plot_h)

    for decade in range(lo, hi + 1):
        canvas.rect(MARGIN, y_of(10.0 ** decade), canvas.width - MARGIN, y_of(10.0 ** decade) + 1, (210, 210, 210))
    for gi, (_, group) in enumerate(groups):
        for r in group:
            x = MARGIN + gi * group_w + GROUP_GAP // 2 + providers.index(r["provider"]) * BAR_W
            canvas.rect(x, y_of(1.0), x + BAR_W - 1, y_of(r["speedup_vs_torch"]), COLORS[r["provider"]])
    canvas.rect(MARGIN, y_of(1.0), canvas.width - MARGIN, y_of(1.0) + 1, (0, 0, 0))  # 1x on top
    canvas.rect(MARGIN - 1, MARGIN, MARGIN, HEIGHT - MARGIN, (0, 0, 0))  # y axis
    return canvas


def write_plot(path: Path, rows: list[dict]) -> dict:
    """Write the PNG; returns the key that results.json carries for it."""
    path.write_bytes(draw_speedups(rows).png())
    providers, groups = plot_groups(rows)
    return {
        "file": path.name,
        "what": "speed-up vs torch.nn.LSTM (log scale; grey line per decade, black line = 1x; up = faster)",
        "colors": {p: COLOR_NAMES[p] for p in providers},
        "groups_left_to_right": [name for name, _ in groups],
    }
