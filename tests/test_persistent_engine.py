"""The persistent engine (kernels/persistent) serving the LSTM, GRU and Elman layers, against their references.

Each check is a kernel file's own parity check (output, final state and every gradient against a
float64 reference, kernel buffers poisoned with NaN), run with the engine on (the default) and the
record of `kernels.paths` asserting that the engine, not the per-step kernels, served the layer.

In the CPU interpreter the engine runs as one program along H (a barrier between programs that
run one after another would never open), which still runs the barrier code of every variant.
The grids a GPU launches (many programs of 1-16 hidden units, several batch tiles, K chunks,
the programs' shares of dh in the backward) run too, one time step per launch: a launch never
waits after its last step. On a GPU (tests marked gpu) everything runs as in production.
"""
from __future__ import annotations

import logging

import pytest
import torch

from kernels import paths
from tests import test_gru_kernel as gru_tests
from tests import test_lstm_kernel as lstm_tests
from tests import test_rnn_kernel as rnn_tests
from tests.conftest import requires_cuda

DEVICE = lstm_tests.DEVICE
CELLS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]
#: In 16 bits a relu pre-activation within rounding of 0 may fall on either side of the kink, which
#: changes gradients by O(1): a max-error criterion fails a few % of draws. Here relu runs in fp32;
#: in 16 bits it is judged (through the engine, the default) by tests/test_gru_rnn_module.py, whose
#: reference takes our side of the kink where the pre-activation is within rounding of 0.
RELU_16_BIT = "relu in 16 bits: judged by test_gru_rnn_module's kink-aware criterion"


def check(cell: str, B: int, T: int, I: int, H: int, dtype: torch.dtype, bias: bool = True, device: str = DEVICE):
    """The kernel test file's parity check for `cell` at this shape."""
    if cell == "lstm":
        lstm_tests.check_layer_parity(lstm_tests.Case(B=B, T=T, I=I, H=H, bias=bias), dtype, device)
    elif cell == "gru":
        gru_tests.check_layer_parity(gru_tests.Case(B=B, T=T, I=I, H=H, bias=bias), dtype, device)
    else:
        act = cell.split("_")[1]
        rnn_tests.check_layer_parity(rnn_tests.Case(B=B, T=T, I=I, H=H, nonlinearity=act, bias=bias), dtype, device)


@pytest.fixture
def engine(monkeypatch):
    """The engine on, every kernel-written buffer NaN first; returns the engine records of the check."""
    from kernels.lstm import function
    from kernels.persistent import run
    from kernels.rnn import common

    def reraise(cell, B, H, dtype, device, error):  # an engine error must fail the test, not fall back
        raise error

    reraise.original = run.mark_failed  # type: ignore[attr-defined]  (the fallback tests put it back)
    monkeypatch.setattr(run, "_chosen", {})
    monkeypatch.setattr(run, "mark_failed", reraise)
    monkeypatch.setenv("LIGHTNING_RNN_PERSISTENT", "1")
    monkeypatch.delenv("LIGHTNING_RNN_PERSISTENT_VARIANT", raising=False)
    monkeypatch.setattr(function, "POISON_BUFFERS", True)
    monkeypatch.setattr(common, "POISON_BUFFERS", True)
    paths.reset()
    return lambda: [r for r in paths.snapshot() if r["path"] == "persistent"]


def _family(cell: str) -> str:
    return cell.split("_")[0]


SHAPES = [  # (B, T, I, H): odd sizes, pairwise
    (1, 1, 1, 1), (1, 33, 3, 5), (3, 7, 17, 17), (17, 7, 5, 100), (3, 33, 1, 100), (17, 1, 100, 17), (40, 5, 3, 33),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}-T{}-I{}-H{}".format(*s))
@pytest.mark.parametrize("cell", CELLS)
def test_engine_matches_reference(cell, shape, dtype, engine):
    B, T, I, H = shape
    if cell == "rnn_relu":  # unbounded relu units overflow fp16 over 33 steps (torch.nn's too)
        T = min(T, 9)
        if dtype == torch.float16:
            pytest.skip(RELU_16_BIT)
    check(cell, B, T, I, H, dtype, bias=(B + H) % 2 == 0)
    assert {r["cell"] for r in engine()} == {_family(cell)}, "the engine did not serve the layer"


