"""`python -m lightning_rnn.bench.variants --dry-run`: every persistent-engine variant timed, tiny, on the CPU
(Triton's interpreter, torch.nn on the CPU in place of cuDNN); the files, the rows, fallbacks and errors."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from lightning_rnn.bench import cli as bench
from lightning_rnn.bench import gpu_check
from lightning_rnn.bench import variants as V

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the dry run checked here is the CPU one")

#: What --dry-run measures (V.DRY_RUN): LSTM B3 H17 fp32/fp16 fwd and fwd+bwd, GRU and Elman B5 H24
#: fp16 fwd+bwd, for the variants default and fast, and torch.nn at each; the barrier at 1 program.
LSTM_POINTS = [("lstm", 3, 17, d, m) for d in ("float32", "float16") for m in ("fwd", "fwdbwd")]
EXTRA_POINTS = [(c, 5, 24, "float16", "fwdbwd") for c in ("gru", "rnn")]


def _load(out):
    payload = json.loads((out / "results.json").read_text())
    with (out / "results.csv").open() as f:
        csv_rows = list(csv.DictReader(f))
    return payload, csv_rows, (out / "table.md").read_text()


def _key(r):
    return r["cell"], r["batch"], r["hidden"], r["dtype"], r["mode"]


def test_dry_run_times_every_variant_at_every_point(tmp_path):
    out = tmp_path / "variants"
    assert V.main([str(out), "--dry-run", "--jobs", "1"]) == 0
    payload, csv_rows, table = _load(out)
    meta, rows = payload["metadata"], payload["results"]
    for key in ("device", "torch", "triton", "git_commit", "path_env", "command", "timestamp"):
        assert key in meta
    assert meta["finished"] and meta["dry_run"] and meta["path_env"]["TRITON_INTERPRET"] == "1"
    assert meta["command"] == f"python -m lightning_rnn.bench.variants {out} --dry-run --jobs 1"
    assert set(meta["variants"]) == {"default", "fast"} and meta["variants"]["fast"]["barrier"] == 1
    pre = meta["precompile"]  # the spawned pool ran every configuration once
    assert pre["done"] == pre["tasks"] == 1 + 2 * (len(LSTM_POINTS) // 2 + len(EXTRA_POINTS)) and not pre["errors"]

    assert len(csv_rows) == len(rows) and all(r["status"] == "ok" for r in rows), [
        (r.get("label"), r["error"]) for r in rows if r["status"] != "ok"]
    barrier = [r for r in rows if r["provider"] == "barrier"]
    assert sorted(r["barrier"] for r in barrier) == [0, 1, 2] and all(r["us_per_step"] > 0 for r in barrier)
    assert "default" in next(r for r in barrier if r["barrier"] == 0)["variants"]

    layers = [r for r in rows if r["provider"] != "barrier"]
    for point in LSTM_POINTS + EXTRA_POINTS:
        at = [r for r in layers if _key(r) == point]
        assert sorted(str(r["variant"]) for r in at) == ["None", "default", "fast"], point
        for r in at:
            assert r["median_ms"] > 0 and r["seq_len"] == 3
            assert r["us_per_step"] == pytest.approx(r["median_ms"] * 1e3 / 3)
            assert r["speedup_vs_cudnn_same"] > 0 and r["speedup_vs_cudnn_fp16"] > 0
            if r["provider"] == "torch":
                assert r["impl"] in ("oneDNN", "ATen") and r["speedup_vs_cudnn_same"] == 1.0
                continue
            # the engine ran, with this variant, and the row says which plan (kernels.paths)
            assert r["engine"] is True and r["path"] == "persistent" and r["fallback_reason"] is None
            assert r["plan"].startswith(f"variant={r['variant']} programs=")
            assert r["impl"] == f"triton:persistent({r['plan']})"
    assert len(layers) == 3 * (len(LSTM_POINTS) + len(EXTRA_POINTS))

    by_csv = {(r["provider"], r["variant"], r["cell"], r["dtype"], r["mode"]): r for r in csv_rows}
    r = by_csv[("triton", "fast", "lstm", "float16", "fwdbwd")]
    assert float(r["median_ms"]) > 0 and r["plan"].startswith("variant=fast ") and r["engine"] == "True"
    assert r["path_env"] == "TRITON_INTERPRET=1" and r["torch"] == torch.__version__

    for heading in ("## The barrier alone", "## Summary: LSTM", "## LSTM B=3 H=17 T=3", "## GRU B=5 H=24 T=3",
                    "## Elman RNN (tanh) B=5 H=24 T=3", "**Dry run**"):
        assert heading in table
    assert "| fp16 | fast | " in table and "| fp32 | default | " in table
    assert "| fast | " in table and "| 4/4 |" in table  # summary: the engine ran in all 4 LSTM rows


def test_fallback_and_failed_configurations_are_rows_not_aborts(tmp_path, monkeypatch):
    """A variant whose engine launch fails falls back to the per-step kernels (row: engine False and
    why); a configuration that raises (here torch.nn) gets error rows, and the run goes on."""
    from kernels.persistent import run as engine
    from lightning_rnn.bench import providers

    original = engine.forward
    for memo in ("_chosen", "_failed"):  # where mark_failed remembers the failure: restored after the test
        if isinstance(getattr(engine, memo, None), dict):
            monkeypatch.setattr(engine, memo, {})

    def forward(p, *args, **kwargs):
        if p.variant == "fast":
            raise RuntimeError("injected launch failure")
        return original(p, *args, **kwargs)

    def build_torch(w):
        raise RuntimeError("injected cuDNN failure")

    monkeypatch.setattr(engine, "forward", forward)
    monkeypatch.setattr(providers, "build_torch", build_torch)
    out = tmp_path / "v"
    rc = V.main([str(out), "--dry-run", "--jobs", "0", "--points", "3x19", "--dtypes", "fp32",
                 "--extra-cells", "none", "--barrier-programs", "none"])
    assert rc == 1  # no torch.nn row was measured
    payload, csv_rows, table = _load(out)
    rows = payload["results"]
    assert payload["metadata"]["precompile"]["skipped"] and len(csv_rows) == len(rows) == 6
    torch_rows = [r for r in rows if r["provider"] == "torch"]
    assert [r["status"] for r in torch_rows] == ["error", "error"]
    assert all("injected cuDNN failure" in r["error"] for r in torch_rows)
    fast = [r for r in rows if r["variant"] == "fast"]
    default = [r for r in rows if r["variant"] == "default"]
    assert all(r["status"] == "ok" and r["engine"] is True for r in default)
    for r in fast:
        assert r["status"] == "ok" and r["median_ms"] > 0 and r["speedup_vs_cudnn_same"] is None
        assert r["engine"] is False and r["path"] == "step" and r["plan"] is None
        assert "injected launch failure" in r["fallback_reason"]
    assert "**fallback** (step)" in table and "injected cuDNN failure" in table


def test_time_limit_still_writes_every_row(tmp_path):
    out = tmp_path / "v"
    assert V.main([str(out), "--dry-run", "--jobs", "0", "--time-limit", "0", "--extra-cells", "gru"]) == 1
    rows = json.loads((out / "results.json").read_text())["results"]
    assert len(rows) == 3 + 3 * 4 + 3 and {r["status"] for r in rows} == {"skipped"}
    assert all("time limit" in r["error"] for r in rows)
    assert "## LSTM B=3 H=17 T=3" in (out / "table.md").read_text()


def test_default_gpu_run_and_entry_points(tmp_path, monkeypatch):
    """The GPU defaults are the issue's grid; `lightning-rnn bench --preset variants` and gpu_check
    both reach `variants.main`."""
    from kernels.persistent.plan import VARIANTS

    opts = V.options_from_args(V.build_parser().parse_args([str(tmp_path)]), "")
    assert opts.points == [(b, h) for h in (768, 1024) for b in (8, 16, 64, 128)] and opts.seq_len == 256
    assert opts.dtypes == ["bfloat16", "float16"] and opts.variants == list(VARIANTS)
    assert opts.extra_cells == ["gru", "rnn"] and opts.extra_point == (16, 768, "bfloat16")
    assert opts.barrier_programs == [132, 96] and opts.barrier_steps == 2000
    assert len(V.groups(opts)) == 8 * 2 + 2

    seen = {}
    monkeypatch.setattr(V, "main", lambda argv, program: seen.update(argv=argv, program=program) or 0)
    assert bench.main(["--preset", "variants", "--out", str(tmp_path), "--dry-run"]) == 0
    assert seen["argv"] == ["--out", str(tmp_path), "--dry-run"] and seen["program"][-2:] == ["--preset", "variants"]

    step = next(s for s in gpu_check._steps(tmp_path, dry_run=False) if s[0] == "bench-variants")
    _, cmd, _, limit = step
    assert cmd[1:3] == ["-m", "lightning_rnn.bench.variants"]
    args = V.build_parser().parse_args(cmd[3:])
    assert args.out_dir == tmp_path / "variants" and args.time_limit < limit


@pytest.mark.parametrize("T", [1, 2, 3, 15, 16, 17, 31, 32, 33, 48, 256, 257, 1000, 1024])
def test_warm_seq_len_compiles_the_same_kernels(T):
    """Triton specializes ints on == 1 and % 16 == 0: the short warm-up run's n_steps (T) and t_last
    (T - 1) must fall in T's classes, or the warm-up compiles other kernels than the timing runs."""
    w = V.warm_seq_len(T)
    assert w <= 32
    for a, b in ((w, T), (w - 1, T - 1)):
        assert (a == 1) == (b == 1) and (a % 16 == 0) == (b % 16 == 0)
