"""Optimizers and learning-rate schedules used by the language-model recipes.

- ``sgd`` + ``step``: Zaremba et al. (2014): the first ``decay_start_epoch``
  epochs train at ``lr``, and every later epoch multiplies it by ``lr_decay``
  (small: 4 epochs, then halve each epoch).
- ``sgd`` + ``plateau``: pytorch/examples' word language model: lr multiplied by
  ``lr_decay`` (0.25) whenever validation perplexity stops improving.
- ``adam`` / ``adamw`` with any of the schedules, or ``none``.
"""

from __future__ import annotations

from typing import Literal

import torch

OptimizerName = Literal["sgd", "adam", "adamw"]
ScheduleName = Literal["none", "step", "plateau"]


def build_optimizer(params, name: OptimizerName, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'sgd', 'adam' or 'adamw', got {name!r}")


def build_schedule(
    optimizer: torch.optim.Optimizer, name: ScheduleName, lr_decay: float, decay_start_epoch: int, monitor: str
) -> dict | None:
    """A Lightning ``lr_scheduler`` config dict (stepped once per epoch), or None."""
    if name == "none":
        return None
    if not 0.0 < lr_decay <= 1.0:
        raise ValueError(f"lr_decay must be in (0, 1] (the factor the lr is multiplied by), got {lr_decay}")
    if name == "step":
        # epoch e (0-based) trains with lr * lr_decay ** max(0, e + 1 - decay_start_epoch)
        def factor(epoch: int) -> float:
            return lr_decay ** max(0, epoch + 1 - decay_start_epoch)

        return {"scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, factor), "interval": "epoch"}
    if name == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=lr_decay, patience=0, threshold=0.0)
        return {"scheduler": scheduler, "interval": "epoch", "monitor": monitor}
    raise ValueError(f"lr_schedule must be 'none', 'step' or 'plateau', got {name!r}")


