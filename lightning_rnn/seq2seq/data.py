"""LightningDataModules of (source, target) pairs for the seq2seq model.

All three expose what the ``lightning-rnn`` CLI and :class:`~lightning_rnn.seq2seq.Seq2Seq` need
right after construction: ``vocab`` (one :class:`PairVocab` for both sides), ``vocab_size`` and
``max_target_len``. Batches are ``(source (B, S), target (B, T))`` id tensors, see
:class:`~lightning_rnn.seq2seq.pairs.PairDataset`.

- :class:`CharPairDataModule`: the DLFS2 book files, with the book's 45,000 / 5,000 split;
- :class:`GeneratedPairDataModule`: addition or dates generated on the fly (no files);
- :class:`PairsFileDataModule`: your own tab-separated pairs, character or word tokens.
"""

from __future__ import annotations

import random
from typing import Literal

import lightning as L
import torch
from torch.utils.data import DataLoader

from lightning_rnn.data.generators import ALPHABETS, generate_pairs
from lightning_rnn.data.pair_vocab import SPECIALS, PairVocab
from lightning_rnn.data.resumable import ResumableData
from lightning_rnn.data.text import resolve_data_path
from lightning_rnn.seq2seq.pairs import (
    Pair,
    PairDataset,
    book_split,
    collate_pairs,
    read_fixed_width,
    read_tsv_pairs,
    strip_fixed_width,
)


