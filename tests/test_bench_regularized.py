"""`lightning-rnn bench --preset awd --dry-run` (lightning_rnn.bench.regularized): issue 22's GPU preset, tiny,
on the CPU in Triton's interpreter."""
from __future__ import annotations

import json

import pytest
import torch

from lightning_rnn.bench import cli as bench
from lightning_rnn.bench import regularized

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the dry run checked here is the CPU one")


def test_awd_preset_dry_run_times_every_row(tmp_path):
    assert bench.main(["--preset", "awd", "--out", str(tmp_path), "--dry-run"]) == 0
    payload = json.loads((tmp_path / "results.json").read_text())
    rows = {r["row"]: r for r in payload["rows"]}
    assert list(rows) == list(regularized.ROWS) and payload["dry_run"]
    assert rows["ours-plain"]["backend"] == "triton" and rows["ours-wd"]["backend"] == "triton"
    assert rows["ours-wd-rd"]["backend"] == "reference"  # recurrent dropout: our PyTorch loop
    assert all(r["median_ms"] > 0 for r in rows.values())


def test_awd_weight_drop_baseline_gives_dropped_weights_zero_gradient():
    lstm = torch.nn.LSTM(4, 6)
    module = regularized.AWDWeightDrop(lstm, 0.5)
    y, _ = module(torch.randn(3, 2, 4))
    y.sum().backward()
    dropped = lstm.weight_hh_l0 == 0
    assert dropped.any() and (module.weight_hh_raw.grad[dropped] == 0).all()
