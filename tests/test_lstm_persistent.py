"""The persistent whole-sequence kernels (behind LIGHTNING_RNN_PERSISTENT=1) against the reference.

In the CPU interpreter `lstm_layer` runs them as a single program (which still runs the grid
barrier code). The grid a GPU launches (programs of 4-16 hidden units, the K chunks, the
programs' shares of dh in the backward) is tested too: the kernels are launched with that grid
one time step per launch, which needs no barrier, so programs that run one after another never wait.
On a GPU (tests marked gpu) they run as they will in production.
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


def _stepwise_on_gpu_grid(monkeypatch, sms: int) -> list:
    """Make `lstm_layer` launch the persistent kernels with the grid a GPU with `sms` SMs gets,
    one time step per launch; returns the plans used."""
    from kernels.lstm import function, persistent as P

    plans = []

    def forward(xg, hs, cs, gates, w_hh, _plan, interpreted):
        p = P.plan(xg.shape[1], cs.shape[2], sms, gpu_tiles=True)
        plans.append(p)
        w_rows = P.gate_interleaved(w_hh, p)
        for t in range(xg.shape[0]):
            P.forward_steps(xg, hs, cs, gates, w_rows, p, interpreted, t, t + 1)

    def backward(dh, dgates, w_hh, gates, cs, dc, _plan, interpreted):
        T, B, H = dh.shape
        p = P.plan(B, H, sms, gpu_tiles=True)
        w_rows = P.gate_interleaved(w_hh, p)
        shares = torch.zeros(2, p.programs, B, H)
        for t in range(T - 1, -1, -1):
            P.backward_steps(dh, dgates, gates, cs, dc, w_rows, shares, p, interpreted, t, t + 1)

    monkeypatch.setenv("LIGHTNING_RNN_PERSISTENT", "1")
    monkeypatch.setattr(function, "persistent_forward", forward)
    monkeypatch.setattr(function, "persistent_backward", backward)
    return plans


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU interpreter variant")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize(
    "case, sms, block_j, programs",
    [
        # 18 programs of 4 units (two blocks of shares to sum), two batch tiles, K = 64+16.
        (Case(B=17, T=2, I=5, H=70), 132, 4, 18),
        # 8 programs of 16 units, the last one mostly empty; K = 64+32+16+16.
        (Case(B=3, T=3, I=3, H=115, bias=False), 2, 16, 8),
    ],
    ids=["H70-18programs", "H115-8programs"],
)
def test_persistent_gpu_grid_one_step_per_launch(case, sms, block_j, programs, dtype, monkeypatch,
                                                 poison_kernel_buffers):
    plans = _stepwise_on_gpu_grid(monkeypatch, sms)
    check_layer_parity(case, dtype, "cpu")
    assert [(p.block_j, p.programs) for p in plans] == [(block_j, programs)]


@pytest.mark.parametrize("H, chunks", [(1, (16, 0, 0, 0)), (33, (32, 16, 0, 0)), (115, (64, 32, 16, 16)),
                                       (768, (512, 256, 0, 0)), (1000, (512, 256, 128, 128)),
                                       (1024, (512, 512, 0, 0))])
def test_k_chunks_are_powers_of_two_covering_h(H, chunks):
    from kernels.lstm.persistent import k_chunks

    assert k_chunks(H) == chunks


@pytest.mark.parametrize("H, sms, block_j, programs", [(768, 132, 8, 96), (1024, 132, 8, 128), (512, 132, 4, 128),
                                                       (2048, 132, 16, 128), (100, 132, 4, 25)])
def test_grid_is_sized_from_the_sm_count(H, sms, block_j, programs):
    from kernels.lstm.persistent import plan

    p = plan(16, H, sms, gpu_tiles=True)
    assert (p.block_j, p.programs) == (block_j, programs)


def test_gate_interleaved_rows():
    """Row (program, unit, gate) of the reordered copy is W_hh's row gate*H + program*BLOCK_J + unit."""
    from kernels.lstm.persistent import gate_interleaved, plan

    H = 10
    w = torch.randn(4 * H, H)
    p = plan(1, H, 132, gpu_tiles=True)  # 3 programs of 4 units, K padded to 16
    rows = gate_interleaved(w, p).view(p.programs, p.block_j, 4, p.k_total)
    for prog in range(p.programs):
        for unit in range(p.block_j):
            for gate in range(4):
                j = prog * p.block_j + unit
                expected = w[gate * H + j] if j < H else torch.zeros(H)
                assert torch.equal(rows[prog, unit, gate, :H], expected)
    assert not rows[..., H:].any(), "padding must be zero"


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("case", PERSISTENT_CASES + [Case(B=16, T=64, I=32, H=768)], ids=str)
def test_persistent_matches_reference_gpu(case, dtype, persistent, poison_kernel_buffers):
    check_layer_parity(case, dtype, "cuda")
    assert persistent, "the persistent kernel did not run"


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("H, dtype", [(768, torch.float16), (768, torch.bfloat16), (1024, torch.bfloat16)])
def test_dispatcher_chooses_persistent_at_target_gpu(H, dtype):
    from kernels.lstm.persistent import choose_plan

    plan, reason = choose_plan(16, H, False, dtype, torch.device("cuda"), interpreted=False)
    if torch.cuda.get_device_properties(0).multi_processor_count >= 128:
        assert plan is not None, reason


@requires_cuda
@pytest.mark.gpu
def test_persistent_offsets_past_2_31_gpu():
    """T*B*4H > 2^31 elements: the kernels step their pointers, so nothing overflows 32 bits."""
    from kernels.lstm import persistent as P

    T, B, H = 8193, 64, 1024
    assert T * B * 4 * H > 2**31
    dev = torch.device("cuda")
    p, reason = P.choose_plan(B, H, False, torch.bfloat16, dev, interpreted=False)
    if p is None:
        pytest.skip(reason)
    xg = torch.randn(T, B, 4 * H, device=dev)
    w = (torch.randn(4 * H, H, device=dev) / H**0.5).to(torch.bfloat16)
    hs, cs = torch.zeros(T + 1, B, H, device=dev), torch.zeros(T + 1, B, H, device=dev)
    gates = torch.empty(T, B, 4 * H, device=dev)
    P.persistent_forward(xg, hs, cs, gates, w, p, interpreted=False)
    # The last two steps again, from the states the long run reached, in a launch that starts there.
    hs2, cs2 = hs[T - 2:T + 1].clone(), cs[T - 2:T + 1].clone()
    hs2[1:], cs2[1:] = float("nan"), float("nan")
    P.persistent_forward(xg[T - 2:], hs2, cs2, torch.empty_like(gates[T - 2:]), w, p, interpreted=False)
    torch.testing.assert_close(hs2[1:], hs[T - 1:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cs2[1:], cs[T - 1:], atol=1e-5, rtol=1e-5)
