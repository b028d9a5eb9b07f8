"""Time series from a CSV file: parsing, a chronological split, and forecasting windows.

One row per time step (a day, say), sorted by a date column. A window is ``window``
consecutive rows of input features followed by the next ``horizon`` values of the target
column, which are what the model learns to predict.

The split is by date ranges (``train_dates``, ``val_dates``, ``test_dates``, inclusive,
chronological, disjoint). What may cross a boundary, and what may not:

- a window's *targets* always lie inside one split, so no validation or test value is ever
  a training target, and the test scores cover exactly the test days;
- a window's *inputs* are the rows just before its first target. For training they stay
  inside the training range. For validation and test they may, with ``past_context=True``
  (the default), reach back before the split's first day: those are past observations a
  forecaster has in hand on the day it forecasts, never a later split's values, and they let
  the first test day be forecast too (so the scores cover the same days as the persistence
  baseline). ``past_context=False`` keeps every window wholly inside its split.

Normalisation (mean and standard deviation of each input feature and of the target) is fitted
on the training range only; the model keeps it as buffers, so it travels in the checkpoint.
Batches hold values in the data's own units: :class:`Window`.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
from pathlib import Path
from typing import NamedTuple

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from lightning_rnn.data.text import resolve_data_path

SPLITS = ("train", "val", "test")
SEASONAL_FEATURES = ("day_of_year_sin", "day_of_year_cos")


class Window(NamedTuple):
    """One forecasting example (batched: a leading batch dimension B on each field).

    inputs: ``[window, input_size]`` features of the input days, in the data's units.
    targets: ``[horizon]`` the target column on the next ``horizon`` days.
    persistence: ``[horizon]`` the last input day's target value, repeated: the forecast
        "tomorrow = today" that any model must beat.
    day: ``[horizon]`` the target days as proleptic Gregorian ordinals (``date.toordinal()``).
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    persistence: torch.Tensor
    day: torch.Tensor


class Normalisation(NamedTuple):
    """Per-feature mean and std of the inputs ``[input_size]`` and of the target ``[1]``."""

    input_mean: torch.Tensor
    input_std: torch.Tensor
    target_mean: torch.Tensor
    target_std: torch.Tensor


def parse_date(text: str, date_format: str | None) -> dt.date:
    """``YYYY-MM-DD`` or ``YYYY/MM/DD`` by default, else ``datetime.strptime(text, date_format)``."""
    text = text.strip()
    if date_format:
        return dt.datetime.strptime(text, date_format).date()
    return dt.date.fromisoformat(text.replace("/", "-"))


