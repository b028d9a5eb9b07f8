"""Dropout for sequence models (AWD-LSTM, Merity et al. 2017): LockedDropout and embedding dropout.

- ``LockedDropout(p)``: one Bernoulli mask per sequence and feature, the same at every time step
  ("variational" dropout of Gal and Ghahramani on a layer's inputs or outputs), kept features
  scaled by 1/(1-p); training only.
- ``embedding_dropout(weight, tokens, p)`` / ``EmbeddingDropout``: drops whole words: each row of
  the embedding matrix (each vocabulary entry) is zeroed with probability p for the whole call, the
  rest scaled by 1/(1-p); every occurrence of a dropped word in the batch gets the zero vector.

Masks come from torch's global generator, so a seed reproduces them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .regularize import check_probability, dropout_mask


def locked_dropout(x: Tensor, p: float, training: bool = True, batch_first: bool = True) -> Tensor:
    """x (B, T, F) [or (T, B, F) with batch_first=False] times one mask (B, 1, F) over all steps."""
    if not training or p == 0.0:
        return x
    if x.dim() != 3:
        raise ValueError(f"locked_dropout: x must be 3-D (batch, time, features), got shape {tuple(x.shape)}")
    shape = (x.shape[0], 1, x.shape[2]) if batch_first else (1, x.shape[1], x.shape[2])
    return x * dropout_mask(shape, p, x)


class LockedDropout(nn.Module):
    """Dropout with one mask per sequence, shared by every time step. Input (B, T, F) with
    ``batch_first=True`` (the default), else (T, B, F); output the same shape."""

    def __init__(self, p: float = 0.5, batch_first: bool = True) -> None:
        super().__init__()
        self.p = check_probability("LockedDropout", "p", p)
        self.batch_first = batch_first

    def forward(self, x: Tensor) -> Tensor:
        return locked_dropout(x, self.p, self.training, self.batch_first)

    def extra_repr(self) -> str:
        return f"p={self.p}, batch_first={self.batch_first}"


def embedding_dropout(weight: Tensor, tokens: Tensor, p: float, training: bool = True,
                      padding_idx: int | None = None) -> Tensor:
    """F.embedding(tokens, weight) with whole rows of `weight` (words) dropped with probability p."""
    if training and p > 0.0:
        weight = weight * dropout_mask((weight.shape[0], 1), p, weight)
    return F.embedding(tokens, weight, padding_idx)


class EmbeddingDropout(nn.Module):
    """An ``nn.Embedding`` that drops whole words in training: ``EmbeddingDropout(embedding, p)(tokens)``.
    Holds no parameter of its own (the weight is the wrapped embedding's)."""

    def __init__(self, embedding: nn.Embedding, p: float) -> None:
        super().__init__()
        self.embedding = embedding
        self.p = check_probability("EmbeddingDropout", "p", p)

    def forward(self, tokens: Tensor) -> Tensor:
        return embedding_dropout(self.embedding.weight, tokens, self.p, self.training, self.embedding.padding_idx)

    def extra_repr(self) -> str:
        return f"p={self.p}"


__all__ = ["LockedDropout", "locked_dropout", "EmbeddingDropout", "embedding_dropout"]
