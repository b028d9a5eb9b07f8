"""Which kernel path ran: kernels.paths (the record the dispatchers write) and the benchmark rows'
`impl` / `paths` fields and `path_env` metadata (lightning_rnn.bench)."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from kernels import paths
from lightning_rnn.bench import cli as bench
from lightning_rnn.bench.runner import describe_impl

CUDA = torch.cuda.is_available()


@pytest.fixture(autouse=True)
def _clean_records():
    paths.reset()
    yield
    paths.reset()


def test_record_reset_snapshot_dedup_in_first_seen_order():
    assert paths.snapshot() == []
    paths.record("lstm", "persistent", "variant=default BLOCK_J=8 programs=96")
    paths.record("lstm", "step")
    paths.record("lstm", "persistent", "variant=default BLOCK_J=8 programs=96")  # a repeat: kept once
    paths.record("gru", "step")
    paths.record("lstm", "step", "persistent does not fit: spills")  # other detail: a record of its own
    snap = paths.snapshot()
    assert snap == [
        {"cell": "lstm", "path": "persistent", "detail": "variant=default BLOCK_J=8 programs=96"},
        {"cell": "lstm", "path": "step", "detail": ""},
        {"cell": "gru", "path": "step", "detail": ""},
        {"cell": "lstm", "path": "step", "detail": "persistent does not fit: spills"},
    ]
    snap[0]["path"] = "changed"  # a copy: does not change the record
    assert paths.snapshot()[0]["path"] == "persistent"
    paths.reset()
    assert paths.snapshot() == []


def test_records_are_bounded(monkeypatch):
    monkeypatch.setattr(paths, "MAX_RECORDS", 3)
    for i in range(10):
        paths.record("rnn", "step", f"T={i}")
    assert [r["detail"] for r in paths.snapshot()] == ["T=0", "T=1", "T=2"]


def test_path_env_reads_the_environment(monkeypatch):
    for name in paths.PATH_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    assert paths.path_env() == {name: None for name in paths.PATH_ENV_VARS}
    monkeypatch.setenv("LIGHTNING_RNN_PERSISTENT", "1")
    monkeypatch.setenv("LIGHTNING_RNN_CUDA_GRAPHS", "0")
    env = paths.path_env()
    assert env["LIGHTNING_RNN_PERSISTENT"] == "1" and env["LIGHTNING_RNN_CUDA_GRAPHS"] == "0"
    assert env["LIGHTNING_RNN_AUTOTUNE"] is None and list(env) == list(paths.PATH_ENV_VARS)


def test_path_env_vars_cover_the_switches_the_code_reads():
    """Every LIGHTNING_RNN_* switch of a kernel path read in kernels/ or lightning_rnn/nn/ is listed."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    read = set()
    for folder in ("kernels", "lightning_rnn/nn"):
        for file in (root / folder).rglob("*.py"):
            read |= set(re.findall(r"environ\.get\(\s*\"(LIGHTNING_RNN_\w+)\"", file.read_text()))
    not_paths = {"LIGHTNING_RNN_CACHE_DIR"}  # where autotune's decisions are stored, not a path switch
    assert read - not_paths <= set(paths.PATH_ENV_VARS)
    assert {"LIGHTNING_RNN_PERSISTENT", "LIGHTNING_RNN_CUDA_GRAPHS", "TRITON_INTERPRET"} <= set(paths.PATH_ENV_VARS)


def test_describe_impl():
    recs = [{"cell": "lstm", "path": "persistent", "detail": "BLOCK_J=8"},
            {"cell": "lstm", "path": "step", "detail": ""}]
    assert describe_impl("triton", "lstm", recs) == "triton:persistent(BLOCK_J=8) + step"
    assert describe_impl("triton", "gru", recs[1:]) == "triton:lstm:step"
    assert describe_impl("triton", "lstm", []) == "triton:unrecorded"
    assert describe_impl("fallback", "lstm", []) == "reference:cell-loop"
    assert describe_impl("naive", "gru", []) == "naive:nn.GRUCell-loop"

    class Auto:
        last_backend = "torch"

    assert describe_impl("autocast", "lstm", recs, Auto()) == "auto->torch"  # records from auto's timing only
    Auto.last_backend = "triton"
    assert describe_impl("autocast", "lstm", recs[:1], Auto()) == "auto->triton:persistent(BLOCK_J=8)"


