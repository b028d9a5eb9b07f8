"""``Seq2Seq``: the LightningModule that trains and evaluates :class:`Seq2SeqNet`.

Training is teacher-forced cross-entropy ignoring padding. Validation and test decode (greedy
on validation; beam search on test when ``beam_size > 1``) and log the metrics of
:mod:`lightning_rnn.seq2seq.metrics`, plus a few decoded examples each epoch.

The vocabulary comes from the datamodule (``datamodule.vocab``) at ``setup`` and is stored in the
checkpoint, so ``Seq2Seq.load_from_checkpoint(path).translate(["57+5"])`` needs no data files.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.nn import functional as F

from lightning_rnn.data.pair_vocab import PAD, PairVocab
from lightning_rnn.seq2seq.decoding import beam_search, greedy_decode
from lightning_rnn.seq2seq.metrics import Seq2SeqMetrics
from lightning_rnn.seq2seq.network import AttentionChoice, Cell, Seq2SeqNet
from lightning_rnn.schedule import LRSchedule, check_lr_schedule, with_schedule

_CKPT_KEY = "seq2seq"


class Seq2Seq(L.LightningModule):
    """Encoder-decoder for sequence pairs; see :class:`Seq2SeqNet` for the architecture args.

    Args:
        vocab_size: size of the shared vocabulary (the CLI fills it from the datamodule).
        lr, weight_decay: Adam's.
        lr_schedule: ``"constant"``, or ``"cosine"`` decay to 0 over the whole run.
        beam_size: beam width for test/predict/translate (1 = greedy). Validation is greedy.
        length_penalty: beam-search length normalisation exponent (0 = none).
        max_decode_len: most tokens to generate; default: the data's longest target + 5.
        num_examples: decoded examples printed per validation/test epoch.
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 16,
        hidden_size: int = 128,
        num_layers: int = 1,
        cell: Cell = "lstm",
        dropout: float = 0.0,
        reverse_source: bool = False,
        peeky: bool = False,
        attention: AttentionChoice = "none",
        tie_weights: bool = False,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        lr_schedule: LRSchedule = "constant",
        beam_size: int = 1,
        length_penalty: float = 1.0,
        max_decode_len: int | None = None,
        num_examples: int = 3,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        check_lr_schedule(lr_schedule)
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        self.save_hyperparameters()
        self.net = Seq2SeqNet(
            vocab_size, embed_dim, hidden_size, num_layers, cell, dropout,
            reverse_source, peeky, attention, tie_weights, backend,
        )
        self.val_metrics = Seq2SeqMetrics()
        self.test_metrics = Seq2SeqMetrics()
        self.vocab: PairVocab | None = None
        self.max_target_len: int | None = None
        self.examples: list[tuple[str, str, str]] = []  # (source, decoded, reference)

    # --- data and checkpoint plumbing -------------------------------------------------------
    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule if self._trainer is not None else None
        if dm is not None and hasattr(dm, "vocab"):
            self.set_vocab(dm.vocab, dm.max_target_len)

    def set_vocab(self, vocab: PairVocab, max_target_len: int) -> None:
        if len(vocab) != self.hparams.vocab_size:
            raise ValueError(
                f"vocab_size={self.hparams.vocab_size} but the data's vocabulary has {len(vocab)} tokens"
            )
        self.vocab, self.max_target_len = vocab, max_target_len

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.vocab is not None:
            checkpoint[_CKPT_KEY] = {"vocab": self.vocab.to_dict(), "max_target_len": self.max_target_len}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if _CKPT_KEY in checkpoint:
            saved = checkpoint[_CKPT_KEY]
            self.set_vocab(PairVocab.from_dict(saved["vocab"]), saved["max_target_len"])

    @property
    def decode_len(self) -> int:
        if self.hparams.max_decode_len:
            return self.hparams.max_decode_len
        return (self.max_target_len or 50) + 5

    # --- training and evaluation ------------------------------------------------------------
    def _loss(self, source: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """target: (B, T) ``<bos> tokens <eos>``; returns loss, logits (B, T-1, V), target_out."""
        target_in, target_out = target[:, :-1], target[:, 1:]
        logits = self.net(source, target_in)
        loss = F.cross_entropy(logits.flatten(0, 1), target_out.flatten(), ignore_index=PAD)
        return loss, logits, target_out

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss, _, _ = self._loss(*batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=batch[0].shape[0])
        return loss

    def generate(self, source: Tensor, beam_size: int = 1) -> tuple[Tensor, Tensor]:
        """Decoded ids (B, T') and model scores (B,) for ``source`` (B, S); see ``decoding``."""
        lp = self.hparams.length_penalty
        if beam_size == 1:
            return greedy_decode(self.net, source, self.decode_len, lp)
        return beam_search(self.net, source, self.decode_len, beam_size, lp)

    def _eval_step(self, batch: tuple[Tensor, Tensor], batch_idx: int, stage: str) -> None:
        source, target = batch
        loss, logits, target_out = self._loss(source, target)
        beam = self.hparams.beam_size if stage == "test" else 1
        predicted, _ = self.generate(source, beam)
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        hyps, refs = metrics.update(predicted, target_out, logits, self.vocab, loss)
        for name, metric in metrics.as_dict(stage).items():
            self.log(name, metric, prog_bar=name.endswith(("_loss", "exact_match")), batch_size=source.shape[0])
        if batch_idx == 0 and self.vocab is not None:
            k = self.hparams.num_examples
            srcs = [self.vocab.decode(row) for row in source[:k].tolist()]
            self.examples = list(zip(srcs, hyps[:k], refs[:k]))

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    def _print_examples(self, stage: str) -> None:
        """Print this epoch's examples; loggers that take text (TensorBoard) get them too."""
        lines = []
        for src, hyp, ref in self.examples:
            mark = "ok" if hyp == ref else "WRONG"
            lines.append(f"{src!r} -> {hyp!r} (reference {ref!r}) {mark}")
            rank_zero_info(f"[{stage} epoch {self.current_epoch}] {lines[-1]}")
        experiment = getattr(self.logger, "experiment", None) if self._trainer is not None else None
        if lines and self.global_rank == 0 and hasattr(experiment, "add_text"):
            experiment.add_text(f"{stage}_examples", "  \n".join(lines), self.global_step)

    def on_validation_epoch_end(self) -> None:
        self._print_examples("val")

    def on_test_epoch_end(self) -> None:
        self._print_examples("test")

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> list[str]:
        predicted, _ = self.generate(batch[0], self.hparams.beam_size)
        return [self.vocab.decode(row) for row in predicted.tolist()] if self.vocab else predicted

    def configure_optimizers(self) -> Any:
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        return with_schedule(opt, self.hparams.lr_schedule, self.trainer)

    # --- inference on text -----------------------------------------------------------------
    @torch.no_grad()
    def translate(self, texts: list[str], beam_size: int | None = None) -> list[str]:
        """Decode each text; raises ``ValueError`` on an empty text or an unknown token."""
        if self.vocab is None:
            raise ValueError("this model has no vocabulary: train it with a pair datamodule or load a checkpoint")
        rows = []
        for i, text in enumerate(texts):
            ids = self.vocab.encode(text.strip())
            if not ids:
                where = f" (text {i})" if len(texts) > 1 else ""
                raise ValueError(f"empty source{where}: nothing to translate")
            rows.append(torch.tensor(ids, dtype=torch.long))
        source = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=PAD).to(self.device)
        was_training = self.training
        self.eval()
        predicted, _ = self.generate(source, beam_size or self.hparams.beam_size)
        self.train(was_training)
        return [self.vocab.decode(row) for row in predicted.tolist()]
