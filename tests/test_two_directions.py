"""Both directions of a bidirectional layer in one engine launch (kernels.persistent.run.forward_two /
backward_two, the engine's TWO_DIRS builds), against the one-direction launches it replaces.

The two directions are independent problems of one shape with different weights (the reverse one on
inputs reversed within each row's length), so each direction of the joint launch must give exactly
what a one-direction launch gives for it: same kernels' math, same plan, only the pointers moved.
Buffers are NaN-poisoned, so an element the joint launch forgets (or writes into the other
direction's half) shows. In the interpreter the GPU plans' grids (many programs, several batch tiles,
the shares of dh) run one step per launch, as the other engine tests do.

Then through lightning_rnn.nn (backend="triton"): bidirectional LSTM, GRU and Elman modules against
torch.nn (tests/test_packed_modules' criterion: outputs, h_n, c_n, every gradient), with and without
lengths, fp32 and fp16, batch_first, with and without h0, kernels.paths saying "2 directions, one
launch"; the fallback to two launches (no plan for both fits the SMs, a failing joint launch) and its
recorded reason; the builds that run against the ones `run.launches` checks.
"""
from __future__ import annotations

import pytest
import torch

from kernels.persistent import plan as P
from kernels.persistent import run
from tests import test_packed_modules as packed_tests
from tests import test_persistent_engine as engine_tests
from tests.tolerance import assert_no_worse_than_torch, rounded_to

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


# --- the modules: bidirectional layers through lightning_rnn.nn (backend="triton") ------------------------

ONE_LAUNCH = "2 directions, one launch"


@pytest.fixture
def poison_all(monkeypatch, one_torch_thread):
    """Every buffer the kernels write NaN first (the joint path's too); a fresh choice of plans."""
    from kernels import bidirectional
    from kernels.lstm import function
    from kernels.rnn import common

    monkeypatch.setattr(function, "POISON_BUFFERS", True)
    monkeypatch.setattr(common, "POISON_BUFFERS", True)
    monkeypatch.setattr(bidirectional, "POISON_BUFFERS", True)
    monkeypatch.setattr(run, "_chosen", {})
    monkeypatch.setenv("LIGHTNING_RNN_PERSISTENT", "1")


def _joint_records(family: str) -> list[dict]:
    from kernels import paths

    return [r for r in paths.snapshot() if r["cell"] == family and r["path"] == "persistent"]


Config = packed_tests.Config
MODULE_CONFIGS = [  # bidirectional, pairwise over cell, dtype, layers, batch_first, h0
    Config("LSTM", (4, 1, 3), layers=2, bidirectional=True, batch_first=True),
    Config("LSTM", (3, 3), bidirectional=True, init_state=False, dtype=torch.float16),
    Config("GRU", (2, 5, 1, 5), bidirectional=True, dtype=torch.float16),
    Config("GRU", (3, 1, 2), layers=2, bidirectional=True, batch_first=True, init_state=False),
    Config("RNN-tanh", (6, 1, 4, 2), layers=2, bidirectional=True, H=17),
    Config("RNN-relu", (4, 2, 1), bidirectional=True, batch_first=True, dtype=torch.float32),
]


@pytest.mark.parametrize("mode", ["packed", "lengths"])
@pytest.mark.parametrize("cfg", MODULE_CONFIGS, ids=str)
def test_modules_match_torch_with_lengths_in_one_launch(cfg, mode, poison_all):
    """Packed input and `lengths=`: torch.nn's outputs, h_n (c_n) and every gradient (tests/test_packed_modules'
    criterion), each bidirectional layer served by one engine launch for both directions."""
    from kernels import paths

    paths.reset()
    packed_tests.check_packed_parity(cfg, mode)
    family = {"LSTM": "lstm", "GRU": "gru"}.get(cfg.kind, "rnn")
    records = _joint_records(family)
    assert records and all(ONE_LAUNCH in r["detail"] and r["detail"].endswith(" lengths") for r in records), records


def _dense_run(module, x, hx, upstream):
    x = x.detach().clone().requires_grad_()
    hx = tuple(h.detach().clone().requires_grad_() for h in hx) if hx is not None else None
    module.zero_grad()
    y, final = module(x, (hx if len(hx) == 2 else hx[0]) if hx is not None else None)
    finals = list(final) if isinstance(final, tuple) else [final]
    torch.autograd.backward([y, *finals], [g.to(y.dtype) for g in upstream[: 1 + len(finals)]])
    named = {"input": x.grad} | ({f"hx[{i}]": h.grad for i, h in enumerate(hx)} if hx is not None else {})
    named.update({f"grad {n}": p.grad for n, p in module.named_parameters()})
    return [y, *finals], named


