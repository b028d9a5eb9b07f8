"""Mixed precision: torch.autocast on the CPU (torch.nn's fused RNN cannot run bf16/fp16 there:
LSTM and LSTMCell run it in fp32 on up-cast inputs, GRU and RNN our cell loop), with the Triton
kernel, and a Lightning `bf16-mixed` run; on a GPU, CUDA autocast with values checked."""
from __future__ import annotations

import lightning as L
import pytest
import torch

from lightning_rnn import nn as lrnn
from tests.conftest import requires_cuda

LSTMS = [  # backend="torch": "auto" would take the Triton interpreter for fp16 here
    lambda: lrnn.LSTM(5, 6, num_layers=2, bidirectional=True, backend="torch"),
    lambda: lrnn.LSTM(5, 6, proj_size=3, batch_first=True, backend="torch"),
]
CELL_LOOP_MODULES = [lambda: lrnn.GRU(5, 6, num_layers=2), lambda: lrnn.RNN(5, 6, nonlinearity="relu")]


def _states(state):
    return state if isinstance(state, tuple) else (state,)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("make", LSTMS, ids=["LSTM-L2-bi", "LSTM-proj-bf"])
def test_cpu_autocast_runs_the_fused_lstm_in_fp32(make, dtype):
    """Exactly the fp32 result, rounded to the autocast dtype; gradients as in fp32."""
    m = make()
    x = torch.randn(4, 3, 5, requires_grad=True)
    y32, state32 = m(x)
    upstream = torch.randn_like(y32).to(dtype)
    grads32 = torch.autograd.grad(y32, [x, *m.parameters()], upstream.float())
    with torch.autocast("cpu", dtype=dtype):
        y, state = m(x)
    assert m.last_backend == "torch"
    assert y.dtype == dtype and all(s.dtype == dtype for s in state)
    assert torch.equal(y, y32.to(dtype))
    for s, s32 in zip(state, state32):
        assert torch.equal(s, s32.to(dtype))
    grads = torch.autograd.grad(y, [x, *m.parameters()], upstream)
    for g, g32 in zip(grads, grads32):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g, g32)


def test_cpu_autocast_lstm_packed_sequence_and_16_bit_parameters():
    m = lrnn.LSTM(5, 6)  # "auto": under CPU bf16 autocast torch.nn's fused LSTM in fp32 serves a PackedSequence
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.randn(4, 3, 5), [4, 2, 1])
    y32, _ = torch.nn.LSTM.forward(m, packed)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, (h, _) = m(packed)
    assert m.last_backend == "torch" and y.data.dtype == h.dtype == torch.bfloat16
    assert torch.equal(y.data, y32.data.to(torch.bfloat16))
    m16 = lrnn.LSTM(5, 6).to(torch.bfloat16)  # nothing to up-cast to: our cell loop
    with torch.autocast("cpu", dtype=torch.bfloat16):
        m16(torch.randn(4, 3, 5))
    assert m16.last_backend == "reference"


