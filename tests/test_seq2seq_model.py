"""Seq2Seq network and decoding: every variant learns copy-and-reverse; beam vs greedy; masks."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.nn import functional as F

from lightning_rnn.data.pair_vocab import BOS, EOS, PAD
from lightning_rnn.seq2seq.decoding import beam_search, greedy_decode
from lightning_rnn.seq2seq.network import Seq2SeqNet, reverse_padded

ALPHABET = [4, 5, 6, 7]  # token ids after the 4 specials
VOCAB_SIZE = 8

VARIANTS = {
    "plain": {},
    "reverse": {"reverse_source": True},
    "peeky": {"peeky": True},
    "attention-dot": {"attention": "dot"},
    "attention-general": {"attention": "general"},
    "attention-additive": {"attention": "additive"},
}


def _copy_reverse_data() -> tuple[torch.Tensor, torch.Tensor]:
    """Every sequence of length 1-4 over ALPHABET (340 of them) and its reverse.

    Returns source (N, 4) right-padded and target (N, 6) as ``<bos> reversed <eos>``.
    """
    seqs = [list(s) for n in range(1, 5) for s in itertools.product(ALPHABET, repeat=n)]
    src = torch.full((len(seqs), 4), PAD)
    tgt = torch.full((len(seqs), 6), PAD)
    for i, s in enumerate(seqs):
        src[i, : len(s)] = torch.tensor(s)
        tgt[i, : len(s) + 2] = torch.tensor([BOS, *s[::-1], EOS])
    return src, tgt


def _exact_match(tokens: torch.Tensor, target: torch.Tensor) -> float:
    """Share of rows of decoded ``tokens`` equal to ``target``'s ``tokens <eos>`` part."""
    ref = target[:, 1:]
    width = max(tokens.shape[1], ref.shape[1])
    tokens = F.pad(tokens, (0, width - tokens.shape[1]), value=PAD)
    ref = F.pad(ref, (0, width - ref.shape[1]), value=PAD)
    return (tokens == ref).all(1).float().mean().item()


