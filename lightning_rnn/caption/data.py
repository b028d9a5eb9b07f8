"""Captioned images: reading image files, batches, and two DataModules.

- :class:`ShapesCaptions`: coloured shapes generated from a seed (no files; see
  :mod:`lightning_rnn.caption.shapes`), with held-out object pairs in validation and test;
- :class:`CaptionFolder`: a real data set laid out as an image folder plus a Karpathy-style
  split JSON (Flickr8k/Flickr30k/COCO).

Both expose ``vocab`` (a word-level :class:`PairVocab`), ``vocab_size``, ``max_caption_len``
(words) and ``image_size`` at construction. Training yields one example per (image, caption),
shuffled (``ResumableData``: a resumed run goes on with the same order); validation and test
yield one example per image with all its reference captions. Batches are :class:`CaptionBatch`.
Images are float ``[3, S, S]`` in [0, 1].
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lightning_rnn.caption import shapes
from lightning_rnn.data.pair_vocab import BOS, EOS, PAD, SPECIALS, PairVocab
from lightning_rnn.data.resumable import ResumableData
from lightning_rnn.data.text import resolve_data_path

SPLITS = ("train", "val", "test")


class ImageError(ValueError):
    """An image file that cannot be used; the message is one line and names the file."""


def _pil_image():
    try:
        from PIL import Image
    except ModuleNotFoundError:
        raise ModuleNotFoundError("reading image files needs Pillow: pip install pillow "
                                  "(it also comes with pip install 'lightning-rnn[plot]')") from None
    return Image


def read_image(path: str | Path, image_size: int, where: str = "") -> Tensor:
    """The image at ``path`` as RGB, resized to ``image_size`` x ``image_size``: float ``[3, S, S]``
    in [0, 1]. Raises :class:`ImageError` naming the file (and ``where``, e.g. the JSON entry)."""
    Image = _pil_image()
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if img.size != (image_size, image_size):
                img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
            data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    except (OSError, SyntaxError, ValueError) as err:  # PIL reports bad files with all three
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ImageError(f"{path}{where}: cannot read the image ({detail})") from None
    return data.view(image_size, image_size, 3).permute(2, 0, 1).float() / 255


def save_image(image: Tensor, path: str | Path) -> None:
    """Write ``image`` (``[3, H, W]``, uint8, or float in [0, 1]) as a PNG (lossless: read back exactly)."""
    if image.dtype != torch.uint8:
        image = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    _pil_image().fromarray(image.permute(1, 2, 0).contiguous().numpy()).save(path, format="PNG")


class CaptionBatch(NamedTuple):
    """images ``[B, 3, S, S]`` float; captions ``[B, T]`` ids ``<bos> words <eos> <pad>...``
    (for the loss); references: each image's reference captions (for BLEU)."""

    images: Tensor
    captions: Tensor
    references: list[list[str]]


class CaptionedImages(Dataset):
    """Images with their reference captions.

    ``per_caption=True`` (training): one item per (image, caption). ``False`` (evaluation): one
    item per image, its first caption for the loss. Items are ``(image, caption ids, references)``.

    Args:
        load_image: image ``i`` as float ``[3, S, S]`` in [0, 1].
        references: the captions of each image (at least one each).
    """

    def __init__(self, load_image: Callable[[int], Tensor], references: Sequence[list[str]],
                 vocab: PairVocab, per_caption: bool) -> None:
        self.load_image, self.references, self.vocab = load_image, list(references), vocab
        self.items = [(i, j) for i, refs in enumerate(self.references)
                      for j in (range(len(refs)) if per_caption else (0,))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, list[str]]:
        image, caption = self.items[index]
        text = self.references[image][caption]
        ids = torch.tensor([BOS, *self.vocab.encode(text, unknown="unk"), EOS], dtype=torch.long)
        return self.load_image(image), ids, self.references[image]


class _TensorImages:
    """Image ``i`` of a uint8 ``[N, 3, S, S]`` tensor, as float in [0, 1] (a class: loader workers pickle it)."""

    def __init__(self, images: Tensor) -> None:
        self.images = images

    def __call__(self, i: int) -> Tensor:
        return self.images[i].float() / 255


class _ImageFiles:
    """Image ``i`` read from ``files[i] = (path, where)`` (``where``: for error messages)."""

    def __init__(self, files: list[tuple[Path, str]], image_size: int) -> None:
        self.files, self.image_size = files, image_size

    def __call__(self, i: int) -> Tensor:
        path, where = self.files[i]
        return read_image(path, self.image_size, where)


