"""Variable-length batches through `lightning_rnn.nn.LSTM`, `GRU`, `RNN` (backend="triton") as drop-ins:
a PackedSequence (enforce_sorted True or False) in, a PackedSequence out, and the same with a padded
tensor plus our `lengths=` keyword, against torch.nn on the packed batch.

torch.nn's state_dict is loaded into ours; both see the same fresh random input, initial state and
upstream gradients (for `lengths=`, random ones past the lengths too: they must be ignored); the
output, final states and the gradients of the input, initial state and every parameter are judged
against torch.nn in float64 on the dtype-rounded values, torch.nn's own error in the dtype as the
yardstick (tests/tolerance.py), kernel buffers NaN-poisoned. Configurations pairwise.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from kernels import paths
from lightning_rnn import nn as lrnn
from tests.tolerance import assert_no_worse_than_torch, rounded_to

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
KINDS = {  # name: (ours, torch.nn's, extra constructor arguments)
    "LSTM": (lrnn.LSTM, torch.nn.LSTM, {}),
    "GRU": (lrnn.GRU, torch.nn.GRU, {}),
    "RNN-tanh": (lrnn.RNN, torch.nn.RNN, {"nonlinearity": "tanh"}),
    "RNN-relu": (lrnn.RNN, torch.nn.RNN, {"nonlinearity": "relu"}),
}


@dataclass(frozen=True)
class Config:
    kind: str
    lengths: tuple[int, ...]  # the batch's rows; T is the longest
    I: int = 3
    H: int = 5
    layers: int = 1
    bidirectional: bool = False
    batch_first: bool = False
    init_state: bool = True
    sorted: bool = False  # enforce_sorted=True (rows given longest first)
    dtype: torch.dtype = torch.float32

    def __str__(self) -> str:
        flags = [f"L{self.layers}", "bi" if self.bidirectional else "uni", "bf" if self.batch_first else "tf",
                 "h0" if self.init_state else "noh0", "sorted" if self.sorted else "unsorted",
                 str(self.dtype)[6:]]
        return f"{self.kind}-len{'.'.join(map(str, self.lengths))}-" + "-".join(flags)


CONFIGS = [
    Config("LSTM", (4, 1, 3), layers=2, bidirectional=True, batch_first=True),
    Config("LSTM", (5, 5, 2), sorted=True, init_state=False, dtype=torch.float16),
    Config("LSTM", (3,), layers=3, bidirectional=True),  # one row, batch 1
    Config("GRU", (2, 6, 1, 6), bidirectional=True, dtype=torch.float16),
    Config("GRU", (3, 3, 3), layers=3, batch_first=True, sorted=True),  # all rows alike
    Config("RNN-tanh", (7, 1, 4, 2), layers=2, init_state=False, bidirectional=True, H=17),
    Config("RNN-tanh", (1,), batch_first=True, dtype=torch.float16),  # a single step
    Config("RNN-relu", (4, 2, 1), layers=2, bidirectional=True, sorted=True, batch_first=True),
]


@pytest.fixture
def poison(monkeypatch):
    from kernels.lstm import function
    from kernels.rnn import common

    monkeypatch.setattr(function, "POISON_BUFFERS", True)
    monkeypatch.setattr(common, "POISON_BUFFERS", True)


def _modules(cfg: Config):
    ours_cls, theirs_cls, extra = KINDS[cfg.kind]
    kwargs = dict(num_layers=cfg.layers, bidirectional=cfg.bidirectional, batch_first=cfg.batch_first, **extra)
    theirs = theirs_cls(cfg.I, cfg.H, **kwargs).to(DEVICE)
    ours = ours_cls(cfg.I, cfg.H, backend="triton", **kwargs).to(DEVICE)
    ours.load_state_dict(theirs.state_dict())
    return ours.to(cfg.dtype), theirs.to(cfg.dtype)


def _run(module, cfg: Config, x, hx, upstream, mode: str, ours: bool):
    """Forward and backward; returns ([output, *final states], {name: gradient})."""
    lengths = torch.tensor(cfg.lengths)
    x = x.detach().clone().requires_grad_()
    hx = tuple(h.detach().clone().requires_grad_() for h in hx) if hx is not None else None
    state = (hx if len(hx) == 2 else hx[0]) if hx is not None else None
    module.zero_grad()
    if mode == "lengths" and ours:
        y, final = module(x, state, lengths=lengths.to(DEVICE))
    else:
        packed = pack_padded_sequence(x, lengths, batch_first=cfg.batch_first, enforce_sorted=cfg.sorted)
        y, final = module(packed, state)
        assert isinstance(y, PackedSequence)
        if ours:  # the input's own batch_sizes and indices come back
            assert torch.equal(y.batch_sizes, packed.batch_sizes)
            for name in ("sorted_indices", "unsorted_indices"):
                a, b = getattr(y, name), getattr(packed, name)
                assert (a is None and b is None) or torch.equal(a, b), name
        if mode == "lengths":
            y, _ = pad_packed_sequence(y, batch_first=cfg.batch_first, total_length=x.shape[1 if cfg.batch_first else 0])
        else:
            y = y.data
    finals = list(final) if isinstance(final, tuple) else [final]
    grads = [upstream[0] if mode == "lengths" else upstream[0][: y.shape[0]]] + list(upstream[1:])
    torch.autograd.backward([y, *finals], [g.to(y.dtype) for g in grads[: 1 + len(finals)]])
    named = {"input": x.grad} | ({f"hx[{i}]": h.grad for i, h in enumerate(hx)} if hx is not None else {})
    named.update({f"grad {n}": p.grad for n, p in module.named_parameters()})
    return [y, *finals], named


def check_packed_parity(cfg: Config, mode: str) -> None:
    ours, theirs = _modules(cfg)
    exact = copy.deepcopy(theirs).double()
    B, T, D = len(cfg.lengths), max(cfg.lengths), 2 if cfg.bidirectional else 1
    shape = (B, T, cfg.I) if cfg.batch_first else (T, B, cfg.I)
    x = torch.randn(shape, device=DEVICE)
    n_states = 2 if cfg.kind == "LSTM" else 1
    hx = tuple(torch.randn(D * cfg.layers, B, cfg.H, device=DEVICE) * 0.5 for _ in range(n_states)) \
        if cfg.init_state else None
    # Upstream for the output: (T, B, D*H) padded for lengths=, its first rows as packed data otherwise.
    upstream = [torch.randn(shape[:2] + (D * cfg.H,), device=DEVICE).view(-1, D * cfg.H) if mode == "packed"
                else torch.randn(shape[:2] + (D * cfg.H,), device=DEVICE)]
    upstream += [torch.randn(D * cfg.layers, B, cfg.H, device=DEVICE) for _ in range(n_states)]

    def cast(t, dtype):
        return None if t is None else tuple(s.to(dtype) for s in t) if isinstance(t, tuple) else t.to(dtype)

    paths.reset()
    out_ours, g_ours = _run(ours, cfg, x.to(cfg.dtype), cast(hx, cfg.dtype), upstream, mode, ours=True)
    assert ours.last_backend == "triton"
    family = {"LSTM": "lstm", "GRU": "gru"}.get(cfg.kind, "rnn")
    assert any(r["cell"] == family and r["path"] == "persistent" for r in paths.snapshot()), paths.snapshot()
    out_theirs, g_theirs = _run(theirs, cfg, x.to(cfg.dtype), cast(hx, cfg.dtype), upstream, mode, ours=False)
    out_exact, g_exact = _run(exact, cfg, rounded_to(cfg.dtype, x),
                              tuple(rounded_to(cfg.dtype, h) for h in hx) if hx is not None else None,
                              [rounded_to(cfg.dtype, g) for g in upstream], mode, ours=False)
    for name, a, b, r in zip(["output", "h_n", "c_n"], out_ours, out_theirs, out_exact):
        assert_no_worse_than_torch(name, a, b, r)
    if mode == "lengths":
        t_dim = 1 if cfg.batch_first else 0
        for b, n in enumerate(cfg.lengths):
            assert not out_ours[0].narrow(1 - t_dim, b, 1).narrow(t_dim, n, T - n).any(), "zeros past the length"
    assert g_ours.keys() == g_exact.keys()
    for name in g_ours:
        assert_no_worse_than_torch(name, g_ours[name], g_theirs[name], g_exact[name])


@pytest.mark.parametrize("mode", ["packed", "lengths"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_matches_torch_on_packed_batches(cfg, mode, poison):
    if cfg.sorted:  # enforce_sorted=True wants the rows longest first
        cfg = Config(**{**cfg.__dict__, "lengths": tuple(sorted(cfg.lengths, reverse=True))})
    check_packed_parity(cfg, mode)


def test_the_step_kernels_and_the_cell_loop_agree_with_the_engine(monkeypatch):
    """The per-step kernels (engine off) and our PyTorch cell loop (the "reference" backend) with lengths."""
    from lightning_rnn.nn.functional import stacked_rnn

    ours, theirs = _modules(Config("LSTM", (3, 1, 2), layers=2, bidirectional=True))
    x = torch.randn(3, 3, 3, device=DEVICE)
    lengths = torch.tensor([3, 1, 2], device=DEVICE)
    expected = theirs(pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False))
    y_ref, _ = pad_packed_sequence(expected[0])
    monkeypatch.setenv("LIGHTNING_RNN_PERSISTENT", "0")
    paths.reset()
    y, (h, c) = ours(x, lengths=lengths)
    assert [r["path"] for r in paths.snapshot()] == ["step"]
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h, expected[1][0], atol=1e-5, rtol=1e-5)
    zeros = torch.zeros(4, 3, 5, device=DEVICE)
    y2, (h2, c2) = stacked_rnn(x, (zeros, zeros), ours._layer_weights(),
                               ours._cell_loop(), 2, True, 0.0, False, lengths)
    torch.testing.assert_close(y2, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c2, expected[1][1], atol=1e-5, rtol=1e-5)


def test_dropout_between_layers_with_lengths():
    """Dropout keeps the zeros past the lengths zero, and runs in training mode only."""
    m = lrnn.GRU(3, 4, num_layers=2, dropout=0.5, backend="triton").to(DEVICE)
    x = torch.randn(4, 2, 3, device=DEVICE)
    lengths = torch.tensor([4, 2], device=DEVICE)
    y, _ = m(x, lengths=lengths)
    assert not y[2:, 1].any()
    m.eval()
    torch.testing.assert_close(m(x, lengths=lengths)[0], m(x, lengths=lengths)[0])


@pytest.mark.parametrize("kind, batch_first", [("LSTM", False), ("GRU", True), ("RNN-relu", False)])
def test_torch_backend_takes_lengths_too(kind, batch_first, monkeypatch):
    """backend="torch" with lengths=: torch.nn on the packed batch (on a GPU), or on the CPU its fused
    one-layer RNN in chunks between the distinct lengths (faster there than its packed RNN): the same
    outputs, final states and gradients as torch.nn on the packed batch (float64: to rounding)."""
    from lightning_rnn.nn import packing

    ours_cls, theirs_cls, extra = KINDS[kind]
    kwargs = dict(num_layers=2, bidirectional=True, batch_first=batch_first, **extra)
    ours = ours_cls(3, 4, backend="torch", **kwargs).to(DEVICE).double()
    theirs = theirs_cls(3, 4, **kwargs).to(DEVICE).double()
    theirs.load_state_dict(ours.state_dict())
    packings = []
    monkeypatch.setattr(packing, "pack_padded_sequence",
                        lambda *a, **k: (packings.append(1), pack_padded_sequence(*a, **k))[1])
    lengths = [4, 1, 6, 4, 2]
    x = torch.randn((5, 6, 3) if batch_first else (6, 5, 3), device=DEVICE, dtype=torch.float64)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y, final = ours(x1, lengths=lengths)
    assert bool(packings) == (DEVICE != "cpu"), "the CPU takes the chunks, a GPU packs"
    y_ref, final_ref = theirs(pack_padded_sequence(x2, torch.tensor(lengths), batch_first=batch_first,
                                                   enforce_sorted=False))
    y_ref, _ = pad_packed_sequence(y_ref, batch_first=batch_first, total_length=6)
    finals = final if isinstance(final, tuple) else (final,)
    finals_ref = final_ref if isinstance(final_ref, tuple) else (final_ref,)
    (y.sum() + sum((f * f).sum() for f in finals)).backward()
    (y_ref.sum() + sum((f * f).sum() for f in finals_ref)).backward()
    for a, b in [(y, y_ref), *zip(finals, finals_ref), (x1.grad, x2.grad),
                 *((p.grad, q.grad) for p, q in zip(ours.parameters(), theirs.parameters()))]:
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("lengths, match", [
    ([4, 6], r"lengths must be in 1\.\.5"),
    ([0, 3], r"lengths must be in 1\.\.5"),
    ([-1, 3], r"lengths must be in 1\.\.5"),
    ([3, 2, 1], r"lengths must have shape \(2,\)"),
    (torch.tensor([3.0, 2.0]), "lengths must have an integer dtype"),
    (torch.tensor([[3, 2]]), r"lengths must have shape \(2,\)"),
    ("3,2", "lengths must be a 1-D integer tensor"),
])
@pytest.mark.parametrize("kind", ["LSTM", "RNN-tanh"])
def test_bad_lengths_are_refused_naming_them(kind, lengths, match):
    m = KINDS[kind][0](3, 4, backend="triton").to(DEVICE)
    with pytest.raises(ValueError, match=match):
        m(torch.randn(5, 2, 3, device=DEVICE), lengths=lengths)


def test_lengths_with_a_packed_input_or_unbatched_input_is_refused():
    m = lrnn.GRU(3, 4, backend="triton").to(DEVICE)
    packed = pack_padded_sequence(torch.randn(3, 2, 3, device=DEVICE), [3, 2])
    with pytest.raises(ValueError, match="lengths is for a padded tensor"):
        m(packed, lengths=[3, 2])
    with pytest.raises(ValueError, match="lengths needs a batched"):
        m(torch.randn(3, 3, device=DEVICE), lengths=[3])
