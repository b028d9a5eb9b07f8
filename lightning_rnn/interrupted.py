"""Keep the work of a training run that stops early.

``lightning-rnn fit`` saves ``best.ckpt`` and ``last.ckpt`` at each validation. A run stopped
between two validations (Ctrl-C, out of memory, a crash in user code) would lose everything
since the last one: up to a whole epoch of a PTB recipe. ``SaveOnInterrupt`` writes
``interrupted.ckpt`` beside them when ``fit`` stops on an exception, so the run resumes with

    lightning-rnn fit --config recipes/<name>.yaml --ckpt_path runs/<name>/version_N/checkpoints/interrupted.ckpt

The file exists only for a run that did not finish. The run continues exactly: weights,
optimizer, learning-rate schedule and step count (Lightning), and the position in the epoch's
data, the random state and a language model's carried hidden state (ours, see
``lightning_rnn.data.resumable``), all as they were after the last finished step: a step cut
short runs again. A process killed outright (SIGKILL, power) runs no code; the periodic
``last.ckpt`` (``--periodic_checkpoint.every_n_train_steps``) covers that case. Lightning's own ``OnExceptionCheckpoint``
needs its folder at construction; ours takes the folder of the run's ``ModelCheckpoint``,
which is known only once the run has started.
"""

from __future__ import annotations

import os

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info


class SaveOnInterrupt(L.Callback):
    """Save ``<ModelCheckpoint folder>/<filename>.ckpt`` when ``fit`` raises (KeyboardInterrupt included).

    Nothing is written before the first optimizer step, outside ``fit``, or without a
    ``ModelCheckpoint``. Under DDP every rank must stop (as with Ctrl-C), since saving is
    collective."""

    def __init__(self, filename: str = "interrupted") -> None:
        if not filename or os.sep in filename:
            raise ValueError(f"filename: expected a plain file name without extension, got {filename!r}")
        self.filename = filename

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        checkpoint = trainer.checkpoint_callback
        if (
            trainer.state.fn != TrainerFn.FITTING
            or trainer.global_step == 0
            or checkpoint is None
            or checkpoint.dirpath is None
        ):
            return
        path = os.path.join(checkpoint.dirpath, self.filename + ".ckpt")
        trainer.save_checkpoint(path)
        rank_zero_info(
            f"{type(exception).__name__} at step {trainer.global_step}: saved {path}\n"
            f"resume with: --ckpt_path {path}"
        )