def _variant_cases():
    """Every variant with every cell, dtypes and shapes rotating (pairwise, not the full product)."""
    from kernels.persistent.plan import VARIANTS

    shapes = [(3, 7, 5, 17), (17, 5, 3, 100), (1, 9, 4, 33), (20, 4, 7, 65)]
    cases = []
    for i, variant in enumerate(VARIANTS):
        for j, cell in enumerate(CELLS):
            dtype = (torch.float32, torch.float16)[(i + j) % 2] if cell != "rnn_relu" else torch.float32
            cases.append(pytest.param(variant, cell, shapes[(i + j) % len(shapes)], dtype,
                                      id=f"{variant}-{cell}-{'fp32' if dtype == torch.float32 else 'fp16'}"))
    return cases


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype, stream_k", [(torch.float32, 32), (torch.float16, 64)], ids=["fp32-K32", "fp16-K64"])
def test_streamed_weights_match_reference(cell, dtype, stream_k, engine, monkeypatch):
    """Plans whose weights stream from L1/L2 in K blocks (where they do not fit in registers): 64 for
    16-bit weights, 32 for fp32 (the GPU plans' blocks)."""
    import functools

    from kernels.persistent import plan as P

    if cell == "rnn_relu" and dtype == torch.float16:
        pytest.skip(RELU_16_BIT)
    monkeypatch.setattr(P, "interpreter_plan", functools.partial(P.interpreter_plan, stream_k=stream_k))
    check(cell, 5, 4, 3, 70, dtype)  # K = 70: K blocks of 64 or 32, the last mostly padding
    assert engine() and all(f"weights=streamed K{stream_k}" in r["detail"] for r in engine())


@pytest.mark.parametrize("variant, cell, shape, dtype", _variant_cases())
def test_every_variant_matches_reference(variant, cell, shape, dtype, engine):
    from kernels.persistent import use_variant

    with use_variant(variant):
        check(cell, *shape, dtype)
    records = engine()
    assert records and all(f"variant={variant} " in r["detail"] for r in records), records


def _gpu_grid(monkeypatch, sms: int, streamed: bool = False) -> list:
    """Make the layers launch the engine with the plan a GPU with `sms` SMs tries first (or its first
    plan that streams the weights), one step per launch; returns the plans used."""
    from kernels.persistent import plan as P
    from kernels.persistent import run

    used = []

    def gpu_plan(cell, B, H, variant):
        p = next(p for p in P.gpu_plans(cell, B, H, 2, sms, variant) if bool(p.stream_k) == streamed)
        used.append(p)
        return p

    monkeypatch.setattr(P, "interpreter_plan", gpu_plan)
    monkeypatch.setattr(run, "STEPS_PER_LAUNCH", 1)
    return used


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU interpreter variant")
@pytest.mark.parametrize("variant", ["default", "swap", "split", "streamed"])
@pytest.mark.parametrize("cell, shape, sms, grid", [
    # 18 slices of 4 units (two blocks of shares to sum); B 17 in two batch tiles of 16; K = 64+16.
    ("lstm", (17, 3, 5, 70), 132, "18x2"),
    # 8 slices of 16 units, the last mostly empty; K = 64+32+16+16.
    ("gru", (3, 3, 3, 115), 8, "8x1"),
    # Elman: 16 units a slice at least (tl.dot needs 16 rows); 3 batch tiles.
    ("rnn_tanh", (40, 3, 4, 33), 132, "3x3"),
    ("rnn_relu", (5, 4, 6, 50), 4, "4x1"),
])
def test_gpu_grid_one_step_per_launch(cell, shape, sms, grid, variant, engine, monkeypatch):
    from kernels.persistent import use_variant

    plans = _gpu_grid(monkeypatch, sms, streamed=variant == "streamed")
    with use_variant("default" if variant == "streamed" else variant):
        check(cell, *shape, torch.float32)
    p = plans[0]
    assert bool(p.stream_k) == (variant == "streamed")
    if variant == "default":
        assert f"{p.slices}x{p.tiles}" == grid
    assert p.programs <= sms
    assert engine(), "the engine did not serve the layer"


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("B, H", [(1, 256), (8, 512), (20, 650), (16, 768), (128, 768), (256, 1024), (20, 1500)])
def test_gpu_plans_fit_the_grid_and_work_the_batch_in_parallel(cell, B, H):
    """Every candidate: grid within the SMs, batch rows in parallel (no serial loop: one tile each),
    product rows >= 16 (tl.dot), K covered by at most four power-of-two chunks."""
    from kernels.persistent import plan as P

    for dtype_bytes in (2, 4):
        for p in P.gpu_plans(P.CELLS[cell], B, H, dtype_bytes, 132, "default"):
            assert p.programs <= 132 and p.rows >= 16
            assert p.tiles * p.block_b >= B and p.slices * p.block_j >= H
            assert p.k_total >= H
            if p.stream_k:
                assert p.k_total % p.stream_k == 0
            else:
                assert all(k & (k - 1) == 0 for k in p.k_chunks if k)
                assert p.block_b * max(p.k_chunks) <= P.H_CHUNK_ELEMENTS


