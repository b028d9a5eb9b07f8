"""The Triton LSTM layer (kernels.lstm.op.lstm_layer) against its PyTorch reference.

One layer, one direction: output, final states and the gradient of every input, judged against
a float64 run of the reference on the same (dtype-rounded) inputs with the criterion of
tests/tolerance.py. The sweep covers every
value of B, T, H pairwise rather than their full product: each interpreter launch costs time.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from kernels.lstm import lstm_layer_reference
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
    proj: int = 0
    bias: bool = True

    def __str__(self) -> str:
        extra = (f"-P{self.proj}" if self.proj else "") + ("" if self.bias else "-nobias")
        return f"B{self.B}-T{self.T}-I{self.I}-H{self.H}{extra}"


CASES = [
    Case(B=1, T=1, I=1, H=1),
    Case(B=1, T=33, I=3, H=5),
    Case(B=3, T=7, I=17, H=32),
    Case(B=17, T=7, I=5, H=100),
    Case(B=3, T=33, I=1, H=100, bias=False),
    Case(B=17, T=1, I=100, H=32),
    Case(B=1, T=7, I=8, H=100, proj=17),
    Case(B=17, T=33, I=3, H=5, proj=3),
    Case(B=3, T=1, I=33, H=1, bias=False),
]


def make_inputs(case: Case, device: str) -> dict[str, torch.Tensor | None]:
    H, R = case.H, case.proj or case.H
    scale = 1.5 / H**0.5  # weights large enough that gates saturate somewhere
    return {
        "x": torch.randn(case.T, case.B, case.I, device=device),
        "h0": torch.randn(case.B, R, device=device) * 0.5,
        "c0": torch.randn(case.B, H, device=device) * 0.5,
        "w_ih": torch.randn(4 * H, case.I, device=device) * scale,
        "w_hh": torch.randn(4 * H, R, device=device) * scale,
        "b_ih": torch.randn(4 * H, device=device) * 0.5 if case.bias else None,
        "b_hh": torch.randn(4 * H, device=device) * 0.5 if case.bias else None,
        "w_hr": torch.randn(R, H, device=device) / H**0.5 if case.proj else None,
    }


def run(fn, inputs, dtype, upstream):
    """Forward and backward in `dtype`; returns outputs and the gradient of each input."""
    leaves = {k: (v.detach().to(dtype, copy=True).requires_grad_() if v is not None else None) for k, v in inputs.items()}
    outs = fn(*leaves.values())
    torch.autograd.backward(outs, [g.to(o.dtype) for g, o in zip(upstream, outs)])
    grads = {k: v.grad for k, v in leaves.items() if v is not None}
    return outs, grads


def check_layer_parity(case: Case, dtype: torch.dtype, device: str) -> None:
    from kernels.lstm.op import lstm_layer

    inputs = make_inputs(case, device)
    R = case.proj or case.H
    upstream = [torch.randn(case.T, case.B, R, device=device), torch.randn(case.B, R, device=device),
                torch.randn(case.B, case.H, device=device)]
    ours, our_grads = run(lstm_layer, inputs, dtype, upstream)
    theirs, their_grads = run(lstm_layer_reference, inputs, dtype, upstream)
    # The exact answer to the question both were asked: the inputs and upstream gradients as
    # rounded to `dtype`. (Against the unrounded fp32 inputs, an fp32-accurate kernel such as ours
    # carries the whole input-rounding error, which torch's own fp16 rounding sometimes cancels
    # by luck: about 1 seed in 300 then failed the 2x rule with ours still the more exact.)
    exact, exact_grads = run(lstm_layer_reference, {k: rounded_to(dtype, v) for k, v in inputs.items()},
                             torch.float64, [rounded_to(dtype, g) for g in upstream])
    for name, a, b, r in zip(["y", "h_T", "c_T"], ours, theirs, exact):
        assert_no_worse_than_torch(name, a, b, r)
    assert our_grads.keys() == exact_grads.keys()
    for name in exact_grads:
        assert_no_worse_than_torch(f"grad {name}", our_grads[name], their_grads[name], exact_grads[name])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_layer_matches_reference(case, dtype, poison_kernel_buffers):
    check_layer_parity(case, dtype, DEVICE)


# Shapes that span several of the GPU's tiles (16 x 32 x 32): B past 16, H past 32, K past 32.
MULTI_TILE_CASES = [
    Case(B=17, T=3, I=5, H=100),
    Case(B=33, T=2, I=3, H=65, bias=False),
    Case(B=17, T=2, I=8, H=70, proj=17),
]


@pytest.fixture
def gpu_tiles(monkeypatch):
    """Run the per-step kernels with the tile sizes they get on CUDA, also in the interpreter."""
    from kernels.lstm import function

    monkeypatch.setattr(function, "GPU_TILES", True)
    return function._block_sizes


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("case", MULTI_TILE_CASES, ids=str)
def test_layer_matches_reference_with_gpu_tiles(case, dtype, gpu_tiles, poison_kernel_buffers):
    bb, bh, bk = gpu_tiles(case.B, case.H, case.proj or case.H)
    assert case.B > bb and case.H > bh and max(case.H, case.proj) > bk, "the case must span several tiles"
    check_layer_parity(case, dtype, DEVICE)


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES, ids=str)
def test_layer_matches_reference_bf16_gpu(case, poison_kernel_buffers):
    check_layer_parity(case, torch.bfloat16, "cuda")


@pytest.mark.filterwarnings("ignore:overflow encountered in exp")  # numpy, inside the interpreter: exp(-x) -> inf -> sigmoid 0, as wanted
def test_saturated_gates_stay_finite(poison_kernel_buffers):
    """Huge pre-activations: a naive tanh (exp(2x)-1)/(exp(2x)+1) would give inf/inf = NaN."""
    from kernels.lstm.op import lstm_layer

    inputs = make_inputs(Case(B=3, T=5, I=4, H=7), DEVICE)
    inputs["x"] = inputs["x"] * 1e4
    upstream = [torch.randn(5, 3, 7, device=DEVICE), torch.randn(3, 7, device=DEVICE),
                torch.randn(3, 7, device=DEVICE)]
    ours, our_grads = run(lstm_layer, inputs, torch.float32, upstream)
    theirs, _ = run(lstm_layer_reference, inputs, torch.float32, upstream)
    exact, exact_grads = run(lstm_layer_reference, inputs, torch.float64, upstream)
    # Pre-activations of ~1e4 carry fp32 rounding of ~1e-3 into any unit that is not saturated: judged
    # against torch's own fp32 error (a fixed 1e-5 failed 4 of 200 seeds by rounding alone; this none).
    for name, a, b, r in zip(["y", "h_T", "c_T"], ours, theirs, exact):
        assert_no_worse_than_torch(name, a, b, r)
    for name in exact_grads:
        assert torch.isfinite(our_grads[name]).all(), name


def test_autocast_fp16_casts_and_returns_grads_to_fp32_params(poison_kernel_buffers):
    """Under autocast the layer computes in the autocast dtype; parameters stay fp32."""
    from kernels.lstm.op import lstm_layer

    inputs = make_inputs(Case(B=3, T=4, I=5, H=6), DEVICE)
    leaves = {k: v.requires_grad_() for k, v in inputs.items() if v is not None}
    with torch.autocast(DEVICE, dtype=torch.float16):
        y, h, c = lstm_layer(**leaves)
    assert y.dtype == h.dtype == c.dtype == torch.float16
    (y.float().sum() + c.float().sum()).backward()
    for name, v in leaves.items():
        assert v.grad is not None and v.grad.dtype == torch.float32, name
    exact = lstm_layer_reference(*(v.double() for v in leaves.values()))
    torch.testing.assert_close(y.double(), exact[0], atol=3e-3, rtol=3e-3)
