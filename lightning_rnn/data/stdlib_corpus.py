"""The embedded default corpus: Python source code from the running interpreter.

Every Python installation ships its standard library as ``.py`` files, so a
character-level corpus built from them needs no download and works offline on
any fresh machine. The file list is fixed and sorted, and the split is a fixed
90/5/5 cut at line boundaries, so the corpus is deterministic for a given Python
version (small differences between Python versions are expected and harmless).
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

# Modules present (as ``name.py`` or ``name/__init__.py``) in Python 3.10-3.14,
# chosen for ordinary, readable pure-Python code; about 1.1 MB in total.
STDLIB_MODULES: tuple[str, ...] = tuple(
    sorted(
        [
            "abc", "argparse", "ast", "bisect", "calendar", "collections", "configparser",
            "contextlib", "copy", "csv", "dataclasses", "difflib", "enum", "fnmatch",
            "fractions", "functools", "gettext", "glob", "graphlib", "heapq", "json/__init__",
            "json/decoder", "json/encoder", "logging", "numbers", "operator", "pprint", "queue",
            "random", "reprlib", "sched", "secrets", "shlex", "shutil", "statistics", "string",
            "tempfile", "textwrap", "tokenize", "weakref",
        ]
    )
)


def stdlib_source_files(stdlib_dir: str | Path | None = None) -> list[Path]:
    """The existing source files of ``STDLIB_MODULES``, in that (sorted) order."""
    root = Path(stdlib_dir or sysconfig.get_paths()["stdlib"])
    files = []
    for module in STDLIB_MODULES:
        for candidate in (root / f"{module}.py", root / module / "__init__.py"):
            if candidate.is_file():
                files.append(candidate)
                break
    if len(files) < len(STDLIB_MODULES) // 2:
        raise FileNotFoundError(
            f"found only {len(files)} of {len(STDLIB_MODULES)} standard-library source files under {root}; "
            "this Python installation seems to ship without its .py sources"
        )
    return files


def split_at_lines(text: str, fractions: tuple[float, float] = (0.90, 0.95)) -> tuple[str, str, str]:
    """Cut ``text`` into three parts at the first line breaks after the given fractions of its length."""
    cuts = []
    for fraction in fractions:
        position = text.find("\n", int(len(text) * fraction))
        cuts.append(len(text) if position < 0 else position + 1)
    return text[: cuts[0]], text[cuts[0] : cuts[1]], text[cuts[1] :]


def stdlib_corpus(stdlib_dir: str | Path | None = None) -> tuple[str, str, str]:
    """(train, valid, test) text: the module sources concatenated, split 90/5/5."""
    text = "".join(path.read_text(encoding="utf-8", errors="replace") for path in stdlib_source_files(stdlib_dir))
    return split_at_lines(text)
