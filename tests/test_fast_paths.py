"""The LSTM layer as a GPU user meets it, checked on the CPU: operands in the compute dtype,
nothing kept for a backward under no_grad, launches under the input's device, mixed devices refused."""
from __future__ import annotations

import contextlib

import pytest
import torch

from kernels.lstm import lstm_layer_reference
from tests.conftest import TRITON_DEVICE, requires_cuda
from tests.test_lstm_kernel import Case, make_inputs

CASE = Case(B=3, T=5, I=4, H=7)


def _layer():
    from kernels.lstm import function

    return function


def lstm_layer(*args, **kwargs):
    from kernels.lstm.op import lstm_layer as layer  # imports triton: not at collection

    return layer(*args, **kwargs)


@pytest.fixture
def step_kernels(monkeypatch):
    """The per-step kernels' path (the persistent engine off): what these tests check is theirs
    (tests/test_persistent_engine.py checks the engine's own)."""
    monkeypatch.setenv("LIGHTNING_RNN_PERSISTENT", "0")


@pytest.fixture
def allocations(monkeypatch):
    """The shape and dtype of every buffer the layer allocates for its kernels."""
    function = _layer()
    seen: list[tuple[tuple[int, ...], torch.dtype]] = []
    original = function._empty

    def recording(*shape, device, dtype=torch.float32):
        seen.append((tuple(shape), dtype))
        return original(*shape, device=device, dtype=dtype)

    monkeypatch.setattr(function, "_empty", recording)
    return seen


@pytest.mark.parametrize("mode", ["no_grad", "nothing_requires_grad"])
def test_inference_allocates_only_what_it_returns(mode, allocations, poison_kernel_buffers, step_kernels):
    inputs = make_inputs(CASE, TRITON_DEVICE)
    T, B, H = CASE.T, CASE.B, CASE.H
    trained = [t.detach() for t in lstm_layer(*(v.requires_grad_() if v is not None else None
                                                for v in inputs.values()))]
    allocations.clear()
    plain = {k: v.detach() if v is not None else None for k, v in inputs.items()}
    if mode == "no_grad":
        with torch.no_grad():
            out = lstm_layer(**{k: v.requires_grad_() if v is not None else None
                                for k, v in inputs.items()})
    else:
        out = lstm_layer(**plain)
    assert sorted(allocations) == sorted([((T, B, H), torch.float32), ((2, B, H), torch.float32)]), (
        "inference should allocate the output and one c ping-pong pair, no gates or c history"
    )
    assert all(not t.requires_grad for t in out)
    for a, b in zip(out, trained):
        assert torch.equal(a, b), "inference and training forward run the same kernels"


