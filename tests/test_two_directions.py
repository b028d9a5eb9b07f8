"""Both directions of a bidirectional layer in one engine launch (kernels.persistent.run.forward_two /
backward_two, the engine's TWO_DIRS builds), against the one-direction launches it replaces.

The two directions are independent problems of one shape with different weights (the reverse one on
inputs reversed within each row's length), so each direction of the joint launch must give exactly
what a one-direction launch gives for it: same kernels' math, same plan, only the pointers moved.
Buffers are NaN-poisoned, so an element the joint launch forgets (or writes into the other
direction's half) shows. In the interpreter the GPU plans' grids (many programs, several batch tiles,
the shares of dh) run one step per launch, as the other engine tests do.
"""
from __future__ import annotations

import pytest
import torch

from kernels.persistent import plan as P
from kernels.persistent import run

CELLS = {"lstm": P.LSTM, "gru": P.GRU, "rnn_tanh": P.ELMAN_TANH, "rnn_relu": P.ELMAN_RELU}


def _problem(cell: int, T: int, B: int, H: int, dtype: torch.dtype, lengths: bool):
    """Stacked (2, ...) inputs of one layer's two directions, as the cells' wrappers would build them."""
    X = {P.LSTM: 4, P.GRU: 3}.get(cell, 1)
    G = P.GATES[cell]
    scale = 1.5 / H**0.5
    xg = torch.randn(2, T, B, X * H)
    h0 = (torch.randn(2, B, H) * 0.5).to(dtype)
    state0 = torch.randn(2, B, H) * 0.5 if cell == P.LSTM else h0.float() if cell == P.GRU else None
    w_hh = (torch.randn(2, G * H, H) * scale).to(dtype)
    b_hn = torch.randn(2, H) * 0.1 if cell == P.GRU else None
    lens = torch.randint(1, T + 1, (B,), dtype=torch.int32) if lengths else None
    if lens is not None:
        lens[0] = T
    return xg, h0, state0, w_hh, b_hn, lens


def _one(t, d):
    return t[d] if t is not None else None


def _check(cell: int, T: int, B: int, H: int, dtype: torch.dtype, lengths: bool, p: P.Plan):
    xg, h0, state0, w_hh, b_hn, lens = _problem(cell, T, B, H, dtype, lengths)
    both = run.forward_two(p, xg, h0, state0, w_hh, b_hn, True, True, poison=True, lengths=lens)
    apart = [run.forward(p, xg[d], h0[d], _one(state0, d), w_hh[d], _one(b_hn, d), True, True, poison=True,
                         lengths=lens) for d in range(2)]
    for k, joint in enumerate(both):  # hs, cs (LSTM), saved (LSTM, GRU)
        if joint is None:
            assert all(a[k] is None for a in apart)
            continue
        assert joint.shape[0] == 2
        for d in range(2):
            assert not joint[d].isnan().any(), f"output {k} direction {d}: unwritten elements"
            torch.testing.assert_close(joint[d], apart[d][k], rtol=0, atol=0)

    hs, cs, saved = both
    dy = torch.randn(2, T, B, H)
    if lens is not None:
        from kernels.lengths import valid_steps
        dy *= valid_steps(lens, T)[None, ..., None]
    dstate = torch.randn(2, B, H) if cell == P.LSTM else torch.zeros(2, B, H) if cell == P.GRU else None
    dstate_apart = [dstate[d].clone() if dstate is not None else None for d in range(2)]
    hs_b = hs if cell != P.LSTM else None
    dg = run.backward_two(p, dy, dstate, hs_b, cs, saved, w_hh, True, poison=True, lengths=lens)
    for d in range(2):
        want = run.backward(p, dy[d], dstate_apart[d], _one(hs_b, d), _one(cs, d), _one(saved, d), w_hh[d], True,
                            poison=True, lengths=lens)
        assert not dg[d].isnan().any()
        torch.testing.assert_close(dg[d], want, rtol=0, atol=0)
        if dstate is not None:
            torch.testing.assert_close(dstate[d], dstate_apart[d], rtol=0, atol=0)


@pytest.fixture
def fast(monkeypatch, one_torch_thread):
    monkeypatch.setattr(run, "_chosen", {})


