"""backend="auto" on a GPU times Triton against torch.nn once per configuration and keeps the faster,
in memory and in a cache file. Here the timing is switched on for the CPU (interpreter) with a
fake timer, and the cache lives in a temporary folder."""
from __future__ import annotations

import json

import pytest
import torch

from lightning_rnn.nn import LSTM, LSTMCell, autotune
from tests.conftest import requires_cuda, requires_triton_interpreter

pytestmark = requires_triton_interpreter


@pytest.fixture
def fake_timings(monkeypatch, tmp_path):
    """Autotune on the CPU, a fresh cache under tmp_path (through XDG_CACHE_HOME), and a timer that
    really runs each candidate once and reports the given seconds for it."""
    seconds: dict[str, float] = {"triton": 1.0, "torch": 2.0}
    timed: list[str] = []
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("LIGHTNING_RNN_CACHE_DIR", raising=False)
    monkeypatch.setattr(autotune, "autotune_enabled", lambda device: True)
    autotune.clear_cache(disk=False)

    def timer(fn):
        fn()  # both candidates must work
        name = "triton" if len(timed) % 2 == 0 else "torch"  # candidates come in this order
        timed.append(name)
        return seconds[name]

    monkeypatch.setattr(autotune, "cuda_timer", timer)
    yield seconds, timed
    autotune.clear_cache(disk=False)


@pytest.mark.parametrize("faster", ["triton", "torch"])
def test_auto_takes_the_faster_backend_and_caches_it(fake_timings, faster):
    seconds, timed = fake_timings
    seconds.update({"triton": 1.0, "torch": 2.0} if faster == "triton" else {"triton": 2.0, "torch": 1.0})
    m = LSTM(3, 5)
    x = torch.randn(5, 2, 3, requires_grad=True)
    before = [p.detach().clone() for p in m.parameters()]
    y, _ = m(x)
    assert m.last_backend == faster
    assert timed == ["triton", "torch"]
    assert all(p.grad is None for p in m.parameters()) and x.grad is None, "timing must not accumulate gradients"
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters()))
    ref = torch.nn.LSTM(3, 5)
    ref.load_state_dict(m.state_dict())
    torch.testing.assert_close(y, ref(x)[0], atol=1e-5, rtol=1e-5)
    y.sum().backward()  # the user's own graph is intact
    assert x.grad is not None and all(p.grad is not None for p in m.parameters())
    m(torch.randn(7, 2, 3))
    m(torch.randn(8, 2, 3))
    assert timed == ["triton", "torch"], "lengths 5, 7 and 8 share a bucket: timed once"
    m(torch.randn(9, 2, 3))
    assert len(timed) == 4, "length 9 is a new bucket"
    with torch.no_grad():
        m(torch.randn(9, 2, 3))
    assert len(timed) == 6, "inference is its own configuration"


def test_length_buckets_are_powers_of_two():
    assert [autotune.length_bucket(n) for n in (1, 2, 3, 4, 5, 17, 64, 65)] == [1, 2, 4, 4, 8, 32, 64, 128]


def test_the_next_process_reads_the_decision_from_the_cache_file(fake_timings, tmp_path):
    seconds, timed = fake_timings
    seconds.update(triton=3.0, torch=1.0)
    LSTM(3, 5)(torch.randn(4, 2, 3))
    path = tmp_path / "lightning_rnn" / "autotune.json"
    assert autotune.cache_path() == path and path.exists()
    assert list(json.loads(path.read_text())["winners"].values()) == ["torch"]
    autotune.clear_cache(disk=False)  # a new process: nothing in memory
    m = LSTM(3, 5)
    m(torch.randn(4, 2, 3))
    assert m.last_backend == "torch" and len(timed) == 2, "decided by the earlier process, not re-timed"
    autotune.clear_cache()
    assert not path.exists()
    m(torch.randn(4, 2, 3))
    assert len(timed) == 4


def test_a_broken_cache_file_is_ignored(fake_timings, tmp_path):
    _, timed = fake_timings
    path = tmp_path / "lightning_rnn" / "autotune.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    m = LSTM(3, 5)
    m(torch.randn(4, 2, 3))
    assert m.last_backend == "triton" and len(timed) == 2
    assert json.loads(path.read_text())["version"] == 1, "rewritten whole"


