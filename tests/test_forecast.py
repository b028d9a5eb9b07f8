"""Time-series forecasting: CSV parsing and its errors, the date split (no target leakage),
normalisation fitted on the training split, a tiny fit that learns, checkpoint round trip,
and the recipe through ``lightning-rnn fit`` / ``test``."""

import csv
import datetime as dt
import math
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from lightning_rnn import cli
from lightning_rnn.forecast import SequenceRegressor, TimeSeriesCSV, read_series_csv

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "seattle_temp.yaml"
HEADER = ["date", "precipitation", "temp_max", "temp_min", "wind", "weather"]


def write_weather(path: Path, first: dt.date, days: int, temp_max=None) -> Path:
    """A CSV shaped like seattle-weather.csv; ``temp_max`` = row index unless given (a function of the row)."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        for i in range(days):
            day = first + dt.timedelta(days=i)
            value = i if temp_max is None else temp_max(i)
            writer.writerow([day.strftime("%Y/%m/%d"), i % 3, value, value - 5, 1.5 + i % 2, "sun"])
    return path


def quarter(tmp_path: Path, **kwargs) -> TimeSeriesCSV:
    """2020: train January, validate February (29 days), test March; temp_max = row index."""
    path = write_weather(tmp_path / "q.csv", dt.date(2020, 1, 1), 91)
    options = dict(feature_columns=["temp_max", "temp_min"], window=5, horizon=2, past_context=True)
    options.update(kwargs)
    return TimeSeriesCSV(str(path), ["2020-01-01", "2020-01-31"], ["2020-02-01", "2020-02-29"],
                         ["2020-03-01", "2020-03-31"], **options)


# -- parsing -----------------------------------------------------------------------------------

def test_read_series_csv_returns_dates_and_the_named_columns(tmp_path):
    path = write_weather(tmp_path / "w.csv", dt.date(2012, 1, 1), 4)
    dates, values = read_series_csv(path, "date", ["temp_max", "wind"])
    assert dates == [dt.date(2012, 1, d) for d in (1, 2, 3, 4)]
    assert values.dtype == torch.float64
    assert values.tolist() == [[0, 1.5], [1, 2.5], [2, 1.5], [3, 2.5]]


BAD_LINES = {
    "non_numeric": ("2012/01/02,0.0,warm,2.8,4.5,rain", r":3: column 'temp_max': expected a finite number, got 'warm'"),
    "empty_value": ("2012/01/02,0.0,,2.8,4.5,rain", r":3: column 'temp_max': expected a finite number, got ''"),
    "nan_value": ("2012/01/02,0.0,nan,2.8,4.5,rain", r":3: column 'temp_max': expected a finite number"),
    "bad_date": ("2012/13/02,0.0,1.0,2.8,4.5,rain", r":3: column 'date': cannot parse date '2012/13/02'"),
    "missing_field": ("2012/01/02,0.0,1.0,2.8,4.5", r":3: expected 6 fields like the header, got 5"),
    "date_not_after": ("2012/01/01,0.0,1.0,2.8,4.5,rain", r":3: date 2012-01-01 does not come after"),
}


@pytest.mark.parametrize("line, message", BAD_LINES.values(), ids=BAD_LINES.keys())
def test_a_malformed_row_is_reported_with_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.csv"
    path.write_text(",".join(HEADER) + "\n2012/01/01,0.0,12.8,5.0,4.7,drizzle\n" + line + "\n")
    with pytest.raises(ValueError, match=str(path).replace("\\", "\\\\") + message):
        read_series_csv(path, "date", ["temp_max", "temp_min"])


def test_an_unknown_column_is_reported_with_the_header(tmp_path):
    path = write_weather(tmp_path / "w.csv", dt.date(2012, 1, 1), 3)
    with pytest.raises(ValueError, match=r"w.csv:1: unknown column 'temp_mean'; the header has \['date'"):
        read_series_csv(path, "date", ["temp_max", "temp_mean"])
    dm = TimeSeriesCSV(str(path), ["2012-01-01", "2012-01-02"], ["2012-01-03", "2012-01-03"],
                       ["2012-01-04", "2012-01-04"], date_column="day", window=1)
    with pytest.raises(ValueError, match=r"w.csv:1: unknown column 'day'"):
        dm.setup("fit")


def test_bad_split_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="train_dates .* must end before val_dates"):
        TimeSeriesCSV("x.csv", ["2012-01-01", "2014-01-31"], ["2014-01-01", "2014-12-31"], ["2015-01-01", "2015-12-31"])
    with pytest.raises(ValueError, match="test_dates must be \\[first, last\\] ISO dates"):
        TimeSeriesCSV("x.csv", ["2012-01-01", "2013-12-31"], ["2014-01-01", "2014-12-31"], ["2015/01/01", "2015-12-31"])
    with pytest.raises(ValueError, match="window must be a positive integer, got 0"):
        quarter(tmp_path, window=0)
    with pytest.raises(FileNotFoundError, match="nowhere.csv: no such CSV file"):
        TimeSeriesCSV(str(tmp_path / "nowhere.csv"), ["2012-01-01", "2013-12-31"], ["2014-01-01", "2014-12-31"],
                      ["2015-01-01", "2015-12-31"]).setup("fit")


# -- the split ---------------------------------------------------------------------------------

def split_days(dm: TimeSeriesCSV, split: str) -> tuple[set[int], set[int], list]:
    """(target row indices, input row indices, windows) of a split; temp_max = row index."""
    windows = [dm.datasets[split][i] for i in range(len(dm.datasets[split]))]
    targets = {int(v) for w in windows for v in w.targets}
    inputs = {int(v) for w in windows for v in w.inputs[:, 0]}
    return targets, inputs, windows


@pytest.mark.parametrize("past_context", [True, False], ids=["past_context", "within_split"])
def test_targets_never_leave_their_split_and_training_never_sees_later_days(tmp_path, past_context):
    dm = quarter(tmp_path, past_context=past_context)
    ranges = {"train": range(0, 31), "val": range(31, 60), "test": range(60, 91)}  # rows of Jan, Feb, Mar 2020
    seen_targets: set[int] = set()
    for split, rows in ranges.items():
        targets, inputs, windows = split_days(dm, split)
        assert targets <= set(rows), split
        assert not targets & seen_targets
        seen_targets |= targets
        assert max(inputs) < rows.stop - 1  # inputs precede the last target
        assert min(inputs) >= (rows.start if split == "train" or not past_context else 0)
        for w in windows:  # each window: inputs are the 5 rows just before its 2 targets
            t = int(w.targets[0])
            assert w.inputs[:, 0].tolist() == list(range(t - 5, t)) and w.targets.tolist() == [t, t + 1]
            assert w.persistence.tolist() == [t - 1, t - 1]
            assert w.day.tolist() == [dt.date(2020, 1, 1).toordinal() + t, dt.date(2020, 1, 1).toordinal() + t + 1]
    assert max(split_days(dm, "train")[1] | split_days(dm, "train")[0]) < 31  # no February or March day in training
    # every day of a split is a first target, except where the window does not fit
    first_targets = {s: {int(dm.datasets[s][i].targets[0]) for i in range(len(dm.datasets[s]))} for s in ranges}
    assert first_targets["train"] == set(range(5, 30))
    if past_context:
        assert first_targets["val"] == set(range(31, 59)) and first_targets["test"] == set(range(60, 90))
    else:
        assert first_targets["val"] == set(range(36, 59)) and first_targets["test"] == set(range(65, 90))


def test_training_batches_shuffle_within_the_training_split_only(tmp_path):
    dm = quarter(tmp_path)
    dm.setup("fit")
    train_days = torch.cat([batch.targets.flatten() for batch in dm.train_dataloader()])
    assert set(train_days.tolist()) <= set(range(31)) and len(train_days) == 2 * 25
    val = [batch.targets[:, 0] for batch in dm.val_dataloader()]
    assert torch.cat(val).tolist() == list(range(31, 59))  # evaluation in date order


def test_a_split_too_short_for_one_window_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=r"val_dates .* leave no window of 28 input and 2 target rows"):
        quarter(tmp_path, window=28, past_context=False).setup("fit")


def test_normalisation_is_fitted_on_the_training_rows_only(tmp_path):
    dm = quarter(tmp_path, seasonal=True)
    stats = dm.normalisation
    january = torch.arange(31, dtype=torch.float64)
    torch.testing.assert_close(stats.target_mean, january.mean().reshape(1).float())
    torch.testing.assert_close(stats.target_std, january.std().reshape(1).float())
    torch.testing.assert_close(stats.input_mean[:2], torch.stack([january.mean(), january.mean() - 5]).float())
    assert stats.input_mean.shape == (dm.input_size,) == (4,)  # temp_max, temp_min, day-of-year sin and cos
    # Changing every later value changes nothing
    write_weather(tmp_path / "q.csv", dt.date(2020, 1, 1), 91, temp_max=lambda i: i if i < 31 else 1000 + i)
    for before, after in zip(stats, quarter(tmp_path, seasonal=True).normalisation):
        torch.testing.assert_close(before, after)


# -- the model ---------------------------------------------------------------------------------

def test_the_model_rejects_inputs_of_the_wrong_shape_and_a_horizon_that_does_not_match(tmp_path):
    model = SequenceRegressor(input_size=3, horizon=2, hidden_size=4, backend="torch")
    assert model(torch.randn(5, 7, 3)).shape == (5, 2)
    with pytest.raises(ValueError, match=r"inputs: expected shape \[batch, steps, 3\], got \[5, 7, 2\]"):
        model(torch.randn(5, 7, 2))
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    with pytest.raises(ValueError, match="the DataModule's horizon is 1 but the model forecasts horizon=2"):
        trainer.fit(SequenceRegressor(input_size=2, horizon=2, backend="torch"), quarter(tmp_path, horizon=1))


def sine_data(tmp_path: Path) -> TimeSeriesCSV:
    # a noisy 23-day cycle around 15 deg: persistence errs by ~1.7, the mean by ~6.4
    noise = torch.Generator().manual_seed(0)
    values = [15 + 10 * math.sin(2 * math.pi * i / 23) + 0.3 * float(torch.randn(1, generator=noise)) for i in range(400)]
    path = write_weather(tmp_path / "sine.csv", dt.date(2020, 1, 1), 400, temp_max=lambda i: round(values[i], 3))
    return TimeSeriesCSV(str(path), ["2020-01-01", "2020-09-30"], ["2020-10-01", "2020-11-15"],
                         ["2020-11-16", "2021-02-03"], window=30, batch_size=16, eval_batch_size=128)


def test_a_tiny_fit_learns_far_better_than_persistence_and_survives_a_checkpoint_round_trip(tmp_path):
    L.seed_everything(0)
    dm = sine_data(tmp_path)
    model = SequenceRegressor(input_size=dm.input_size, hidden_size=16, lr=0.02, backend="torch")
    trainer = L.Trainer(max_epochs=12, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, dm)
    scores = trainer.test(model, dm, verbose=False)[0]
    assert scores["test_persistence_mae"] > 1.5
    assert scores["test_mae"] < 0.4 * scores["test_persistence_mae"], scores
    assert scores["test_rmse"] >= scores["test_mae"]

    # the normalisation is in the checkpoint: the loaded model forecasts the same, in data units, with no data
    trainer.save_checkpoint(tmp_path / "sine.ckpt")
    loaded = SequenceRegressor.load_from_checkpoint(tmp_path / "sine.ckpt")
    torch.testing.assert_close(loaded.target_mean, dm.normalisation.target_mean)
    torch.testing.assert_close(loaded.input_std, dm.normalisation.input_std)
    assert bool(loaded.normalisation_fitted) and abs(float(loaded.target_mean) - 15) < 2
    batch = next(iter(dm.test_dataloader()))
    model.eval(), loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch.inputs), model(batch.inputs))
        assert (loaded(batch.inputs) - batch.targets).abs().mean() < 0.4 * scores["test_persistence_mae"]
    # a model that already has its statistics keeps them when set up with other data
    other = quarter(tmp_path, horizon=1, feature_columns=["temp_max"])
    L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False).validate(loaded, other, verbose=False)
    torch.testing.assert_close(loaded.target_mean, dm.normalisation.target_mean)


# -- the recipe through the CLI ----------------------------------------------------------------

def test_the_recipe_fits_then_tests_a_checkpoint_with_persistence_beside_and_a_plot(tmp_path, monkeypatch):
    """The recipe on a small stand-in for seattle-weather.csv (same columns and years), one step."""
    monkeypatch.chdir(tmp_path)
    path = write_weather(tmp_path / "weather.csv", dt.date(2012, 1, 1), 1461,
                         temp_max=lambda i: round(12 + 8 * math.sin(2 * math.pi * i / 365.25) + (i * 7 % 5), 1))
    tiny = ["--data.init_args.path", str(path), "--model.init_args.hidden_size", "4", "--model.init_args.backend", "torch",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    fit = cli.build_cli(["fit", "--config", str(RECIPE), *tiny, "--trainer.max_epochs", "1",
                         "--trainer.limit_train_batches", "0.05"])  # 1 of 20 batches
    recipe = yaml.safe_load(RECIPE.read_text())
    hparams = fit.model.hparams
    assert hparams.input_size == fit.datamodule.input_size == 4  # temp_max, temp_min + day-of-year sin, cos
    assert "vocab_size" not in hparams  # the CLI links it only into models that take it
    for key, value in recipe["model"]["init_args"].items():
        assert hparams[key] == {"hidden_size": 4, "backend": "torch"}.get(key, value), key
    assert fit.trainer.global_step == 1
    run = tmp_path / "runs" / "seattle_temp"
    best = run / "version_0" / "checkpoints" / "best.ckpt"
    assert best.is_file()

    test = cli.build_cli(["test", "--config", str(RECIPE), *tiny, "--ckpt_path", str(best)])
    logged = test.trainer.callback_metrics
    assert {"test_mae", "test_rmse", "test_persistence_mae", "test_persistence_rmse"} <= logged.keys()
    truth = torch.tensor([12 + 8 * math.sin(2 * math.pi * i / 365.25) + (i * 7 % 5) for i in range(1461)]).round(decimals=1)
    expected_persistence = (truth[1096:] - truth[1095:-1]).abs().mean()  # the 365 days of 2015 vs the day before
    torch.testing.assert_close(logged["test_persistence_mae"], expected_persistence.float(), rtol=1e-5, atol=1e-5)
    assert (run / "version_1" / "forecast_test.png").stat().st_size > 10_000
    rows = (run / "version_1" / "forecast_test.csv").read_text().splitlines()
    assert rows[0] == "date,truth,forecast,persistence" and len(rows) == 366
    assert rows[1].startswith("2015-01-01,") and rows[-1].startswith("2015-12-31,")


def test_token_models_get_vocab_size_but_no_input_size_from_the_cli(tmp_path, monkeypatch):
    from tests.test_cli import tiny_fit_args

    monkeypatch.chdir(tmp_path)
    run = cli.build_cli(tiny_fit_args(tmp_path), run=False)
    assert run.model.hparams.vocab_size == run.datamodule.vocab_size
    assert "input_size" not in run.model.hparams and "input_size" not in run.model.hparams_initial
