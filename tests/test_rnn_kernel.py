"""The Triton Elman RNN layer (kernels.rnn.function.rnn_layer) against its PyTorch reference.

As tests/test_gru_kernel.py: output, final state and every gradient against a float64 run of the
reference on the dtype-rounded inputs, NaN-poisoned buffers, GPU tiles and the interpreter's big
tile, B/T/H pairwise; tanh and relu alternate over the cases.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from kernels.rnn import rnn_layer_reference
from tests.conftest import requires_cuda
from tests.tolerance import assert_no_worse_than_torch, rounded_to

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"



@pytest.fixture(autouse=True)
def _step_kernels(monkeypatch):
    """This file tests the per-step kernels: the persistent engine (on by default) is switched off.
    tests/test_persistent_engine.py runs this file's parity checks through the engine."""
    monkeypatch.setenv("LIGHTNING_RNN_PERSISTENT", "0")

@dataclass(frozen=True)
class Case:
    B: int
    T: int
    I: int
    H: int
    nonlinearity: str = "tanh"
    bias: bool = True
    gpu_tiles: bool = False

    def __str__(self) -> str:
        return (f"{self.nonlinearity}-B{self.B}-T{self.T}-I{self.I}-H{self.H}" + ("" if self.bias else "-nobias")
                + ("-gpu_tiles" if self.gpu_tiles else "-big_tile"))


CASES = [
    Case(B=1, T=1, I=1, H=1, nonlinearity="relu"),
    Case(B=1, T=33, I=3, H=5, nonlinearity="tanh", gpu_tiles=True),
    Case(B=1, T=7, I=17, H=100, nonlinearity="relu", bias=False, gpu_tiles=True),
    Case(B=3, T=7, I=17, H=17, nonlinearity="tanh", bias=False, gpu_tiles=True),
    Case(B=3, T=33, I=1, H=100, nonlinearity="relu", bias=False),
    Case(B=3, T=1, I=5, H=5, nonlinearity="relu", gpu_tiles=True),
    Case(B=17, T=1, I=5, H=100, nonlinearity="tanh", gpu_tiles=True),
    Case(B=17, T=7, I=100, H=17, nonlinearity="tanh"),
    Case(B=17, T=33, I=4, H=17, nonlinearity="relu"),
]


@pytest.fixture
def tiles(monkeypatch):
    """Poison every kernel-written buffer; `tiles(True)` switches the interpreter to the GPU's tiles."""
    from kernels.rnn import common

    monkeypatch.setattr(common, "POISON_BUFFERS", True)

    def use(gpu_tiles: bool) -> None:
        monkeypatch.setattr(common, "FORCED_BLOCK_CAPS", common.GPU_BLOCK_CAPS if gpu_tiles else None)

    return use


def make_inputs(case: Case, device: str) -> dict[str, torch.Tensor | None]:
    H = case.H
    scale = 1.0 / H**0.5  # relu: larger recurrent weights would blow up over 33 steps
    return {
        "x": torch.randn(case.T, case.B, case.I, device=device),
        "h0": torch.randn(case.B, H, device=device) * 0.5,
        "w_ih": torch.randn(H, case.I, device=device) * 1.5 / case.I**0.5,
        "w_hh": torch.randn(H, H, device=device) * scale,
        "b_ih": torch.randn(H, device=device) * 0.5 if case.bias else None,
        "b_hh": torch.randn(H, device=device) * 0.5 if case.bias else None,
    }


def run(fn, inputs, dtype, upstream):
    """Forward and backward in `dtype`; returns the outputs and the gradient of each input."""
    leaves = {k: (v.detach().to(dtype, copy=True).requires_grad_() if v is not None else None)
              for k, v in inputs.items()}
    outs = fn(*leaves.values())
    torch.autograd.backward(outs, [g.to(o.dtype) for g, o in zip(upstream, outs)])
    return outs, {k: v.grad for k, v in leaves.items() if v is not None}


def check_layer_parity(case: Case, dtype: torch.dtype, device: str) -> None:
    from kernels.rnn.function import rnn_layer

    def ours_fn(*args):
        return rnn_layer(*args, nonlinearity=case.nonlinearity)

    def reference(*args):
        return rnn_layer_reference(*args, nonlinearity=case.nonlinearity)

    inputs = make_inputs(case, device)
    upstream = [torch.randn(case.T, case.B, case.H, device=device), torch.randn(case.B, case.H, device=device)]
    ours, our_grads = run(ours_fn, inputs, dtype, upstream)
    theirs, their_grads = run(reference, inputs, dtype, upstream)
    exact, exact_grads = run(reference, {k: rounded_to(dtype, v) for k, v in inputs.items()},
                             torch.float64, [rounded_to(dtype, g) for g in upstream])
    for name, a, b, r in zip(["y", "h_T"], ours, theirs, exact):
        assert_no_worse_than_torch(name, a, b, r)
    assert our_grads.keys() == exact_grads.keys()
    for name in exact_grads:
        assert_no_worse_than_torch(f"grad {name}", our_grads[name], their_grads[name], exact_grads[name])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_layer_matches_reference(case, dtype, tiles):
    tiles(case.gpu_tiles)
    check_layer_parity(case, dtype, DEVICE)


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES, ids=str)
def test_layer_matches_reference_bf16_gpu(case, tiles):
    check_layer_parity(case, torch.bfloat16, "cuda")


def test_relu_gradient_is_zero_where_the_unit_is_off(tiles):
    """relu'(pre) = 0 for pre <= 0: a unit held off by a large negative bias passes no gradient."""
    from kernels.rnn.function import rnn_layer

    x, h0 = torch.randn(4, 2, 3, device=DEVICE), torch.zeros(2, 5, device=DEVICE, requires_grad=True)
    w_ih, w_hh = torch.randn(5, 3, device=DEVICE) * 0.1, torch.randn(5, 5, device=DEVICE) * 0.1
    b_ih = torch.tensor([-10.0, 1.0, 1.0, 1.0, 1.0], device=DEVICE, requires_grad=True)
    y, h = rnn_layer(x, h0, w_ih, w_hh, b_ih, None, nonlinearity="relu")
    assert (y[..., 0] == 0).all()
    y.sum().backward()
    assert b_ih.grad[0] == 0 and (b_ih.grad[1:] != 0).all()


def test_unknown_nonlinearity_is_refused():
    from kernels.rnn.function import rnn_layer

    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu'"):
        rnn_layer(torch.randn(2, 1, 3), torch.zeros(1, 4), torch.randn(4, 3), torch.randn(4, 4), nonlinearity="gelu")



def test_step_kernels_fit_an_h100_without_spills():
    """sm_90 builds of every GRU and Elman step kernel, as the layers launch them at H = 768 and
    1024, fit an H100 with no spills (kernels.resources compiles them; no GPU needed)."""
    from kernels import resources

    if (reason := resources.unavailable_reason()) is not None:
        pytest.skip(reason)
    rows = [r for r in resources.measure_points([(16, 768, "fp32"), (64, 1024, "bf16")], families=["gru", "rnn"])
            if ".step." in r["kernel"]]
    assert len(rows) == 2 * 6  # 2 points x (GRU forward, backward; Elman tanh, relu x forward, backward)
    for r in rows:
        assert r["fits"] and r["spill_bytes"] == 0, r
