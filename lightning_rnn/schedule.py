"""The learning-rate schedule the task models share (seq2seq, forecasting, classification,
captioning): constant, or cosine decay to 0 over the whole run, stepped every optimizer step.

(The language models have their own, the papers' step and plateau schedules: ``lightning_rnn.lm.optim``.)
"""
from __future__ import annotations

from typing import Any, Literal

import lightning as L
import torch

LRSchedule = Literal["constant", "cosine"]
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine")


def check_lr_schedule(lr_schedule: str) -> str:
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {lr_schedule!r}")
    return lr_schedule


def with_schedule(optimizer: torch.optim.Optimizer, lr_schedule: LRSchedule, trainer: L.Trainer) -> Any:
    """What ``configure_optimizers`` returns: the optimizer alone, or with cosine decay to 0 over
    ``trainer.estimated_stepping_batches`` steps."""
    if check_lr_schedule(lr_schedule) == "constant":
        return optimizer
    total = max(1, int(trainer.estimated_stepping_batches))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