@pytest.mark.parametrize("cfg", [
    Config("LSTM", (5, 5, 5), layers=2, bidirectional=True),
    Config("LSTM", (4, 4), bidirectional=True, batch_first=True, dtype=torch.float16),
    Config("GRU", (6, 6, 6), bidirectional=True, batch_first=True, init_state=False),
    Config("GRU", (3, 3), layers=2, bidirectional=True, dtype=torch.float16),
    Config("RNN-tanh", (4, 4, 4), bidirectional=True, dtype=torch.float16),
    Config("RNN-relu", (5, 5), layers=2, bidirectional=True, init_state=False),
], ids=str)
def test_modules_match_torch_without_lengths_in_one_launch(cfg, poison_all):
    import copy

    from kernels import paths

    ours, theirs = packed_tests._modules(cfg)
    exact = copy.deepcopy(theirs).double()
    B, T, D = len(cfg.lengths), max(cfg.lengths), 2
    shape = (B, T, cfg.I) if cfg.batch_first else (T, B, cfg.I)
    x = torch.randn(shape)
    n = 2 if cfg.kind == "LSTM" else 1
    hx = tuple(torch.randn(D * cfg.layers, B, cfg.H) * 0.5 for _ in range(n)) if cfg.init_state else None
    upstream = [torch.randn(shape[:2] + (D * cfg.H,))] + [torch.randn(D * cfg.layers, B, cfg.H) for _ in range(n)]
    cast = (lambda t, dt: tuple(s.to(dt) for s in t) if t is not None else None)  # noqa: E731
    paths.reset()
    out_ours, g_ours = _dense_run(ours, x.to(cfg.dtype), cast(hx, cfg.dtype), upstream)
    records = _joint_records({"LSTM": "lstm", "GRU": "gru"}.get(cfg.kind, "rnn"))
    assert records and all(ONE_LAUNCH in r["detail"] for r in records), records
    out_theirs, g_theirs = _dense_run(theirs, x.to(cfg.dtype), cast(hx, cfg.dtype), upstream)
    out_exact, g_exact = _dense_run(exact, rounded_to(cfg.dtype, x),
                                    tuple(rounded_to(cfg.dtype, h) for h in hx) if hx is not None else None,
                                    [rounded_to(cfg.dtype, g) for g in upstream])
    for name, a, b, r in zip(["output", "h_n", "c_n"], out_ours, out_theirs, out_exact):
        assert_no_worse_than_torch(name, a, b, r)
    assert g_ours.keys() == g_exact.keys()
    for name in g_ours:
        assert_no_worse_than_torch(name, g_ours[name], g_theirs[name], g_exact[name])


@pytest.mark.parametrize("kind, lengths, H, sms", [
    ("LSTM", (3, 1, 2), 40, 132), ("GRU", (2, 3), 70, 16), ("RNN-tanh", (3, 3, 1), 33, 8)])
def test_modules_on_gpu_grids_one_step_per_launch(kind, lengths, H, sms, poison_all, monkeypatch):
    """The plan a GPU with `sms` SMs runs both directions with (many programs per direction), in the
    interpreter one step per launch."""
    used = []

    def gpu_plan(cell, B, H, variant):
        p = run.two_direction_plans(cell, B, H, 2, sms, variant)[0]
        used.append(p)
        return p

    monkeypatch.setattr(P, "interpreter_plan", gpu_plan)
    monkeypatch.setattr(run, "STEPS_PER_LAUNCH", 1)
    packed_tests.check_packed_parity(Config(kind, lengths, H=H, bidirectional=True), "lengths")
    assert used and all(p.slices > 1 and 2 * p.programs <= sms for p in used)
    assert _joint_records({"LSTM": "lstm", "GRU": "gru"}.get(kind, "rnn"))


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_modules_fall_back_to_two_launches_with_the_reason(kind, poison_all, monkeypatch):
    """Where no plan for both directions fits the SMs (here a GPU of 4 SMs), each direction runs its own
    launch as before; kernels.paths records why."""
    from kernels import paths

    original = run.choose

    def choose(cell, B, H, dtype, device, interpreted, unsupported=None, lengths=False, directions=1):
        if directions == 2:
            return None, run._two_directions_do_not_fit(cell, B, H, 2, 1, P.DEFAULT_VARIANT)
        return original(cell, B, H, dtype, device, interpreted, unsupported, lengths)

    monkeypatch.setattr(run, "choose", choose)
    paths.reset()
    packed_tests.check_packed_parity(Config(kind, (3, 2), layers=2, bidirectional=True), "lengths")
    family = kind.lower()
    fallback = [r for r in paths.snapshot() if r["path"] == "two-launches"]
    assert fallback and all(r["cell"] == family and "2 directions as two launches" in r["detail"]
                            and "SMs" in r["detail"] for r in fallback), paths.snapshot()
    engine = _joint_records(family)
    assert engine and not any(ONE_LAUNCH in r["detail"] for r in engine), "each direction its own launch"