def read_series_csv(
    path: str | Path, date_column: str, columns: list[str], date_format: str | None = None
) -> tuple[list[dt.date], torch.Tensor]:
    """The dates and the named columns (``[rows, len(columns)]`` float64) of a CSV file.

    Raises ``ValueError`` naming the file and line for an unknown column, a row with the
    wrong number of fields, a value that is not a finite number, a date that does not parse
    or dates that do not strictly increase; ``FileNotFoundError`` for a missing file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such CSV file (relative paths are looked up under the data root, "
                                "$LIGHTNING_RNN_DATA or ../shared/data)")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = [name.strip() for name in next(reader, [])]
        if not header:
            raise ValueError(f"{path}:1: empty file, expected a header line naming the columns")
        for name in [date_column, *columns]:
            if name not in header:
                raise ValueError(f"{path}:1: unknown column {name!r}; the header has {header}")
        date_at = header.index(date_column)
        value_at = [header.index(name) for name in columns]
        dates: list[dt.date] = []
        rows: list[list[float]] = []
        for fields in reader:
            line = reader.line_num
            if not fields:
                continue  # a blank line (e.g. at the end of the file) holds no row
            if len(fields) != len(header):
                raise ValueError(f"{path}:{line}: expected {len(header)} fields like the header, got {len(fields)}")
            try:
                date = parse_date(fields[date_at], date_format)
            except ValueError:
                expected = date_format or "YYYY-MM-DD or YYYY/MM/DD"
                raise ValueError(f"{path}:{line}: column {date_column!r}: cannot parse date "
                                 f"{fields[date_at]!r} (expected {expected})") from None
            if dates and date <= dates[-1]:
                raise ValueError(f"{path}:{line}: date {date} does not come after the previous row's {dates[-1]}; "
                                 "rows must be sorted by date, one row per date")
            values = []
            for name, at in zip(columns, value_at):
                try:
                    value = float(fields[at])
                except ValueError:
                    value = math.nan
                if not math.isfinite(value):
                    raise ValueError(f"{path}:{line}: column {name!r}: expected a finite number, got {fields[at]!r}")
                values.append(value)
            dates.append(date)
            rows.append(values)
    if not rows:
        raise ValueError(f"{path}: no data rows after the header")
    return dates, torch.tensor(rows, dtype=torch.float64)


def seasonal_features(dates: list[dt.date]) -> torch.Tensor:
    """``[rows, 2]``: sine and cosine of the day of the year (one turn per 365.25 days)."""
    day = torch.tensor([d.timetuple().tm_yday for d in dates], dtype=torch.float64)
    angle = 2 * math.pi * (day - 1) / 365.25
    return torch.stack([angle.sin(), angle.cos()], dim=1)


class ForecastWindows(Dataset):
    """Every window whose ``horizon`` targets are rows ``first_target..last_target`` (inclusive)
    and whose ``window`` input rows start at or after ``first_input``.

    Item ``i`` forecasts from row ``t = start + i``: inputs are rows ``t - window .. t - 1``,
    targets rows ``t .. t + horizon - 1``.
    """

    def __init__(self, inputs: torch.Tensor, target: torch.Tensor, days: torch.Tensor, window: int, horizon: int,
                 first_target: int, last_target: int, first_input: int) -> None:
        self.inputs, self.target, self.days = inputs.float(), target.float(), days
        self.window, self.horizon = window, horizon
        self.start = max(first_target, first_input + window)
        self.stop = last_target - horizon + 2  # one past the last t whose targets fit
        self.length = max(0, self.stop - self.start)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Window:
        if not 0 <= index < self.length:
            raise IndexError(f"window index {index} out of range for {self.length} windows")
        t = self.start + index
        targets = self.target[t:t + self.horizon]
        return Window(self.inputs[t - self.window:t], targets,
                      self.target[t - 1].expand(self.horizon).clone(), self.days[t:t + self.horizon])


class TimeSeriesCSV(L.LightningDataModule):
    """Forecasting windows from a CSV file with a date column, split chronologically by date.

    Args:
        path: the CSV file; a relative path is looked up under ``$LIGHTNING_RNN_DATA`` (default
            ``../shared/data``) unless it exists as given.
        date_column: the column of dates (``YYYY-MM-DD`` or ``YYYY/MM/DD``, or ``date_format``).
        feature_columns: input features, in this order (the target column may be one of them).
        target_column: the column to forecast.
        train_dates, val_dates, test_dates: ``[first, last]`` day of each split, inclusive,
            ISO dates; chronological and disjoint.
        window: input steps per example. horizon: target steps per example (the next k values).
        seasonal: add the sine and cosine of the day of the year as two more input features.
        past_context: validation/test inputs may come from days before the split (see the module
            docstring); targets never do.
        batch_size: training batch (windows are shuffled within the training split only).
        eval_batch_size: validation/test batch (in date order).

    ``input_size`` (features per step) is known at construction; the CLI passes it to the model.
    """

    def __init__(
        self,
        path: str,
        train_dates: tuple[str, str],
        val_dates: tuple[str, str],
        test_dates: tuple[str, str],
        date_column: str = "date",
        feature_columns: list[str] | None = None,
        target_column: str = "temp_max",
        window: int = 100,
        horizon: int = 1,
        seasonal: bool = False,
        past_context: bool = True,
        batch_size: int = 32,
        eval_batch_size: int = 256,
        date_format: str | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        for name, value in (("window", window), ("horizon", horizon), ("batch_size", batch_size),
                            ("eval_batch_size", eval_batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.path = path
        self.date_column, self.target_column = date_column, target_column
        self.feature_columns = list(feature_columns) if feature_columns else [target_column]
        self.ranges = {split: self._date_range(split, value)
                       for split, value in zip(SPLITS, (train_dates, val_dates, test_dates))}
        for earlier, later in zip(SPLITS, SPLITS[1:]):
            if self.ranges[earlier][1] >= self.ranges[later][0]:
                raise ValueError(f"{earlier}_dates {self.ranges[earlier]} must end before {later}_dates "
                                 f"{self.ranges[later]} begin: the split is chronological")
        self.window, self.horizon = window, horizon
        self.seasonal, self.past_context = seasonal, past_context
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.date_format = date_format
        self._datasets: dict[str, ForecastWindows] | None = None
        self._normalisation: Normalisation | None = None

    @staticmethod
    def _date_range(split: str, value: tuple[str, str]) -> tuple[dt.date, dt.date]:
        try:
            first, last = (dt.date.fromisoformat(str(day)) for day in value)
        except (TypeError, ValueError):
            raise ValueError(f"{split}_dates must be [first, last] ISO dates like ['2012-01-01', '2013-12-31'], "
                             f"got {value!r}") from None
        if first > last:
            raise ValueError(f"{split}_dates: first day {first} is after last day {last}")
        return first, last

    @property
    def input_names(self) -> list[str]:
        return self.feature_columns + (list(SEASONAL_FEATURES) if self.seasonal else [])

    @property
    def input_size(self) -> int:
        """Features per input step; linked to ``model.init_args.input_size`` by the CLI."""
        return len(self.input_names)

    def _load(self) -> None:
        path = resolve_data_path(self.path)
        columns = list(dict.fromkeys([*self.feature_columns, self.target_column]))
        dates, values = read_series_csv(path, self.date_column, columns, self.date_format)
        inputs = values[:, [columns.index(name) for name in self.feature_columns]]
        if self.seasonal:
            inputs = torch.cat([inputs, seasonal_features(dates)], dim=1)
        target = values[:, columns.index(self.target_column)]
        days = torch.tensor([d.toordinal() for d in dates], dtype=torch.long)

        rows = {}
        for split, (first, last) in self.ranges.items():
            inside = [i for i, d in enumerate(dates) if first <= d <= last]
            if not inside:
                raise ValueError(f"{path}: no rows between {first} and {last} ({split}_dates)")
            rows[split] = (inside[0], inside[-1])
        train_first, train_last = rows["train"]
        if train_last - train_first + 1 < self.window + self.horizon:
            raise ValueError(f"{path}: the training range has {train_last - train_first + 1} rows, fewer than "
                             f"window + horizon = {self.window + self.horizon}")
        self._datasets = {}
        for split, (first, last) in rows.items():
            first_input = first if split == "train" or not self.past_context else 0
            self._datasets[split] = ForecastWindows(inputs, target, days, self.window, self.horizon,
                                                    first, last, first_input)
            if len(self._datasets[split]) == 0:
                raise ValueError(f"{path}: {split}_dates {self.ranges[split]} leave no window of {self.window} "
                                 f"input and {self.horizon} target rows")
        train_inputs = inputs[train_first:train_last + 1]
        train_target = target[train_first:train_last + 1]
        self._normalisation = Normalisation(
            train_inputs.mean(0).float(), train_inputs.std(0).clamp_min(1e-8).float(),
            train_target.mean().reshape(1).float(), train_target.std().clamp_min(1e-8).reshape(1).float(),
        )

    @property
    def datasets(self) -> dict[str, ForecastWindows]:
        """The windows of each split (the file is read on first access)."""
        if self._datasets is None:
            self._load()
        return self._datasets

    @property
    def normalisation(self) -> Normalisation:
        """Fitted on the training range's rows only."""
        if self._normalisation is None:
            self._load()
        return self._normalisation

    def setup(self, stage: str | None = None) -> None:
        self.datasets  # read the file once, before the loaders are asked for

    def _loader(self, split: str, shuffle: bool, batch_size: int) -> DataLoader:
        return DataLoader(self.datasets[split], batch_size=batch_size, shuffle=shuffle, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False, self.eval_batch_size)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
