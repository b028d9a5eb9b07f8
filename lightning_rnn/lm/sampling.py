"""Choosing the next token from a model's logits: greedy, temperature and top-k."""

from __future__ import annotations

import torch


def next_token(logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator | None) -> torch.Tensor:
    """Pick one token id per row of ``logits`` ``[B, V]``; returns ``[B]`` int64.

    ``temperature == 0`` is greedy (argmax). Otherwise sample from
    ``softmax(logits / temperature)`` restricted to the ``top_k`` most likely
    tokens when ``top_k`` is given.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be a positive integer or None, got {top_k}")
    logits = logits.float()
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth_best = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(logits.device)
