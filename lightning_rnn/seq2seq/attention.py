"""Global attention over all encoder states (Luong et al., 2015), with a padding mask.

Three score functions between a decoder state ``q`` and an encoder state ``k``:

- ``dot``: ``q . k`` (Luong);
- ``general``: ``q . W k`` (Luong);
- ``additive``: ``v . tanh(W_q q + W_k k)`` (Bahdanau et al., 2015).

Attention is applied to the decoder's outputs (no input feeding), so the decoder's recurrent
layer still runs over the whole target sequence in one call during training.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

AttentionKind = Literal["dot", "general", "additive"]


class Attention(nn.Module):
    """Context vectors for each decoder step.

    Args:
        kind: the score function (see the module docstring).
        hidden_size: H, the size of both decoder and encoder states.
    """

    def __init__(self, kind: AttentionKind, hidden_size: int) -> None:
        super().__init__()
        if kind not in ("dot", "general", "additive"):
            raise ValueError(f"attention kind must be 'dot', 'general' or 'additive', got {kind!r}")
        self.kind = kind
        if kind == "general":
            self.key_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        elif kind == "additive":
            self.query_proj = nn.Linear(hidden_size, hidden_size, bias=False)
            self.key_proj = nn.Linear(hidden_size, hidden_size, bias=True)
            self.v = nn.Linear(hidden_size, 1, bias=False)

    def forward(self, query: Tensor, keys: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """
        Args:
            query: (B, T, H) decoder states.
            keys: (B, S, H) encoder states (also used as values).
            mask: (B, S) bool, ``True`` at real (non-padding) source positions.

        Returns:
            context (B, T, H) and attention weights (B, T, S), zero at padding.
        """
        if self.kind == "dot":
            scores = query @ keys.transpose(1, 2)
        elif self.kind == "general":
            scores = query @ self.key_proj(keys).transpose(1, 2)
        else:  # (B, T, 1, H) + (B, 1, S, H) -> (B, T, S)
            mixed = self.query_proj(query).unsqueeze(2) + self.key_proj(keys).unsqueeze(1)
            scores = self.v(torch.tanh(mixed)).squeeze(-1)
        scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        return weights @ keys, weights
