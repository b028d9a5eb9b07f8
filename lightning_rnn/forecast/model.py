"""``SequenceRegressor``: a window of past steps -> recurrent layers -> the next value(s).

The model takes and returns values in the data's own units: it normalises its inputs and
de-normalises its forecast with buffers (per-feature mean and std fitted on the training
split, see :class:`~lightning_rnn.forecast.data.TimeSeriesCSV`), so the buffers travel in the
state_dict and a loaded checkpoint forecasts with no data module at hand. Training minimises
the MSE of the normalised target; MAE and RMSE are reported in the target's units, beside the
same scores of the persistence forecast ("the next value = the last one") on the same windows.
"""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection

from lightning_rnn.forecast.data import Normalisation, Window
from lightning_rnn.nn import GRU, LSTM, RNN
from lightning_rnn.schedule import LRSchedule, check_lr_schedule, with_schedule

Cell = Literal["lstm", "gru", "rnn"]
LAYERS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}


def _scores(prefix: str) -> MetricCollection:
    return MetricCollection({"mae": MeanAbsoluteError(), "rmse": MeanSquaredError(squared=False)}, prefix=prefix)


class SequenceRegressor(L.LightningModule):
    """Forecast the next ``horizon`` values of a series from a window of past steps.

    Args:
        input_size: features per step (the CLI fills it in from the DataModule).
        horizon: values forecast per window (1: the next step only).
        cell, hidden_size, num_layers: the recurrent stack (``lightning_rnn.nn``).
        dropout: between recurrent layers and before the linear head.
        lr, weight_decay: AdamW's. lr_schedule: ``"constant"`` or ``"cosine"`` decay to 0.
        backend: ``"auto"``, ``"triton"`` or ``"torch"`` for the recurrent layers.

    Shapes: ``forward(inputs [B, T, input_size])`` -> ``forecast [B, horizon]``, both in the
    data's units.
    """

    def __init__(
        self,
        input_size: int,
        horizon: int = 1,
        cell: Cell = "lstm",
        hidden_size: int = 64,
        num_layers: int = 1,
        dropout: float = 0.0,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        lr_schedule: LRSchedule = "cosine",
        backend: Literal["auto", "triton", "torch"] = "auto",
    ) -> None:
        super().__init__()
        for name, value in (("input_size", input_size), ("horizon", horizon), ("hidden_size", hidden_size),
                            ("num_layers", num_layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if cell not in LAYERS:
            raise ValueError(f"cell must be one of {sorted(LAYERS)}, got {cell!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        check_lr_schedule(lr_schedule)
        self.save_hyperparameters()
        self.rnn = LAYERS[cell](input_size, hidden_size, num_layers=num_layers, batch_first=True,
                                dropout=dropout if num_layers > 1 else 0.0, backend=backend)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_size, horizon))
        # Normalisation: identity until fitted statistics arrive from the data or a checkpoint.
        self.register_buffer("input_mean", torch.zeros(input_size))
        self.register_buffer("input_std", torch.ones(input_size))
        self.register_buffer("target_mean", torch.zeros(1))
        self.register_buffer("target_std", torch.ones(1))
        self.register_buffer("normalisation_fitted", torch.tensor(False))
        self.scores = nn.ModuleDict({
            f"{split}_{who}": _scores(f"{split}_{'' if who == 'model' else 'persistence_'}")
            for split in ("val", "test") for who in ("model", "persistence")
        })

    # -- normalisation: from the DataModule, kept in the state_dict ------------------

    def set_normalisation(self, stats: Normalisation) -> None:
        """Adopt statistics fitted on the training split (shapes ``[input_size]`` x2, ``[1]`` x2)."""
        for name, value in zip(Normalisation._fields, stats):
            buffer = getattr(self, name)
            if tuple(value.shape) != tuple(buffer.shape):
                raise ValueError(f"normalisation {name}: expected shape {tuple(buffer.shape)}, got {tuple(value.shape)}")
            buffer.copy_(value)
        self.normalisation_fitted.fill_(True)

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        stats = getattr(datamodule, "normalisation", None)
        horizon = getattr(datamodule, "horizon", self.hparams.horizon)
        if horizon != self.hparams.horizon:
            raise ValueError(f"the DataModule's horizon is {horizon} but the model forecasts horizon="
                             f"{self.hparams.horizon} values: set both to the same number")
        # A model that already has statistics (loaded from a checkpoint) keeps the ones it was trained with.
        # Under `fit/test --ckpt_path`, the checkpoint is restored after setup and overwrites these anyway.
        if stats is not None and not bool(self.normalisation_fitted):
            self.set_normalisation(stats)

    # -- the network -------------------------------------------------------------------

    def normalised_forecast(self, inputs: Tensor) -> Tensor:
        """``inputs [B, T, input_size]`` in data units -> the forecast ``[B, horizon]``, normalised."""
        if inputs.dim() != 3 or inputs.shape[-1] != self.hparams.input_size:
            raise ValueError(f"inputs: expected shape [batch, steps, {self.hparams.input_size}], "
                             f"got {list(inputs.shape)}")
        output, _ = self.rnn((inputs - self.input_mean) / self.input_std)
        return self.head(output[:, -1])

    def forward(self, inputs: Tensor) -> Tensor:
        """``inputs [B, T, input_size]`` -> ``forecast [B, horizon]``, in the data's units."""
        return self.normalised_forecast(inputs) * self.target_std + self.target_mean

    def _loss_and_forecast(self, batch: Window) -> tuple[Tensor, Tensor]:
        normalised = self.normalised_forecast(batch.inputs)
        target = (batch.targets - self.target_mean) / self.target_std
        loss = nn.functional.mse_loss(normalised.float(), target)
        return loss, normalised.detach() * self.target_std + self.target_mean

    # -- training and evaluation ---------------------------------------------------------

    def training_step(self, batch: Window, batch_idx: int) -> Tensor:
        loss, _ = self._loss_and_forecast(batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=batch.targets.shape[0])
        return loss

    def _evaluate(self, split: str, batch: Window) -> dict[str, Tensor]:
        loss, forecast = self._loss_and_forecast(batch)
        size = batch.targets.shape[0]
        model, persistence = self.scores[f"{split}_model"], self.scores[f"{split}_persistence"]
        model.update(forecast, batch.targets)
        persistence.update(batch.persistence, batch.targets)
        self.log(f"{split}_loss", loss, batch_size=size)
        self.log_dict(model, batch_size=size, prog_bar=True)
        self.log_dict(persistence, batch_size=size)
        return {"day": batch.day, "truth": batch.targets, "forecast": forecast, "persistence": batch.persistence}

    def validation_step(self, batch: Window, batch_idx: int) -> dict[str, Tensor]:
        return self._evaluate("val", batch)

    def test_step(self, batch: Window, batch_idx: int) -> dict[str, Tensor]:
        return self._evaluate("test", batch)

    def predict_step(self, batch: Window, batch_idx: int) -> Tensor:
        return self(batch.inputs)

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        return with_schedule(optimizer, self.hparams.lr_schedule, self.trainer)
