"""The encoder-decoder network (plain ``nn.Module``; training lives in ``module.py``).

    source (B, S) ──embed──▶ encoder RNN ──▶ states (B, S, H), final h (L, B, H)
    target_in (B, T) ──embed (+ peeky h)──▶ decoder RNN, started from the encoder's final h
        ──▶ [attention context] + decoder out [+ peeky h] ──▶ linear ──▶ logits (B, T, V)

Sources are right-padded with ``<pad>`` (id 0). The encoder is one stacked recurrent module called
with the sources' lengths (``lengths=``, our addition to torch.nn's signature): each layer's final
state is its state at the row's last real token, and trailing padding never changes the result,
whatever the backend. As in the DLFS2 book, the decoder starts from the encoder's final ``h``
with a zero LSTM cell state. Checkpoints of the former encoder (one module per layer) still load.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Union

import torch
from torch import Tensor, nn

from kernels.lengths import reverse_within
from lightning_rnn.data.pair_vocab import PAD
from lightning_rnn.nn import GRU, LSTM, RNN
from lightning_rnn.seq2seq.attention import Attention

Cell = Literal["lstm", "gru", "rnn"]
AttentionChoice = Literal["none", "dot", "general", "additive"]
State = Union[Tensor, tuple[Tensor, Tensor]]  # (L, B, H), or (h, c) for LSTM

_CELLS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}


@dataclass
class Memory:
    """What the decoder reads from the encoder.

    states: (B, S, H) top-layer encoder outputs; mask: (B, S) bool, True at real tokens;
    final: (L, B, H) each encoder layer's output at the last real token.
    """

    states: Tensor
    mask: Tensor
    final: Tensor

    def repeat_interleave(self, k: int) -> Memory:
        """Each batch row repeated ``k`` times (for beam search)."""
        return Memory(
            self.states.repeat_interleave(k, 0),
            self.mask.repeat_interleave(k, 0),
            self.final.repeat_interleave(k, 1),
        )


def reverse_padded(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each row's first ``lengths[b]`` entries, leaving its padding in place. x: (B, S)."""
    return reverse_within(x.t().unsqueeze(-1), lengths).squeeze(-1).t()


class Seq2SeqNet(nn.Module):
    """Encoder-decoder over one shared vocabulary. See the module docstring for the data flow.

    Args:
        vocab_size: V, tokens in the shared source/target vocabulary (id 0 is ``<pad>``).
        embed_dim: E, embedding size of both sides.
        hidden_size: H, recurrent state size of encoder and decoder.
        num_layers: L, stacked recurrent layers on each side.
        cell: ``"lstm"``, ``"gru"`` or ``"rnn"``.
        dropout: on embeddings, between layers and before the output layer.
        reverse_source: read each source back to front (real tokens only).
        peeky: concatenate the encoder's final top-layer ``h`` to every decoder input and to
            the output layer's input.
        attention: ``"none"`` or a score function of :class:`Attention`.
        tie_weights: share the decoder embedding with the output layer (through a linear
            projection to E when the output layer's input is not E wide).
        backend: passed to the recurrent layers (``"auto"``, ``"triton"`` or ``"torch"``).
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
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if cell not in _CELLS:
            raise ValueError(f"cell must be one of {sorted(_CELLS)}, got {cell!r}")
        if attention not in ("none", "dot", "general", "additive"):
            raise ValueError(f"attention must be 'none', 'dot', 'general' or 'additive', got {attention!r}")
        for name, value in [("vocab_size", vocab_size), ("embed_dim", embed_dim),
                            ("hidden_size", hidden_size), ("num_layers", num_layers)]:
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.cell, self.reverse_source, self.peeky = cell, reverse_source, peeky
        rnn = _CELLS[cell]
        H, E = hidden_size, embed_dim

        self.src_embed = nn.Embedding(vocab_size, E, padding_idx=PAD)
        self.tgt_embed = nn.Embedding(vocab_size, E, padding_idx=PAD)
        self.encoder = rnn(E, H, num_layers=num_layers, batch_first=True,
                           dropout=dropout if num_layers > 1 else 0.0, backend=backend)
        self.decoder = rnn(E + (H if peeky else 0), H, num_layers=num_layers, batch_first=True,
                           dropout=dropout if num_layers > 1 else 0.0, backend=backend)
        self.attention = None if attention == "none" else Attention(attention, H)
        out_in = H * (1 + int(peeky) + int(self.attention is not None))
        self.proj = nn.Linear(out_in, E) if tie_weights and out_in != E else None
        self.out = nn.Linear(E if tie_weights else out_in, vocab_size)
        if tie_weights:
            self.out.weight = self.tgt_embed.weight
        self.drop = nn.Dropout(dropout)

    def encode(self, source: Tensor) -> Memory:
        """source: (B, S) ids, right-padded; every row needs at least one real token."""
        mask = source != PAD
        lengths = mask.sum(1)
        if self.reverse_source:
            source = reverse_padded(source, lengths)
        x = self.drop(self.src_embed(source))
        # (A row of padding only, which callers should not send, reads its first <pad>.)
        states, final = self.encoder(x, lengths=lengths.clamp(min=1))
        return Memory(states=states, mask=mask, final=final[0] if isinstance(final, tuple) else final)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """The former encoder, one one-layer module per layer (``encoder.1.weight_ih_l0``), renamed to
        the layers of one stacked module (``encoder.weight_ih_l1``)."""
        old = re.compile(re.escape(prefix) + r"encoder\.(\d+)\.(\w+)_l0$")
        for key in [k for k in state_dict if old.match(k)]:
            layer, name = old.match(key).groups()
            state_dict[f"{prefix}encoder.{name}_l{layer}"] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def initial_state(self, memory: Memory) -> State:
        """Decoder state from the encoder: its final h, and a zero cell state for LSTM."""
        h = memory.final
        return (h, torch.zeros_like(h)) if self.cell == "lstm" else h

    def decode(self, target_in: Tensor, memory: Memory, state: State) -> tuple[Tensor, State]:
        """Logits for each position of ``target_in``.

        Args:
            target_in: (B, T) ids, starting with ``<bos>`` (T=1 for one step of decoding).
            state: from :meth:`initial_state` or from the previous call.

        Returns:
            logits (B, T, V) and the decoder state after the last position.
        """
        y = self.drop(self.tgt_embed(target_in))
        B, T = target_in.shape
        peek = memory.final[-1].unsqueeze(1).expand(B, T, -1) if self.peeky else None
        if peek is not None:
            y = torch.cat([y, peek], dim=-1)
        out, state = self.decoder(y, state)
        features = [out]
        if self.attention is not None:
            context, _ = self.attention(out, memory.states, memory.mask)
            features.insert(0, context)
        if peek is not None:
            features.append(peek)
        z = self.drop(torch.cat(features, dim=-1))
        if self.proj is not None:
            z = self.proj(z)
        return self.out(z), state

    def forward(self, source: Tensor, target_in: Tensor) -> Tensor:
        """Teacher-forced logits (B, T, V) for ``target_in`` (B, T) given ``source`` (B, S)."""
        memory = self.encode(source)
        logits, _ = self.decode(target_in, memory, self.initial_state(memory))
        return logits


def reorder_state(state: State, index: Tensor) -> State:
    """Select batch rows ``index`` of a decoder state (beam search bookkeeping)."""
    if isinstance(state, tuple):
        return tuple(s.index_select(1, index) for s in state)
    return state.index_select(1, index)