def _train(net: Seq2SeqNet, src, tgt, steps: int, lr: float = 0.01, seed: int = 0) -> Seq2SeqNet:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for _ in range(steps):
        idx = torch.randint(0, src.shape[0], (64,), generator=gen)
        logits = net(src[idx], tgt[idx, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), tgt[idx, 1:].flatten(), ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
    return net.eval()


@pytest.mark.parametrize("variant", VARIANTS, ids=list(VARIANTS))
def test_every_variant_learns_copy_and_reverse(variant):
    torch.manual_seed(0)
    src, tgt = _copy_reverse_data()
    net = Seq2SeqNet(VOCAB_SIZE, embed_dim=16, hidden_size=64, backend="torch", **VARIANTS[variant])
    _train(net, src, tgt, steps=400)
    tokens, _ = greedy_decode(net, src, max_len=6)
    assert _exact_match(tokens, tgt) == 1.0


def _random_net(seed: int, **kwargs) -> Seq2SeqNet:
    torch.manual_seed(seed)
    net = Seq2SeqNet(VOCAB_SIZE, embed_dim=8, hidden_size=16, backend="torch", **kwargs).eval()
    with torch.no_grad():  # sharper distributions than the default init: searches disagree more
        net.out.weight.mul_(8.0)
    return net


@pytest.mark.parametrize("length_penalty", [0.0, 1.0], ids=["raw-logprob", "length-normalised"])
def test_beam_of_one_equals_greedy(length_penalty):
    src, _ = _copy_reverse_data()
    for seed in range(3):
        net = _random_net(seed, attention="general", peeky=True)
        greedy, greedy_score = greedy_decode(net, src, max_len=8, length_penalty=length_penalty)
        beam, beam_score = beam_search(net, src, max_len=8, beam_size=1, length_penalty=length_penalty)
        assert torch.equal(beam, greedy)
        torch.testing.assert_close(beam_score, greedy_score)


def _sequence_score(net: Seq2SeqNet, src, tokens, length_penalty: float) -> torch.Tensor:
    """Model score of given outputs, recomputed by teacher forcing (the reference)."""
    ended = (tokens == EOS).long().cumsum(1)
    real = (ended - (tokens == EOS).long()) == 0  # tokens up to and including the first <eos>
    length = real.sum(1)
    target_in = torch.cat([torch.full_like(tokens[:, :1], BOS), tokens[:, :-1]], 1)
    with torch.no_grad():
        logp = torch.log_softmax(net(src, target_in).float(), -1)
    picked = logp.gather(2, tokens.unsqueeze(2)).squeeze(2)
    return (picked * real).sum(1) / length.clamp(min=1).float() ** length_penalty


@pytest.mark.parametrize("length_penalty", [0.0, 1.0], ids=["raw-logprob", "length-normalised"])
def test_beam_search_never_scores_below_greedy(length_penalty):
    src, _ = _copy_reverse_data()
    better = 0
    for seed in range(4):
        net = _random_net(seed, attention="dot")
        greedy, _ = greedy_decode(net, src, max_len=8, length_penalty=length_penalty)
        beam, beam_score = beam_search(net, src, max_len=8, beam_size=4, length_penalty=length_penalty)
        greedy_ref = _sequence_score(net, src, greedy, length_penalty)
        beam_ref = _sequence_score(net, src, beam, length_penalty)
        torch.testing.assert_close(beam_score, beam_ref, rtol=1e-4, atol=1e-4)
        assert bool((beam_ref >= greedy_ref - 1e-5).all())
        better += int((beam_ref > greedy_ref + 1e-4).sum())
    assert better > 0  # the search does find better outputs on some inputs


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"reverse_source": True}, {"peeky": True, "num_layers": 2}, {"attention": "dot"},
     {"attention": "general", "reverse_source": True}, {"attention": "additive", "cell": "gru"},
     {"cell": "rnn", "tie_weights": True, "attention": "dot"}],
    ids=["plain", "reverse", "peeky-2-layers", "dot", "general-reverse", "additive-gru", "rnn-tied-dot"],
)
def test_extra_padding_does_not_change_the_output(kwargs):
    src, _ = _copy_reverse_data()
    net = _random_net(1, **kwargs)
    padded = F.pad(src, (0, 5), value=PAD)
    for search in (lambda s: greedy_decode(net, s, 8), lambda s: beam_search(net, s, 8, beam_size=3)):
        tokens, score = search(src)
        tokens_padded, score_padded = search(padded)
        assert torch.equal(tokens, tokens_padded)
        torch.testing.assert_close(score, score_padded)


def test_reverse_padded_keeps_padding_in_place():
    x = torch.tensor([[1, 2, 3, 0, 0], [4, 5, 6, 7, 8]])
    out = reverse_padded(x, torch.tensor([3, 5]))
    assert out.tolist() == [[3, 2, 1, 0, 0], [8, 7, 6, 5, 4]]


def test_a_checkpoint_of_the_former_encoder_loads():
    """Before: one one-layer module per encoder layer (encoder.1.weight_ih_l0); now one stacked module."""
    net = Seq2SeqNet(VOCAB_SIZE, embed_dim=4, hidden_size=6, num_layers=2, backend="torch")
    old = {}
    for key, value in net.state_dict().items():
        if key.startswith("encoder."):
            name, layer = key[len("encoder."):].rsplit("_l", 1)
            key = f"encoder.{layer}.{name}_l0"
        old[key] = value.clone() + 1
    net.load_state_dict(old)
    assert torch.equal(net.encoder.weight_hh_l1, old["encoder.1.weight_hh_l0"])


def test_empty_source_is_rejected():
    net = _random_net(0)
    with pytest.raises(ValueError, match="empty row"):
        greedy_decode(net, torch.tensor([[4, 5], [PAD, PAD]]), 5)
    with pytest.raises(ValueError, match="empty row"):
        beam_search(net, torch.tensor([[4, 5], [PAD, PAD]]), 5)


@pytest.mark.parametrize(
    "kwargs,match",
    [({"cell": "lstmx"}, "cell must be one of"), ({"attention": "luong"}, "attention must be"),
     ({"hidden_size": 0}, "hidden_size must be a positive int"), ({"dropout": 1.0}, "dropout must be in")],
    ids=["cell", "attention", "hidden_size", "dropout"],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Seq2SeqNet(VOCAB_SIZE, backend="torch", **kwargs)
