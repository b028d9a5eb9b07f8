"""The Triton LSTM layer as torch.library custom ops: opcheck, and torch.compile(fullgraph=True).

Both run the real kernels (in Triton's CPU interpreter here), so the compiled model's values and
gradients are checked against torch.nn.LSTM too.
"""
from __future__ import annotations

import pytest
import torch

from lightning_rnn.nn import LSTM
from tests.conftest import TRITON_DEVICE, requires_cuda, requires_triton_interpreter


def _layer_args(T: int, B: int, I: int, H: int, proj: int, requires_grad: bool):
    R = proj or H
    make = lambda *shape: torch.randn(*shape, device=TRITON_DEVICE).requires_grad_(requires_grad)  # noqa: E731
    return (make(T, B, I), make(B, R), make(B, H), make(4 * H, I), make(4 * H, R), make(4 * H),
            make(R, H) if proj else None)


@pytest.mark.parametrize("proj", [0, 3], ids=["noproj", "P3"])
def test_opcheck_train_and_inference_ops(proj):
    from kernels.lstm import op

    grad_args = _layer_args(T=3, B=2, I=5, H=6, proj=proj, requires_grad=True)
    torch.library.opcheck(op.lstm_layer_train, grad_args)
    torch.library.opcheck(op.lstm_layer_inference, tuple(a.detach() if a is not None else None for a in grad_args),
                          test_utils=("test_schema", "test_faketensor"))


def test_opcheck_with_lengths():
    """The ops with per-row lengths (an int64 tensor argument, no gradient)."""
    from kernels.lstm import op

    args = _layer_args(T=3, B=2, I=5, H=6, proj=0, requires_grad=True) + (torch.tensor([1, 3], device=TRITON_DEVICE),)
    torch.library.opcheck(op.lstm_layer_train, args)
    torch.library.opcheck(op.lstm_layer_inference, tuple(a.detach() if a is not None else None for a in args),
                          test_utils=("test_schema", "test_faketensor"))


def test_opcheck_backward_op():
    from kernels.lstm import op

    x, h0, c0, w_ih, w_hh, bias, _ = _layer_args(T=3, B=2, I=5, H=6, proj=0, requires_grad=False)
    y, h_T, c_T, cs, gates, h_cell = op.lstm_layer_train(x, h0, c0, w_ih, w_hh, bias, None)
    needs = [True, False, True, True, True, True, False]
    torch.library.opcheck(op.lstm_layer_backward,
                          (torch.randn_like(y), torch.randn_like(h_T), torch.randn_like(c_T), x, h0, w_ih, w_hh,
                           None, y, cs, gates, h_cell, needs),
                          test_utils=("test_schema", "test_faketensor"))


class _Tagger(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Linear(3, 5)
        self.rnn = LSTM(5, 6, num_layers=2, bidirectional=True, batch_first=True, backend="triton")
        self.head = torch.nn.Linear(12, 2)

    def forward(self, x):
        y, (h, c) = self.rnn(torch.tanh(self.embed(x)))
        return self.head(y), c


@requires_triton_interpreter
def test_compile_fullgraph_matches_eager():
    """One compiled graph (fullgraph=True raises at any graph break), forward and backward."""
    torch._dynamo.reset()
    model = _Tagger()
    x = torch.randn(3, 4, 3)
    out_eager, c_eager = model(x)
    grads_eager = torch.autograd.grad(out_eager.sum() + c_eager.sum(), list(model.parameters()))
    # Dynamo refuses every nn.LSTM subclass unless allow_rnn is set (see the README, "torch.compile").
    with torch._dynamo.config.patch(allow_rnn=True):
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        out, c = compiled(x)
        grads = torch.autograd.grad(out.sum() + c.sum(), list(model.parameters()))
    assert model.rnn.last_backend == "triton"
    torch.testing.assert_close(out, out_eager, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(c, c_eager, atol=1e-6, rtol=1e-6)
    for g, g_eager in zip(grads, grads_eager):
        torch.testing.assert_close(g, g_eager, atol=1e-5, rtol=1e-5)
    torch._dynamo.reset()


@requires_cuda
@pytest.mark.gpu
def test_compile_fullgraph_inductor_on_a_gpu():
    torch._dynamo.reset()
    model = _Tagger().cuda()
    x = torch.randn(3, 16, 3, device="cuda")
    out_eager, _ = model(x)
    with torch._dynamo.config.patch(allow_rnn=True):
        out, _ = torch.compile(model, fullgraph=True)(x)
    torch.testing.assert_close(out, out_eager, atol=1e-4, rtol=1e-4)
    torch._dynamo.reset()
