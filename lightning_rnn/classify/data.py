"""Labelled sentences from text files: parsing, the vocabulary, padded batches of similar lengths.

Two line formats (``format``; ``"auto"`` picks ``tsv`` for a ``.tsv`` file, else ``label_first``):

- ``label_first``: ``LABEL TEXT``, the label, one space, then the tokens (the SST-2 files
  ``stsa.binary.{train,dev,test}`` of Kim 2014: ``1 a stirring , funny ... films``);
- ``tsv``: ``TEXT<TAB>LABEL``, one tab (the text may hold spaces, not tabs).

A label is a class index ``0..K-1`` or one of ``label_names`` (K = ``len(label_names)``). Text is
split at whitespace (lower-cased first with ``lowercase``). A blank line holds no example and is
passed over; any other line that does not parse (no label, a label that is neither an index nor a
name, no text) stops the reading with ``file:line`` in the message: no example is dropped silently.

The vocabulary (:class:`~lightning_rnn.data.pair_vocab.PairVocab`, word level: id 0 is ``<pad>``,
3 is ``<unk>``) is built from the training file only, keeping words seen ``min_count`` times or
more; every other word of any split is ``<unk>``. The model keeps the vocabulary, the label names
and ``lowercase`` in its checkpoints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, NamedTuple

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lightning_rnn.data.bucketing import BucketBatchSampler, pad_sequences
from lightning_rnn.data.pair_vocab import PAD, PairVocab
from lightning_rnn.data.resumable import EpochSampler, ResumableData
from lightning_rnn.data.text import resolve_data_path

Format = Literal["auto", "label_first", "tsv"]
SPLITS = ("train", "val", "test")


class TextBatch(NamedTuple):
    """A batch of B sentences: ``tokens [B, T]`` ids right-padded with ``<pad>`` (0) to the longest,
    ``lengths [B]`` tokens per sentence (>= 1), ``labels [B]`` class indices (int64)."""

    tokens: Tensor
    lengths: Tensor
    labels: Tensor


class Example(NamedTuple):
    text: str
    label: int


def words(text: str, lowercase: bool = False) -> list[str]:
    """The tokens of ``text``: split at whitespace, lower-cased first if asked."""
    return (text.lower() if lowercase else text).split()


def file_format(path: str | Path, format: Format = "auto") -> Literal["label_first", "tsv"]:
    """``format``, or for ``"auto"``: ``tsv`` if the file name ends in ``.tsv``, else ``label_first``."""
    if format == "auto":
        return "tsv" if str(path).lower().endswith(".tsv") else "label_first"
    if format not in ("label_first", "tsv"):
        raise ValueError(f"format must be 'auto', 'label_first' or 'tsv', got {format!r}")
    return format


def parse_label(field: str, label_names: list[str]) -> int | None:
    """The class index of ``field``: an integer ``0..K-1`` or one of ``label_names``; None otherwise."""
    if field in label_names:
        return label_names.index(field)
    if field.isdecimal() and int(field) < len(label_names):
        return int(field)
    return None


def read_examples(path: str | Path, label_names: list[str], format: Format = "auto") -> list[Example]:
    """The examples of a ``label_first`` or ``tsv`` file, in file order.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming ``path:line`` for a line
    without a label or text, or with a label that is neither ``0..K-1`` nor one of ``label_names``."""
    path = Path(path)
    kind = file_format(path, format)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such data file (relative paths are looked up under the data root, "
                                "$LIGHTNING_RNN_DATA or ../shared/data)")
    known = f"a class index 0..{len(label_names) - 1} or one of {label_names}"
    examples = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            if kind == "tsv":
                fields = line.split("\t")
                if len(fields) != 2:
                    raise ValueError(f"{path}:{number}: expected 'text<TAB>label' (one tab), "
                                     f"got {len(fields) - 1} tabs in {line[:80]!r}")
                text, label_field = fields[0].strip(), fields[1].strip()
            else:
                label_field, _, text = line.strip().partition(" ")
                text = text.strip()
            if not label_field:
                raise ValueError(f"{path}:{number}: no label, expected {known}")
            label = parse_label(label_field, label_names)
            if label is None:
                raise ValueError(f"{path}:{number}: label {label_field!r} is not {known}")
            if not text:
                raise ValueError(f"{path}:{number}: label {label_field!r} but no text")
            examples.append(Example(text, label))
    if not examples:
        raise ValueError(f"{path}: holds no examples")
    return examples


class EncodedSentences(Dataset):
    """Item ``i``: ``(ids [L_i] int64, label)`` of example ``i``, unknown words as ``<unk>``."""

    def __init__(self, examples: list[Example], vocab: PairVocab, lowercase: bool = False) -> None:
        self.ids = [torch.tensor(vocab.encode(" ".join(words(e.text, lowercase)), unknown="unk"), dtype=torch.long)
                    for e in examples]
        self.labels = [e.label for e in examples]
        self.lengths = [len(ids) for ids in self.ids]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.ids[index], self.labels[index]


def collate_sentences(items: list[tuple[Tensor, int]]) -> TextBatch:
    """Items of :class:`EncodedSentences` -> a :class:`TextBatch` padded to its longest sentence."""
    tokens, lengths = pad_sequences([ids for ids, _ in items], padding_value=PAD)
    return TextBatch(tokens, lengths, torch.tensor([label for _, label in items], dtype=torch.long))


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


class TextClassificationData(ResumableData, L.LightningDataModule):
    """Sentences with class labels from train/validation/test files (see the module docstring).

    Args:
        train_file, val_file, test_file: the splits; a relative path is looked up under
            ``$LIGHTNING_RNN_DATA`` (default ``../shared/data``) unless it exists as given.
            Without ``test_file``, ``test`` is an error.
        format: ``"auto"`` (by extension: ``.tsv`` -> ``tsv``, else ``label_first``), ``"label_first"``
            or ``"tsv"``; one format for all three files.
        label_names: the class names, index order (SST-2: 0 = negative, 1 = positive). Names are
            single words; the output of ``lightning-rnn classify``.
        min_count: the vocabulary keeps training words seen at least this often.
        lowercase: lower-case every text before splitting it (also at ``classify`` time).
        batch_size: training sentences per batch; eval_batch_size: validation/test.
        bucket_batches: batches per length bucket in training (see
            :class:`~lightning_rnn.data.bucketing.BucketBatchSampler`); 1 = no grouping by length.

    ``vocab_size`` and ``num_classes`` are known at construction (the CLI passes both to the model;
    ``vocab_size`` reads the training file). Training batches are shuffled from the run's seed and a
    run resumed mid-epoch goes on with the next batch of the same order (``ResumableData``);
    validation and test batches are sorted by length (the fewest padded steps), same order each time.
    """

    def __init__(
        self,
        train_file: str,
        val_file: str,
        test_file: str | None = None,
        format: Format = "auto",
        label_names: list[str] | None = None,
        min_count: int = 1,
        lowercase: bool = False,
        batch_size: int = 32,
        eval_batch_size: int = 256,
        bucket_batches: int = 50,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.label_names = list(label_names) if label_names is not None else ["negative", "positive"]
        if len(self.label_names) < 2:
            raise ValueError(f"label_names must name at least 2 classes, got {self.label_names!r}")
        for name in self.label_names:
            if not isinstance(name, str) or not name or len(name.split()) != 1 or name != name.strip():
                raise ValueError(f"label_names must be single words without spaces, got {name!r}")
        if len(set(self.label_names)) != len(self.label_names):
            raise ValueError(f"label_names must be distinct, got {self.label_names!r}")
        self.files = {"train": train_file, "val": val_file, "test": test_file}
        for split in ("train", "val"):
            if not self.files[split]:
                raise ValueError(f"{split}_file must be a file name, got {self.files[split]!r}")
        self.formats = {split: file_format(path, format) for split, path in self.files.items() if path}
        self.min_count = _positive_int("min_count", min_count)
        self.batch_size = _positive_int("batch_size", batch_size)
        self.eval_batch_size = _positive_int("eval_batch_size", eval_batch_size)
        self.bucket_batches = _positive_int("bucket_batches", bucket_batches)
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be a non-negative integer, got {num_workers!r}")
        self.lowercase, self.num_workers = bool(lowercase), num_workers
        self._examples: dict[str, list[Example]] = {}
        self._vocab: PairVocab | None = None
        self._datasets: dict[str, EncodedSentences] = {}

    # -- text, labels, vocabulary -------------------------------------------------------------

    def examples(self, split: str) -> list[Example]:
        """The examples of ``split`` (``"train"``, ``"val"``, ``"test"``), read on first access."""
        if split not in self._examples:
            if not self.files.get(split):
                raise ValueError(f"{split}_file is not set: this DataModule has no {split} split")
            path = resolve_data_path(self.files[split])
            self._examples[split] = read_examples(path, self.label_names, self.formats[split])
        return self._examples[split]

    @property
    def vocab(self) -> PairVocab:
        """Words of the training split seen at least ``min_count`` times (built on first access)."""
        if self._vocab is None:
            texts = (" ".join(words(e.text, self.lowercase)) for e in self.examples("train"))
            self._vocab = PairVocab.build(texts, word_level=True, min_count=self.min_count)
        return self._vocab

    @property
    def vocab_size(self) -> int:
        """Tokens in the vocabulary, specials included; linked to ``model.init_args.vocab_size`` by the CLI."""
        return len(self.vocab)

    @property
    def num_classes(self) -> int:
        """``len(label_names)``; linked to ``model.init_args.num_classes`` by the CLI."""
        return len(self.label_names)

    def dataset(self, split: str) -> EncodedSentences:
        if split not in self._datasets:
            self._datasets[split] = EncodedSentences(self.examples(split), self.vocab, self.lowercase)
        return self._datasets[split]

    # -- Lightning hooks -----------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        needed = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage or "", ())
        for split in needed:
            self.dataset(split)  # read and encode now: a bad file fails before the first step

    def train_dataloader(self) -> DataLoader:
        lengths = self.dataset("train").lengths

        def by_length(order: EpochSampler) -> BucketBatchSampler:
            return BucketBatchSampler(order, lengths, self.batch_size, self.bucket_batches, shuffle_batches=True)

        return self.train_batch_loader(self.dataset("train"), by_length, shuffle=True, collate_fn=collate_sentences,
                                       num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def _eval_loader(self, split: str) -> DataLoader:
        data = self.dataset(split)
        batches = BucketBatchSampler(EpochSampler(len(data), shuffle=False), data.lengths, self.eval_batch_size,
                                     bucket_batches=None, shuffle_batches=False)
        return DataLoader(data, batch_sampler=batches, collate_fn=collate_sentences, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("test")
