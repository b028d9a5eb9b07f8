"""lightning_rnn.bench.dispatch: the per-call cost of deciding (auto's cache hit, the engine's lookup) runs and reports."""
import json


def test_dispatch_benchmark_writes_each_measurement(tmp_path, monkeypatch):
    from lightning_rnn.bench import dispatch
    from lightning_rnn.nn import autotune

    monkeypatch.setenv("LIGHTNING_RNN_CACHE_DIR", str(tmp_path / "cache"))  # never the user's cache
    monkeypatch.setattr(dispatch, "_per_call_us", lambda fn, calls=2000: (fn(), 1.0)[1])
    assert dispatch.main([str(tmp_path / "out")]) == 0
    rows = json.loads((tmp_path / "out" / "results.json").read_text())["rows"]
    assert [r["what"].split(":")[0] for r in rows] == ["auto", "auto", "engine"]
    assert all(r["us_per_call"] > 0 for r in rows)
    autotune.clear_cache(disk=False)