@pytest.mark.parametrize("H, chunk_max, chunks", [(1, 512, (16, 0, 0, 0)), (33, 512, (32, 16, 0, 0)),
                                                  (115, 512, (64, 32, 16, 16)), (768, 512, (512, 256, 0, 0)),
                                                  (1500, 512, (512, 512, 256, 256)), (768, 128, None)])
def test_k_chunks_are_powers_of_two_covering_h(H, chunk_max, chunks):
    from kernels.persistent.plan import k_chunks

    assert k_chunks(H, chunk_max) == chunks


@pytest.mark.parametrize("cell, gates", [("lstm", 4), ("gru", 3), ("rnn_tanh", 1)])
def test_interleaved_rows(cell, gates):
    """Row (slice, unit, gate) of the reordered copy is W_hh's row gate*H + slice*BLOCK_J + unit;
    the GRU's fourth gate, units past H and K past H are zero."""
    from kernels.persistent import plan as P

    H = 10
    w = torch.randn(gates * H, H)
    p = P.gpu_plans(P.CELLS[cell], 1, H, 4, 132, "default")[0]
    rows_per_unit = P.ROWS_PER_UNIT[p.cell]
    rows = P.interleave(w, p).view(p.slices, p.block_j, rows_per_unit, p.k_total)
    for s in range(p.slices):
        for unit in range(p.block_j):
            for gate in range(rows_per_unit):
                j = s * p.block_j + unit
                expected = w[gate * H + j] if j < H and gate < gates else torch.zeros(H)
                assert torch.equal(rows[s, unit, gate, :H], expected)
    assert not rows[..., H:].any(), "padding must be zero"


# --- never a crash ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_a_failing_launch_falls_back_to_the_step_kernels(cell, engine, monkeypatch, caplog):
    """Whatever a launch reports (here OutOfResources, as the H1500 fp32 layer did on the H200), the
    layer runs the per-step kernels, logs the reason once, and does not retry the engine for that shape."""
    from triton.runtime.errors import OutOfResources

    from kernels.persistent import run

    calls = []

    def refuse(*args, **kwargs):
        calls.append(1)
        raise OutOfResources(425984, 232448, "shared memory")

    monkeypatch.setattr(run, "forward_launch", refuse)
    monkeypatch.setattr(run, "mark_failed", run.mark_failed.original)
    monkeypatch.setattr(run, "_logged", set())
    with caplog.at_level(logging.WARNING):
        check(cell, 3, 4, 5, 7, torch.float32)
        check(cell, 3, 4, 5, 7, torch.float32)
    assert len(calls) == 1, "the engine was tried again after it failed for this shape"
    assert not engine()
    assert any(r["cell"] == _family(cell) and r["path"] == "step" for r in paths.snapshot())
    messages = [r.getMessage() for r in caplog.records if "OutOfResources" in r.getMessage()]
    assert len(messages) == 1 and "per-step kernels" in messages[0], messages


def test_a_plan_that_does_not_compile_or_fit_is_skipped_for_the_next(monkeypatch):
    """On a GPU `choose` compiles each candidate; a compiler error or a spill moves to the next, and
    with none left the reason names each candidate (no exception)."""
    from triton.runtime.errors import OutOfResources

    from kernels.persistent import plan as P
    from kernels.persistent import run

    class Props:
        multi_processor_count = 132

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: Props())
    monkeypatch.setattr(run, "_cooperative_option", lambda: {"launch_cooperative_grid": True})
    tried = []

    def compile_fits(p, B, H, dtype, device, sms, precision, lengths=False, directions=1):
        tried.append(p)
        if len(tried) == 1:
            raise OutOfResources(425984, 232448, "shared memory")
        if len(tried) == 2:
            return False, "forward: spills 8 B of registers to local memory at every step"
        return True, ""

    monkeypatch.setattr(run, "_compile_fits", compile_fits)
    monkeypatch.setattr(run, "_chosen", {})
    run._gpu_choice.cache_clear()
    try:
        p, reason = run.choose(P.LSTM, 20, 1500, torch.float32, torch.device("cuda"), interpreted=False)
        candidates = P.gpu_plans(P.LSTM, 20, 1500, 4, 132, "default")
        if len(candidates) >= 3:
            assert p == candidates[2] and reason == ""
        else:
            assert p is None and "OutOfResources" in reason
        monkeypatch.setattr(run, "_compile_fits", lambda *a: (False, "does not fit"))
        monkeypatch.setattr(run, "_chosen", {})
        run._gpu_choice.cache_clear()
        p, reason = run.choose(P.GRU, 20, 1500, torch.float32, torch.device("cuda"), interpreted=False)
        assert p is None and reason
    finally:
        run._gpu_choice.cache_clear()


