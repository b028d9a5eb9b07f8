"""kernels.resources: the sm_90 fit rule, and the launches the LSTM dispatcher makes at the target points.

Compiling for sm_90 needs the NVIDIA backend of the Triton wheel (not the GPU); without it the
compile tests skip. Compiling is slow, so only the target points are compiled here; the CLI
(`python -m kernels.resources`) covers the whole grid.
"""
from __future__ import annotations

import pytest

from kernels.resources import COLUMNS, H100, blocks_per_sm, fits, format_table, measure_points, unavailable_reason

TARGETS = [(16, 768, "fp16"), (16, 768, "bf16"), (16, 1024, "bf16"), (16, 1024, "fp16")]
requires_sm90_compiler = pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))


@pytest.mark.parametrize("regs, smem, warps, expected", [
    (255, 0, 8, 1),  # 255 regs -> 8192 per warp: 8 warps fill the register file
    (128, 0, 8, 2),
    (64, 0, 4, 8),  # by registers 32 warps = 8 blocks
    (32, 0, 4, 16),  # threads: 2048 / 128
    (40, 100_000, 4, 2),  # shared memory: 2 x (100000 + 1024) <= 233472
    (40, 232_448, 4, 1),
    (40, 232_449, 4, 0),  # past the 227 KB a block may have
    (256, 0, 1, 0),  # past 255 registers a thread
])
def test_blocks_per_sm(regs, smem, warps, expected):
    assert blocks_per_sm(regs, smem, warps) == expected


def test_fit_rule_for_persistent_grids():
    assert fits(255, 98_304, 8, 132, persistent=True) == (True, "")
    ok, reason = fits(255, 98_304, 8, 133, persistent=True)
    assert not ok and "grid barrier" in reason
    assert fits(255, 98_304, 8, 10_000, persistent=False)[0], "a non-persistent grid may exceed the SMs"
    ok, reason = fits(80, 98_304, 8, 96, persistent=True, spill_bytes=8)
    assert not ok and "spills 8 B" in reason, "a persistent kernel that spills runs the step path instead"
    assert fits(80, 98_304, 4, 96, persistent=False, spill_bytes=8)[0]
    ok, reason = fits(100, 300_000, 4, 1, persistent=False)
    assert not ok and "shared memory" in reason


@pytest.fixture(scope="module")
def target_rows():
    return measure_points(TARGETS, families=["lstm"])


@requires_sm90_compiler
def test_json_rows_have_the_documented_fields(target_rows):
    assert target_rows, "no configurations measured"
    for row in target_rows:
        assert set(COLUMNS) <= row.keys()
        assert row["regs"] is not None, row["reason"]
    assert {(r["B"], r["H"], r["dtype"]) for r in target_rows} == set(TARGETS)
    assert "lstm.engine.forward" in format_table(target_rows)


@requires_sm90_compiler
def test_every_launch_the_dispatcher_makes_fits(target_rows):
    """What the dispatcher launches: every launch outside a group of alternatives, and the chosen
    candidate of each group (the engine's plans: the first whose forward and backward both fit)."""
    chosen = [r for r in target_rows if r["chosen"]]
    assert chosen
    for row in chosen:
        assert row["fits"] and row["spill_bytes"] == 0, f"{row['kernel']} {row['dtype']} B{row['B']} H{row['H']}: {row['reason']}"
        assert row["regs"] <= H100.regs_per_thread and row["smem_bytes"] <= H100.smem_per_block


@requires_sm90_compiler
@pytest.mark.parametrize("direction", ["forward", "backward", "forward.lengths", "backward.lengths", "forward.2dir",
                                       "backward.2dir", "forward.lengths.2dir", "backward.lengths.2dir"])
def test_engine_fits_without_spills_at_target(target_rows, direction):
    """At the target points the engine runs with its weights resident (the first candidate) on most SMs,
    with per-row lengths (the builds with HAS_LENGTHS, chosen apart) as without, and both directions of a
    bidirectional layer in one launch (TWO_DIRS: each on half the SMs; `programs` counts both)."""
    rows = [r for r in target_rows if r["kernel"] == f"lstm.engine.{direction}" and r["chosen"]]
    assert {(r["B"], r["H"], r["dtype"]) for r in rows} == set(TARGETS)
    for r in rows:
        assert r["fits"] and r["spill_bytes"] == 0, r
        assert r["constexprs"]["STREAM_K"] == 0, "the weights should stay on chip at the target"
        assert r["programs"] >= 96, "most of the 132 SMs should work"


