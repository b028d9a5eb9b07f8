"""LightningDataModules for language modelling on plain text.

``TextDataModule`` reads train/valid/test files; the presets below fill in the
file names of the public corpora or build the splits in memory. All of them
hand the model in-order BPTT windows (see ``batchify.StreamWindows``) and carry
the vocabulary built on the training split.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from lightning_rnn.data.batchify import StreamWindows
from lightning_rnn.data.resumable import ResumableData, ResumableLoader
from lightning_rnn.data.vocabulary import Level, Vocabulary

DATA_ENV_VAR = "LIGHTNING_RNN_DATA"


def default_data_root() -> Path:
    """``$LIGHTNING_RNN_DATA``, else ``../shared/data`` next to the working directory or the repository."""
    if os.environ.get(DATA_ENV_VAR):
        return Path(os.environ[DATA_ENV_VAR])
    repo_root = Path(__file__).resolve().parents[2]
    candidates = [Path.cwd() / ".." / "shared" / "data", repo_root / ".." / "shared" / "data"]
    return next((c.resolve() for c in candidates if c.is_dir()), candidates[0].resolve())


def resolve_data_path(path: str | os.PathLike) -> Path:
    """``path`` itself if it exists or is absolute, else ``path`` under the data root
    (``$LIGHTNING_RNN_DATA``, default ``../shared/data``)."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    return default_data_root() / p


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


class TextDataModule(ResumableData, LightningDataModule):
    """Train/valid/test text files for a word- or character-level language model.

    Args:
        train_file, valid_file, test_file: plain UTF-8 text files.
        level: ``"word"`` (whitespace tokens, ``<eos>`` at each line end, ``<unk>``
            kept as a token) or ``"char"``.
        batch_size: parallel streams per device for training (B).
        bptt: window length in tokens (T).
        eval_batch_size: parallel streams per device for validation and test.
        where_to_get: a hint shown when a file is missing.
        variable_bptt: training windows of random length around ``bptt`` (AWD-LSTM; see
            ``batchify.StreamWindows``); the language model scales each step's lr by length / bptt.

    Batches are ``(inputs, targets)`` of shape ``[B, T]`` (token ids, int64).
    Under DDP with N ranks the split is cut into ``N * B`` streams and each rank
    reads its own contiguous ``B`` of them; no distributed sampler is involved.
    A run resumed from a mid-epoch checkpoint goes on from the next window (``ResumableData``).
    """

    def __init__(
        self,
        train_file: str | None = None,
        valid_file: str | None = None,
        test_file: str | None = None,
        level: Level = "word",
        batch_size: int = 20,
        bptt: int = 35,
        eval_batch_size: int = 10,
        where_to_get: str = "",
        variable_bptt: bool = False,
    ) -> None:
        super().__init__()
        if level not in ("word", "char"):
            raise ValueError(f"level must be 'word' or 'char', got {level!r}")
        self.files = {"train": train_file, "valid": valid_file, "test": test_file}
        self.level: Level = level
        self.batch_size = _positive_int("batch_size", batch_size)
        self.bptt = _positive_int("bptt", bptt)
        self.eval_batch_size = _positive_int("eval_batch_size", eval_batch_size)
        self.where_to_get = where_to_get
        self.variable_bptt = bool(variable_bptt)
        self._texts: dict[str, str] | None = None
        self._vocab: Vocabulary | None = None
        self._tokens: dict[str, torch.Tensor] = {}

    # -- text and vocabulary -------------------------------------------------

    def read_splits(self) -> dict[str, str]:
        """The text of each split; presets that build splits in memory override this."""
        missing = [f"{split}: {path}" for split, path in self.files.items() if not path or not Path(path).is_file()]
        if missing:
            hint = f"\nWhere to get them: {self.where_to_get}" if self.where_to_get else ""
            raise FileNotFoundError(
                f"{type(self).__name__}: missing data file(s):\n  " + "\n  ".join(missing)
                + f"\n(data root: set data_dir or ${DATA_ENV_VAR}){hint}"
            )
        return {split: Path(path).read_text(encoding="utf-8") for split, path in self.files.items()}

    @property
    def texts(self) -> dict[str, str]:
        if self._texts is None:
            self._texts = self.read_splits()
        return self._texts

    @property
    def vocab(self) -> Vocabulary:
        """Vocabulary of the training split (built on first access)."""
        if self._vocab is None:
            self._vocab = Vocabulary.build(self.texts["train"], self.level)
        return self._vocab

    @property
    def vocab_size(self) -> int:
        """Number of tokens; linked to ``model.init_args.vocab_size`` by the CLI."""
        return len(self.vocab)

    def tokens(self, split: str) -> torch.Tensor:
        """The whole split as a 1-D int64 tensor of token ids."""
        if split not in self._tokens:
            self._tokens[split] = torch.tensor(self.vocab.encode(self.texts[split]), dtype=torch.long)
        return self._tokens[split]

    # -- Lightning hooks -------------------------------------------------------

    def _rank_and_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, split: str, batch_size: int) -> DataLoader:
        rank, world_size = self._rank_and_world()
        variable = split == "train" and self.variable_bptt
        windows = StreamWindows(self.tokens(split), batch_size, self.bptt, rank, world_size, variable_bptt=variable,
                                seed=self._shuffle_seed() if variable else 0, epoch=self._current_epoch)
        if split == "train":
            windows.skip_once(self.resume_batches())
        # batch_size=None: the dataset already yields whole [B, T] batches, in order
        loader_class = ResumableLoader if split == "train" else DataLoader
        return loader_class(windows, batch_size=None, generator=torch.Generator())

    def _current_epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "vocabulary": self.vocab.to_dict()}
