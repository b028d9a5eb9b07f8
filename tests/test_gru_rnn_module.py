"""`lightning_rnn.nn.GRU`, `RNN`, `GRUCell`, `RNNCell` with backend="triton" as drop-ins for torch.nn.

torch.nn's state_dict is loaded into ours; both see the same fresh random input and upstream
gradients; the output, final state and the gradients of the input, initial state and every
parameter are judged against a float64 torch.nn module on the same dtype-rounded values
(tests/tolerance.py), with NaN-poisoned kernel buffers. Configurations cover layers, directions,
layout, initial state, bias and the three cells (GRU, Elman tanh, Elman relu) pairwise.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from lightning_rnn import nn as lrnn
from tests.conftest import requires_cuda
from tests.tolerance import assert_no_worse_than_torch, rounded_to

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
KINDS = {  # name: (ours, torch.nn's, extra constructor arguments)
    "GRU": (lrnn.GRU, torch.nn.GRU, {}),
    "RNN-tanh": (lrnn.RNN, torch.nn.RNN, {"nonlinearity": "tanh"}),
    "RNN-relu": (lrnn.RNN, torch.nn.RNN, {"nonlinearity": "relu"}),
}


@pytest.fixture
def poison(monkeypatch):
    from kernels.rnn import common

    monkeypatch.setattr(common, "POISON_BUFFERS", True)


@dataclass(frozen=True)
class Config:
    kind: str
    B: int
    T: int
    I: int
    H: int
    layers: int = 1
    batch_first: bool = False
    bidirectional: bool = False
    init_state: bool = True
    bias: bool = True

    def __str__(self) -> str:
        flags = [f"L{self.layers}", "bf" if self.batch_first else "tf", "bi" if self.bidirectional else "uni",
                 "h0" if self.init_state else "noh0", "" if self.bias else "nobias"]
        return f"{self.kind}-B{self.B}-T{self.T}-I{self.I}-H{self.H}-" + "-".join(f for f in flags if f)

    def kwargs(self) -> dict:
        return dict(num_layers=self.layers, batch_first=self.batch_first, bidirectional=self.bidirectional,
                    bias=self.bias, **KINDS[self.kind][2])


CONFIGS = [
    Config("GRU", B=1, T=1, I=1, H=1),
    Config("GRU", B=3, T=7, I=5, H=5, layers=2, batch_first=True, bidirectional=True),
    Config("GRU", B=17, T=3, I=17, H=100, layers=3, init_state=False, bias=False),
    Config("RNN-tanh", B=3, T=33, I=4, H=17, bidirectional=True, bias=False, init_state=False),
    Config("RNN-tanh", B=17, T=1, I=100, H=5, layers=3, batch_first=True),
    Config("RNN-relu", B=1, T=7, I=3, H=100, layers=2, batch_first=True, init_state=False),
    Config("RNN-relu", B=3, T=7, I=17, H=17, layers=3, bidirectional=True, bias=False),
    Config("GRU", B=1, T=33, I=5, H=17, bidirectional=True, batch_first=True),
]


def run(module, x, hx, upstream, forward=None):
    """Forward (`module`'s, or `forward`, which uses `module`'s parameters) and backward; returns
    the outputs and the gradients of the input, initial state and every parameter of `module`."""
    x = x.detach().clone().requires_grad_()
    hx = hx.detach().clone().requires_grad_() if hx is not None else None
    module.zero_grad()
    y, h = (forward or module)(x, hx)
    torch.autograd.backward([y, h], [g.to(y.dtype) for g in upstream])
    grads = {"input": x.grad} | ({"h_0": hx.grad} if hx is not None else {})
    grads.update({f"grad {n}": p.grad for n, p in module.named_parameters()})
    return (y, h), grads


class _RoundedForward(torch.autograd.Function):
    """`t` rounded to `dtype` (held in t's dtype); the gradient passes through unchanged."""

    @staticmethod
    def forward(ctx, t, dtype):  # type: ignore[override]
        return t.to(dtype).to(t.dtype)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return grad, None


class _ReluTakingSides(torch.autograd.Function):
    """relu(pre), whose derivative is 1 where `side` is True and 0 elsewhere (instead of pre > 0)."""

    @staticmethod
    def forward(ctx, pre, side):  # type: ignore[override]
        ctx.save_for_backward(side)
        return pre.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (side,) = ctx.saved_tensors
        return grad * side, None


#: How far from relu's kink, in units of the dtype's eps times the magnitude of the sum that makes
#: the pre-activation (sum |w| |input|), ours may take the other side than the float64 reference.
#: Rounding a layer's inputs to 16 bits moves a pre-activation by at most eps/2 times that; measured
#: for the 3-layer relu case in fp16 (persistent engine, 100 draws): at most 0.09. A real error in
#: a unit's activation is O(1/eps) of it.
KINK_SLACK = 4


def reference_stack(module: torch.nn.RNNBase, dtype: torch.dtype | None = None, every_step: bool = False,
                    relu_sides: list[torch.Tensor] | None = None):
    """`module`'s forward (x, hx) -> (output, h_n), one layer, direction and step at a time with
    torch.nn's cells on `module`'s parameters (so gradients land in them).

    dtype: round every layer's input after the first to it, as a stack of `dtype` layers passes its
    outputs on; every_step: round h to it after every step too, as where h travels between steps in
    `dtype`. relu_sides (Elman relu): per layer and direction, in the order the direction runs, a
    (T, B, H) bool tensor: the side of the kink each unit's derivative takes, which may differ from
    the sign of the pre-activation only within KINK_SLACK of it (asserted). Roundings pass gradients
    through unchanged. Why the reference needs these, see check_module_parity."""
    D = 2 if module.bidirectional else 1
    names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if module.bias else [])
    eps = torch.finfo(dtype).eps if dtype is not None else 0.0

    def rounded(t):
        return _RoundedForward.apply(t, dtype) if dtype is not None else t

    def cell_of(layer: int, suffix: str, input_size: int):
        if isinstance(module, torch.nn.GRU):
            cell = torch.nn.GRUCell(input_size, module.hidden_size, bias=module.bias, device="meta")
        else:
            cell = torch.nn.RNNCell(input_size, module.hidden_size, bias=module.bias,
                                    nonlinearity=module.nonlinearity, device="meta")
        for name in names:
            setattr(cell, name, getattr(module, f"{name}_l{layer}{suffix}"))
        return cell

    def relu_step(cell, x_t, h, side, where: str):
        w_ih, w_hh = cell.weight_ih, cell.weight_hh
        b_ih, b_hh = (cell.bias_ih, cell.bias_hh) if module.bias else (None, None)
        pre = F.linear(x_t, w_ih, b_ih) + F.linear(h, w_hh, b_hh)
        magnitude = F.linear(x_t.abs(), w_ih.abs(), None if b_ih is None else b_ih.abs()) + F.linear(
            h.abs(), w_hh.abs(), None if b_hh is None else b_hh.abs())
        beyond = (side != (pre > 0)) & (pre.abs() > KINK_SLACK * eps * magnitude)
        assert not beyond.any(), (
            f"{where}: our relu takes the other side of the kink at pre-activations {pre[beyond].tolist()}, "
            f"beyond 16-bit rounding of 0 ({KINK_SLACK} eps x {magnitude[beyond].tolist()})"
        )
        return _ReluTakingSides.apply(pre, side)

    def forward(x, hx):
        x = x.transpose(0, 1) if module.batch_first else x  # (T, B, I) from here on
        finals = []
        for layer in range(module.num_layers):
            x = rounded(x) if layer > 0 else x
            outputs = []
            for direction, suffix in enumerate(["", "_reverse"][:D]):
                cell = cell_of(layer, suffix, x.shape[-1])
                idx = layer * D + direction
                h = hx[idx] if hx is not None else x.new_zeros(x.shape[1], module.hidden_size)
                ys = []
                for t, x_t in enumerate(x.flip(0) if direction else x):
                    if relu_sides is None:
                        h = cell(x_t, h)
                    else:
                        h = relu_step(cell, x_t, h, relu_sides[idx][t], f"layer {layer} direction {direction} step {t}")
                    h = rounded(h) if every_step else h
                    ys.append(h)
                y = torch.stack(ys)
                outputs.append(y.flip(0) if direction else y)
                finals.append(h)
            x = torch.cat(outputs, -1)
        return x.transpose(0, 1) if module.batch_first else x, torch.stack(finals)

    return forward