def test_training_saves_the_output_as_h_history_and_nothing_twice():
    inputs = make_inputs(CASE, TRITON_DEVICE)
    T, B, I, H = CASE.T, CASE.B, CASE.I, CASE.H
    saved: list[tuple[int, ...]] = []

    def pack(t):
        saved.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        lstm_layer(**{k: v.requires_grad_() if v is not None else None for k, v in inputs.items()})
    # x, h0, w_ih, w_hh, y (= h_1..h_T), c_0..c_T, gates, and an empty h_cell (no projection)
    expected = [(T, B, I), (B, H), (4 * H, I), (4 * H, H), (T, B, H), (T + 1, B, H), (T, B, 4 * H), (0,)]
    assert sorted(saved) == sorted(expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_kernels_take_operands_in_the_compute_dtype(dtype, monkeypatch, step_kernels):
    """The input projection and h_t stay in the compute dtype (tensor cores); c and gates in fp32."""
    function = _layer()
    launches = []
    kernel = function.lstm_forward_step_kernel

    class Recording:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                launches.append((args, kwargs))
                return kernel[grid](*args, **kwargs)
            return launch

    monkeypatch.setattr(function, "lstm_forward_step_kernel", Recording())
    inputs = {k: v.to(dtype).requires_grad_() if v is not None else None
              for k, v in make_inputs(CASE, TRITON_DEVICE).items()}
    lstm_layer(**inputs)
    args, kwargs = launches[0]
    xg, h_prev, c_prev, w_hh, h_out, c_out, gates = args[:7]
    assert xg.dtype == h_prev.dtype == w_hh.dtype == h_out.dtype == dtype
    assert c_prev.dtype == c_out.dtype == gates.dtype == torch.float32
    assert kwargs["DOT_PRECISION"] == "ieee"


def test_tf32_only_where_the_user_allowed_it():
    function = _layer()
    previous = torch.backends.cuda.matmul.allow_tf32  # a property of torch's, not an attribute
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        assert function.dot_precision(torch.float32) == "ieee"
        torch.backends.cuda.matmul.allow_tf32 = True
        assert function.dot_precision(torch.float32) == "tf32"
        assert function.dot_precision(torch.bfloat16) == "ieee"  # not read for 16-bit operands
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def test_launches_enter_the_inputs_device(monkeypatch):
    """Triton launches on the current CUDA device: the layer makes the input's device current."""
    function = _layer()
    entered = []
    monkeypatch.setattr(torch.cuda, "device", lambda d: (entered.append(d), contextlib.nullcontext())[1])
    with function.device_guard(torch.device("cuda", 1)):
        pass
    assert entered == [torch.device("cuda", 1)]
    with function.device_guard(torch.device("cpu")):
        pass
    assert len(entered) == 1

    guarded = []
    monkeypatch.setattr(function, "device_guard", lambda d: (guarded.append(d), contextlib.nullcontext())[1])
    inputs = {k: v.requires_grad_() if v is not None else None for k, v in make_inputs(CASE, TRITON_DEVICE).items()}
    y, _, _ = lstm_layer(**inputs)
    y.sum().backward()
    assert guarded == [inputs["x"].device] * 2, "forward and backward each launch under the input's device"


@pytest.mark.parametrize("name", ["h0", "c0", "w_hh", "b_hh", "w_hr"])
def test_mixing_devices_is_a_clear_error(name):
    function = _layer()
    inputs = make_inputs(Case(B=2, T=3, I=4, H=5, proj=3), "cpu")
    inputs[name] = inputs[name].to("meta")
    with pytest.raises(ValueError, match=rf"lstm_layer: {name} is on meta but x is on cpu"):
        lstm_layer(**inputs)


@requires_cuda
@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_layer_on_a_device_that_is_not_current():
    function = _layer()
    torch.cuda.set_device(0)
    inputs = make_inputs(CASE, "cuda:1")
    y, h, c = lstm_layer(**inputs)
    exact = lstm_layer_reference(*(v.double() if v is not None else None for v in inputs.values()))
    assert y.device == torch.device("cuda", 1)
    torch.testing.assert_close(y.double(), exact[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c.double(), exact[2], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", [Case(B=3, T=4, I=5, H=6), Case(B=2, T=3, I=4, H=5, proj=3)], ids=str)
def test_cuda_graph_replay_copies_every_input_in_and_output_out(case, monkeypatch, poison_kernel_buffers,
                                                               step_kernels):
    """The replay bookkeeping of kernels.lstm.graphs, with a stand-in for the CUDA graph that runs
    the recorded loop on the static buffers: a buffer not copied in (or out) would carry the
    values of the capturing call into later calls."""
    from kernels.lstm import graphs
    from tests.test_lstm_kernel import run

    function = _layer()
    graphs.clear()
    captures = []

    def fake_capture(launch, static):
        captures.append(launch)
        for t in static.values():  # what a replay finds before the copies in
            t.fill_(float("nan"))
        return lambda: launch(static)

    monkeypatch.setattr(graphs, "_capture", fake_capture)
    R = case.proj or case.H

    def upstream():  # gradients of y, h_T, c_T, on the outputs' device
        return [torch.randn(shape, device=TRITON_DEVICE) for shape in ((case.T, case.B, R), (case.B, R), (case.B, case.H))]

    calls = [(make_inputs(case, TRITON_DEVICE), upstream()) for _ in range(3)]
    eager = [run(lstm_layer, inputs, torch.float32, up) for inputs, up in calls]
    monkeypatch.setattr(graphs, "graphs_enabled", lambda device: True)
    graphed = [run(lstm_layer, inputs, torch.float32, up) for inputs, up in calls]
    assert len(captures) == 2, "forward and backward loops captured once, on their second sighting"
    for (outs, grads), (outs_g, grads_g) in zip(eager, graphed):
        for a, b in zip(outs, outs_g):
            assert torch.equal(a, b)
        for name in grads:
            assert torch.equal(grads[name], grads_g[name]), name
    graphs.clear()


def test_cuda_graphs_are_opt_in_and_gpu_only(monkeypatch):
    from kernels.lstm import graphs

    assert not graphs.graphs_enabled(torch.device("cuda"))
    monkeypatch.setenv("LIGHTNING_RNN_CUDA_GRAPHS", "1")
    assert graphs.graphs_enabled(torch.device("cuda"))
    assert not graphs.graphs_enabled(torch.device("cpu"))


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("proj", [0, 17], ids=["noproj", "P17"])
def test_cuda_graph_replay_on_a_gpu(proj, monkeypatch, step_kernels):
    from kernels.lstm import graphs
    from tests.test_lstm_kernel import run

    function = _layer()
    graphs.clear()
    case = Case(B=16, T=24, I=32, H=64, proj=proj)
    R = proj or case.H
    calls = [(make_inputs(case, "cuda"), [torch.randn(case.T, case.B, R, device="cuda"),
                                          torch.randn(case.B, R, device="cuda"),
                                          torch.randn(case.B, case.H, device="cuda")]) for _ in range(3)]
    eager = [run(lstm_layer, inputs, torch.float16, up) for inputs, up in calls]
    monkeypatch.setenv("LIGHTNING_RNN_CUDA_GRAPHS", "1")
    graphed = [run(lstm_layer, inputs, torch.float16, up) for inputs, up in calls]
    assert len(graphs._graphs) == 2
    for (outs, grads), (outs_g, grads_g) in zip(eager, graphed):
        for a, b in zip(outs, outs_g):
            torch.testing.assert_close(a, b, atol=0, rtol=0)
        for name in grads:
            torch.testing.assert_close(grads[name], grads_g[name], atol=0, rtol=0)
    graphs.clear()
