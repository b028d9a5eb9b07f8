"""Shared test setup.

Without a GPU the Triton kernels run in Triton's CPU interpreter, which must be switched on
before `kernels.lstm.function` is imported (triton.jit reads it then): hence here, first.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
#: Where the Triton kernel runs in this test session: the GPU, or the CPU through the interpreter.
TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
requires_triton_interpreter = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1", reason="exercises the Triton CPU interpreter path"
)


@pytest.fixture
def poison_kernel_buffers(monkeypatch):
    """Fill every buffer the Triton kernels write with NaN first: an unwritten element shows."""
    from kernels.lstm import function

    monkeypatch.setattr(function, "POISON_BUFFERS", True)


@pytest.fixture(autouse=True)
def _ieee_fp32_on_cuda():
    """PyTorch lets cuDNN use TF32 for fp32 RNNs by default (and matmuls where the user asks): a
    reference computed that way is off by ~1e-3, so every test runs with TF32 off."""
    if not torch.cuda.is_available():
        yield
        return
    previous = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = previous


@pytest.fixture(autouse=True)
def _fresh_seed():
    """Fresh random inputs per test run, but reproducible from the printed seed on failure."""
    seed = int.from_bytes(os.urandom(4), "little")
    torch.manual_seed(seed)
    yield seed


@pytest.fixture
def one_torch_thread():
    """Tiny models gain nothing from a second thread, and two threads fighting other
    processes for 2 shared cores are many times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
