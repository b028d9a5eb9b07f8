"""GRU, RNN and the cells against their torch.nn twins; our PyTorch cell loop (the fallback for
where torch.nn's fused kernels cannot run) against torch.nn too; gradcheck of the PyTorch paths."""
from __future__ import annotations

import os

import pytest
import torch

from lightning_rnn import nn as lrnn
from tests.tolerance import assert_no_worse_than_torch

LAYER_PAIRS = [
    (lrnn.LSTM, torch.nn.LSTM, {}),
    (lrnn.GRU, torch.nn.GRU, {}),
    (lrnn.RNN, torch.nn.RNN, {"nonlinearity": "tanh"}),
    (lrnn.RNN, torch.nn.RNN, {"nonlinearity": "relu"}),
]
LAYER_IDS = ["LSTM", "GRU", "RNN-tanh", "RNN-relu"]
SHAPES = [  # (B, T, I, H, layers, bidirectional, batch_first, bias)
    (1, 1, 1, 1, 1, False, False, True),
    (3, 7, 5, 17, 2, True, True, False),
    (17, 3, 100, 5, 3, False, False, True),
]
SHAPE_IDS = ["B1-T1-I1-H1-L1", "B3-T7-I5-H17-L2-bi-bf-nobias", "B17-T3-I100-H5-L3"]


def _layer_outputs(module, x, hx):
    y, state = module(x, hx)
    return [y] + list(state if isinstance(state, tuple) else (state,))


def _fallback_outputs(module, x, hx):
    """Our cell loop, the path taken on the CPU under autocast."""
    states = None if hx is None else (hx if isinstance(hx, tuple) else (hx,))
    y, final = module._run_stacked(x, states, x.dim() == 3, module._cell_loop())
    return [y] + list(final)


@pytest.mark.parametrize("ours_cls,theirs_cls,extra", LAYER_PAIRS, ids=LAYER_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("path", ["module", "cell-loop"])
def test_layers_match_torch(ours_cls, theirs_cls, extra, shape, path):
    B, T, I, H, layers, bi, bf, bias = shape
    kw = dict(num_layers=layers, bidirectional=bi, batch_first=bf, bias=bias, **extra)
    theirs = theirs_cls(I, H, **kw)
    ours = ours_cls(I, H, backend="torch", **kw)
    ours.load_state_dict(theirs.state_dict())
    exact = theirs_cls(I, H, **kw).double()
    exact.load_state_dict(theirs.state_dict())
    x = torch.randn((B, T, I) if bf else (T, B, I))
    D = 2 if bi else 1
    h0 = torch.randn(D * layers, B, H)
    hx = (h0, torch.randn_like(h0)) if ours_cls is lrnn.LSTM else h0
    hx64 = tuple(s.double() for s in hx) if isinstance(hx, tuple) else hx.double()
    run = _layer_outputs if path == "module" else _fallback_outputs
    for name, a, b, r in zip(["output", "h_n", "c_n"], run(ours, x, hx), _layer_outputs(theirs, x, hx),
                             _layer_outputs(exact, x.double(), hx64)):
        assert_no_worse_than_torch(name, a, b, r)


CELL_PAIRS = [(lrnn.LSTMCell, torch.nn.LSTMCell, {}), (lrnn.GRUCell, torch.nn.GRUCell, {}),
              (lrnn.RNNCell, torch.nn.RNNCell, {"nonlinearity": "relu"})]


@pytest.mark.parametrize("ours_cls,theirs_cls,extra", CELL_PAIRS, ids=["LSTMCell", "GRUCell", "RNNCell-relu"])
@pytest.mark.parametrize("backend", ["torch", "auto"])
@pytest.mark.parametrize("B,I,H", [(1, 1, 1), (3, 17, 5), (0, 5, 100)], ids=["B1-I1-H1", "B3-I17-H5", "unbatched-I5-H100"])
def test_cells_match_torch(ours_cls, theirs_cls, extra, backend, B, I, H, poison_kernel_buffers):
    theirs = theirs_cls(I, H, **extra)
    ours = ours_cls(I, H, backend=backend, **extra)
    ours.load_state_dict(theirs.state_dict())
    exact = theirs_cls(I, H, **extra).double()
    exact.load_state_dict(theirs.state_dict())
    x = torch.randn(B, I) if B else torch.randn(I)
    h = torch.randn(x.shape[:-1] + (H,))
    hx = (h, torch.randn_like(h)) if ours_cls is lrnn.LSTMCell else h
    hx64 = tuple(s.double() for s in hx) if isinstance(hx, tuple) else hx.double()
    as_list = lambda out: list(out) if isinstance(out, tuple) else [out]  # noqa: E731
    for a, b, r in zip(as_list(ours(x, hx)), as_list(theirs(x, hx)), as_list(exact(x.double(), hx64))):
        assert_no_worse_than_torch(type(ours).__name__, a, b, r)
    triton_on_cpu = os.environ.get("TRITON_INTERPRET") == "1"
    expected = "triton" if (backend == "auto" and triton_on_cpu) else "torch"
    assert ours.last_backend == expected


@pytest.mark.parametrize("cls", [lrnn.LSTM, lrnn.GRU, lrnn.RNN], ids=lambda c: c.__name__)
@pytest.mark.parametrize("path", ["module", "cell-loop"])
def test_gradcheck_float64(cls, path):
    m = cls(3, 4, num_layers=2, bidirectional=True, backend="torch").double()
    is_lstm = cls is lrnn.LSTM
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, 2, 4, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(4, 2, 4, dtype=torch.float64, requires_grad=True)

    def f(x, h0, c0):
        hx = (h0, c0) if is_lstm else h0
        outs = _layer_outputs(m, x, hx) if path == "module" else _fallback_outputs(m, x, hx)
        return tuple(outs)

    assert torch.autograd.gradcheck(f, (x, h0, c0), check_undefined_grad=False)
