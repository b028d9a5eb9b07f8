"""``Captioner``: an image encoder whose feature vector starts a recurrent language model.

    images [B, 3, S, S] ──CNN──▶ feature map ──max-pool──▶ grid [B, g*g, C]
    grid ──flatten, linear──▶ feature f [B, F] ──linear──▶ initial (h, c) of each decoder layer [L, B, H]
    caption_in [B, T] ──embed──▶ LSTM/GRU/RNN (lightning_rnn.nn) ──▶ out [B, T, H]
        [──attention over the grid (+ position embeddings)──▶ context [B, T, H], concatenated]
        ──linear──▶ logits [B, T, V]

The image starts the decoder through its initial state: ``h = tanh(W_h f)`` and, for an LSTM,
``c = W_c f`` (Show and Tell feeds ``f`` as the first input instead; a state keeps seq2seq's
decoding interface: encode once, then start from a state). Words are then fed back one by one.
With ``attention`` (seq2seq's :class:`~lightning_rnn.seq2seq.attention.Attention`, on the
decoder's outputs as there), every step also reads the grid of local features, in the manner of
"Show, Attend and Tell": the same weights read an object wherever it is, which is what lets the
shapes recipe name object pairs it never saw together. Training is teacher-forced
cross-entropy ignoring padding. Decoding uses the seq2seq functions
(:func:`~lightning_rnn.seq2seq.decoding.greedy_decode`,
:func:`~lightning_rnn.seq2seq.decoding.beam_search`): :class:`CaptionNet` has their
``encode`` / ``initial_state`` / ``decode`` interface, with images as the source.

Validation decodes greedily and test with beam search when ``beam_size > 1``; both log corpus
BLEU-4 against all reference captions of each image (``val_bleu``, ``test_bleu``) and the
teacher-forced loss on each image's first caption (``val_loss``, ``test_loss``).

The vocabulary, the longest caption and the image size come from the DataModule at ``setup``
and are stored in the checkpoint, so ``Captioner.load_from_checkpoint(path).caption(images)``
needs no data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torch.nn import functional as F
from torchmetrics.text import BLEUScore

from lightning_rnn.caption.data import CaptionBatch
from lightning_rnn.caption.encoder import Encoder, make_encoder
from lightning_rnn.data.pair_vocab import PAD, PairVocab
from lightning_rnn.nn import GRU, LSTM, RNN
from lightning_rnn.seq2seq.decoding import beam_search, greedy_decode
from lightning_rnn.seq2seq.attention import Attention
from lightning_rnn.seq2seq.network import AttentionChoice, Cell, State
from lightning_rnn.schedule import LRSchedule, check_lr_schedule, with_schedule

LAYERS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}
_CKPT_KEY = "caption"


@dataclass
class ImageMemory:
    """What the decoder reads from the encoder: ``features [B, F]`` (the initial state's source)
    and ``grid [B, g*g, H]`` (local features, what attention reads; unused without it)."""

    features: Tensor
    grid: Tensor

    def repeat_interleave(self, k: int) -> ImageMemory:
        """Each image repeated ``k`` times (for beam search)."""
        return ImageMemory(self.features.repeat_interleave(k, 0), self.grid.repeat_interleave(k, 0))


class CaptionNet(nn.Module):
    """Image encoder + recurrent decoder (plain ``nn.Module``; see the module docstring).

    Args:
        vocab_size: V (id 0 is ``<pad>``).
        encoder: ``"small"`` (conv blocks of ``channels``) or ``"resnet18"`` (needs torchvision).
        feature_size: F, the image feature vector.
        grid: g, the encoder's last feature map is max-pooled to g x g regions (3 for the shapes'
            3x3 layout); the vector is made from them, and attention reads them.
        embed_dim: E, word embeddings. hidden_size: H. num_layers: L. cell: ``lstm|gru|rnn``.
        attention: ``"none"``, or a score function of :class:`~lightning_rnn.seq2seq.attention.Attention`
            (``dot|general|additive``): each decoder output also reads the grid of local image
            features (projected to H, plus a learned embedding of each region), and the output
            layer sees both.
        dropout: on the image features, the embeddings, between layers and before the output layer.
        backend: of the recurrent layers (``auto|triton|torch``).
    """

    def __init__(self, vocab_size: int, encoder: Encoder = "small", channels: tuple[int, ...] = (16, 32, 64, 64),
                 feature_size: int = 256, grid: int = 4, embed_dim: int = 64, hidden_size: int = 256,
                 num_layers: int = 1, cell: Cell = "lstm", attention: AttentionChoice = "none", dropout: float = 0.0,
                 backend: str = "auto") -> None:
        super().__init__()
        sizes = [("vocab_size", vocab_size), ("feature_size", feature_size), ("grid", grid), ("embed_dim", embed_dim),
                 ("hidden_size", hidden_size), ("num_layers", num_layers), *(("channels", c) for c in channels)]
        for name, value in sizes:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be positive integers, got {value!r}")
        if not channels:
            raise ValueError("channels must list at least one conv block's width")
        if cell not in LAYERS:
            raise ValueError(f"cell must be one of {sorted(LAYERS)}, got {cell!r}")
        if attention not in ("none", "dot", "general", "additive"):
            raise ValueError(f"attention must be 'none', 'dot', 'general' or 'additive', got {attention!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.cell, self.num_layers, self.hidden_size = cell, num_layers, hidden_size
        self.encoder = make_encoder(encoder, tuple(channels), feature_size, grid)
        self.init_h = nn.Linear(feature_size, num_layers * hidden_size)
        self.init_c = nn.Linear(feature_size, num_layers * hidden_size) if cell == "lstm" else None
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD)
        self.rnn = LAYERS[cell](embed_dim, hidden_size, num_layers=num_layers, batch_first=True,
                                dropout=dropout if num_layers > 1 else 0.0, backend=backend)
        self.attention = None if attention == "none" else Attention(attention, hidden_size)
        if self.attention is not None:
            self.grid_proj = nn.Linear(self.encoder.grid_size, hidden_size)
            self.position = nn.Parameter(torch.zeros(grid * grid, hidden_size))  # where each region is
        self.out = nn.Linear(hidden_size * (2 if self.attention is not None else 1), vocab_size)
        self.drop = nn.Dropout(dropout)

    @staticmethod
    def check_source(images: Tensor) -> None:
        """Decoding's check of its source: a batch of RGB images."""
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[0] == 0 or not images.is_floating_point():
            raise ValueError(f"images must be [B, 3, H, W] floats in [0, 1] with B >= 1, "
                             f"got {images.dtype} {list(images.shape)}")

    def encode(self, images: Tensor) -> ImageMemory:
        """images ``[B, 3, H, W]`` in [0, 1] -> features ``[B, F]`` and, with attention, grid ``[B, g*g, H]``."""
        features, grid = self.encoder(images)
        if self.attention is not None:
            grid = self.drop(self.grid_proj(grid) + self.position)
        return ImageMemory(self.drop(features), grid)

    def _layers(self, x: Tensor) -> Tensor:
        """``[B, L * H]`` -> ``[L, B, H]``."""
        return x.view(x.shape[0], self.num_layers, self.hidden_size).transpose(0, 1).contiguous()

    def initial_state(self, memory: ImageMemory) -> State:
        """The decoder's first state, from the image: ``h [L, B, H]`` (and ``c`` for an LSTM)."""
        h = self._layers(torch.tanh(self.init_h(memory.features)))
        return (h, self._layers(self.init_c(memory.features))) if self.init_c is not None else h

    def decode(self, caption_in: Tensor, memory: ImageMemory, state: State) -> tuple[Tensor, State]:
        """caption_in ``[B, T]`` ids (``<bos>`` first) -> logits ``[B, T, V]`` and the state after them."""
        out, state = self.rnn(self.drop(self.embed(caption_in)), state)
        if self.attention is not None:
            everywhere = torch.ones(memory.grid.shape[:2], dtype=torch.bool, device=out.device)
            context, _ = self.attention(out, memory.grid, everywhere)
            out = torch.cat([context, out], dim=-1)
        return self.out(self.drop(out)), state

    def forward(self, images: Tensor, caption_in: Tensor) -> Tensor:
        """Teacher-forced logits ``[B, T, V]``."""
        memory = self.encode(images)
        logits, _ = self.decode(caption_in, memory, self.initial_state(memory))
        return logits


