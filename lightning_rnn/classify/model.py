"""``SequenceClassifier``: a sentence -> embeddings -> recurrent layers -> pooled -> class scores.

Many-to-one: the recurrent outputs of the valid positions are pooled into one vector per sentence
(``last``, ``mean`` or ``max``; padding never enters, see :mod:`lightning_rnn.classify.encoder`),
then dropout and a linear layer give ``num_classes`` logits. Training minimises cross-entropy;
validation and test log ``*_loss``, ``*_acc`` and ``*_f1`` (torchmetrics; F1 of class 1 for two
classes, the macro average over classes for more).

The vocabulary, the label names and ``lowercase`` come from the DataModule at ``setup`` and travel
in every checkpoint, so ``load_model(SequenceClassifier, path).classify(["a gripping film ."])``
needs no data files.
"""

from __future__ import annotations

from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchmetrics import Accuracy, F1Score, MetricCollection

from lightning_rnn.classify.data import TextBatch, words
from lightning_rnn.classify.encoder import LAYERS, Cell, LengthAwareRNN, valid_mask
from lightning_rnn.data.bucketing import pad_sequences
from lightning_rnn.data.pair_vocab import PAD, UNK, PairVocab
from lightning_rnn.schedule import LRSchedule, check_lr_schedule, with_schedule

Pooling = Literal["last", "mean", "max"]
CKPT_KEY = "lightning_rnn_classifier"  # where vocabulary, label names and lowercase live in a checkpoint


def pool(outputs: Tensor, last: Tensor, lengths: Tensor, pooling: Pooling) -> Tensor:
    """One vector per sentence from ``outputs [B, T, F]`` (zero at padding), ``last [B, F]`` and
    ``lengths [B]``: ``last`` itself, or the mean or the maximum over each row's valid positions."""
    lengths = lengths.to(outputs.device)
    if pooling == "last":
        return last
    if pooling == "mean":  # the padded positions hold zeros: the sum is over the valid ones
        return outputs.sum(1) / lengths.unsqueeze(1).to(outputs.dtype)
    if pooling == "max":  # not zero either: a padded 0 would beat a row of negative outputs
        mask = valid_mask(lengths, outputs.shape[1]).unsqueeze(-1)  # [B, T, 1]
        return outputs.masked_fill(~mask, float("-inf")).amax(1)
    raise ValueError(f"pooling must be 'last', 'mean' or 'max', got {pooling!r}")


def _scores(prefix: str, num_classes: int) -> MetricCollection:
    if num_classes == 2:
        metrics = {"acc": Accuracy(task="binary"), "f1": F1Score(task="binary")}
    else:
        metrics = {"acc": Accuracy(task="multiclass", num_classes=num_classes),
                   "f1": F1Score(task="multiclass", num_classes=num_classes, average="macro")}
    return MetricCollection(metrics, prefix=prefix)


