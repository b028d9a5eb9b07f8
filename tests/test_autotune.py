"""backend="auto" on a GPU measures Triton against torch.nn once per configuration and keeps the
faster. Here the measuring is switched on for the CPU (interpreter) with a fake timer."""
from __future__ import annotations

import pytest
import torch

from lightning_rnn.nn import LSTM, autotune
from tests.conftest import requires_triton_interpreter

pytestmark = requires_triton_interpreter


@pytest.fixture
def fake_timings(monkeypatch):
    """Make the autotuner run on the CPU and report the given seconds per backend."""
    seconds: dict[str, float] = {}
    timed: list[str] = []
    monkeypatch.setattr(autotune, "autotune_enabled", lambda device: True)
    autotune.clear_cache()

    def timer(fn):
        fn()  # really runs the candidate: both must work
        name = "triton" if not timed or timed[-1] == "torch" else "torch"  # candidates come in order
        timed.append(name)
        return seconds[name]

    monkeypatch.setattr(autotune, "cuda_timer", timer)
    yield seconds, timed
    autotune.clear_cache()


@pytest.mark.parametrize("faster", ["triton", "torch"])
def test_auto_takes_the_faster_backend_and_caches_it(fake_timings, faster):
    seconds, timed = fake_timings
    seconds.update({"triton": 1.0, "torch": 2.0} if faster == "triton" else {"triton": 2.0, "torch": 1.0})
    m = LSTM(3, 5, num_layers=2)
    x = torch.randn(4, 2, 3)
    before = [p.detach().clone() for p in m.parameters()]
    y, _ = m(x)
    assert m.last_backend == faster
    assert timed == ["triton", "torch"]
    assert all(p.grad is None for p in m.parameters()), "timing must not accumulate gradients"
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters()))
    m(x)
    assert timed == ["triton", "torch"], "the second call with the same configuration must not re-time"
    ref = torch.nn.LSTM(3, 5, num_layers=2)
    ref.load_state_dict(m.state_dict())
    torch.testing.assert_close(y, ref(x)[0], atol=1e-5, rtol=1e-5)
    m(torch.randn(6, 2, 3))
    assert len(timed) == 4, "a new shape is timed again"


def test_explicit_backends_are_never_autotuned(fake_timings):
    _, timed = fake_timings
    LSTM(3, 5, backend="triton")(torch.randn(4, 2, 3))
    LSTM(3, 5, backend="torch")(torch.randn(4, 2, 3))
    assert timed == []


def test_autotune_is_gpu_only_by_default():
    assert not autotune.autotune_enabled(torch.device("cpu"))