class _PairDataModule(ResumableData, L.LightningDataModule):
    """Shared loaders; subclasses implement :meth:`_load` returning splits and vocabulary.

    Training batches are shuffled anew each epoch from the run's seed; a run resumed from a
    mid-epoch checkpoint goes on with the same order from the next batch (``ResumableData``)."""

    unknown = "error"  # what PairDataset does with a token outside the vocabulary

    def __init__(self, batch_size: int, num_workers: int) -> None:
        super().__init__()
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be a non-negative integer, got {num_workers!r}")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self._splits: dict[str, list[Pair]] | None = None
        self._vocab: PairVocab | None = None
        self._datasets: dict[str, PairDataset] = {}

    def _load(self) -> tuple[dict[str, list[Pair]], PairVocab]:
        raise NotImplementedError

    def _ensure_loaded(self) -> None:
        if self._splits is None:
            self._splits, self._vocab = self._load()

    @property
    def splits(self) -> dict[str, list[Pair]]:
        """Text pairs per split: ``{"train": [...], "val": [...], "test": [...]}``."""
        self._ensure_loaded()
        return self._splits

    @property
    def vocab(self) -> PairVocab:
        self._ensure_loaded()
        return self._vocab

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def max_target_len(self) -> int:
        """Longest target over all splits, in tokens (without ``<bos>``/``<eos>``)."""
        return max(
            len(PairVocab.split(t, self.vocab.word_level)) for p in self.splits.values() for _, t in p
        )

    def setup(self, stage: str | None = None) -> None:
        for name, pairs in self.splits.items():
            if name not in self._datasets:
                self._datasets[name] = PairDataset(pairs, self.vocab, unknown=self.unknown)

    def _loader(self, split: str) -> DataLoader:
        """An evaluation loader, in order; its own generator keeps it off the global random state."""
        return DataLoader(
            self._datasets[split],
            batch_size=self.batch_size,
            collate_fn=collate_pairs,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator(),
        )

    def train_dataloader(self) -> DataLoader:
        return self.train_loader(
            self._datasets["train"], self.batch_size, shuffle=True, collate_fn=collate_pairs,
            num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")


class CharPairDataModule(_PairDataModule):
    """Character pairs from a DLFS2 fixed-width file, split as the book does.

    The book shuffles with ``numpy.random.seed(1984)`` and keeps the last 10% (5,000 of 50,000)
    for testing; validation is the last ``val_size`` examples of the book's training part, so
    training uses ``45,000 - val_size``. The vocabulary is the book's (every character of the
    file in first-occurrence order, question before answer) after the 4 special tokens.

    Args:
        path: the file; relative paths are looked up under ``$LIGHTNING_RNN_DATA``
            (default ``<repo>/../shared/data``).
        val_size: examples carved from the end of the training part for validation.
        seed: the book's shuffle seed.
    """

    def __init__(
        self,
        path: str = "dlfs2-seq2seq/addition.txt",
        val_size: int = 1000,
        seed: int = 1984,
        batch_size: int = 128,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers)
        self.path = path
        self.val_size = val_size
        self.seed = seed

    def _load(self) -> tuple[dict[str, list[Pair]], PairVocab]:
        path = resolve_data_path(self.path)
        if not path.exists():
            raise FileNotFoundError(
                f"{path} not found; set LIGHTNING_RNN_DATA to the folder holding {self.path!r}"
            )
        questions, answers = read_fixed_width(path)
        vocab = PairVocab.build(q + a for q, a in zip(questions, answers))
        pairs = [strip_fixed_width(q, a) for q, a in zip(questions, answers)]
        train_idx, test_idx = book_split(len(pairs), self.seed)
        if not 0 < self.val_size < len(train_idx):
            raise ValueError(f"val_size must be in 1..{len(train_idx) - 1}, got {self.val_size}")
        train = [pairs[i] for i in train_idx]
        splits = {
            "train": train[: -self.val_size],
            "val": train[-self.val_size :],
            "test": [pairs[i] for i in test_idx],
        }
        return splits, vocab


class GeneratedPairDataModule(_PairDataModule):
    """Addition or date-normalisation pairs generated from a seed (distinct across splits).

    Args:
        task: ``"addition"`` (``"57+5" -> "62"``) or ``"date"`` (any format -> ``YYYY-MM-DD``).
        max_digits: operand digits for addition.
    """

    def __init__(
        self,
        task: Literal["addition", "date"] = "addition",
        train_size: int = 45000,
        val_size: int = 1000,
        test_size: int = 5000,
        max_digits: int = 3,
        seed: int = 0,
        batch_size: int = 128,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers)
        if task not in ALPHABETS:
            raise ValueError(f"task must be one of {sorted(ALPHABETS)}, got {task!r}")
        self.task = task
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.max_digits = max_digits
        self.seed = seed

    def _load(self) -> tuple[dict[str, list[Pair]], PairVocab]:
        pairs = generate_pairs(self.task, sum(self.sizes.values()), self.seed, self.max_digits)
        splits, start = {}, 0
        for name, size in self.sizes.items():
            splits[name] = pairs[start : start + size]
            start += size
        return splits, PairVocab([*SPECIALS, *ALPHABETS[self.task]])


class PairsFileDataModule(_PairDataModule):
    """Your own pairs from tab-separated files (``source<TAB>target`` per line).

    The vocabulary is built from the training file; unknown tokens in validation/test become
    ``<unk>``. Without ``val_file``, ``val_fraction`` of the shuffled training pairs is held
    out; without ``test_file`` the validation pairs are reused for testing.

    Args:
        tokens: ``"char"`` (characters) or ``"word"`` (whitespace-separated words).
    """

    unknown = "unk"  # held-out files may use tokens the training file never showed

    def __init__(
        self,
        train_file: str,
        val_file: str | None = None,
        test_file: str | None = None,
        tokens: Literal["char", "word"] = "char",
        val_fraction: float = 0.1,
        seed: int = 0,
        batch_size: int = 64,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers)
        if tokens not in ("char", "word"):
            raise ValueError(f"tokens must be 'char' or 'word', got {tokens!r}")
        self.files = {"train": train_file, "val": val_file, "test": test_file}
        self.word_level = tokens == "word"
        self.val_fraction = val_fraction
        self.seed = seed

    def _load(self) -> tuple[dict[str, list[Pair]], PairVocab]:
        train = read_tsv_pairs(resolve_data_path(self.files["train"]))
        if self.files["val"]:
            val = read_tsv_pairs(resolve_data_path(self.files["val"]))
        else:
            if not 0 < self.val_fraction < 1:
                raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
            train = train[:]
            random.Random(self.seed).shuffle(train)
            n_val = max(1, int(len(train) * self.val_fraction))
            train, val = train[n_val:], train[:n_val]
        test = read_tsv_pairs(resolve_data_path(self.files["test"])) if self.files["test"] else val
        vocab = PairVocab.build((s + "\n" + t for s, t in train), self.word_level)
        return {"train": train, "val": val, "test": test}, vocab
