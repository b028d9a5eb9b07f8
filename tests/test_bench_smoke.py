"""`python -m lightning_rnn.bench.smoke --dry-run`: the barrier smoke test and the determinism check of the
GPU session, tiny, on the CPU (Triton's interpreter): the files they write and that each check can fail."""
from __future__ import annotations

import json

import pytest
import torch

from lightning_rnn.bench import smoke

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the dry run checked here is the CPU one")


def test_barrier_smoke_counts_every_arrival(tmp_path):
    assert smoke.main(["barrier", str(tmp_path), "--dry-run", "--steps", "37"]) == 0
    payload = json.loads((tmp_path / "barrier.json").read_text())
    rows = payload["results"]
    assert sorted(r["barrier"] for r in rows) == [0, 1, 2] and all(r["ok"] for r in rows)
    assert all(r["sync_head"] == [37] for r in rows)  # one program: 37 arrivals, counter or flag
    assert payload["metadata"]["path_env"]["TRITON_INTERPRET"] == "1"


def test_determinism_check_runs_every_variant_on_the_engine(tmp_path):
    assert smoke.main(["determinism", str(tmp_path), "--dry-run", "--runs", "2", "--variants", "default,fast"]) == 0
    rows = json.loads((tmp_path / "determinism.json").read_text())["results"]
    assert [(r["variant"], r["B"]) for r in rows] == [("default", 5), ("default", 70), ("fast", 5), ("fast", 70)]
    assert all(r["ok"] and r["engine"] and not r["differing_runs"] for r in rows)
    assert any("programs=1x2" in p for r in rows for p in r["paths"])  # B70: two batch tiles


def test_determinism_check_fails_when_runs_differ(tmp_path, monkeypatch):
    runs = iter(range(100))
    real = smoke._lstm_run
    # Each run perturbed by a different amount: what a nondeterministic kernel would look like.
    monkeypatch.setattr(smoke, "_lstm_run", lambda *a, **k: [t + next(runs) * 1e-3 for t in real(*a, **k)])
    assert smoke.main(["determinism", str(tmp_path), "--dry-run", "--runs", "2", "--variants", "default"]) == 1
    rows = json.loads((tmp_path / "determinism.json").read_text())["results"]
    assert all(not r["ok"] and r["differing_runs"] == [1] for r in rows)
