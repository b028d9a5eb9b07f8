"""Per-row lengths through one layer (kernels.<cell>.function with `lengths=`): the persistent engine
and the per-step kernels, against the cell's reference run row by row on each row's own steps.

Rows past their length: zero outputs, the state kept (h_T, c_T are each row's state at its own last
step, as torch.nn gives for packed input), and the upstream gradient there ignored (the test sends a
random one). Judged as every parity test here: against a float64 run on dtype-rounded inputs, with
the reference's own error in `dtype` as the yardstick (tests/tolerance.py), buffers NaN-poisoned.
"""
from __future__ import annotations

import functools

import pytest
import torch

from kernels.gru import gru_layer_reference
from kernels.lstm import lstm_layer_reference
from kernels.rnn import rnn_layer_reference
from tests import test_gru_kernel as gru_tests
from tests import test_lstm_kernel as lstm_tests
from tests import test_rnn_kernel as rnn_tests
from tests.test_persistent_engine import CELLS, RELU_16_BIT, _gpu_grid, engine  # noqa: F401  (a fixture)
from tests.tolerance import assert_no_worse_than_torch, rounded_to

DEVICE = lstm_tests.DEVICE


def _layer(cell: str):
    """(test module, our layer function, its reference) for `cell`."""
    if cell == "lstm":
        from kernels.lstm.op import lstm_layer

        return lstm_tests, lstm_layer, lstm_layer_reference
    if cell == "gru":
        from kernels.gru.function import gru_layer

        return gru_tests, gru_layer, gru_layer_reference
    from kernels.rnn.function import rnn_layer

    act = cell.split("_")[1]
    return rnn_tests, functools.partial(rnn_layer, nonlinearity=act), functools.partial(rnn_layer_reference,
                                                                                        nonlinearity=act)


def ragged(reference, lengths: list[int], n_states: int):
    """`reference` (x (T, B, I), n_states states (B, .), weights...) run on each row's first lengths[b]
    steps alone: outputs zero-padded to T, final states each row's own."""

    def run(x, *rest):
        states, weights = rest[:n_states], rest[n_states:]
        ys, finals = [], []
        for b, n in enumerate(lengths):
            y, *final = reference(x[:n, b:b + 1], *(s[b:b + 1] for s in states), *weights)
            ys.append(torch.cat([y, y.new_zeros(x.shape[0] - n, *y.shape[1:])]))
            finals.append(final)
        return (torch.cat(ys, 1), *(torch.cat(f, 0) for f in zip(*finals)))

    return run


def check_ragged(cell: str, B: int, T: int, I: int, H: int, lengths: list[int], dtype: torch.dtype,
                 bias: bool = True) -> None:
    tests, ours_fn, reference = _layer(cell)
    kwargs = {"nonlinearity": cell.split("_")[1]} if "rnn" in cell else {}
    inputs = tests.make_inputs(tests.Case(B=B, T=T, I=I, H=H, bias=bias, **kwargs), DEVICE)
    n_states = 2 if cell == "lstm" else 1
    upstream = [torch.randn(T, B, H, device=DEVICE)] + [torch.randn(B, H, device=DEVICE) for _ in range(n_states)]
    as_tensor = torch.tensor(lengths, device=DEVICE)
    ref = ragged(reference, lengths, n_states)
    ours, our_grads = tests.run(lambda *a: ours_fn(*a, lengths=as_tensor), inputs, dtype, upstream)
    theirs, their_grads = tests.run(ref, inputs, dtype, upstream)
    exact, exact_grads = tests.run(ref, {k: rounded_to(dtype, v) for k, v in inputs.items()}, torch.float64,
                                   [rounded_to(dtype, g) for g in upstream])
    for name, a, b, r in zip(["y", "h_T", "c_T"], ours, theirs, exact):
        assert_no_worse_than_torch(name, a, b, r)
    for b, n in enumerate(lengths):
        assert not ours[0][n:, b].any(), "outputs past a row's length must be zero"
    assert our_grads.keys() == exact_grads.keys()
    for name in exact_grads:
        assert_no_worse_than_torch(f"grad {name}", our_grads[name], their_grads[name], exact_grads[name])