def our_relu_sides(ours: lrnn.RNN, x, hx) -> list[torch.Tensor]:
    """Which side of relu's kink each unit of `ours` is on (h > 0, as its backward decides), per layer
    and direction in the order the direction runs: `ours`' layers run one by one, as the module
    stacks them, to see the outputs of the layers in between."""
    D = 2 if ours.bidirectional else 1
    x = x.transpose(0, 1) if ours.batch_first else x
    sides = []
    with torch.no_grad():
        for layer in range(ours.num_layers):
            one = lrnn.RNN(x.shape[-1], ours.hidden_size, nonlinearity="relu", bias=ours.bias,
                           bidirectional=ours.bidirectional, backend="triton", device="meta")
            for name in one._flat_weights_names:  # weight_ih_l0[_reverse], ...: this layer's of ours
                setattr(one, name, getattr(ours, name.replace("_l0", f"_l{layer}")))
            x, _ = one(x, None if hx is None else hx[layer * D:(layer + 1) * D])
            for direction in range(D):
                y = x[..., direction * ours.hidden_size:(direction + 1) * ours.hidden_size]
                sides.append(y.flip(0) > 0 if direction else y > 0)
    return sides


def check_module_parity(cfg: Config, dtype: torch.dtype, device: str) -> None:
    ours_cls, theirs_cls, _ = KINDS[cfg.kind]
    theirs = theirs_cls(cfg.I, cfg.H, **cfg.kwargs()).to(device)
    if cfg.kind != "RNN-relu":  # larger than the default init, so that gates saturate somewhere
        with torch.no_grad():
            for p in theirs.parameters():
                p.mul_(2.0)
    ours = ours_cls(cfg.I, cfg.H, backend="triton", **cfg.kwargs()).to(device)
    ours.load_state_dict(theirs.state_dict())
    theirs, ours = theirs.to(dtype), ours.to(dtype)
    exact = copy.deepcopy(theirs).double()  # the dtype-rounded parameters, in float64

    D = 2 if cfg.bidirectional else 1
    shape = (cfg.B, cfg.T, cfg.I) if cfg.batch_first else (cfg.T, cfg.B, cfg.I)
    x = torch.randn(shape, device=device)
    hx = torch.randn(D * cfg.layers, cfg.B, cfg.H, device=device) * 0.5 if cfg.init_state else None
    upstream = [torch.randn(shape[:2] + (D * cfg.H,), device=device),
                torch.randn(D * cfg.layers, cfg.B, cfg.H, device=device)]

    out_ours, g_ours = run(ours, x.to(dtype), hx.to(dtype) if hx is not None else None, upstream)
    assert ours.last_backend == "triton"
    out_theirs, g_theirs = run(theirs, x.to(dtype), hx.to(dtype) if hx is not None else None, upstream)
    # The float64 references, each exact, on the same dtype-rounded input, state, parameters and
    # upstream gradients: torch.nn's module as it is; run one step at a time with every layer's input
    # (the output of the layer below) rounded to `dtype`, as a stack of `dtype` layers passes it on;
    # and with h rounded after every step too, as where h travels between steps in `dtype`. And for
    # relu, the second with the derivative at each unit on the side of the kink that ours took.
    # Why: relu's derivative jumps at 0. Each 16-bit rounding (~5e-4 relative in fp16, ~4e-3 in
    # bf16) moves the pre-activations it feeds by ~1e-4 (fp16), so one that close to 0 lands on the
    # other side of the kink in one rounding scheme and not in another (3-layer bidirectional relu:
    # ~1 draw in 20 in fp16 on the CPU, and in bf16 on the H200), and every gradient upstream of that
    # unit then differs by O(1) while the outputs agree. Where a scheme rounds after every step
    # (torch.nn on the CPU; our persistent engine feeds h to its product in the weights' dtype), even
    # the fp32-vs-float64 difference can tip a rounding to the next 16-bit value and so move later
    # pre-activations by as much. None of these is wrong: at 16-bit precision the derivative of a
    # unit within rounding of 0 is either side's. So each result is judged against the nearest
    # reference (tests/tolerance.py): torch.nn's against the scheme closest to it (the smallest error,
    # and so the strictest bound on ours); ours against the exact gradient for the sides it took,
    # where it may differ from the exact sign only within rounding of 0 (KINK_SLACK, asserted).
    ref_args = rounded_to(dtype, x), rounded_to(dtype, hx), [rounded_to(dtype, g) for g in upstream]
    forwards = [None, reference_stack(exact, dtype), reference_stack(exact, dtype, every_step=True)]
    if cfg.kind == "RNN-relu":
        sides = our_relu_sides(ours, x.to(dtype), hx.to(dtype) if hx is not None else None)
        forwards.append(reference_stack(exact, dtype, relu_sides=sides))
    refs = [run(exact, *ref_args, forward=forward) for forward in forwards]
    for i, name in enumerate(["output", "h_n"]):
        assert_no_worse_than_torch(name, out_ours[i], out_theirs[i], [outs[i] for outs, _ in refs])
    for _, grads in refs:
        assert grads.keys() == g_ours.keys()
    for name in g_ours:
        assert_no_worse_than_torch(name, g_ours[name], g_theirs[name], [grads[name] for _, grads in refs])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_matches_torch(cfg, dtype, poison):
    check_module_parity(cfg, dtype, DEVICE)


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_matches_torch_gpu(cfg, dtype, poison):
    check_module_parity(cfg, dtype, "cuda")