def test_unidirectional_layers_do_not_take_the_joint_path(poison_all):
    from kernels import paths
    from lightning_rnn import nn as lrnn

    paths.reset()
    lrnn.GRU(3, 4, num_layers=2, backend="triton")(torch.randn(3, 2, 3))
    records = _joint_records("gru")
    assert records and not any(ONE_LAUNCH in r["detail"] for r in records)


def test_a_failing_joint_launch_falls_back_to_two_launches(poison_all, monkeypatch, caplog):
    """Whatever a joint launch reports in the forward: the directions run apart (the right results), the
    reason is logged once and kept for the shape."""
    from kernels import paths

    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise run.EngineFailure("injected")

    monkeypatch.setattr(run, "forward_two", broken)
    for _ in range(2):
        paths.reset()
        packed_tests.check_packed_parity(Config("GRU", (3, 2), bidirectional=True), "lengths")
        assert not any(ONE_LAUNCH in r["detail"] for r in paths.snapshot())
    assert len(calls) == 1, "the failure sticks for the shape"
    assert sum("2 directions as two launches" in r.getMessage() for r in caplog.records) == 1


def test_lstm_with_proj_size_runs_its_directions_apart(poison_all):
    from kernels import paths
    from lightning_rnn import nn as lrnn

    paths.reset()
    y, (h, c) = lrnn.LSTM(3, 6, proj_size=4, bidirectional=True, backend="triton")(torch.randn(3, 2, 3))
    assert y.shape == (3, 2, 8) and h.shape == (2, 2, 4)
    assert not any(ONE_LAUNCH in r["detail"] for r in paths.snapshot())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN-tanh"])
def test_target_shape_runs_both_directions_in_one_launch_gpu(kind, monkeypatch):
    """At the target (B16 H768) a GPU runs both directions in one launch (every launch checked at once)
    and gives torch.nn's results, to fp32 rounding."""
    from kernels import paths

    monkeypatch.setenv("LIGHTNING_RNN_ENGINE_CHECK", "1")
    monkeypatch.setattr(run, "_chosen", {})
    ours_cls, theirs_cls, extra = packed_tests.KINDS[kind]
    theirs = theirs_cls(64, 768, bidirectional=True, **extra).cuda()
    ours = ours_cls(64, 768, bidirectional=True, backend="triton", **extra).cuda()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(32, 16, 64, device="cuda")
    paths.reset()
    y = ours(x)[0]
    assert any(ONE_LAUNCH in r["detail"] for r in paths.snapshot()), paths.snapshot()
    torch.testing.assert_close(y, theirs(x)[0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind, lengths", [("LSTM", False), ("GRU", True), ("RNN-relu", False)])
def test_checked_launches_are_the_joint_launches_that_run(kind, lengths, poison_all, monkeypatch):
    """`run.launches(..., directions=2)` (what choose compiles, what kernels.resources measures) against every
    launch of a bidirectional layer's training and inference calls: the same kernels, grid, pointer dtypes,
    integers (the step counts aside) and constexprs."""
    used = []
    monkeypatch.setattr(P, "interpreter_plan", lambda cell, B, H, variant: used.append(
        run.two_direction_plans(cell, B, H, 2, 132, variant)[0]) or used[-1])
    monkeypatch.setattr(run, "STEPS_PER_LAUNCH", 1)
    seen = engine_tests.record_launches(monkeypatch)
    ours, _ = packed_tests._modules(Config(kind, (2, 2, 1), H=20, bidirectional=True))
    x = torch.randn(2, 3, 3, requires_grad=True)
    y = ours(x, lengths=torch.tensor([2, 2, 1]) if lengths else None)[0]
    y.sum().backward()
    with torch.no_grad():  # an inference call as well (the LSTM's and GRU's forward keeps nothing then)
        ours(x, lengths=torch.tensor([2, 2, 1]) if lengths else None)
    p = used[0]
    checked = run.launches(p, 3, 20, torch.float32, "ieee", lengths, 2)
    assert {k for k, _, _, _ in seen} == {x.kernel for x in checked}, "forward and backward"
    assert all(grid == (p.slices, p.tiles, 2) for _, grid, _, _ in seen)
    engine_tests.assert_launched_as_checked(seen, checked)