def test_timing_leaves_the_random_stream_and_dropout_alone(fake_timings, monkeypatch):
    """The timed runs neither draw random numbers nor apply dropout: a run that times gives the
    same output and leaves the same generator state as one that does not."""
    _, timed = fake_timings
    m = LSTM(3, 6, num_layers=2, dropout=0.5)
    x = torch.randn(3, 2, 3)
    dropout_while_timed = []
    timer = autotune.cuda_timer
    monkeypatch.setattr(autotune, "cuda_timer", lambda fn: (dropout_while_timed.append(m.dropout), timer(fn))[1])
    torch.manual_seed(0)
    y_timed, _ = m(x)
    after_timed = torch.rand(3)
    assert len(timed) == 2 and m.training
    torch.manual_seed(0)
    y_cached, _ = m(x)
    after_cached = torch.rand(3)
    assert len(timed) == 2
    assert torch.equal(after_timed, after_cached)
    torch.testing.assert_close(y_timed, y_cached, atol=1e-6, rtol=1e-6)
    assert dropout_while_timed == [0.0, 0.0] and m.dropout == 0.5 and m.training


class _Store:
    """The part of torch.distributed's key-value store that autotune uses."""

    def __init__(self):
        self.data: dict[str, bytes] = {}

    def set(self, key, value):
        self.data[key] = value.encode()

    def check(self, keys):
        return all(k in self.data for k in keys)

    def get(self, key):
        return self.data[key]


def test_ddp_rank_zero_decides_and_the_others_follow(fake_timings, monkeypatch):
    seconds, timed = fake_timings
    seconds.update(triton=1.0, torch=2.0)
    store = _Store()
    x = torch.randn(4, 2, 3)
    m = LSTM(3, 5)
    monkeypatch.setattr(autotune, "_distributed_store", lambda: (1, store))
    m(x)
    assert m.last_backend == "torch" and timed == [], "rank 1 never times; before rank 0 decides: the default"
    monkeypatch.setattr(autotune, "_distributed_store", lambda: (0, store))
    m(x)
    assert m.last_backend == "triton" and len(timed) == 2 and len(store.data) == 1
    autotune.clear_cache(disk=True)  # rank 1 has neither this process's memory nor the file
    monkeypatch.setattr(autotune, "_distributed_store", lambda: (1, store))
    m(x)
    assert m.last_backend == "triton" and len(timed) == 2, "rank 1 takes rank 0's decision"


def test_lstm_cell_auto_is_timed_too(fake_timings):
    seconds, timed = fake_timings
    seconds.update(triton=2.0, torch=1.0)
    cell = LSTMCell(3, 5)
    x = torch.randn(4, 3)
    h, c = cell(x)
    assert cell.last_backend == "torch" and timed == ["triton", "torch"]
    cell(x, (h, c))
    assert len(timed) == 2
    ref = torch.nn.LSTMCell(3, 5)
    ref.load_state_dict(cell.state_dict())
    torch.testing.assert_close(h, ref(x)[0])


def test_explicit_backends_are_never_autotuned(fake_timings):
    _, timed = fake_timings
    LSTM(3, 5, backend="triton")(torch.randn(4, 2, 3))
    LSTM(3, 5, backend="torch")(torch.randn(4, 2, 3))
    LSTMCell(3, 5, backend="triton")(torch.randn(2, 3))
    assert timed == []


def test_autotune_is_gpu_only_and_can_be_switched_off(monkeypatch):
    assert not autotune.autotune_enabled(torch.device("cpu"))
    monkeypatch.setenv("LIGHTNING_RNN_AUTOTUNE", "0")
    assert not autotune.autotune_enabled(torch.device("cuda"))


@requires_cuda
@pytest.mark.gpu
def test_real_cuda_timer_and_auto_on_a_gpu(monkeypatch, tmp_path):
    monkeypatch.setenv("LIGHTNING_RNN_CACHE_DIR", str(tmp_path))
    autotune.clear_cache(disk=False)
    seconds = autotune.cuda_timer(lambda: torch.randn(256, 256, device="cuda") @ torch.randn(256, 256, device="cuda"))
    assert 0 < seconds < 1
    m = LSTM(32, 64, num_layers=2).cuda()
    ref = torch.nn.LSTM(32, 64, num_layers=2).cuda()
    ref.load_state_dict(m.state_dict())
    x = torch.randn(20, 8, 32, device="cuda")
    y, _ = m(x)  # (conftest turns TF32 off, so cuDNN computes in IEEE fp32 too)
    assert m.last_backend in ("triton", "torch")
    torch.testing.assert_close(y, ref(x)[0], atol=1e-5, rtol=1e-5)
    assert (tmp_path / "autotune.json").exists()
    autotune.clear_cache(disk=False)
