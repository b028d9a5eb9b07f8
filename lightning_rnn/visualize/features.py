"""Simple features of a text, one value per token, to correlate hidden units with.

Every feature describes what a left-to-right reader knows *after* reading a token (the
hidden state at step t has seen tokens 0..t), so the opening quote of a string is already
"inside" and its closing quote no longer is. A word-level token counts as its word and the
space after it; ``<eos>`` counts as a line break.

Code features (Karpathy, Johnson and Fei-Fei 2015 looked for cells like these in Linux
source): ``in_string`` (inside a Python string literal, triple quotes and backslash escapes
understood, comments skipped), ``bracket_depth`` (open ``( [ {`` outside strings and
comments), ``indentation`` (leading spaces of the current line read so far) and
``position_in_line``. Prose features: ``in_quotes`` (inside double or curly quotes) and
``position_in_line``.
"""
from __future__ import annotations

import re
from typing import Literal

import torch

from lightning_rnn.data.vocabulary import EOS, Level

TextKind = Literal["code", "prose"]
FEATURES: dict[TextKind, tuple[str, ...]] = {
    "code": ("in_string", "bracket_depth", "indentation", "position_in_line"),
    "prose": ("in_quotes", "position_in_line"),
}
OPENING, CLOSING = "([{", ")]}"


def surface(tokens: list[str], level: Level) -> list[str]:
    """The text each token stands for: itself (characters), or the word and a space (words)."""
    if level == "char":
        return tokens
    return ["\n" if t == EOS else t + " " for t in tokens]


def guess_kind(text: str) -> TextKind:
    """``"code"`` when the text reads like source code (keywords, brackets, ``=``), else ``"prose"``."""
    keywords = len(re.findall(r"^\s*(def|class|import|from|return|if|for|while)\b", text, re.MULTILINE))
    symbols = sum(text.count(s) for s in "()[]{}=_")
    return "code" if keywords >= 2 or symbols > 0.03 * max(1, len(text)) else "prose"


def code_features(chars: str) -> dict[str, list[float]]:
    """Per-character code features (see the module docstring)."""
    out: dict[str, list[float]] = {name: [] for name in FEATURES["code"]}
    quote = ""  # the delimiter of the string we are in: ', ", ''' or """ ("" = not in a string)
    in_comment = escaped = False
    depth = column = indent = 0
    leading = True  # still in the line's leading spaces
    i = 0
    while i < len(chars):
        ch = chars[i]
        width = 1  # characters consumed by this step (3 for a triple quote)
        if ch == "\n":
            in_comment, escaped, column, indent, leading = False, False, 0, 0, True
            if len(quote) == 1:  # an unterminated one-line string ends with its line
                quote = ""
        else:
            column += 1
            if leading and ch in " \t":
                indent += 1
            else:
                leading = False
            if quote:
                if escaped:
                    escaped = False
                elif ch == "\\":
                    escaped = True
                elif chars.startswith(quote, i):
                    width, quote = len(quote), ""
            elif in_comment:
                pass
            elif ch == "#":
                in_comment = True
            elif ch in "'\"":
                quote = ch * 3 if chars.startswith(ch * 3, i) else ch
                width = len(quote)
            elif ch in OPENING:
                depth += 1
            elif ch in CLOSING:
                depth = max(0, depth - 1)
        for step in range(width):  # a triple quote: its first two characters open (close) too
            inside = bool(quote) if step == width - 1 else (bool(quote) or width > 1)
            out["in_string"].append(float(inside))
            out["bracket_depth"].append(float(depth))
            out["indentation"].append(float(indent))
            out["position_in_line"].append(float(column + step))
        column += width - 1
        i += width
    return out


def prose_features(chars: str) -> dict[str, list[float]]:
    """Per-character prose features (see the module docstring)."""
    inside, column = False, 0
    out: dict[str, list[float]] = {name: [] for name in FEATURES["prose"]}
    for ch in chars:
        column = 0 if ch == "\n" else column + 1
        if ch == '"':
            inside = not inside
        elif ch in "\u201c\u201d":  # curly quotes say which side they are on
            inside = ch == "\u201c"
        out["in_quotes"].append(float(inside))
        out["position_in_line"].append(float(column))
    return out


def token_features(tokens: list[str], level: Level, kind: TextKind) -> dict[str, torch.Tensor]:
    """``{feature: tensor (T,)}``: each token's feature value after reading its last character."""
    pieces = surface(tokens, level)
    per_char = (code_features if kind == "code" else prose_features)("".join(pieces))
    ends = torch.tensor([len(p) for p in pieces], dtype=torch.long).cumsum(0) - 1
    return {name: torch.tensor(values)[ends] for name, values in per_char.items()}