CELLS = {"GRUCell": (lrnn.GRUCell, torch.nn.GRUCell, {}),
         "RNNCell-tanh": (lrnn.RNNCell, torch.nn.RNNCell, {"nonlinearity": "tanh"}),
         "RNNCell-relu": (lrnn.RNNCell, torch.nn.RNNCell, {"nonlinearity": "relu", "bias": False})}


@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize("batch", [17, 0], ids=["B17", "unbatched"])
def test_cells_match_torch_with_gradients(kind, batch, poison):
    ours_cls, theirs_cls, extra = CELLS[kind]
    theirs = theirs_cls(5, 33, **extra).to(DEVICE)
    ours = ours_cls(5, 33, backend="triton", **extra).to(DEVICE)
    ours.load_state_dict(theirs.state_dict())
    exact = copy.deepcopy(theirs).double()
    lead = (batch,) if batch else ()
    x, h, dh = torch.randn(lead + (5,), device=DEVICE), torch.randn(lead + (33,), device=DEVICE), torch.randn(lead + (33,), device=DEVICE)

    def step(module, dt, with_state):
        xi = x.to(dt, copy=True).requires_grad_()
        hi = h.to(dt, copy=True).requires_grad_() if with_state else None
        module.zero_grad()
        out = module(xi, hi)
        out.backward(dh.to(dt))
        return [out, xi.grad] + ([hi.grad] if with_state else []) + [p.grad for p in module.parameters()]

    for with_state in (True, False):
        results = zip(step(ours, torch.float32, with_state), step(theirs, torch.float32, with_state),
                      step(exact, torch.float64, with_state))
        assert ours.last_backend == "triton"
        for i, (a, b, r) in enumerate(results):
            assert_no_worse_than_torch(f"{kind} result {i} (h0={with_state})", a, b, r)


