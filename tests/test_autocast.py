"""Mixed precision: torch.autocast on the CPU (where oneDNN's bf16 RNN is not to be relied on,
so our cell loop runs) and with the Triton kernel, and a Lightning `bf16-mixed` run."""
from __future__ import annotations

import lightning as L
import pytest
import torch

from lightning_rnn import nn as lrnn

MODULES = [
    lambda: lrnn.LSTM(5, 6, num_layers=2, bidirectional=True),
    lambda: lrnn.LSTM(5, 6, proj_size=3, batch_first=True),
    lambda: lrnn.GRU(5, 6, num_layers=2),
    lambda: lrnn.RNN(5, 6, nonlinearity="relu"),
]


@pytest.mark.parametrize("make", MODULES, ids=["LSTM-L2-bi", "LSTM-proj-bf", "GRU-L2", "RNN-relu"])
def test_cpu_bf16_autocast_uses_cell_loop(make):
    m = make()
    x = torch.randn(4, 3, 5)
    y32, _ = m(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, state = m(x)
    assert m.last_backend == "reference"
    assert y.dtype == torch.bfloat16
    for s in state if isinstance(state, tuple) else (state,):
        assert s.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), y32, atol=5e-2, rtol=5e-2)
    y.float().pow(2).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("cls,hx", [(lrnn.LSTMCell, lambda: (torch.zeros(3, 6), torch.zeros(3, 6))),
                                    (lrnn.GRUCell, lambda: torch.zeros(3, 6)), (lrnn.RNNCell, lambda: None)],
                         ids=["LSTMCell", "GRUCell", "RNNCell"])
def test_cpu_bf16_autocast_cells(cls, hx):
    m = cls(5, 6)
    x = torch.randn(3, 5)
    ref = m(x, hx())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x, hx())
    assert m.last_backend == "reference"
    for a, b in zip(out if isinstance(out, tuple) else (out,), ref if isinstance(ref, tuple) else (ref,)):
        assert a.dtype == torch.bfloat16
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
    assert model.rnn.last_backend == "reference"
    assert torch.isfinite(trainer.callback_metrics["loss"])
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
