"""Reading (source, target) text pairs and turning them into padded id tensors.

Two file formats:

- the fixed-width format of the DLFS2 book (``dlfs2-seq2seq/addition.txt``): the question is the
  text before the first ``_``, the answer the text after it, both right-padded with spaces;
- a generic tab-separated file, one ``source<TAB>target`` pair per line.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import Dataset

from lightning_rnn.data.pair_vocab import BOS, EOS, PAD, PairVocab

Pair = tuple[str, str]


def read_fixed_width(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Raw (still space-padded) questions and answers of a DLFS2 file, in file order.

    Answers keep their leading ``_`` so the book's first-occurrence vocabulary can be rebuilt.
    """
    questions, answers = [], []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip("\n")
            idx = line.find("_")
            if idx < 0:
                raise ValueError(f"{path}:{lineno}: expected 'question_answer', no '_' in {line!r}")
            questions.append(line[:idx])
            answers.append(line[idx:])
    return questions, answers


def strip_fixed_width(question: str, answer: str) -> Pair:
    """Drop the padding spaces and the ``_`` start symbol: ``("16+75  ", "_91  ") -> ("16+75", "91")``."""
    return question.rstrip(" "), answer[1:].rstrip(" ")


def book_split(n: int, seed: int = 1984, test_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices exactly as the book's ``dataset/sequence.py`` draws them.

    The book seeds NumPy's legacy global generator, shuffles ``arange(n)`` and keeps the last
    10% for testing; a private ``RandomState`` with the same seed yields the same permutation.
    """
    indices = np.arange(n)
    np.random.RandomState(seed).shuffle(indices)
    split_at = n - int(n * test_fraction)
    return indices[:split_at], indices[split_at:]


def read_tsv_pairs(path: str | os.PathLike) -> list[Pair]:
    """Pairs of a ``source<TAB>target`` file; blank lines are skipped.

    Raises:
        ValueError: naming ``path`` and the line number of a line without exactly one tab or
            with an empty side.
    """
    pairs = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
                raise ValueError(
                    f"{path}:{lineno}: expected 'source<TAB>target' with both sides non-empty, "
                    f"got {line!r}"
                )
            pairs.append((parts[0].strip(), parts[1].strip()))
    return pairs


class PairDataset(Dataset):
    """Encoded pairs as two right-padded id tensors.

    Item ``i`` is ``(source, target)``: ``source`` (S,) token ids, ``target`` (T,) as
    ``<bos> tokens <eos>``, both padded with ``<pad>`` to the longest in the data set
    (:func:`collate_pairs` trims a batch back to its own longest).
    """

    def __init__(self, pairs: list[Pair], vocab: PairVocab, unknown: str = "error") -> None:
        if not pairs:
            raise ValueError("pairs must not be empty")
        src = []
        tgt = []
        for i, (s, t) in enumerate(pairs):
            s_ids = vocab.encode(s, unknown)
            if not s_ids:
                raise ValueError(f"pair {i}: empty source")
            src.append(s_ids)
            tgt.append([BOS, *vocab.encode(t, unknown), EOS])
        self.source = _pad(src)
        self.target = _pad(tgt)

    def __len__(self) -> int:
        return self.source.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.source[i], self.target[i]


def collate_pairs(items: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack items into ``(source (B, S), target (B, T))`` trimmed to the batch's longest."""
    src = torch.stack([s for s, _ in items])
    tgt = torch.stack([t for _, t in items])
    return _trim(src), _trim(tgt)


def _pad(rows: list[list[int]]) -> torch.Tensor:
    out = torch.full((len(rows), max(len(r) for r in rows)), PAD, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def _trim(x: torch.Tensor) -> torch.Tensor:
    width = int((x != PAD).sum(1).max())
    return x[:, :width]
