"""`lightning_rnn.nn.LSTM` as a drop-in for `torch.nn.LSTM`.

torch.nn.LSTM's state_dict is loaded into ours; both see the same fresh random input and
upstream gradients; output, final states and the gradients of input, initial states and every
parameter are judged against a float64 torch.nn.LSTM on the same dtype-rounded values
(tests/tolerance.py). Configurations cover
layers, directions, layout, initial state, bias and projection pairwise, with small T, B, H.
"""
from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass

import pytest
import torch

from lightning_rnn.nn import LSTM
from tests.conftest import requires_cuda, requires_triton_interpreter
from tests.tolerance import assert_no_worse_than_torch, rounded_to

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class Config:
    B: int
    T: int
    I: int
    H: int
    layers: int = 1
    batch_first: bool = False
    bidirectional: bool = False
    init_state: bool = True
    bias: bool = True
    proj: int = 0

    def __str__(self) -> str:
        flags = [f"L{self.layers}", "bf" if self.batch_first else "tf", "bi" if self.bidirectional else "uni",
                 "h0" if self.init_state else "noh0", "" if self.bias else "nobias", f"P{self.proj}" if self.proj else ""]
        return f"B{self.B}-T{self.T}-I{self.I}-H{self.H}-" + "-".join(f for f in flags if f)

    def kwargs(self) -> dict:
        return dict(num_layers=self.layers, batch_first=self.batch_first, bidirectional=self.bidirectional,
                    bias=self.bias, proj_size=self.proj)


CONFIGS = [
    Config(B=1, T=1, I=1, H=1),
    Config(B=3, T=7, I=5, H=5, layers=2, batch_first=True, bidirectional=True),
    Config(B=17, T=3, I=17, H=32, layers=3, init_state=False),
    Config(B=3, T=7, I=4, H=100, bidirectional=True, bias=False, init_state=False),
    Config(B=1, T=33, I=3, H=32, batch_first=True, proj=5),
    Config(B=17, T=7, I=1, H=5, layers=2, proj=3, bias=False, bidirectional=True),
    Config(B=3, T=1, I=100, H=17, layers=3, batch_first=True, init_state=False, proj=1),
]


def run(module, x, hx, upstream):
    x = x.detach().clone().requires_grad_()
    hx = tuple(s.detach().clone().requires_grad_() for s in hx) if hx is not None else None
    module.zero_grad()
    y, (h, c) = module(x, hx)
    torch.autograd.backward([y, h, c], [g.to(y.dtype) for g in upstream])
    grads = {"input": x.grad}
    if hx is not None:
        grads.update({"h_0": hx[0].grad, "c_0": hx[1].grad})
    grads.update({f"grad {n}": p.grad for n, p in module.named_parameters()})
    return (y, h, c), grads


def check_module_parity(cfg: Config, backend: str, dtype: torch.dtype, device: str) -> None:
    theirs_fp64 = torch.nn.LSTM(cfg.I, cfg.H, **cfg.kwargs()).to(device)
    with torch.no_grad():  # larger than the default init, so that gates saturate somewhere
        for p in theirs_fp64.parameters():
            p.mul_(2.0)
    ours = LSTM(cfg.I, cfg.H, backend=backend, **cfg.kwargs()).to(device)
    ours.load_state_dict(theirs_fp64.state_dict())
    theirs = copy.deepcopy(theirs_fp64).to(dtype)
    ours = ours.to(dtype)
    # The float64 reference answers the question both were asked: parameters, input, states and
    # upstream gradients as rounded to `dtype` (see check_layer_parity in test_lstm_kernel.py).
    theirs_fp64 = copy.deepcopy(theirs).double()

    D, R = (2 if cfg.bidirectional else 1), (cfg.proj or cfg.H)
    shape = (cfg.B, cfg.T, cfg.I) if cfg.batch_first else (cfg.T, cfg.B, cfg.I)
    x = torch.randn(shape, device=device)
    hx = None
    if cfg.init_state:
        hx = (torch.randn(D * cfg.layers, cfg.B, R, device=device) * 0.5,
              torch.randn(D * cfg.layers, cfg.B, cfg.H, device=device) * 0.5)
    y_shape = shape[:2] + (D * R,)
    upstream = [torch.randn(y_shape, device=device), torch.randn(D * cfg.layers, cfg.B, R, device=device),
                torch.randn(D * cfg.layers, cfg.B, cfg.H, device=device)]

    cast = lambda t, dt: t.to(dt)  # noqa: E731
    hx_of = lambda dt: tuple(cast(s, dt) for s in hx) if hx is not None else None  # noqa: E731
    out_ours, g_ours = run(ours, cast(x, dtype), hx_of(dtype), upstream)
    assert ours.last_backend == ("triton" if backend == "triton" else "torch")
    out_theirs, g_theirs = run(theirs, cast(x, dtype), hx_of(dtype), upstream)
    hx_exact = tuple(rounded_to(dtype, s) for s in hx) if hx is not None else None
    out_exact, g_exact = run(theirs_fp64, rounded_to(dtype, x), hx_exact, [rounded_to(dtype, g) for g in upstream])

    for name, a, b, r in zip(["output", "h_n", "c_n"], out_ours, out_theirs, out_exact):
        assert_no_worse_than_torch(name, a, b, r)
    assert g_ours.keys() == g_exact.keys()
    for name in g_exact:
        assert_no_worse_than_torch(name, g_ours[name], g_theirs[name], g_exact[name])


@pytest.mark.parametrize(
    "backend,dtype",
    [("torch", torch.float32), ("triton", torch.float32), ("triton", torch.float16)],
    ids=["torch-fp32", "triton-fp32", "triton-fp16"],
)
@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_matches_torch_lstm(cfg, backend, dtype, poison_kernel_buffers):
    check_module_parity(cfg, backend, dtype, DEVICE)


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_matches_torch_lstm_gpu(cfg, dtype, poison_kernel_buffers):
    check_module_parity(cfg, "triton", dtype, "cuda")