@pytest.mark.parametrize("kind", list(KINDS))
def test_unbatched_input_matches_torch(kind):
    ours_cls, theirs_cls, extra = KINDS[kind]
    theirs = theirs_cls(3, 4, num_layers=2, **extra).to(DEVICE)
    ours = ours_cls(3, 4, num_layers=2, backend="triton", **extra).to(DEVICE)
    ours.load_state_dict(theirs.state_dict())
    x, h0 = torch.randn(6, 3, device=DEVICE), torch.randn(2, 4, device=DEVICE)
    y, h = ours(x, h0)
    y_ref, h_ref = theirs(x, h0)
    assert y.shape == (6, 4) and h.shape == (2, 4)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h, h_ref, atol=1e-5, rtol=1e-5)


def test_dropout_between_layers_only_in_training():
    ours = lrnn.GRU(3, 8, num_layers=2, dropout=0.5, backend="triton").to(DEVICE)
    theirs = torch.nn.GRU(3, 8, num_layers=2, dropout=0.5).to(DEVICE)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(4, 2, 3, device=DEVICE)
    ours.eval(), theirs.eval()
    torch.testing.assert_close(ours(x)[0], theirs(x)[0], atol=1e-5, rtol=1e-5)
    ours.train()
    assert not torch.allclose(ours(x)[0], ours(x)[0]), "training-mode dropout between layers should be random"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU interpreter path")
