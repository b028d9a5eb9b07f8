"""lightning_rnn.plots: the benchmark speed-up figure and training curves, and `lightning-rnn plot`."""
from __future__ import annotations

import json
import math

import pytest

matplotlib = pytest.importorskip("matplotlib", reason="plots need the optional matplotlib (pip install '.[plot]')")
import matplotlib.image  # noqa: E402

from lightning_rnn import cli, plots  # noqa: E402

META = {"device": "NVIDIA H100 80GB HBM3", "device_type": "cuda", "torch": "2.11.0", "triton": "3.6.0",
        "cudnn": 91002, "driver": "570.1", "git_commit": "0123456789abcdef", "preset": "test"}


def bench_row(provider: str, batch: int, dtype: str, mode: str, speedup: float | None, baseline: str | None = None) -> dict:
    return {"provider": provider, "batch": batch, "hidden": 768, "seq_len": 1024, "layers": 1, "input_size": 768,
            "dtype": dtype, "mode": mode, "status": "ok" if speedup else "error", "median_ms": 1.0,
            "speedup_vs_torch": speedup, "torch_baseline_dtype": baseline or (dtype if speedup else None)}


@pytest.fixture
def payload() -> dict:
    rows = []
    for batch, (ours, naive) in ((16, (2.5, 0.03)), (64, (0.7, 0.01))):
        rows += [bench_row("triton", batch, "bfloat16", "fwd", ours, baseline="float16"),  # no cuDNN bf16
                 bench_row("naive", batch, "bfloat16", "fwd", naive, baseline="float16"),
                 bench_row("torch", batch, "bfloat16", "fwd", None),
                 bench_row("triton", batch, "float16", "fwdbwd", ours * 1.1),
                 bench_row("torch", batch, "float16", "fwdbwd", 1.0)]
    return {"metadata": META, "providers": {"triton": {"label": "ours (Triton)"}}, "results": rows}


def test_speedup_figure_has_log_axis_bars_legend_and_versions(payload):
    fig = plots.speedup_figure(payload)
    axes = fig.axes
    assert len(axes) == 2  # one panel per (mode, dtype)
    title = fig._suptitle.get_text()
    for expected in ("NVIDIA H100", "torch 2.11.0", "Triton 3.6.0", "cuDNN 91002", "01234567"):
        assert expected in title
    top = axes[0]
    assert top.get_yscale() == "log" and "speed-up" in top.get_ylabel()
    assert [t.get_text() for t in top.get_xticklabels()] == ["B16 H768 T1024", "B64 H768 T1024"]
    heights = sorted(round(p.get_height(), 6) for p in top.patches)
    assert heights == [0.01, 0.03, 0.7, 2.5]  # triton and naive at both shapes; torch.nn.LSTM is the 1x line
    legend = [t.get_text() for t in top.get_legend().get_texts()]
    assert legend == ["torch.nn.LSTM (1x)", "ours (Triton)", "naive nn.LSTMCell loop"]
    notes = {t.get_text() for t in top.texts}
    assert {"2.50x@fp16", "0.70x@fp16"} <= notes  # compared with torch.nn.LSTM in fp16, and says so
    assert {"2.75x", "0.77x"} <= {t.get_text() for t in axes[1].texts}
    plots.pyplot().close(fig)


def test_plot_command_redraws_a_results_json(tmp_path, payload, capsys):
    source = tmp_path / "results.json"
    source.write_text(json.dumps(payload))
    assert cli.main(["plot", str(source)]) == 0  # through the lightning-rnn command
    image = matplotlib.image.imread(tmp_path / "plot.png")
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 400
    assert str(tmp_path / "plot.png") in capsys.readouterr().out
    payload["results"] = [r for r in payload["results"] if r["provider"] == "torch"]
    assert plots.speedup_figure(payload) is None  # nothing faster or slower than itself to draw


METRICS_CSV = """epoch,lr,step,train_loss,val_acc,val_loss,val_ppl
0,,0,,0.10,5.0,148.4131591025766
0,,49,2.5,,,
0,,99,2.0,,,
0,0.003,99,,0.40,1.5,4.4816890703380645
1,,149,1.2,,,
1,0.003,199,,0.55,1.0,2.718281828459045
"""


def test_training_curves_from_metrics_csv(tmp_path):
    (tmp_path / "metrics.csv").write_text(METRICS_CSV)
    fig = plots.training_figure(tmp_path)
    panels = {ax.get_title(): ax for ax in fig.axes}
    assert list(panels) == ["loss", "perplexity", "accuracy"]
    assert all(ax.get_xlabel() == "step" for ax in fig.axes)
    lines = {panel: {line.get_label(): line for line in ax.get_lines()} for panel, ax in panels.items()}
    assert list(lines["loss"]) == ["train_loss", "val_loss"]
    assert list(lines["loss"]["train_loss"].get_xdata()) == [49, 99, 149]
    assert list(lines["loss"]["val_loss"].get_ydata()) == [5.0, 1.5, 1.0]
    train_ppl = lines["perplexity"]["train_ppl (exp train_loss)"].get_ydata()
    assert list(train_ppl) == pytest.approx([math.exp(2.5), math.exp(2.0), math.exp(1.2)])
    assert panels["perplexity"].get_yscale() == "log"
    assert list(lines["accuracy"]["val_acc"].get_ydata()) == [0.10, 0.40, 0.55]
    assert "lr" not in {label for panel in lines.values() for label in panel}
    plots.pyplot().close(fig)

    assert plots.main([str(tmp_path)]) == 0
    assert matplotlib.image.imread(tmp_path / "training.png").shape[1] > 800


@pytest.mark.parametrize("case", ["missing", "run without metrics", "json without results", "other file"])
def test_plot_command_errors_name_the_source(tmp_path, capsys, case):
    source = {"missing": tmp_path / "nope", "run without metrics": tmp_path,
              "json without results": tmp_path / "results.json", "other file": tmp_path / "notes.txt"}[case]
    if case == "json without results":
        source.write_text('{"metadata": {}}')
    if case == "other file":
        source.write_text("hello")
    with pytest.raises(SystemExit) as exit_info:
        plots.main([str(source)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert str(source) in err
    assert {"missing": "neither a run folder", "run without metrics": "no metrics.csv",
            "json without results": "not a benchmark results.json", "other file": "neither a run folder"}[case] in err