# --- no hang, ever ---------------------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter runs programs one after another")
@pytest.mark.parametrize("barrier", [0, 1, 2])
def test_a_wait_that_never_opens_gives_up_and_sets_the_error_word(barrier):
    """Two programs, run one after another: the first one's first wait can never open. It gives up after
    its polls, sets the error word to its step + 1 and waits no more; the launch ends."""
    from kernels.persistent.engine import barrier_kernel

    sync, error = torch.zeros(32, dtype=torch.int32), torch.zeros(1, dtype=torch.int32)
    barrier_kernel[(2,)](sync, error, 8, 3, BARRIER=barrier, P_POW2=2)
    assert error.item() == 1, "gave up at step 0"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter runs programs one after another")
@pytest.mark.parametrize("barrier", [0, 1, 2])
def test_a_program_leaves_its_wait_once_another_gave_up(barrier):
    """With the error word already set, a wait that cannot open ends after ERROR_CHECK_POLLS polls,
    not after its own bound (2^30 polls: far beyond this test's time in the interpreter)."""
    from kernels.persistent.engine import barrier_kernel

    sync, error = torch.zeros(32, dtype=torch.int32), torch.full((1,), 5, dtype=torch.int32)
    barrier_kernel[(2,)](sync, error, 2**30, 2, BARRIER=barrier, P_POW2=2)
    assert error.item() == 5, "the first program to give up writes the error word"


def _grid_that_cannot_be_resident(monkeypatch) -> list:
    """The engine at a GPU plan of several programs along H, the whole sequence in one launch: in the
    interpreter (programs one after another) the first program's first wait never opens. Polls few,
    the real fallback on; returns the error words the forward launches returned."""
    from kernels.persistent import plan as P
    from kernels.persistent import run

    monkeypatch.setattr(P, "interpreter_plan", lambda cell, B, H, variant: next(
        p for p in P.gpu_plans(cell, B, H, 4, 132, variant) if p.slices > 1))
    monkeypatch.setattr(run, "MAX_POLLS", 8)
    monkeypatch.setattr(run, "mark_failed", run.mark_failed.original)
    monkeypatch.setattr(run, "_logged", set())
    monkeypatch.setattr(run, "_unchecked", {})
    errors = []
    original = run.forward_launch
    monkeypatch.setattr(run, "forward_launch", lambda *a: (errors.append(original(*a)), errors[-1])[1])
    return errors


@pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter runs programs one after another")
@pytest.mark.parametrize("cell", CELLS)
def test_a_launch_that_gives_up_falls_back_before_it_returns(cell, engine, monkeypatch, caplog):
    """Where the error word costs nothing to read (here: the interpreter has finished the launch) the
    layer reads it before it returns: the per-step kernels run instead, the results are right (the
    parity check), the reason is logged once and nothing is raised."""
    errors = _grid_that_cannot_be_resident(monkeypatch)
    with caplog.at_level(logging.WARNING):
        check(cell, 3, 3, 4, 33, torch.float32)
    assert errors and all(e.item() == 1 for e in errors), "the first program gave up at its first wait"
    assert not engine(), "no result of the failed launch may be returned"
    assert any(r["cell"] == _family(cell) and r["path"] == "step" for r in paths.snapshot())
    messages = [r.getMessage() for r in caplog.records if "gave up at a grid barrier" in r.getMessage()]
    assert len(messages) == 1 and "per-step kernels" in messages[0], messages


@pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter runs programs one after another")
def test_a_failure_found_after_its_results_were_returned_raises_then_falls_back(engine, monkeypatch):
    """On a GPU the error word is read on the layer's next call (no synchronization): the failed launch's
    results were returned by then, so that call raises a RuntimeError saying so and how to turn the
    engine off; the shape runs the per-step kernels from then on."""
    from kernels.gru.function import gru_layer
    from kernels.persistent import run

    errors = _grid_that_cannot_be_resident(monkeypatch)
    monkeypatch.setattr(run, "_check_at_once", lambda device: False)  # as on a GPU without ENGINE_CHECK
    inputs = gru_tests.make_inputs(gru_tests.Case(B=3, T=3, I=4, H=33), DEVICE)
    with torch.no_grad():
        gru_layer(**inputs)  # returns: the error word is not read yet
    assert errors[0].item() == 1 and engine()
    with pytest.raises(RuntimeError, match="gave up at a grid barrier") as raised:
        gru_layer(**inputs)
    for advice in ("invalid", "LIGHTNING_RNN_PERSISTENT=0", "LIGHTNING_RNN_ENGINE_CHECK=1"):
        assert advice in str(raised.value)
    paths.reset()
    check("gru", 3, 3, 4, 33, torch.float32)
    assert not engine() and len(errors) == 1, "the engine was tried again after it failed for this shape"


def test_engine_check_reads_every_launch_before_it_returns(monkeypatch):
    """LIGHTNING_RNN_ENGINE_CHECK=1 reads the error word right after each forward and backward on a GPU too
    (a synchronization); the CPU interpreter always does (free there)."""
    from kernels.persistent import run

    monkeypatch.delenv("LIGHTNING_RNN_ENGINE_CHECK", raising=False)
    assert not run._check_at_once(torch.device("cuda", 0)) and run._check_at_once(torch.device("cpu"))
    monkeypatch.setenv("LIGHTNING_RNN_ENGINE_CHECK", "1")
    assert run._check_at_once(torch.device("cuda", 0))


def _fake_gpu(monkeypatch, cooperative: bool = True) -> list:
    """choose() on a pretend 132-SM GPU, compiling nothing: returns the (plan, precision) it checked."""
    from kernels.persistent import run

    class Props:
        multi_processor_count = 132

    checked = []
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: Props())
    monkeypatch.setattr(run, "_cooperative_option", lambda: {"launch_cooperative_grid": True} if cooperative else {})
    monkeypatch.setattr(run, "_compile_fits", lambda p, B, H, dtype, device, sms, precision, lengths=False,
                        directions=1: (checked.append((p, precision)), (True, ""))[1])
    monkeypatch.setattr(run, "_chosen", {})
    run._gpu_choice.cache_clear()
    return checked


def test_no_engine_without_a_cooperative_launch(monkeypatch):
    """Where this Triton cannot launch a cooperative grid (before 3.2) the grid is not sure to be resident:
    the engine is not used, and the reason says why."""
    from kernels.persistent import plan as P
    from kernels.persistent import run

    checked = _fake_gpu(monkeypatch, cooperative=False)
    try:
        p, reason = run.choose(P.LSTM, 16, 768, torch.bfloat16, torch.device("cuda"), interpreted=False)
        assert p is None and "cooperative" in reason and not checked
        checked = _fake_gpu(monkeypatch, cooperative=True)
        p, reason = run.choose(P.LSTM, 16, 768, torch.bfloat16, torch.device("cuda"), interpreted=False)
        assert p is not None and reason == "" and checked
    finally:
        run._gpu_choice.cache_clear()


# --- what is checked is what runs ------------------------------------------------------------------------


def test_allow_tf32_is_part_of_the_plan_key(monkeypatch):
    """allow_tf32 changes the fp32 kernels (tl.dot's input precision): each setting gets its own check."""
    from kernels.persistent import plan as P
    from kernels.persistent import run

    checked = _fake_gpu(monkeypatch)
    previous = torch.backends.cuda.matmul.allow_tf32
    try:
        for allow in (False, True, False):
            torch.backends.cuda.matmul.allow_tf32 = allow
            assert run.choose(P.LSTM, 16, 768, torch.float32, torch.device("cuda"), interpreted=False)[0]
        assert [precision for _, precision in checked] == ["ieee", "tf32"], "each precision checked once"
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
        run._gpu_choice.cache_clear()