def test_state_dict_round_trips_both_ways():
    theirs = torch.nn.LSTM(4, 6, num_layers=2, bidirectional=True, proj_size=3)
    ours = LSTM(4, 6, num_layers=2, bidirectional=True, proj_size=3, backend="torch")
    assert isinstance(ours, torch.nn.LSTM)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    assert "bias_hh_l1_reverse" in ours.state_dict() and "weight_hr_l0" in ours.state_dict()
    ours.load_state_dict(theirs.state_dict())
    back = torch.nn.LSTM(4, 6, num_layers=2, bidirectional=True, proj_size=3)
    back.load_state_dict(ours.state_dict())
    x = torch.randn(5, 2, 4)
    y_ours, _ = ours(x)
    y_back, _ = back(x)
    torch.testing.assert_close(y_ours, y_back, rtol=0, atol=0)


def test_unbatched_input_matches_torch():
    theirs = torch.nn.LSTM(3, 4, num_layers=2).to(DEVICE)
    for backend in ["torch", "triton"]:
        ours = LSTM(3, 4, num_layers=2, backend=backend).to(DEVICE)
        ours.load_state_dict(theirs.state_dict())
        x, h0, c0 = (torch.randn(shape, device=DEVICE) for shape in [(6, 3), (2, 4), (2, 4)])
        y, (h, c) = ours(x, (h0, c0))
        y_ref, (h_ref, c_ref) = theirs(x, (h0, c0))
        assert y.shape == (6, 4) and h.shape == (2, 4)
        torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(c, c_ref, atol=1e-5, rtol=1e-5)


def test_dropout_between_layers_only_in_training():
    ours = LSTM(3, 8, num_layers=2, dropout=0.5, backend="triton").to(DEVICE)
    theirs = torch.nn.LSTM(3, 8, num_layers=2, dropout=0.5).to(DEVICE)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(4, 2, 3, device=DEVICE)
    ours.eval(), theirs.eval()
    torch.testing.assert_close(ours(x)[0], theirs(x)[0], atol=1e-5, rtol=1e-5)
    ours.train()
    y1, y2 = ours(x)[0], ours(x)[0]
    assert not torch.allclose(y1, y2), "training-mode dropout between layers should be random"


def test_auto_backend_and_fallback_reason_logged_once(caplog, monkeypatch):
    monkeypatch.setenv("LIGHTNING_RNN_AUTOTUNE", "0")  # "auto" = Triton wherever it can run
    m = LSTM(3, 4, backend="auto").double()
    x = torch.randn(2, 1, 3, dtype=torch.float64)
    with caplog.at_level(logging.DEBUG, logger="lightning_rnn"):
        m(x)
        m(x)
    assert m.last_backend == "torch"
    reasons = [r.getMessage() for r in caplog.records if "falling back" in r.getMessage()]
    assert len(reasons) <= 1  # logged once per process and reason (maybe earlier in the session)
    m32 = LSTM(3, 4, backend="auto").to(DEVICE)
    m32(x.float().to(DEVICE))
    assert m32.last_backend == ("triton")  # CPU + TRITON_INTERPRET=1, or CUDA


def test_triton_backend_explains_why_it_cannot_run():
    # On the device where the kernel runs (the GPU, or the CPU under the interpreter), so that the
    # reason is the dtype and not the device.
    m = LSTM(3, 4, backend="triton").double().to(DEVICE)
    with pytest.raises(RuntimeError, match="float64"):
        m(torch.randn(2, 1, 3, dtype=torch.float64, device=DEVICE))
    if os.environ.get("TRITON_INTERPRET") != "1":  # a GPU session: a CPU input is refused for its device
        with pytest.raises(RuntimeError, match="input is on the CPU and TRITON_INTERPRET=1 is not set"):
            LSTM(3, 4, backend="triton")(torch.randn(2, 1, 3))


@requires_triton_interpreter
def test_interpreter_probe_passes_here_and_a_broken_interpreter_means_fallback(monkeypatch):
    from kernels import interpreter_check

    assert interpreter_check.interpreter_problem() is None  # the kernel tests of this session rely on it
    problem = "Triton 0.0's CPU interpreter fails here (simulated)"
    monkeypatch.setattr(interpreter_check, "interpreter_problem", lambda: problem)
    monkeypatch.setenv("LIGHTNING_RNN_AUTOTUNE", "0")
    x = torch.randn(2, 1, 3)
    auto = LSTM(3, 4, backend="auto")
    auto(x)
    assert auto.last_backend == "torch"
    with pytest.raises(RuntimeError, match=r"backend='triton' cannot run here: .*simulated"):
        LSTM(3, 4, backend="triton")(x)


def test_packed_sequence_runs_on_the_kernels():
    """"auto" serves a PackedSequence where Triton runs (tests/test_packed_modules.py: parity in depth)."""
    theirs = torch.nn.LSTM(3, 4).to(DEVICE)
    ours = LSTM(3, 4).to(DEVICE)
    ours.load_state_dict(theirs.state_dict())
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.randn(3, 2, 3, device=DEVICE), [3, 2])
    y, (h, _) = ours(packed)
    y_ref, (h_ref, _) = theirs(packed)
    assert ours.last_backend == "triton"
    torch.testing.assert_close(y.data, y_ref.data, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h, h_ref, atol=1e-5, rtol=1e-5)


def test_invalid_backend_name():
    with pytest.raises(ValueError, match="backend must be one of"):
        LSTM(3, 4, backend="cudnn")
