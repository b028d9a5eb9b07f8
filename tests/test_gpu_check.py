"""`python -m lightning_rnn.bench.gpu_check --dry-run`: the GPU-machine script's steps, tiny, on the CPU."""
from __future__ import annotations

import json

import pytest
import torch

from lightning_rnn.bench import gpu_check


@pytest.mark.skipif(torch.cuda.is_available(), reason="the dry run is the CPU variant")
def test_dry_run_runs_every_step_and_writes_results(tmp_path):
    assert gpu_check.main([str(tmp_path), "--dry-run"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [s["step"] for s in summary["steps"]] == ["gpu-tests", "resources", "bench-target"]
    assert all(s["returncode"] == 0 and (tmp_path / s["log"]).exists() for s in summary["steps"])
    assert (tmp_path / "gpu-tests.xml").exists()
    resources = json.loads((tmp_path / "resources.json").read_text())
    if resources["offline"] == "ok":
        kernels = {r["kernel"] for r in resources["rows"]}
        assert {"lstm.step.forward", "lstm.engine.backward", "gru.engine.forward", "rnn_relu.engine.backward"} <= kernels
        assert all(r["fits"] for r in resources["rows"] if r["chosen"]), "the dispatcher launches what fits"
    bench = json.loads((tmp_path / "target" / "results.json").read_text())
    rows = [r for r in bench["results"] if r["provider"] == "triton" and r["status"] == "ok"]
    assert rows and all("persistent" in r["impl"] for r in rows), "the engine is the default path"