def collate_captions(items: list[tuple[Tensor, Tensor, list[str]]]) -> CaptionBatch:
    images = torch.stack([image for image, _, _ in items])
    captions = torch.nn.utils.rnn.pad_sequence([ids for _, ids, _ in items], batch_first=True, padding_value=PAD)
    return CaptionBatch(images, captions, [refs for _, _, refs in items])


def _positive_int(name: str, value: object, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


class _CaptionData(ResumableData, L.LightningDataModule):
    """Shared loaders; subclasses fill ``self.vocab`` in ``__init__`` and implement :meth:`_datasets`."""

    vocab: PairVocab

    def __init__(self, image_size: int, batch_size: int, eval_batch_size: int, num_workers: int) -> None:
        super().__init__()
        _positive_int("image_size", image_size, 8)
        _positive_int("batch_size", batch_size)
        _positive_int("eval_batch_size", eval_batch_size)
        _positive_int("num_workers", num_workers, 0)
        self.image_size, self.batch_size, self.eval_batch_size = image_size, batch_size, eval_batch_size
        self.num_workers = num_workers
        self._sets: dict[str, CaptionedImages] | None = None

    @property
    def vocab_size(self) -> int:
        """Linked to ``model.init_args.vocab_size`` by the CLI."""
        return len(self.vocab)

    @property
    def max_caption_len(self) -> int:
        """The longest reference caption, in words (the model decodes up to this + 5)."""
        raise NotImplementedError

    def _datasets(self) -> dict[str, CaptionedImages]:
        raise NotImplementedError

    @property
    def datasets(self) -> dict[str, CaptionedImages]:
        """``{"train": ..., "val": ..., "test": ...}``, made on first access."""
        if self._sets is None:
            self._sets = self._datasets()
        return self._sets

    def setup(self, stage: str | None = None) -> None:
        self.datasets  # generate or index once, before the loaders are asked for

    def _loader_args(self) -> dict[str, Any]:
        return {"collate_fn": collate_captions, "num_workers": self.num_workers,
                "persistent_workers": self.num_workers > 0}

    def train_dataloader(self) -> DataLoader:
        return self.train_loader(self.datasets["train"], self.batch_size, shuffle=True, **self._loader_args())

    def _eval_loader(self, split: str) -> DataLoader:
        # in order; its own generator keeps it off the global random state
        return DataLoader(self.datasets[split], batch_size=self.eval_batch_size, generator=torch.Generator(),
                          **self._loader_args())

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("test")


class ShapesCaptions(_CaptionData):
    """One to three coloured shapes per image and their captions, generated from ``seed``.

    The test (and validation) split's multi-object images show object pairs that no training
    image shows together: see :mod:`lightning_rnn.caption.shapes`. Generated in memory at
    ``setup`` (uint8, 12 kB per 64x64 image); the same arguments give the same data.

    Args:
        train_size, val_size, test_size: images per split.
        heldout_pairs: object pairs (of 66) held out for validation, and as many for test.
        max_objects: objects per image, 1..max_objects, uniform.
        image_size: the side S of the square images, in pixels.
        batch_size: training examples (image, caption) per batch; eval_batch_size: images per
            validation/test batch.
    """

    def __init__(
        self,
        train_size: int = 6000,
        val_size: int = 500,
        test_size: int = 500,
        heldout_pairs: int = 6,
        max_objects: int = 3,
        image_size: int = 64,
        seed: int = 0,
        batch_size: int = 64,
        eval_batch_size: int = 250,
        num_workers: int = 0,
    ) -> None:
        super().__init__(image_size, batch_size, eval_batch_size, num_workers)
        for name, value in (("train_size", train_size), ("val_size", val_size), ("test_size", test_size)):
            _positive_int(name, value)
        if isinstance(heldout_pairs, bool) or not isinstance(heldout_pairs, int) or not 1 <= heldout_pairs <= 20:
            raise ValueError(f"heldout_pairs must be an integer in 1..20, got {heldout_pairs!r}")
        if isinstance(max_objects, bool) or max_objects not in (1, 2, 3):
            raise ValueError(f"max_objects must be 1, 2 or 3, got {max_objects!r}")
        _positive_int("seed", seed, 0)
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.heldout_pairs, self.max_objects, self.seed = heldout_pairs, max_objects, seed
        self.vocab = PairVocab([*SPECIALS, *shapes.WORDS], word_level=True)
        self.scenes: dict[str, list[shapes.Scene]] = {}

    @property
    def max_caption_len(self) -> int:
        return 3 * self.max_objects + 2 * (self.max_objects - 1)  # "a red circle" per object, "left of" between

    def _datasets(self) -> dict[str, CaptionedImages]:
        sets = {}
        for split, size in self.sizes.items():
            images, references, self.scenes[split] = shapes.generate(
                split, size, self.seed, self.heldout_pairs, self.max_objects, self.image_size)
            sets[split] = CaptionedImages(_TensorImages(images), references, self.vocab, per_caption=split == "train")
        return sets


class CaptionFolder(_CaptionData):
    """Images in a folder, captions and split from a Karpathy-style JSON (Flickr8k, COCO):

        {"images": [{"filename": "1000268201_693b08cb0e.jpg", "split": "train",
                     "sentences": [{"tokens": ["a", "child", ...], "raw": "A child ..."}, ...]}, ...]}

    ``split`` is ``train``, ``restval`` (used for training, as in Karpathy's setup), ``val`` or
    ``test``; an optional ``filepath`` (COCO: ``"val2014"``) is a sub-folder of ``image_dir``.
    Captions are the lower-cased ``tokens``. The vocabulary is the training captions' words seen
    at least ``min_word_count`` times, in first-occurrence order; rarer words become ``<unk>``. The JSON is read at
    construction (for ``vocab_size``); images are decoded with Pillow when a batch needs them
    (RGB, resized to ``image_size`` squared).

    Errors name the file: a JSON entry without its fields (with the entry index), an image
    missing at ``setup``, an image that does not decode when it is read.

    Args:
        image_dir, captions_json: relative paths are looked up under ``$LIGHTNING_RNN_DATA``
            (default ``../shared/data``) unless they exist as given.
    """

    def __init__(
        self,
        image_dir: str,
        captions_json: str,
        image_size: int = 224,
        min_word_count: int = 5,
        batch_size: int = 32,
        eval_batch_size: int = 64,
        num_workers: int = 0,
    ) -> None:
        super().__init__(image_size, batch_size, eval_batch_size, num_workers)
        _positive_int("min_word_count", min_word_count)
        self.image_dir = resolve_data_path(image_dir)
        self.captions_json = resolve_data_path(captions_json)
        self.entries = read_karpathy_json(self.captions_json)  # (entry index, path, split, captions)
        for split in SPLITS:
            if not any(s == split for _, _, s, _ in self.entries):
                raise ValueError(f"{self.captions_json}: no image in the {split!r} split")
        training = (c for _, _, split, caps in self.entries if split == "train" for c in caps)
        self.vocab = PairVocab.build(training, word_level=True, min_count=min_word_count)

    @property
    def max_caption_len(self) -> int:
        return max(len(c.split()) for _, _, _, caps in self.entries for c in caps)

    def _datasets(self) -> dict[str, CaptionedImages]:
        sets = {}
        for split in SPLITS:
            chosen = [(index, self.image_dir / path, caps) for index, path, s, caps in self.entries if s == split]
            for index, path, _ in chosen:
                if not path.is_file():
                    raise ImageError(f"{path}: no such image file (entry {index} of {self.captions_json})")
            files = _ImageFiles([(path, f" (entry {index} of {self.captions_json})") for index, path, _ in chosen],
                                self.image_size)
            references = [caps for _, _, caps in chosen]
            sets[split] = CaptionedImages(files, references, self.vocab, per_caption=split == "train")
        return sets


def read_karpathy_json(path: Path) -> list[tuple[int, str, str, list[str]]]:
    """``(entry index, image path under the folder, split, captions)`` per image of a Karpathy JSON;
    ``restval`` counts as ``train``. Raises ``ValueError`` naming the file and the entry."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such captions file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a JSON file ({err})") from None
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list) or not images:
        raise ValueError(f'{path}: expected {{"images": [...]}} with at least one entry')
    entries = []
    for index, entry in enumerate(images):
        def problem(what: str) -> ValueError:
            return ValueError(f"{path}: entry {index}: {what}")

        if not isinstance(entry, dict):
            raise problem("is not an object")
        for field in ("filename", "split", "sentences"):
            if field not in entry:
                raise problem(f"has no {field!r} field")
        split = {"restval": "train"}.get(entry["split"], entry["split"])
        if split not in SPLITS:
            raise problem(f"split must be train, restval, val or test, got {entry['split']!r}")
        sentences = entry["sentences"]
        if not isinstance(sentences, list) or not sentences:
            raise problem("'sentences' must be a non-empty list")
        captions = []
        for number, sentence in enumerate(sentences):
            tokens = sentence.get("tokens") if isinstance(sentence, dict) else None
            if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) and t.strip() for t in tokens):
                raise problem(f"sentence {number} has no 'tokens' list of words")
            captions.append(" ".join(t.strip().lower() for t in tokens))
        entries.append((index, str(Path(entry.get("filepath", "")) / entry["filename"]), split, captions))
    return entries
