"""The kernel benchmark harness (lightning_rnn.bench) on the CPU: outputs, skips, timing maths, parity."""
from __future__ import annotations

import csv
import json
import struct

import pytest
import torch

from lightning_rnn.bench import cli as bench
from lightning_rnn.bench import providers as prov
from lightning_rnn.bench.report import CSV_FIELDS, add_speedups
from lightning_rnn.bench.runner import Config, run_benchmark
from lightning_rnn.bench.timing import quantile, time_cpu

CUDA = torch.cuda.is_available()


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert (length, kind) == (13, b"IHDR")
    return struct.unpack(">II", data[16:24])


def test_cpu_smoke_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--preset", "cpu-smoke", "--device", "cpu", "--out", str(out), "--warmup", "1", "--rep", "2"]
    assert bench.main(args) == 0
    printed = capsys.readouterr().out

    payload = json.loads((out / "results.json").read_text())
    meta = payload["metadata"]
    for key in ("device", "driver", "torch", "triton", "cudnn", "python", "git_commit", "timestamp", "command"):
        assert key in meta
    assert meta["device_type"] == "cpu" and meta["driver"] is None
    assert meta["command"] == "python -m lightning_rnn.bench " + " ".join(args)

    rows = payload["results"]  # 2 points x 3 CPU providers x 2 modes, all measured
    assert len(rows) == 12 and {r["status"] for r in rows} == {"ok"}
    assert {r["provider"] for r in rows} == {"fallback", "torch", "naive"}
    for r in rows:
        assert 0 < r["q20_ms"] <= r["median_ms"] <= r["q80_ms"]
        assert r["speedup_vs_torch"] > 0 and r["speedup_vs_naive"] > 0
        if r["provider"] == "torch":
            assert r["speedup_vs_torch"] == 1.0 and r["impl"] in ("oneDNN", "ATen")

    # On the CPU: Triton (interpreter only) and cuDNN are skipped, with reasons, and said so.
    skipped = {s["provider"]: s["reason"] for s in payload["skipped"]}
    assert set(skipped) == {"triton", "cudnn"} and all(skipped.values())
    assert "interpreter" in skipped["triton"] and payload["providers"]["triton"]["skipped"]
    assert "skipped:" in printed and "vs torch" in printed and "torch.nn.LSTM (oneDNN)" in printed

    with (out / "results.csv").open() as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == CSV_FIELDS
        csv_rows = list(reader)
    assert len(csv_rows) == 12 and all(float(r["median_ms"]) > 0 and r["torch"] for r in csv_rows)

    width, height = _png_size((out / "plot.png").read_bytes())  # drawn by lightning_rnn.plots (tests/test_plots.py)
    assert width > 300 and height > 300


@pytest.mark.skipif(CUDA, reason="the Triton interpreter is on only without a GPU (tests/conftest.py)")
def test_point_skip_and_errors_are_recorded(monkeypatch):
    """bf16 in the Triton interpreter is skipped per point; a failing provider is an error row."""

    def broken(w):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setitem(prov.PROVIDERS, "naive", prov.Provider("naive", broken, "fails"))
    point = prov.Point(2, 16, 3, 1, "bfloat16", 16)
    cfg = Config([point], ["triton", "naive", "torch"], ["fwd"], torch.device("cpu"), 0.1, 0.1,
                 interpreter=True, log=lambda _: None)
    rows, skipped = run_benchmark(cfg)
    by = {r["provider"]: r for r in rows}
    assert by["triton"]["status"] == "skipped" and "bfloat16" in by["triton"]["error"]
    assert by["naive"]["status"] == "error" and "simulated" in by["naive"]["error"]
    assert by["torch"]["status"] == "ok"  # the sweep went on
    add_speedups(rows)
    assert by["naive"]["speedup_vs_torch"] is None


def test_speedup_falls_back_to_fp16_baseline():
    """cuDNN without bf16 RNNs: ours in bf16 is compared with torch.nn.LSTM in fp16, and says so."""
    shape = {"batch": 16, "hidden": 768, "seq_len": 1024, "layers": 1, "input_size": 768, "mode": "fwd"}
    rows = [
        {**shape, "provider": "triton", "dtype": "bfloat16", "status": "ok", "median_ms": 2.0},
        {**shape, "provider": "torch", "dtype": "bfloat16", "status": "error", "median_ms": None},
        {**shape, "provider": "torch", "dtype": "float16", "status": "ok", "median_ms": 6.0},
    ]
    add_speedups(rows)
    assert rows[0]["speedup_vs_torch"] == 3.0 and rows[0]["torch_baseline_dtype"] == "float16"

    # torch.nn.LSTM that ran in bf16 but not on cuDNN is no cuDNN baseline on CUDA either.
    rows[1].update(status="ok", median_ms=8.0, impl="ATen")
    rows[2]["impl"] = "cuDNN"
    add_speedups(rows, cudnn_only=True)
    assert rows[0]["speedup_vs_torch"] == 3.0 and rows[0]["torch_baseline_dtype"] == "float16"
    add_speedups(rows)  # on the CPU any torch.nn.LSTM kernel is the baseline
    assert rows[0]["speedup_vs_torch"] == 4.0 and rows[0]["torch_baseline_dtype"] == "bfloat16"


