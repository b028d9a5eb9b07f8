"""The README's smallest example (the character RNN that learns "hello") runs as written."""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_block(marker: str) -> str:
    """The ```python block right after `<!-- marker -->` in the README."""
    match = re.search(rf"<!-- {marker} -->\n```python\n(.*?)```", README.read_text(), re.S)
    assert match, f"README.md has no python block after <!-- {marker} -->"
    return match.group(1)


def test_hello_example_learns_ello(one_torch_thread):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(readme_block("hello-example"), "README.md:hello-example", "exec"), {})
    assert printed.getvalue().strip() == "ello"