@pytest.mark.parametrize("lengths", [False, True], ids=["dense", "lengths"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("cell", CELLS)
def test_one_launch_gives_each_direction_what_its_own_launch_gives(cell, dtype, lengths, fast):
    """The interpreter's plan (one program along H; batch tiles of their own): the whole sequence in one launch."""
    if cell == "rnn_relu" and dtype == torch.float16:
        dtype = torch.float32  # (relu in 16 bits overflows; the math is the same as tanh's here)
    c, (T, B, H) = CELLS[cell], (5, 3, 20)
    _check(c, T, B, H, dtype, lengths, P.interpreter_plan(c, B, H, P.DEFAULT_VARIANT))


@pytest.mark.parametrize("lengths", [False, True], ids=["dense", "lengths"])
@pytest.mark.parametrize("cell, T, B, H, sms, streamed", [
    ("lstm", 3, 17, 70, 132, False),   # slices of a few units, two batch tiles, K chunks, blocks of shares
    ("gru", 3, 3, 115, 16, False),
    ("rnn_tanh", 2, 40, 33, 132, False),  # three batch tiles a direction: each its own barrier words
    ("rnn_relu", 3, 5, 50, 8, True),
])
def test_gpu_grids_one_step_per_launch(cell, T, B, H, sms, streamed, lengths, fast, monkeypatch):
    """The plan a GPU with `sms` SMs runs both directions with (half the SMs each), one step per launch."""
    monkeypatch.setattr(run, "STEPS_PER_LAUNCH", 1)
    c = CELLS[cell]
    plans = [p for p in run.two_direction_plans(c, B, H, 2, sms, P.DEFAULT_VARIANT) if bool(p.stream_k) == streamed]
    assert plans, "no plan for two directions"
    p = plans[0]
    assert 2 * p.programs <= sms and p.slices > 1
    _check(c, T, B, H, torch.float32, lengths, p)


def test_sync_words_per_direction_and_tile():
    p = P.gpu_plans(P.LSTM, 40, 64, 2, 132, P.DEFAULT_VARIANT)[0]
    assert run._sync_words(p, torch.device("cpu")).numel() == p.tiles * p.sync_stride + run.ERROR_WORDS
    assert run._sync_words(p, torch.device("cpu"), 2).numel() == 2 * p.tiles * p.sync_stride + run.ERROR_WORDS


# --- choosing: one launch where both grids fit the SMs, else two with the reason -------------------------


@pytest.fixture
def gpu(monkeypatch):
    """`choose` as on a GPU with `sms` SMs whose every plan compiles and fits."""
    class Props:
        multi_processor_count = 132

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: Props())
    monkeypatch.setattr(run, "_cooperative_option", lambda: {"launch_cooperative_grid": True})
    compiled = []
    monkeypatch.setattr(run, "_compile_fits", lambda p, *a, **k: compiled.append((p, a, k)) or (True, ""))
    monkeypatch.setattr(run, "_chosen", {})
    run._gpu_choice.cache_clear()
    yield Props, compiled
    run._gpu_choice.cache_clear()


def test_two_directions_get_a_plan_for_half_the_sms(gpu):
    _, compiled = gpu
    dev = torch.device("cuda")
    one, _ = run.choose(P.LSTM, 16, 768, torch.bfloat16, dev, interpreted=False)
    two, reason = run.choose(P.LSTM, 16, 768, torch.bfloat16, dev, interpreted=False, directions=2)
    assert two is not None and reason == ""
    assert 2 * two.programs <= 132 < 2 * one.programs, (one.describe(), two.describe())
    assert compiled[-1][0] == two and compiled[-1][1][-1] == 2, "the two-direction builds are the ones checked"


def test_two_directions_that_do_not_fit_say_why(gpu):
    props, _ = gpu
    props.multi_processor_count = 1  # one SM: no grid of two fits
    p, reason = run.choose(P.GRU, 4, 64, torch.float16, torch.device("cuda"), interpreted=False, directions=2)
    assert p is None and "2 directions as two launches" in reason and "> 1 SMs" in reason, reason
    one, _ = run.choose(P.GRU, 4, 64, torch.float16, torch.device("cuda"), interpreted=False)
    assert one is not None, "the one-direction plan still runs each direction"


def test_launches_name_the_two_direction_builds():
    p = run.two_direction_plans(P.LSTM, 16, 768, 2, 132, P.DEFAULT_VARIANT)[0]
    names = {launch.name: launch for launch in run.launches(p, 16, 768, torch.bfloat16, "ieee", True, 2)}
    assert set(names) == {"forward.lengths.2dir", "forward.inference.lengths.2dir", "backward.lengths.2dir"}
    for launch in names.values():
        assert launch.constexprs["TWO_DIRS"] is True and launch.args["dir_steps"] > 0
    for launch in run.launches(p, 16, 768, torch.bfloat16, "ieee"):  # one direction: the constexprs of before
        assert "TWO_DIRS" not in launch.constexprs and launch.args["dir_steps"] == 0


def test_resource_configs_have_a_group_for_two_directions():
    from kernels.resources import H100

    configs = run.resource_configs("lstm", 16, 768, "bf16", H100.sms)
    two = [c for c in configs if c.kernel.endswith(".2dir")]
    assert {c.kernel for c in two} >= {"lstm.engine.forward.2dir", "lstm.engine.backward.2dir",
                                       "lstm.engine.forward.lengths.2dir"}
    assert all(c.programs <= H100.sms and ".2dir" in c.group for c in two)
    assert not {c.group for c in two} & {c.group for c in configs if not c.kernel.endswith(".2dir")}