def test_time_cpu_on_a_fake_clock():
    now = [0.0]
    durations = iter([10, 1, 2, 3, 4, 5, 6, 99])  # ms: estimate, 1 warm-up, then 5 timed calls
    resets = []

    def fn() -> None:
        now[0] += next(durations) / 1e3

    t = time_cpu(fn, warmup_ms=10, rep_ms=50, reset=lambda: resets.append(1), clock=lambda: now[0])
    assert t.reps == 5 and t.samples_ms == pytest.approx([2, 3, 4, 5, 6])
    assert (t.median_ms, t.q20_ms, t.q80_ms) == pytest.approx((4.0, 2.8, 5.2))
    assert len(resets) == 7  # before every call, outside the timed region


def test_quantile_matches_torch():
    values = torch.rand(37, dtype=torch.float64)
    for q in (0.2, 0.5, 0.8):
        assert quantile(values.tolist(), q) == pytest.approx(torch.quantile(values, q).item())


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("name", ["triton", "fallback", "naive"])
def test_providers_compute_what_torch_computes(name, cell):
    """Same weights, state and input: each provider's output and input gradient match torch.nn's."""
    device = torch.device("cuda" if CUDA else "cpu")  # Triton: the interpreter without a GPU
    w = prov.make_workload(prov.Point(3, 16, 5, 2, "float32", 8, cell), device, seed=1)
    assert type(w.module) is getattr(torch.nn, prov.CELLS[cell][0])
    results = {}
    for p in (name, "torch"):
        forward, _ = prov.PROVIDERS[p].build(w)
        x = w.x.detach().requires_grad_(True)
        y = forward(x)
        y.backward(w.dy)
        results[p] = (y.detach(), x.grad)
    tol = {"atol": 1e-2, "rtol": 1e-2} if CUDA else {"atol": 1e-5, "rtol": 1e-4}  # TF32 on the GPU
    torch.testing.assert_close(results[name][0], results["torch"][0], **tol)
    torch.testing.assert_close(results[name][1], results["torch"][1], **tol)


def test_presets_and_list_options():
    parse = bench.build_parser().parse_args
    cpu = torch.device("cpu")
    opts = bench.resolve_options(parse(["--preset", "sweep", "--batch", "8,16", "32", "--dtype", "bf16"]), cpu)
    assert opts["batch"] == [8, 16, 32] and opts["dtype"] == ["bfloat16"] and opts["seq_len"] == [512]
    sweep = bench.PRESETS["sweep"]
    assert len(sweep["batch"]) * len(sweep["hidden"]) == 20
    assert bench.resolve_options(parse([]), cpu)["preset"] == "cpu-smoke"
    assert bench.resolve_options(parse([]), torch.device("cuda"))["preset"] == "target"
    with pytest.raises(ValueError, match="providers"):
        bench.resolve_options(parse(["--providers", "triton,cudnnn"]), cpu)
    assert bench.resolve_options(parse([]), cpu)["cell"] == ["lstm"]
    assert bench.resolve_options(parse(["--cell", "gru,rnn"]), cpu)["cell"] == ["gru", "rnn"]
    with pytest.raises(ValueError, match="cell"):
        bench.resolve_options(parse(["--cell", "lstmm"]), cpu)



def test_autocast_provider_runs_fp32_fused_under_cpu_autocast():
    """The cpu-autocast preset's provider: ours under bf16 autocast, torch.nn's fused fp32 RNN inside,
    output in bf16 equal to torch.nn's fp32 output up to bf16 rounding; skipped on non-fp32 points."""
    opts = bench.resolve_options(bench.build_parser().parse_args(["--preset", "cpu-autocast"]), torch.device("cpu"))
    assert opts["providers"] == ["torch", "autocast"] and opts["dtype"] == ["float32"]
    w = prov.make_workload(prov.Point(3, 16, 5, 2, "float32", 8), torch.device("cpu"), seed=2)
    forward, params = prov.PROVIDERS["autocast"].build(w)
    y = forward(w.x)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), w.module(w.x, w.hx)[0], atol=1e-2, rtol=1e-2)
    assert prov.point_skip_reason("autocast", w.x.half()) is not None
    assert prov.point_skip_reason("autocast", w.x) is None


def test_interpreter_after_triton_was_imported_runs_in_a_fresh_process(monkeypatch):
    """`lightning-rnn bench --interpreter` imports Triton (through Lightning) before the benchmark can set
    TRITON_INTERPRET, and Triton does not switch later: the benchmark reruns itself with it set."""
    import subprocess
    import sys

    import triton  # noqa: F401  (as lightning-rnn has)

    from lightning_rnn.bench import cli

    calls = []
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(subprocess, "call", lambda cmd, env: calls.append((cmd, env)) or 0)
    argv = ["--preset", "cpu-smoke", "--interpreter", "--device", "cpu", "--no-plot"]
    assert cli.main(argv) == 0
    [(cmd, env)] = calls
    assert cmd == [sys.executable, "-m", "lightning_rnn.bench", *argv] and env["TRITON_INTERPRET"] == "1"