@pytest.mark.parametrize("cell", CELLS)
def test_compile_fits_checks_every_kernel_the_shape_launches(cell, monkeypatch):
    """The training forward, the inference forward (LSTM, GRU: the Elman forward keeps nothing either way)
    and the backward, each with the arguments a launch passes; one that does not fit refuses the plan."""
    from types import SimpleNamespace

    from kernels.persistent import engine as E
    from kernels.persistent import plan as P
    from kernels.persistent import run

    compiled, inference_too_large = [], []

    def warmup(kernel):
        def compile_(*args, grid, **kwargs):
            compiled.append((kernel, args, kwargs))
            regs = 300 if kernel == "forward" and not kwargs["SAVE"] and inference_too_large else 100
            return SimpleNamespace(n_regs=regs, n_spills=0, metadata=SimpleNamespace(shared=1024))
        return compile_

    monkeypatch.setattr(E.persistent_forward_kernel, "warmup", warmup("forward"), raising=False)
    monkeypatch.setattr(E.persistent_backward_kernel, "warmup", warmup("backward"), raising=False)
    B, H = 16, 768
    p = P.gpu_plans(P.CELLS[cell], B, H, 2, 132, "default")[0]
    ok, reason = run._compile_fits(p, B, H, torch.bfloat16, torch.device("cpu"), 132, "ieee")
    assert ok, reason
    forwards = [(kw["SAVE"], args[list(run.launches(p, B, H, torch.bfloat16, "ieee")[0].args).index("c_stride")])
                for k, args, kw in compiled if k == "forward"]
    lstm_or_gru = cell in ("lstm", "gru")
    assert forwards == ([(True, B * H if cell == "lstm" else 0), (False, 0)] if lstm_or_gru else [(False, 0)])
    assert [k for k, _, _ in compiled].count("backward") == 1
    if lstm_or_gru:
        inference_too_large.append(True)
        ok, reason = run._compile_fits(p, B, H, torch.bfloat16, torch.device("cpu"), 132, "ieee")
        assert not ok and reason.startswith("forward.inference: 300 registers"), reason


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_checked_launches_are_the_launches_that_run(cell, dtype, engine, monkeypatch):
    """`run.launches` (what choose compiles, what kernels.resources measures) against every real launch of
    a training and an inference call: the same kernels, pointer dtypes, integers (the step counts aside:
    no build depends on them) and constexprs."""
    from kernels.persistent import run

    if cell == "rnn_relu" and dtype == torch.float16:
        pytest.skip(RELU_16_BIT)
    plans = _gpu_grid(monkeypatch, 132)
    seen = record_launches(monkeypatch)
    check(cell, 3, 2, 4, 20, dtype)
    layer = {"lstm": lstm_tests, "gru": gru_tests}.get(cell, rnn_tests)
    case = layer.Case(B=3, T=2, I=4, H=20, **({"nonlinearity": cell.split("_")[1]} if "rnn" in cell else {}))
    with torch.no_grad():  # an inference call as well
        _layer_fn(cell)(*(v.to(dtype) if v is not None else None for v in layer.make_inputs(case, DEVICE).values()))
    checked = run.launches(plans[0], 3, 20, dtype, "ieee")
    assert {launch.name for launch in checked} == (
        {"forward", "forward.inference", "backward"} if cell in ("lstm", "gru") else {"forward", "backward"})
    assert seen and all(grid == (plans[0].slices, plans[0].tiles, 1) for _, grid, _, _ in seen)
    assert_launched_as_checked(seen, checked)


def record_launches(monkeypatch) -> list:
    """Record every launch of the engine's kernels from now on: (kernel, grid, args, kwargs)."""
    from kernels.persistent import run

    seen = []

    class Recorder:
        def __init__(self, kernel):
            self.kernel, self.fn = kernel, kernel.fn

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                seen.append((self, grid, args, kwargs))
                return self.kernel[grid](*args, **kwargs)
            return launch

    monkeypatch.setattr(run, "persistent_forward_kernel", Recorder(run.persistent_forward_kernel))
    monkeypatch.setattr(run, "persistent_backward_kernel", Recorder(run.persistent_backward_kernel))
    return seen


def assert_launched_as_checked(seen: list, checked: list) -> None:
    """Each recorded launch is one of `checked` (`run.launches`, made while recording): the same kernel,
    pointer dtypes, integers (the step counts aside: no build depends on them) and constexprs."""
    for kernel, _, args, kwargs in seen:
        launch = next(x for x in checked if x.kernel is kernel and x.constexprs.get("SAVE") == kwargs.get("SAVE"))
        assert {k: kwargs[k] for k in launch.constexprs} == launch.constexprs
        for (name, want), got in zip(launch.args.items(), args, strict=True):
            if isinstance(want, torch.dtype):
                assert got.dtype == want, f"{launch.name} {name}: {got.dtype} launched, {want} checked"
            elif name not in ("n_steps", "t_last", "t0", "dir_steps"):
                assert got == want, f"{launch.name} {name}: {got} launched, {want} checked"


def _layer_fn(cell: str):
    import functools

    from kernels.gru.function import gru_layer
    from kernels.lstm.op import lstm_layer
    from kernels.rnn.function import rnn_layer

    if cell in ("lstm", "gru"):
        return {"lstm": lstm_layer, "gru": gru_layer}[cell]
    return functools.partial(rnn_layer, nonlinearity=cell.split("_")[1])


