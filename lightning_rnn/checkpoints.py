"""Checkpoint files: load them with one clear line when they are wrong, and never clobber them.

Every command that takes a checkpoint (``generate --ckpt``, ``translate --ckpt``,
``fit/validate/test --ckpt_path``) goes through :func:`load_model` or :func:`check_checkpoint`,
which raise :class:`CheckpointError`: one line naming the file and what is wrong with it (missing,
a folder, empty, truncated, corrupted, or written by another kind of model). ``lightning-rnn``
prints it without a traceback.

:class:`KeepExistingCheckpoints` stops a ``fit`` before its first step when its checkpoint
folder already holds another run's checkpoints, which this run would overwrite.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import zipfile
from pathlib import Path
from typing import Any, TypeVar

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

Model = TypeVar("Model", bound=L.LightningModule)


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message is one line and names the file."""


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's contents (tensors memory-mapped, so a large file costs little)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: is empty (0 bytes), not a checkpoint")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; a cut-off one has no directory
        raise CheckpointError(f"{path}: is not a PyTorch checkpoint, or is truncated (no complete zip archive)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as err:  # noqa: BLE001 - any failure to unpickle means the same thing here
        raise CheckpointError(f"{path}: is corrupted, it cannot be read ({_first_line(err)})") from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path}: is a PyTorch file but not a Lightning checkpoint (it has no state_dict)")
    return checkpoint


def _kind_problem(checkpoint: dict[str, Any], model_class: type) -> str | None:
    """Why the checkpoint was not written by ``model_class`` (None when it may have been)."""
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    class_path = hparams.get("_class_path")  # recorded by LightningCLI
    if isinstance(class_path, str):
        module, _, name = class_path.rpartition(".")
        if name != model_class.__name__ and not any(c.__name__ == name for c in model_class.__mro__):
            return f"holds a {name} ({module}), not a {model_class.__name__}"
        return None
    parameters = inspect.signature(model_class.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None
    unknown = sorted(k for k in hparams if not k.startswith("_") and k not in parameters)
    if unknown:
        return (f"was written by another kind of model, not a {model_class.__name__} "
                f"(its hyperparameters {', '.join(unknown[:3])} are not {model_class.__name__}'s)")
    return None


def check_checkpoint(path: str | Path, model_class: type) -> dict[str, Any]:
    """Read ``path`` and check that ``model_class`` wrote it; raises :class:`CheckpointError`."""
    checkpoint = read_checkpoint(path)
    problem = _kind_problem(checkpoint, model_class)
    if problem:
        raise CheckpointError(f"{path}: {problem}")
    return checkpoint


def load_model(model_class: type[Model], path: str | Path, **kwargs: Any) -> Model:
    """``model_class.load_from_checkpoint(path, **kwargs)``, failing with one clear line."""
    check_checkpoint(path, model_class)
    try:
        return model_class.load_from_checkpoint(path, **kwargs)
    except (RuntimeError, TypeError, KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: does not load into a {model_class.__name__} ({_first_line(err)})") from err


def add_checkpoint_arguments(parser: argparse.ArgumentParser) -> None:
    """``--ckpt``, ``--device`` and ``--backend``: the options of every command that runs a checkpoint."""
    parser.add_argument("--ckpt", required=True, help="checkpoint written by `lightning-rnn fit` (best.ckpt, last.ckpt)")
    parser.add_argument("--device", default="cpu", help="e.g. cpu, cuda")
    parser.add_argument("--backend", choices=("auto", "triton", "torch"), default=None,
                        help="override the recurrent backend stored in the checkpoint")


def load_for_command(model_class: type[Model], opts: argparse.Namespace, command: str) -> Model | None:
    """The model of ``opts.ckpt`` on ``opts.device`` (``opts.backend`` overriding the stored one), in eval
    mode; or None after printing ``lightning-rnn <command>: error: ...`` (one line) when the file is bad."""
    overrides = {"backend": opts.backend} if opts.backend else {}
    try:
        model = load_model(model_class, opts.ckpt, map_location=opts.device, **overrides)
    except CheckpointError as err:  # one line naming the file, no traceback
        print(f"lightning-rnn {command}: error: {err}", file=sys.stderr)
        return None
    return model.eval()


class KeepExistingCheckpoints(L.Callback):
    """Refuse to start ``fit`` in a checkpoint folder that already holds ``*.ckpt`` files.

    Lightning's loggers give each run a new ``version_N`` folder, but a pinned version, a run
    without a logger (checkpoints in ``default_root_dir/checkpoints``) or an explicit ``dirpath``
    reuses one, and this run's ``best.ckpt``/``last.ckpt``/``interrupted.ckpt`` would replace the
    earlier run's. Resuming with ``--ckpt_path`` from a file in that folder continues that run,
    and is allowed."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        resuming_from = Path(trainer.ckpt_path).resolve().parent if trainer.ckpt_path else None
        for callback in trainer.checkpoint_callbacks:
            if not isinstance(callback, ModelCheckpoint) or callback.dirpath is None:
                continue
            folder = Path(callback.dirpath)
            existing = sorted(p.name for p in folder.glob("*.ckpt")) if folder.is_dir() else []
            if existing and folder.resolve() != resuming_from:
                raise CheckpointError(
                    f"{folder}: already holds {', '.join(existing)} from another run, which this run would "
                    "overwrite; use a new --trainer.default_root_dir (or leave the logger's version unset), "
                    f"or resume that run with --ckpt_path {folder / existing[0]}"
                )