class SequenceClassifier(L.LightningModule):
    """Classify a sentence into one of ``num_classes`` classes.

    Args:
        vocab_size, num_classes: filled in by the CLI from the DataModule.
        embedding_size: word vectors, learned from scratch (``<pad>`` is the zero vector).
        embedding_init: the word vectors start uniform in ``[-embedding_init, embedding_init]``
            (Kim 2014's 0.25 for words without a pre-trained vector); ``None``: PyTorch's N(0, 1).
            Small vectors learn SST-2 in a third of the epochs N(0, 1) takes (see recipes/README.md).
        cell, hidden_size, num_layers, bidirectional: the recurrent stack (``lightning_rnn.nn``).
        pooling: ``"last"`` (the forward direction's output at the last token, and the backward
            direction's at the first token when bidirectional), ``"mean"`` or ``"max"`` over the
            valid positions.
        dropout: between recurrent layers and on the pooled vector before the linear head.
        embedding_dropout: dropout on the word vectors.
        word_dropout: in training, each token is replaced by ``<unk>`` with this probability
            (teaches the model what to do with unknown words, and not to lean on one word).
        lr, weight_decay: Adam's. lr_schedule: ``"constant"`` or ``"cosine"`` decay to 0 per step.
        backend: ``"auto"``, ``"triton"`` or ``"torch"`` for the recurrent layers.

    Shapes: ``forward(tokens [B, T], lengths [B])`` -> ``logits [B, num_classes]``; ``tokens`` are
    right-padded with ``<pad>`` (id 0), ``lengths[b]`` >= 1 the real tokens of row ``b``.
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int = 2,
        embedding_size: int = 300,
        embedding_init: float | None = 0.25,
        cell: Cell = "lstm",
        hidden_size: int = 150,
        num_layers: int = 1,
        bidirectional: bool = True,
        pooling: Pooling = "max",
        dropout: float = 0.5,
        embedding_dropout: float = 0.0,
        word_dropout: float = 0.0,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        lr_schedule: LRSchedule = "constant",
        backend: Literal["auto", "triton", "torch"] = "auto",
    ) -> None:
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("num_classes", num_classes),
                            ("embedding_size", embedding_size), ("hidden_size", hidden_size),
                            ("num_layers", num_layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        if vocab_size <= UNK:
            raise ValueError(f"vocab_size must count the 4 special tokens (<pad> .. <unk>), got {vocab_size}")
        if cell not in LAYERS:
            raise ValueError(f"cell must be one of {sorted(LAYERS)}, got {cell!r}")
        if pooling not in ("last", "mean", "max"):
            raise ValueError(f"pooling must be 'last', 'mean' or 'max', got {pooling!r}")
        for name, value in (("dropout", dropout), ("embedding_dropout", embedding_dropout),
                            ("word_dropout", word_dropout)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        check_lr_schedule(lr_schedule)
        if embedding_init is not None and not embedding_init > 0:
            raise ValueError(f"embedding_init must be positive or None, got {embedding_init}")
        self.save_hyperparameters()
        self.embedding = nn.Embedding(vocab_size, embedding_size, padding_idx=PAD)
        if embedding_init is not None:
            with torch.no_grad():
                self.embedding.weight.uniform_(-embedding_init, embedding_init)
                self.embedding.weight[PAD] = 0.0
        self.embedding_dropout = nn.Dropout(embedding_dropout)
        self.rnn = LengthAwareRNN(embedding_size, hidden_size, num_layers, bidirectional, cell, dropout, backend)
        directions = 2 if bidirectional else 1
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(directions * hidden_size, num_classes))
        self.scores = nn.ModuleDict({split: _scores(f"{split}_", num_classes) for split in ("val", "test")})
        # from the DataModule (setup) or a checkpoint (on_load_checkpoint)
        self.vocab: PairVocab | None = None
        self.label_names: list[str] = [str(i) for i in range(num_classes)]
        self.lowercase = False

    # -- the network ------------------------------------------------------------------------

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """``tokens [B, T]``, ``lengths [B]`` -> ``logits [B, num_classes]``."""
        if tokens.dim() != 2 or lengths.shape != tokens.shape[:1]:
            raise ValueError(f"expected tokens [B, T] and lengths [B], got {list(tokens.shape)} and "
                             f"{list(lengths.shape)}")
        if self.training and self.hparams.word_dropout > 0:
            dropped = torch.rand(tokens.shape, device=tokens.device) < self.hparams.word_dropout
            tokens = tokens.masked_fill(dropped & (tokens != PAD), UNK)
        vectors = self.embedding_dropout(self.embedding(tokens))  # [B, T, E]
        outputs, last = self.rnn(vectors, lengths)  # [B, T, D*H], [B, D*H]
        return self.head(pool(outputs, last, lengths, self.hparams.pooling))

    # -- training and evaluation --------------------------------------------------------------

    def training_step(self, batch: TextBatch, batch_idx: int) -> Tensor:
        loss = F.cross_entropy(self(batch.tokens, batch.lengths).float(), batch.labels)
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch.labels))
        return loss

    def _evaluate(self, split: str, batch: TextBatch) -> None:
        logits = self(batch.tokens, batch.lengths).float()
        loss = F.cross_entropy(logits, batch.labels)
        scores = self.scores[split]
        # binary metrics take the probability of class 1, multiclass ones the logits
        scores.update(logits.softmax(-1)[:, 1] if self.hparams.num_classes == 2 else logits, batch.labels)
        self.log(f"{split}_loss", loss, batch_size=len(batch.labels), prog_bar=True)
        self.log_dict(scores, batch_size=len(batch.labels), prog_bar=True)

    def validation_step(self, batch: TextBatch, batch_idx: int) -> None:
        self._evaluate("val", batch)

    def test_step(self, batch: TextBatch, batch_idx: int) -> None:
        self._evaluate("test", batch)

    def predict_step(self, batch: TextBatch, batch_idx: int) -> Tensor:
        """Class probabilities ``[B, num_classes]``."""
        return self(batch.tokens, batch.lengths).float().softmax(-1)

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        optimizer = torch.optim.Adam(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        return with_schedule(optimizer, self.hparams.lr_schedule, self.trainer)

    # -- vocabulary and labels: from the DataModule, into and out of checkpoints --------------

    def set_text_processing(self, vocab: PairVocab, label_names: list[str], lowercase: bool, source: str) -> None:
        """Adopt the vocabulary, label names and lower-casing of the data (``source`` names it in errors).

        A model that already has them (from a checkpoint) accepts only the same ones: word ids and
        class indices mean nothing under another vocabulary or label order."""
        if len(vocab) != self.hparams.vocab_size:
            raise ValueError(f"the {source} vocabulary has {len(vocab)} tokens but the model was built with "
                             f"vocab_size={self.hparams.vocab_size}")
        if len(label_names) != self.hparams.num_classes:
            raise ValueError(f"the {source} {len(label_names)} label names {label_names} do not match "
                             f"num_classes={self.hparams.num_classes}")
        if self.vocab is not None:
            mine = (self.vocab.tokens, self.label_names, self.lowercase)
            if (vocab.tokens, list(label_names), lowercase) != mine:
                raise ValueError(f"the {source} vocabulary, label names or lowercase setting differ from the ones "
                                 "this model was trained with: a checkpoint only fits data prepared the same way "
                                 "(same training file, min_count, label_names, lowercase)")
        self.vocab, self.label_names, self.lowercase = vocab, list(label_names), bool(lowercase)

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        vocab, label_names = getattr(datamodule, "vocab", None), getattr(datamodule, "label_names", None)
        if isinstance(vocab, PairVocab) and label_names is not None:
            self.set_text_processing(vocab, label_names, getattr(datamodule, "lowercase", False), "DataModule's")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.vocab is not None:
            checkpoint[CKPT_KEY] = {"vocab": self.vocab.to_dict(), "label_names": list(self.label_names),
                                    "lowercase": self.lowercase}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get(CKPT_KEY)
        if saved is not None:
            self.set_text_processing(PairVocab.from_dict(saved["vocab"]), saved["label_names"], saved["lowercase"],
                                     "checkpoint's")

    # -- inference on text ----------------------------------------------------------------------

    @torch.no_grad()
    def probabilities(self, texts: list[str], batch_size: int = 256) -> Tensor:
        """``[len(texts), num_classes]`` class probabilities. Each text is split at whitespace like the
        training data; unknown words count as ``<unk>``. ``ValueError`` for a text with no words."""
        if self.vocab is None:
            raise ValueError("this model has no vocabulary: train it with TextClassificationData or load a checkpoint")
        rows = []
        for i, text in enumerate(texts):
            tokens = words(text, self.lowercase)
            if not tokens:
                raise ValueError(f"text {i} is empty: nothing to classify")
            rows.append(torch.tensor(self.vocab.encode(" ".join(tokens), unknown="unk"), dtype=torch.long))
        was_training = self.training
        self.eval()
        try:
            chunks = []
            for start in range(0, len(rows), batch_size):
                tokens, lengths = pad_sequences(rows[start:start + batch_size], padding_value=PAD)
                chunks.append(self(tokens.to(self.device), lengths.to(self.device)).float().softmax(-1).cpu())
        finally:
            self.train(was_training)
        return torch.cat(chunks) if chunks else torch.zeros(0, self.hparams.num_classes)

    def classify(self, texts: list[str]) -> list[tuple[str, float]]:
        """The most probable label of each text and its probability, e.g. ``[("positive", 0.93)]``."""
        probabilities = self.probabilities(texts)
        best = probabilities.argmax(-1)
        return [(self.label_names[int(k)], float(p[k])) for k, p in zip(best, probabilities)]
