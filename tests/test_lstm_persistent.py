"""The persistent whole-sequence kernels (behind LIGHTNING_RNN_PERSISTENT=1) against the reference.

In the CPU interpreter they run as a single program, which still exercises the grid barrier; on
a GPU (tests marked gpu) with as many programs as the hidden size needs.
"""
from __future__ import annotations

import pytest
import torch

from tests.conftest import requires_cuda
from tests.test_lstm_kernel import CASES, Case, check_layer_parity

PERSISTENT_CASES = [c for c in CASES if not c.proj] + [Case(B=40, T=5, I=3, H=33)]


@pytest.fixture
def persistent(monkeypatch):
    monkeypatch.setenv("LIGHTNING_RNN_PERSISTENT", "1")
    from kernels.lstm import function

    calls = []
    original = function.persistent_forward
    monkeypatch.setattr(function, "persistent_forward", lambda *a: (calls.append(a), original(*a)))
    return calls


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU interpreter variant")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("case", PERSISTENT_CASES, ids=str)
def test_persistent_matches_reference(case, dtype, persistent, poison_kernel_buffers):
    check_layer_parity(case, dtype, "cpu")
    assert persistent, "the persistent kernel did not run"


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("case", PERSISTENT_CASES + [Case(B=16, T=64, I=32, H=768)], ids=str)
def test_persistent_matches_reference_gpu(case, dtype, persistent, poison_kernel_buffers):
    check_layer_parity(case, dtype, "cuda")
    assert persistent, "the persistent kernel did not run"