@pytest.mark.skipif(CUDA, reason="the Triton interpreter is on only without a GPU (tests/conftest.py)")
def test_tiny_cpu_run_records_impl_and_path_env(tmp_path, monkeypatch):
    """The harness's own entry, tiny, on the CPU with the Triton interpreter: every row says what
    ran, and the metadata (JSON and CSV) carries the path variables."""
    monkeypatch.setenv("LIGHTNING_RNN_CUDA_GRAPHS", "0")  # set: must show up as set
    monkeypatch.delenv("LIGHTNING_RNN_PERSISTENT", raising=False)
    out = tmp_path / "run"
    args = ["--device", "cpu", "--interpreter", "--batch", "2", "--hidden", "8", "--seq-len", "3", "--layers", "1",
            "--dtype", "fp32", "--providers", "triton,fallback,torch,naive", "--out", str(out),
            "--warmup", "1", "--rep", "1", "--no-plot"]
    assert bench.main(args) == 0

    payload = json.loads((out / "results.json").read_text())
    env = payload["metadata"]["path_env"]
    assert set(env) == set(paths.PATH_ENV_VARS)
    assert env["TRITON_INTERPRET"] == "1" and env["LIGHTNING_RNN_CUDA_GRAPHS"] == "0"
    assert env["LIGHTNING_RNN_PERSISTENT"] is None

    rows = payload["results"]
    assert len(rows) == 8 and {r["status"] for r in rows} == {"ok"}
    for r in rows:
        assert isinstance(r["impl"], str) and r["impl"], r
        assert isinstance(r["paths"], list)
    impl = {(r["provider"], r["mode"]): r["impl"] for r in rows}
    for mode in ("fwd", "fwdbwd"):
        assert impl["triton", mode].startswith("triton:")  # "triton:unrecorded" until the kernels record
        assert impl["fallback", mode] == "reference:cell-loop"
        assert impl["naive", mode] == "naive:nn.LSTMCell-loop"
        assert impl["torch", mode] in ("oneDNN", "ATen")
    for r in rows:
        if r["provider"] == "triton" and r["paths"]:
            assert all(p["cell"] == "lstm" and p["path"] for p in r["paths"])
            assert r["impl"] != "triton:unrecorded"
        elif r["provider"] == "triton":
            assert r["impl"] == "triton:unrecorded"

    with (out / "results.csv").open() as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == 8 and all(r["impl"] for r in csv_rows)
    assert all("TRITON_INTERPRET=1" in r["path_env"] and "LIGHTNING_RNN_CUDA_GRAPHS=0" in r["path_env"]
               for r in csv_rows)


def test_records_during_a_measurement_reach_its_row(monkeypatch):
    """What a dispatcher records while a provider runs lands in that row's `paths` and `impl`, and
    only there: the runner resets between measurements."""
    from lightning_rnn.bench import providers as prov
    from lightning_rnn.bench.runner import Config, run_benchmark

    def fake_triton(w):
        def forward(x):
            paths.record("lstm", "persistent", f"B={x.shape[1]}")
            return w.module(x, w.hx)[0]

        return forward, list(w.module.parameters())

    monkeypatch.setitem(prov.PROVIDERS, "triton", prov.Provider("triton", fake_triton, "fake"))
    for check in ("provider_skip_reason", "point_skip_reason"):  # a fake: it runs anywhere
        monkeypatch.setattr(f"lightning_rnn.bench.runner.{check}", lambda *a: None)
    paths.record("gru", "stale")  # from before the run: must not show up
    cfg = Config([prov.Point(2, 8, 3, 1, "float32", 8)], ["triton", "torch"], ["fwd", "fwdbwd"],
                 torch.device("cpu"), 0.1, 0.1, log=lambda _: None)
    rows, _ = run_benchmark(cfg)
    by = {(r["provider"], r["mode"]): r for r in rows}
    for mode in ("fwd", "fwdbwd"):
        assert by["triton", mode]["paths"] == [{"cell": "lstm", "path": "persistent", "detail": "B=2"}]
        assert by["triton", mode]["impl"] == "triton:persistent(B=2)"
        assert by["torch", mode]["paths"] == []