# --- every launch on its input's device ------------------------------------------------------------------


@pytest.mark.parametrize("persistent", [True, False], ids=["engine", "step"])
@pytest.mark.parametrize("cell", CELLS)
def test_every_launch_runs_under_its_input_devices_guard(cell, persistent, engine, monkeypatch):
    """Triton launches on the current device: every kernel launch of a layer's forward and backward, on the
    engine and on the per-step path, happens inside the guard of the input's device (a mock guard here)."""
    import contextlib
    import importlib

    from kernels import device as device_module
    from kernels.persistent import run

    monkeypatch.setenv("LIGHTNING_RNN_PERSISTENT", "1" if persistent else "0")
    current, launched = [], []

    @contextlib.contextmanager
    def guard(device):
        current.append(device)
        try:
            yield
        finally:
            current.pop()

    class Recorder:
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                launched.append(list(current))
                return self.kernel[grid](*args, **kwargs)
            return launch

    monkeypatch.setattr(device_module, "device_guard", guard)
    module = importlib.import_module(f"kernels.{_family(cell)}.function")
    monkeypatch.setattr(module, "device_guard", guard, raising=False)
    for name in dir(module):
        if name.endswith("_step_kernel"):
            monkeypatch.setattr(module, name, Recorder(getattr(module, name)))
    for name in ("persistent_forward_kernel", "persistent_backward_kernel"):
        monkeypatch.setattr(run, name, Recorder(getattr(run, name)))
    check(cell, 3, 3, 4, 7, torch.float32)
    assert bool(engine()) == persistent
    assert launched and all(c == [torch.device(DEVICE)] for c in launched), launched


@pytest.mark.parametrize("cell", CELLS)
def test_inference_keeps_no_history(cell, engine, monkeypatch):
    """Without a gradient to compute the engine allocates h (the output) and, for the LSTM, the last c:
    no gates, no c history; the outputs equal the training forward's."""
    from kernels.persistent import run

    allocations = []
    original = run._new
    # (the engine's buffers are stacked over the directions: a leading axis of 1 here)
    monkeypatch.setattr(run, "_new", lambda poison, shape, dtype, device: (allocations.append(shape[1:]),
                                                                            original(poison, shape, dtype, device))[1])
    T, B, I, H = 4, 3, 5, 6
    layer = {"lstm": lstm_tests, "gru": gru_tests}.get(cell, rnn_tests)
    case = layer.Case(B=B, T=T, I=I, H=H, **({"nonlinearity": cell.split("_")[1]} if "rnn" in cell else {}))
    inputs = {k: v.requires_grad_() if v is not None else None for k, v in layer.make_inputs(case, DEVICE).items()}
    fn = {"lstm": "kernels.lstm.op:lstm_layer", "gru": "kernels.gru.function:gru_layer"}.get(
        cell, "kernels.rnn.function:rnn_layer")
    module, _, name = fn.partition(":")
    import functools
    import importlib

    layer_fn = getattr(importlib.import_module(module), name)
    if "rnn" in cell:
        layer_fn = functools.partial(layer_fn, nonlinearity=cell.split("_")[1])
    trained = [t.detach() for t in layer_fn(*inputs.values())]
    allocations.clear()
    with torch.no_grad():
        out = layer_fn(*inputs.values())
    assert (T, B, 4 * H) not in allocations and (T + 1, B, H) in allocations
    if cell == "lstm":
        assert sorted(allocations) == sorted([(T + 1, B, H), (1, B, H)]), "h and the last c only"
    for a, b in zip(out, trained):
        assert torch.equal(a, b), "inference and training forward run the same kernels"


