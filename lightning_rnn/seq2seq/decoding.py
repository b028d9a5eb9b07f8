"""Batched greedy and beam-search decoding for :class:`~lightning_rnn.seq2seq.network.Seq2SeqNet`,
and for any other net with the same three methods (:class:`DecoderNet`; the image captioner's,
for one, whose sources are images).

Both return ``(tokens, scores)``: ``tokens`` (B, T') generated ids ending with ``<eos>`` (or cut
at ``max_len``) then ``<pad>``; ``scores`` (B,) the *model score* each search maximises:
the sum of token log-probabilities (``<eos>`` included) divided by ``length ** length_penalty``
(``length_penalty=0``: plain log-probability; 1: per-token average).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor

from lightning_rnn.data.pair_vocab import BOS, EOS, PAD
from lightning_rnn.seq2seq.network import State, reorder_state


class DecoderNet(Protocol):
    """What decoding needs of a net (:class:`~lightning_rnn.seq2seq.network.Seq2SeqNet` has it).

    ``encode(source) -> memory``, where ``source`` has the batch first and ``memory`` offers
    ``repeat_interleave(k)`` (each batch row k times, for beam search); ``initial_state(memory)``
    and ``decode(token (B, 1), memory, state) -> (logits (B, 1, V), state)`` with states that
    :func:`~lightning_rnn.seq2seq.network.reorder_state` can index, (L, B, H) or a tuple of them.
    A net whose sources are not token ids also has ``check_source(source)``, raising ``ValueError``.
    """

    def encode(self, source: Tensor) -> Any: ...

    def initial_state(self, memory: Any) -> State: ...

    def decode(self, target_in: Tensor, memory: Any, state: State) -> tuple[Tensor, State]: ...


def _check(net: DecoderNet, source: Tensor, max_len: int) -> None:
    check_source = getattr(net, "check_source", None)
    if check_source is not None:  # the net knows its own sources (images, say)
        check_source(source)
    else:
        _check_token_source(source)
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")


def _check_token_source(source: Tensor) -> None:
    if source.dim() != 2:
        raise ValueError(f"source must be (B, S) token ids, got shape {tuple(source.shape)}")
    if source.shape[1] == 0 or bool(((source != PAD).sum(1) == 0).any()):
        raise ValueError("source has an empty row (only padding): nothing to translate")


def normalized_score(logprob: Tensor, length: Tensor, length_penalty: float) -> Tensor:
    """``logprob / length ** length_penalty`` (length counts ``<eos>``; at least 1)."""
    return logprob / length.clamp(min=1).to(logprob.dtype) ** length_penalty


@torch.no_grad()
def greedy_decode(
    net: DecoderNet, source: Tensor, max_len: int, length_penalty: float = 0.0
) -> tuple[Tensor, Tensor]:
    """Pick the most probable token at every step. source: (B, S) ids (or ``net``'s). See the module docstring."""
    _check(net, source, max_len)
    memory = net.encode(source)
    state = net.initial_state(memory)
    B = source.shape[0]
    token = torch.full((B, 1), BOS, dtype=torch.long, device=source.device)
    finished = torch.zeros(B, dtype=torch.bool, device=source.device)
    logprob = torch.zeros(B, device=source.device)
    length = torch.zeros(B, dtype=torch.long, device=source.device)
    out = []
    for _ in range(max_len):
        logits, state = net.decode(token, memory, state)
        step_logp = torch.log_softmax(logits[:, -1].float(), dim=-1)
        best_logp, nxt = step_logp.max(dim=-1)
        logprob += torch.where(finished, torch.zeros_like(best_logp), best_logp)
        length += (~finished).long()
        nxt = nxt.masked_fill(finished, PAD)
        out.append(nxt)
        finished |= nxt == EOS
        if bool(finished.all()):
            break
        token = nxt.unsqueeze(1)
    return torch.stack(out, 1), normalized_score(logprob, length, length_penalty)


@torch.no_grad()
def beam_search(
    net: DecoderNet,
    source: Tensor,
    max_len: int,
    beam_size: int = 4,
    length_penalty: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Keep the ``beam_size`` most probable prefixes per source; return the best by model score.

    Prefixes are ranked by raw log-probability while searching; a finished hypothesis keeps its
    slot (extended by ``<pad>`` at no cost) and the final choice among the beams uses the
    length-normalised score. Because a beam can prune the greedy path, the greedy result is
    also scored and returned where it is better: beam search never scores below greedy.
    """
    _check(net, source, max_len)
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    B, K, dev = source.shape[0], beam_size, source.device
    memory = net.encode(source).repeat_interleave(K)
    state = net.initial_state(memory)
    scores = torch.full((B, K), float("-inf"), device=dev)
    scores[:, 0] = 0.0  # all beams start identical: keep one so the first step fans out
    tokens = torch.empty((B * K, 0), dtype=torch.long, device=dev)
    finished = torch.zeros(B * K, dtype=torch.bool, device=dev)
    length = torch.zeros(B * K, dtype=torch.long, device=dev)
    token = torch.full((B * K, 1), BOS, dtype=torch.long, device=dev)
    for _ in range(max_len):
        logits, state = net.decode(token, memory, state)
        step_logp = torch.log_softmax(logits[:, -1].float(), dim=-1)  # (B*K, V)
        V = step_logp.shape[-1]
        pad_only = torch.full_like(step_logp[0], float("-inf"))
        pad_only[PAD] = 0.0
        step_logp = torch.where(finished.unsqueeze(1), pad_only, step_logp)
        cand = (scores.view(B * K, 1) + step_logp).view(B, K * V)
        scores, flat = cand.topk(K, dim=1)  # (B, K)
        parent = (torch.arange(B, device=dev).unsqueeze(1) * K + flat // V).view(-1)
        nxt = (flat % V).view(-1)
        tokens = torch.cat([tokens[parent], nxt.unsqueeze(1)], 1)
        state = reorder_state(state, parent)
        finished, length = finished[parent], length[parent]
        length += (~finished).long()
        finished |= nxt == EOS
        if bool(finished.all()):
            break
        token = nxt.unsqueeze(1)
    final = normalized_score(scores.view(-1), length, length_penalty).view(B, K)
    best_score, best = final.max(dim=1)
    best_tokens = tokens.view(B, K, -1)[torch.arange(B, device=dev), best]

    greedy_tokens, greedy_score = greedy_decode(net, source, max_len, length_penalty)
    use_greedy = greedy_score > best_score
    width = max(best_tokens.shape[1], greedy_tokens.shape[1])
    best_tokens = _pad_to(best_tokens, width)
    best_tokens[use_greedy] = _pad_to(greedy_tokens, width)[use_greedy]
    return best_tokens, torch.maximum(best_score, greedy_score)


def _pad_to(x: Tensor, width: int) -> Tensor:
    return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=PAD)