@pytest.mark.parametrize("kind", ["GRU", "RNN-relu"])
def test_triton_under_cpu_fp16_autocast(kind, poison):
    ours_cls, _, extra = KINDS[kind]
    m = ours_cls(5, 6, num_layers=2, backend="triton", **extra)
    x = torch.randn(4, 3, 5)
    y32, _ = m(x)
    with torch.autocast("cpu", dtype=torch.float16):
        y, h = m(x)
    assert m.last_backend == "triton" and y.dtype == h.dtype == torch.float16
    torch.testing.assert_close(y.float(), y32, atol=5e-3, rtol=5e-3)
    y.float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in m.parameters())


def test_triton_backend_explains_why_it_cannot_run():
    # On the device where the kernel runs (the GPU, or the CPU under the interpreter), so that the
    # reason is the dtype and not the device.
    for m in (lrnn.GRU(3, 4, backend="triton"), lrnn.RNN(3, 4, backend="triton"), lrnn.GRUCell(3, 4, backend="triton")):
        x = torch.randn(2, 1, 3, dtype=torch.float64, device=DEVICE)
        with pytest.raises(RuntimeError, match="float64"):
            m.double().to(DEVICE)(x[0] if isinstance(m, lrnn.GRUCell) else x)
        if os.environ.get("TRITON_INTERPRET") != "1":  # a GPU session: a CPU input is refused for its device
            with pytest.raises(RuntimeError, match="input is on the CPU and TRITON_INTERPRET=1 is not set"):
                m.float().cpu()(x[0].float().cpu() if isinstance(m, lrnn.GRUCell) else x.float().cpu())
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.randn(3, 2, 3, device=DEVICE), [3, 2])
    auto = lrnn.RNN(3, 4).to(DEVICE)
    auto(packed)
    assert auto.last_backend == "triton", "a PackedSequence runs on the kernels (tests/test_packed_modules.py)"


def test_language_model_and_seq2seq_cells_use_the_kernels(monkeypatch):
    """cell: gru / rnn in the LM and seq2seq recipes reach the Triton kernels with no change."""
    from lightning_rnn.lm import LanguageModel
    from lightning_rnn.seq2seq.network import Seq2SeqNet

    monkeypatch.setenv("LIGHTNING_RNN_AUTOTUNE", "0")
    lm = LanguageModel(11, cell="gru", embedding_size=8, hidden_size=8, num_layers=2).to(DEVICE)
    tokens = torch.randint(0, 11, (2, 5), device=DEVICE)
    logits, h = lm(tokens)
    logits.sum().backward()
    assert lm.rnn.last_backend == ("triton") and logits.shape == (2, 5, 11) and h.shape == (2, 2, 8)
    net = Seq2SeqNet(vocab_size=9, embed_dim=4, hidden_size=6, cell="rnn").to(DEVICE)
    layers = [m for m in net.modules() if isinstance(m, lrnn.RNN)]
    assert layers
    net(torch.randint(0, 9, (2, 4), device=DEVICE), torch.randint(0, 9, (2, 3), device=DEVICE))
    assert all(m.last_backend == "triton" for m in layers)


@pytest.mark.parametrize("kind", ["GRU", "RNN-relu"])
def test_auto_times_both_backends_once_and_keeps_the_faster(kind, monkeypatch, tmp_path):
    """On a GPU, "auto" measures Triton against torch.nn per configuration (as for LSTM); here with
    a fake timer where torch.nn is faster, and without a GPU with the measuring switched on for the CPU."""
    from lightning_rnn.nn import autotune

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # never the user's own decisions file
    monkeypatch.delenv("LIGHTNING_RNN_CACHE_DIR", raising=False)
    monkeypatch.setattr(autotune, "autotune_enabled", lambda device: True)
    autotune.clear_cache(disk=False)
    timed: list[float] = []

    def timer(fn):
        fn()  # really runs the candidate: both must work
        timed.append([2.0, 1.0][len(timed) % 2])  # candidates come in order: triton, then torch
        return timed[-1]

    monkeypatch.setattr(autotune, "cuda_timer", timer)
    ours_cls, _, extra = KINDS[kind]
    m = ours_cls(3, 5, **extra).to(DEVICE)
    x = torch.randn(4, 2, 3, device=DEVICE)  # where Triton runs: with a GPU, "auto" takes torch.nn for a CPU input untimed
    m(x)
    assert m.last_backend == "torch" and len(timed) == 2
    assert all(p.grad is None for p in m.parameters()), "timing must not accumulate gradients"
    m(x)
    assert len(timed) == 2, "the same configuration is not timed again"
    autotune.clear_cache(disk=False)