@pytest.fixture
def step_kernels(monkeypatch):
    """The per-step kernels (engine off), every kernel-written buffer NaN first."""
    from kernels import paths
    from kernels.lstm import function
    from kernels.rnn import common

    monkeypatch.setenv("LIGHTNING_RNN_PERSISTENT", "0")
    monkeypatch.setattr(function, "POISON_BUFFERS", True)
    monkeypatch.setattr(common, "POISON_BUFFERS", True)
    paths.reset()
    return lambda: [r for r in paths.snapshot() if r["path"] == "step"]


# (B, T, I, H, lengths): 1 and the full length, one row, all rows alike, several batch tiles (B 17).
SHAPES = [
    (3, 7, 5, 17, [7, 1, 4]),
    (1, 5, 3, 33, [3]),
    (4, 6, 2, 5, [3, 3, 3, 3]),
    (17, 4, 3, 20, [1, 4, 2, 3, 4, 1, 1, 2, 3, 4, 4, 4, 2, 1, 3, 2, 4]),
]


def _cases():
    """Every cell with every shape on one path and dtype each, rotating (pairwise, not the full product)."""
    cases = []
    for i, cell in enumerate(CELLS):
        for j, shape in enumerate(SHAPES):
            path = ("engine", "step")[(i + j) % 2]
            dtype = (torch.float32, torch.float16)[(i + j // 2) % 2] if cell != "rnn_relu" else torch.float32
            cases.append(pytest.param(cell, path, shape, dtype,
                                      id=f"{cell}-{path}-B{shape[0]}-T{shape[1]}-{str(dtype)[6:]}"))
    return cases


@pytest.mark.parametrize("cell, path, shape, dtype", _cases())
def test_lengths_match_reference(cell, path, shape, dtype, request):
    served = request.getfixturevalue("engine" if path == "engine" else "step_kernels")
    B, T, I, H, lengths = shape
    check_ragged(cell, B, T, I, H, lengths, dtype, bias=(B + H) % 2 == 1)
    assert {r["cell"] for r in served()} == {cell.split("_")[0]}, f"the {path} path did not serve the layer"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU interpreter variant")
@pytest.mark.parametrize("cell, streamed", [("lstm", False), ("gru", True), ("rnn_tanh", False), ("rnn_relu", True)])
def test_lengths_on_the_gpu_grid_one_step_per_launch(cell, streamed, engine, monkeypatch):  # noqa: F811
    """The grids a GPU launches (many programs, batch tiles, streamed or resident weights), one
    step per launch: lengths cross launches (the launch's first time index) and batch tiles."""
    plans = _gpu_grid(monkeypatch, 132 if cell != "gru" else 8, streamed=streamed)
    lengths = [3, 1, 2, 3, 2, 1, 3, 3, 1, 2, 2, 3, 1, 1, 2, 3, 3]
    check_ragged(cell, 17, 3, 4, 40, lengths, torch.float32)
    assert plans and bool(plans[0].stream_k) == streamed and plans[0].slices > 1
    assert engine(), "the engine did not serve the layer"


def test_inference_with_lengths_equals_training_forward(engine):  # noqa: F811
    """Without a gradient the forward keeps no history; the final states are still each row's own."""
    from kernels.lstm.op import lstm_layer

    inputs = lstm_tests.make_inputs(lstm_tests.Case(B=3, T=5, I=4, H=6), DEVICE)
    lengths = torch.tensor([2, 5, 1], device=DEVICE)
    trained = [t.detach() for t in lstm_layer(*(v.requires_grad_() if v is not None else None
                                                for v in inputs.values()), lengths=lengths)]
    with torch.no_grad():
        out = lstm_layer(*inputs.values(), lengths=lengths)
    for a, b in zip(out, trained):
        assert torch.equal(a, b)