@pytest.mark.parametrize("variant", ["default", "h16"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_operands_in_the_compute_dtype(dtype, variant, engine, monkeypatch):
    """The input projection and W_hh reach the engine in the compute dtype (tensor cores); h travels
    in fp32, or in the compute dtype with `h16`; c and the saved gates are fp32."""
    from kernels.persistent import run, use_variant

    launches = []
    original = run.forward_launch
    monkeypatch.setattr(run, "forward_launch", lambda *a: (launches.append(a), original(*a))[1])
    with use_variant(variant):
        check("lstm", 3, 4, 5, 7, dtype)
    p, xg, hs, state0, c_out, _, saved, w_rows = launches[0][:8]
    assert xg.dtype == w_rows.dtype == dtype
    assert hs.dtype == (dtype if variant == "h16" else torch.float32)
    assert state0.dtype == c_out.dtype == saved.dtype == torch.float32


def test_engine_off_runs_the_step_kernels(monkeypatch, engine):
    monkeypatch.setenv("LIGHTNING_RNN_PERSISTENT", "0")
    check("gru", 3, 4, 5, 7, torch.float32)
    assert not engine()
    assert any(r["path"] == "step" for r in paths.snapshot())


def test_unknown_variant_is_refused(monkeypatch):
    from kernels.persistent import plan as P

    monkeypatch.setenv("LIGHTNING_RNN_PERSISTENT_VARIANT", "fastest")
    with pytest.raises(ValueError, match="LIGHTNING_RNN_PERSISTENT_VARIANT must be one of"):
        P.variant_name()


# --- on a GPU --------------------------------------------------------------------------------------------


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("shape", [(16, 64, 32, 768), (3, 7, 17, 17), (128, 9, 8, 256), (20, 9, 8, 650)],
                         ids=lambda s: "B{}-T{}-I{}-H{}".format(*s))
@pytest.mark.parametrize("cell", CELLS)
def test_engine_matches_reference_gpu(cell, shape, dtype, engine):
    if cell == "rnn_relu" and dtype != torch.float32:
        pytest.skip(RELU_16_BIT)
    check(cell, *shape, dtype, device="cuda")
    assert engine(), "the engine did not serve the layer"


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("variant", ["barrier-load", "barrier-flags", "split", "h16", "swap", "fast", "fast-swap"])
@pytest.mark.parametrize("cell", CELLS)
def test_every_variant_matches_reference_gpu(cell, variant, engine):
    from kernels.persistent import use_variant

    with use_variant(variant):  # relu in fp32: see RELU_16_BIT
        check(cell, 16, 33, 8, 768, torch.float32 if cell == "rnn_relu" else torch.bfloat16, device="cuda")
    assert engine()


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("cell, H, dtype", [("lstm", 768, torch.bfloat16), ("lstm", 1024, torch.bfloat16),
                                            ("gru", 768, torch.bfloat16), ("rnn_tanh", 768, torch.bfloat16),
                                            ("lstm", 768, torch.float32)])
def test_engine_chosen_at_target_gpu(cell, H, dtype):
    from kernels.persistent import plan as P
    from kernels.persistent import run

    p, reason = run.choose(P.CELLS[cell], 16, H, dtype, torch.device("cuda"), interpreted=False)
    if torch.cuda.get_device_properties(0).multi_processor_count >= 128:
        assert p is not None, reason


@requires_cuda
@pytest.mark.gpu
def test_offsets_past_2_31_gpu():
    """T*B*4H > 2^31 elements: the kernels step their pointers, so nothing overflows 32 bits."""
    from kernels.persistent import plan as P
    from kernels.persistent import run

    T, B, H = 8193, 64, 1024
    assert T * B * 4 * H > 2**31
    dev = torch.device("cuda")
    p, reason = run.choose(P.LSTM, B, H, torch.bfloat16, dev, interpreted=False)
    if p is None:
        pytest.skip(reason)
    xg = torch.randn(T, B, 4 * H, device=dev, dtype=torch.bfloat16)
    w = (torch.randn(4 * H, H, device=dev) / H**0.5).to(torch.bfloat16)
    h0, c0 = torch.zeros(B, H, device=dev), torch.zeros(B, H, device=dev)
    hs, cs, _ = run.forward(p, xg, h0, c0, w, None, True, interpreted=False)
    # The last two steps again, from the states the long run reached, in a launch that starts there.
    hs2, cs2, _ = run.forward(p, xg[T - 2:], hs[T - 2], cs[T - 2], w, None, True, interpreted=False)
    torch.testing.assert_close(hs2[1:].float(), hs[T - 1:].float(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cs2[1:], cs[T - 1:], atol=1e-5, rtol=1e-5)


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("cell", CELLS)
def test_a_launch_that_gives_up_is_never_returned_gpu(cell, engine, monkeypatch):
    """One poll per wait: programs give up wherever a partner is late. With LIGHTNING_RNN_ENGINE_CHECK=1
    the error word is read before anything is returned: each layer call is right, from the engine or
    from the per-step kernels it fell back to, and nothing is raised."""
    from kernels.persistent import run

    monkeypatch.setattr(run, "MAX_POLLS", 1)
    monkeypatch.setattr(run, "mark_failed", run.mark_failed.original)
    monkeypatch.setattr(run, "_unchecked", {})
    monkeypatch.setenv("LIGHTNING_RNN_ENGINE_CHECK", "1")
    check(cell, 16, 33, 8, 768, torch.float32)