class Captioner(L.LightningModule):
    """Image captioning; see :class:`CaptionNet` for the architecture arguments.

    Args:
        vocab_size: the CLI fills it in from the DataModule.
        lr, weight_decay: AdamW's. lr_schedule: ``"constant"``, or ``"cosine"`` decay to 0.
        beam_size: beam width for test / predict / :meth:`caption` (1 = greedy); validation is greedy.
        length_penalty: beam search's length normalisation exponent (0 = none).
        max_decode_len: most words to generate; default: the data's longest caption + 5.
        num_examples: decoded captions printed per validation/test epoch.
    """

    def __init__(
        self,
        vocab_size: int,
        encoder: Encoder = "small",
        channels: tuple[int, ...] = (16, 32, 64, 64),
        feature_size: int = 256,
        grid: int = 4,
        embed_dim: int = 64,
        hidden_size: int = 256,
        num_layers: int = 1,
        cell: Cell = "lstm",
        attention: AttentionChoice = "none",
        dropout: float = 0.0,
        lr: float = 2e-3,
        weight_decay: float = 0.0,
        lr_schedule: LRSchedule = "cosine",
        beam_size: int = 1,
        length_penalty: float = 1.0,
        max_decode_len: int | None = None,
        num_examples: int = 3,
        backend: Literal["auto", "triton", "torch"] = "auto",
    ) -> None:
        super().__init__()
        check_lr_schedule(lr_schedule)
        if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
            raise ValueError(f"beam_size must be an integer >= 1, got {beam_size!r}")
        if max_decode_len is not None and max_decode_len < 1:
            raise ValueError(f"max_decode_len must be >= 1, got {max_decode_len}")
        self.save_hyperparameters()
        self.net = CaptionNet(vocab_size, encoder, tuple(channels), feature_size, grid, embed_dim, hidden_size,
                              num_layers, cell, attention, dropout, backend)
        self.bleu = nn.ModuleDict({stage: BLEUScore(n_gram=4) for stage in ("val", "test")})
        self.vocab: PairVocab | None = None
        self.max_caption_len: int | None = None
        self.image_size: int | None = None
        self.examples: list[tuple[str, list[str]]] = []  # (decoded, references)

    # --- data and checkpoint plumbing -------------------------------------------------------
    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule if self._trainer is not None else None
        if dm is not None and hasattr(dm, "vocab"):
            self.set_data(dm.vocab, dm.max_caption_len, dm.image_size)

    def set_data(self, vocab: PairVocab, max_caption_len: int, image_size: int) -> None:
        """Adopt the data's vocabulary, longest caption (words) and image side (pixels)."""
        if len(vocab) != self.hparams.vocab_size:
            raise ValueError(f"vocab_size={self.hparams.vocab_size} but the data's vocabulary has {len(vocab)} words")
        self.vocab, self.max_caption_len, self.image_size = vocab, max_caption_len, image_size

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.vocab is not None:
            checkpoint[_CKPT_KEY] = {"vocab": self.vocab.to_dict(), "max_caption_len": self.max_caption_len,
                                     "image_size": self.image_size}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if _CKPT_KEY in checkpoint:
            saved = checkpoint[_CKPT_KEY]
            self.set_data(PairVocab.from_dict(saved["vocab"]), saved["max_caption_len"], saved["image_size"])

    @property
    def decode_len(self) -> int:
        return self.hparams.max_decode_len or (self.max_caption_len or 50) + 5

    # --- training and evaluation ------------------------------------------------------------
    def _loss(self, batch: CaptionBatch) -> Tensor:
        """Teacher-forced cross-entropy per caption word (``<eos>`` included, padding not)."""
        logits = self.net(batch.images, batch.captions[:, :-1])
        return F.cross_entropy(logits.flatten(0, 1), batch.captions[:, 1:].flatten(), ignore_index=PAD)

    def training_step(self, batch: CaptionBatch, batch_idx: int) -> Tensor:
        loss = self._loss(batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=batch.images.shape[0])
        return loss

    def generate(self, images: Tensor, beam_size: int = 1) -> tuple[Tensor, Tensor]:
        """Decoded ids ``[B, T']`` and model scores ``[B]`` (see :mod:`lightning_rnn.seq2seq.decoding`)."""
        lp = self.hparams.length_penalty
        if beam_size == 1:
            return greedy_decode(self.net, images, self.decode_len, lp)
        return beam_search(self.net, images, self.decode_len, beam_size, lp)

    def _eval_step(self, batch: CaptionBatch, batch_idx: int, stage: str) -> None:
        size = batch.images.shape[0]
        self.log(f"{stage}_loss", self._loss(batch), batch_size=size)
        if self.vocab is None:
            return
        predicted, _ = self.generate(batch.images, self.hparams.beam_size if stage == "test" else 1)
        hyps = [self.vocab.decode(row) for row in predicted.tolist()]
        self.bleu[stage].update(hyps, batch.references)
        self.log(f"{stage}_bleu", self.bleu[stage], prog_bar=True, batch_size=size)
        if batch_idx == 0:
            self.examples = list(zip(hyps, batch.references))[: self.hparams.num_examples]

    def validation_step(self, batch: CaptionBatch, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch: CaptionBatch, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    def _print_examples(self, stage: str) -> None:
        for hyp, refs in self.examples:
            mark = "ok" if hyp in refs else "WRONG"
            rank_zero_info(f"[{stage} epoch {self.current_epoch}] {hyp!r} (references {refs}) {mark}")

    def on_validation_epoch_end(self) -> None:
        self._print_examples("val")

    def on_test_epoch_end(self) -> None:
        self._print_examples("test")

    def predict_step(self, batch: CaptionBatch, batch_idx: int) -> list[str]:
        return self.caption(batch.images)

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        optimizer = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        return with_schedule(optimizer, self.hparams.lr_schedule, self.trainer)

    # --- inference --------------------------------------------------------------------------
    @torch.no_grad()
    def caption(self, images: Tensor, beam_size: int | None = None) -> list[str]:
        """One caption per image: ``images [B, 3, S, S]`` (or one ``[3, S, S]``), floats in [0, 1],
        at the training size :attr:`image_size` (``lightning_rnn.caption.data.read_image`` reads
        a file so). Beam width: ``beam_size``, else the model's."""
        if self.vocab is None:
            raise ValueError("this model has no vocabulary: train it with a caption DataModule or load a checkpoint")
        if images.dim() == 3:
            images = images.unsqueeze(0)
        was_training = self.training
        self.eval()
        try:
            predicted, _ = self.generate(images.to(self.device), beam_size or self.hparams.beam_size)
        finally:
            self.train(was_training)
        return [self.vocab.decode(row) for row in predicted.tolist()]