@pytest.mark.parametrize("make", CELL_LOOP_MODULES, ids=["GRU-L2", "RNN-relu"])
def test_cpu_bf16_autocast_uses_cell_loop(make):
    m = make()
    x = torch.randn(4, 3, 5)
    y32, _ = m(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, state = m(x)
    assert m.last_backend == "reference"
    assert y.dtype == torch.bfloat16
    for s in _states(state):
        assert s.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), y32, atol=5e-2, rtol=5e-2)
    y.float().pow(2).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("cls,hx,backend", [
    (lrnn.LSTMCell, lambda: (torch.zeros(3, 6), torch.zeros(3, 6)), "torch"),
    (lrnn.GRUCell, lambda: torch.zeros(3, 6), "reference"),
    (lrnn.RNNCell, lambda: None, "reference"),
], ids=["LSTMCell", "GRUCell", "RNNCell"])
def test_cpu_bf16_autocast_cells(cls, hx, backend):
    m = cls(5, 6, backend="torch")
    x = torch.randn(3, 5)
    ref = m(x, hx())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x, hx())
    assert m.last_backend == backend
    for a, b in zip(_states(out), _states(ref)):
        assert a.dtype == torch.bfloat16
        if backend == "torch":
            assert torch.equal(a, b.to(torch.bfloat16))
        torch.testing.assert_close(a.float(), b, atol=5e-2, rtol=5e-2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU interpreter path")
def test_triton_under_cpu_fp16_autocast(poison_kernel_buffers):
    m = lrnn.LSTM(5, 6, num_layers=2, backend="triton")
    x = torch.randn(4, 3, 5)
    y32, _ = m(x)
    with torch.autocast("cpu", dtype=torch.float16):
        y, (h, c) = m(x)
    assert m.last_backend == "triton" and y.dtype == h.dtype == c.dtype == torch.float16
    torch.testing.assert_close(y.float(), y32, atol=5e-3, rtol=5e-3)


class _TinySequenceRegressor(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.rnn = lrnn.LSTM(3, 8, num_layers=2, batch_first=True)
        self.head = torch.nn.Linear(8, 1)

    def training_step(self, batch, _):
        x, target = batch
        y, _ = self.rnn(x)
        loss = torch.nn.functional.mse_loss(self.head(y[:, -1]).squeeze(-1).float(), target)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def test_lightning_bf16_mixed_trains(tmp_path):
    x = torch.randn(64, 6, 3)
    data = torch.utils.data.TensorDataset(x, x.sum(dim=(1, 2)))
    model = _TinySequenceRegressor()
    before = [p.detach().clone() for p in model.parameters()]
    trainer = L.Trainer(accelerator="cpu", precision="bf16-mixed", max_steps=4, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.fit(model, torch.utils.data.DataLoader(data, batch_size=16))
    assert model.rnn.last_backend == "torch"  # fused, in fp32
    assert torch.isfinite(trainer.callback_metrics["loss"])
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_cuda_autocast_triton_values_and_grads(dtype, poison_kernel_buffers):
    """Under CUDA autocast the Triton path computes in `dtype` (operands rounded to it): judged
    against a float64 run on the same rounded values, with PyTorch's own ops in `dtype` (our cell
    loop: cuDNN before 9.13 has no bf16 RNN) as the yardstick (tests/tolerance.py)."""
    import copy

    from tests.tolerance import assert_no_worse_than_torch, rounded_to

    ours = lrnn.LSTM(32, 64, num_layers=2, backend="triton").cuda()
    torch_ops = copy.deepcopy(ours).to(dtype)
    theirs = lambda x: torch_ops._run_stacked(x, None, True, torch_ops._cell_loop())  # noqa: E731
    exact = torch.nn.LSTM(32, 64, num_layers=2).cuda().double()
    exact.load_state_dict(torch_ops.state_dict())  # the parameters as rounded to `dtype`
    x = torch.randn(20, 8, 32, device="cuda")
    upstream = torch.randn(20, 8, 64, device="cuda")
    with torch.autocast("cuda", dtype=dtype):
        y, (h, c) = ours(x)
    assert ours.last_backend == "triton" and y.dtype == h.dtype == c.dtype == dtype
    y.backward(upstream.to(dtype))
    y_theirs, _ = theirs(x.to(dtype))
    y_theirs.backward(upstream.to(dtype))
    y_exact, _ = exact(rounded_to(dtype, x))
    y_exact.backward(rounded_to(dtype, upstream))
    assert_no_worse_than_torch("output", y, y_theirs, y_exact)
    for (name, p), p_theirs, p_exact in zip(ours.named_parameters(), torch_ops.parameters(), exact.parameters()):
        assert p.grad.dtype == torch.float32, name
        assert_no_worse_than_torch(name, p.grad.to(dtype), p_theirs.grad, p_exact.grad)


@requires_cuda
@pytest.mark.gpu
def test_lightning_bf16_mixed_on_the_triton_path(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNING_RNN_AUTOTUNE", "0")  # "auto" = Triton on CUDA
    x = torch.randn(64, 6, 3)
    data = torch.utils.data.TensorDataset(x, x.sum(dim=(1, 2)))
    model = _TinySequenceRegressor()
    trainer = L.Trainer(accelerator="gpu", devices=1, precision="bf16-mixed", max_steps=8, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.fit(model, torch.utils.data.DataLoader(data, batch_size=16))
    assert model.rnn.last_backend == "triton"
    assert torch.isfinite(trainer.callback_metrics["loss"])
    rnn = model.rnn.cuda()
    xs = x[:16].cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y, _ = rnn(xs)
    ref = torch.nn.LSTM(3, 8, num_layers=2, batch_first=True).cuda()
    ref.load_state_dict(rnn.state_dict())
    torch.testing.assert_close(y.float(), ref(xs)[0], atol=3e-2, rtol=3e-2)