def test_groups_stop_at_the_first_candidate_that_fits(monkeypatch):
    """kernels.resources compiles a group's candidates in order and stops at the first that fits entirely,
    as the engine's dispatcher does; launches outside a group always count."""
    from kernels import resources

    usage = {"a0": (80, 0), "b0": (80, 64), "a1": (80, 0), "b1": (80, 0), "a2": (80, 0), "b2": (80, 0)}
    monkeypatch.setattr(resources, "_compile", lambda fn_path, *rest: resources.Usage(
        regs=usage[fn_path][0], spill_bytes=usage[fn_path][1], smem_bytes=1024))

    def config(name, candidate, group="g"):
        return resources.LaunchConfig(kernel=name, family="toy", B=1, H=1, dtype="fp32", fn_path=name, signature=(),
                                      constexprs=(), num_warps=8, programs=4, persistent=True, group=group,
                                      candidate=candidate)

    configs = [config("a0", 0), config("b0", 0), config("a1", 1), config("b1", 1), config("a2", 2), config("b2", 2),
               config("a0", 0, group="")]
    rows = [r.row() for r in resources._measure_here(configs, resources.H100)]
    assert [(r["kernel"], r["fits"], r["chosen"]) for r in rows] == [
        ("a0", True, False), ("b0", False, False), ("a1", True, True), ("b1", True, True), ("a0", True, True)]
    assert resources.dispatcher_summary(rows) == {"g": "candidate 1"}


def test_a_registered_family_is_measured(monkeypatch):
    from kernels import resources

    seen = []
    monkeypatch.setitem(resources.FAMILIES, "toy", lambda B, H, dtype, sms: seen.append((B, H, dtype, sms)) or [])
    assert resources.launch_configs(4, 8, "fp32", families=["toy"]) == []
    assert seen == [(4, 8, "fp32", H100.sms)]


@requires_sm90_compiler
def test_step_kernels_fit_without_spills_at_target(target_rows):
    rows = [r for r in target_rows if r["kernel"].startswith("lstm.step.")]
    assert len(rows) == 2 * len(TARGETS)
    for r in rows:
        assert r["fits"] and r["spill_bytes"] == 0, r


def test_specialization_is_a_launchs():
    """Integers and pointers get the specialization Triton's launcher gives a launch's arguments (its own
    rule, where this Triton exposes it): what resources compiles is the kernel that runs."""
    import torch

    from kernels.resources import specialization

    try:
        from triton._C.libtriton import native_specialize_impl
        from triton.backends.nvidia.compiler import CUDABackend
    except ImportError:
        native_specialize_impl = None
    for value in (0, 1, 2, 16, 17, 32, 650, 768, 12288):
        sig, consts, attrs = specialization((("n", "i32"),), {"n": value})
        constexpr, divisible = sig["n"] == "constexpr", (0,) in attrs
        assert (constexpr, divisible) == (value == 1, value != 1 and value % 16 == 0)
        assert consts == ({"n": 1} if value == 1 else {})
        if native_specialize_impl is not None:
            ty, key = native_specialize_impl(CUDABackend, value, False, True, True)
            assert (ty == "constexpr", key == "D") == (constexpr, divisible), value
    sig, consts, attrs = specialization((("p", "*bf16"), ("n", "i32"), ("m", "i32")), {"n": 1, "m": 32}, ["n", "m"])
    assert sig == {"p": "*bf16", "n": "i32", "m": "i32"} and attrs == {(0,): [["tt.divisibility", 16]]} and not consts
    if native_specialize_impl is not None:  # a 16-byte aligned buffer, as the host's
        assert native_specialize_impl(CUDABackend, torch.empty(8), False, True, True)[1] == "D"


def test_engine_configs_name_every_integer_the_kernels_specialize_on():
    """The engine's resource configs carry the value of each integer argument the kernels do not exclude
    from specialization (do_not_specialize: the step counts, the poll bound)."""
    from kernels.persistent import run

    configs = run.resource_configs("lstm", 1, 768, "bf16", H100.sms)
    assert {c.kernel for c in configs} >= {"lstm.engine.forward", "lstm.engine.forward.inference", "lstm.engine.backward"}
    for c in configs:
        ints = dict(c.ints)
        assert {n for n, ty in c.signature if ty == "i32"} <= set(ints), c.kernel
        assert ints["B"] == 1 and ints["H"] == 768
        if "forward" in c.kernel:  # the LSTM's training forward keeps every step's c; the inference forward, one
            assert ints["c_stride"] == (0 if "inference" in c.kernel else 768), c.kernel
