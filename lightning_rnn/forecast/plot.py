"""Forecast vs truth as a PNG: a function, and a callback that draws the test split.

``ForecastPlot`` collects what :class:`~lightning_rnn.forecast.SequenceRegressor`'s
``test_step`` returns (days, truth, forecast, persistence) and, at the end of ``test``,
writes ``forecast_test.png`` and ``forecast_test.csv`` into the run's log folder. Where the
model forecasts several steps, the plot shows the first (next-step) forecast of each window.
"""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import lightning as L
import torch


def plot_forecast(
    days: list[dt.date], truth: torch.Tensor, forecast: torch.Tensor, path: str | Path,
    persistence: torch.Tensor | None = None, title: str = "Forecast vs truth", ylabel: str = "value",
) -> Path:
    """Write a line plot of ``truth`` and ``forecast`` (and ``persistence``), each ``[len(days)]``,
    against the days, with the MAE of each forecast in the legend; returns the path."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    truth, forecast = truth.double().cpu(), forecast.double().cpu()
    if not len(days) == len(truth) == len(forecast):
        raise ValueError(f"days, truth and forecast must have the same length, got {len(days)}, "
                         f"{len(truth)} and {len(forecast)}")
    figure, axes = plt.subplots(figsize=(12, 4.5), layout="constrained")
    axes.plot(days, truth, color="black", linewidth=1.2, label="truth")
    if persistence is not None:
        persistence = persistence.double().cpu()
        mae = (persistence - truth).abs().mean()
        axes.plot(days, persistence, color="tab:gray", linewidth=0.8, alpha=0.6,
                  label=f"persistence (next = last), MAE {mae:.3f}")
    mae = (forecast - truth).abs().mean()
    axes.plot(days, forecast, color="tab:red", linewidth=1.2, label=f"model forecast, MAE {mae:.3f}")
    axes.set_xlabel("date")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(loc="best")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


class ForecastPlot(L.Callback):
    """After ``test``: ``<log dir>/<name>.png`` (forecast vs truth) and ``<name>.csv`` (the numbers).

    Args:
        name: file name without extension.
        ylabel: the y axis label (the target and its unit, e.g. ``"temp_max (deg C)"``).
        title: the plot's title; default: the target days' date range.
    """

    def __init__(self, name: str = "forecast_test", ylabel: str = "value", title: str | None = None) -> None:
        self.name, self.ylabel, self.title = name, ylabel, title
        self._outputs: list[dict[str, torch.Tensor]] = []
        self.written: list[Path] = []

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._outputs = []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if isinstance(outputs, dict) and {"day", "truth", "forecast"} <= outputs.keys():
            self._outputs.append({key: value[:, 0].detach().cpu() for key, value in outputs.items()})

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._outputs or not trainer.is_global_zero:
            return
        columns = {key: torch.cat([out[key] for out in self._outputs]) for key in self._outputs[0]}
        days = [dt.date.fromordinal(int(day)) for day in columns["day"]]
        folder = Path(trainer.log_dir or trainer.default_root_dir)
        title = self.title or f"Next-step forecast vs truth, {days[0]} to {days[-1]}"
        png = plot_forecast(days, columns["truth"], columns["forecast"], folder / f"{self.name}.png",
                            columns.get("persistence"), title, self.ylabel)
        table = folder / f"{self.name}.csv"
        with table.open("w", newline="") as f:
            writer = csv.writer(f)
            names = [key for key in ("truth", "forecast", "persistence") if key in columns]
            writer.writerow(["date", *names])
            for i, day in enumerate(days):
                writer.writerow([day.isoformat(), *(f"{float(columns[key][i]):.4f}" for key in names)])
        self.written = [png, table]
        print(f"wrote {png} and {table}")
