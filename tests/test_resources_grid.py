"""The committed sm_90 resource grid (benchmarks/results/resources/): nothing the dispatcher launches
spills or fails to fit, and the file still describes the plans the code makes today.

Compiling the whole grid (3 cells x 3 dtypes x 6 hidden sizes x 6 batch sizes, every candidate plan)
takes the better part of an hour on two cores, so CI reads the committed output of
`python -m kernels.resources --json` (built with Triton 3.6, the GPU machine's) and checks that each
engine candidate in it is the plan `kernels.persistent.plan.gpu_plans` makes now: a change to the
plans without a new grid fails here. tests/test_resources.py compiles the target points live.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

GRID_FILE = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "resources" / "grid-triton3.6.jsonl"
CELLS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]
DTYPES = ["fp32", "fp16", "bf16"]
HIDDEN = [256, 512, 650, 768, 1024, 1500]
BATCH = [1, 8, 20, 64, 128, 256]


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return [json.loads(line) for line in GRID_FILE.read_text().splitlines() if line.strip()]


def _engine_rows(rows, cell, B, H, dtype):
    return [r for r in rows if r["kernel"].startswith(f"{cell}.engine.") and (r["B"], r["H"], r["dtype"]) == (B, H, dtype)]


def test_the_grid_covers_every_point(rows):
    points = {(r["B"], r["H"], r["dtype"]) for r in rows}
    assert points == {(b, h, d) for b in BATCH for h in HIDDEN for d in DTYPES}


def test_what_the_dispatcher_launches_fits_without_spills(rows):
    chosen = [r for r in rows if r["chosen"]]
    assert chosen
    for r in chosen:
        assert r["fits"] and r["spill_bytes"] == 0, r


@pytest.mark.parametrize("cell", CELLS)
def test_the_grid_describes_todays_plans(rows, cell):
    """Each engine candidate compiled in the file is the plan of the same index the code makes now
    (the file stops at the first candidate that fits, as the dispatcher does)."""
    from kernels.persistent import plan as P

    for dtype in DTYPES:
        for H in HIDDEN:
            for B in BATCH:
                plans = P.gpu_plans(P.CELLS[cell], B, H, 4 if dtype == "fp32" else 2, 132, P.DEFAULT_VARIANT)
                for r in _engine_rows(rows, cell, B, H, dtype):
                    p = plans[r["candidate"]]
                    expected = {**p.constexprs(), "BLOCK_B": p.block_b}
                    got = {k: r["constexprs"][k] for k in expected}
                    assert got == expected and r["programs"] == p.programs and r["num_warps"] == p.num_warps, (
                        f"{cell} B{B} H{H} {dtype}: the grid file is stale; rerun `python -m kernels.resources --json` "
                        f"over the grid (see benchmarks/results/resources/README.md)")


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("B, H, dtype", [(8, 768, "bf16"), (8, 1024, "bf16"), (8, 768, "fp16"), (64, 512, "bf16"),
                                         (20, 650, "bf16"), (20, 650, "fp32"), (20, 1500, "bf16"), (20, 1500, "fp32")])
def test_the_engine_runs_the_shapes_users_train(rows, cell, B, H, dtype):
    """The sweep's shapes and the PTB recipes' (H 650 and 1500, B 20) get an engine plan."""
    engine = _engine_rows(rows, cell, B, H, dtype)
    assert any(r["chosen"] for r in engine), [(r["candidate"], r["kernel"], r["reason"]) for r in engine]
