"""The ``lightning-rnn`` command.

    lightning-rnn fit      --config recipes/char_lm.yaml [--trainer.max_epochs 3 ...]
    lightning-rnn validate --config recipes/ptb_small.yaml --ckpt_path runs/.../best.ckpt
    lightning-rnn test     --config recipes/ptb_small.yaml --ckpt_path runs/.../best.ckpt
    lightning-rnn generate --ckpt runs/.../best.ckpt --prompt "def " [--max_new_tokens 300]
    lightning-rnn translate ...   (seq2seq: lightning_rnn.seq2seq.translate)
    lightning-rnn bench ...       (kernel benchmarks: lightning_rnn.bench)
    lightning-rnn visualize --ckpt runs/.../best.ckpt --text FILE   (hidden units: lightning_rnn.visualize)
    lightning-rnn plot runs/<recipe>/version_N | results.json      (figures: lightning_rnn.plots)
    lightning-rnn classify --ckpt runs/.../best.ckpt --text "..."   (sentiment: lightning_rnn.classify)
    lightning-rnn caption --ckpt runs/.../best.ckpt --image FILE    (captions: lightning_rnn.caption)

``fit``/``validate``/``test`` are Lightning's ``LightningCLI`` with subclass mode for
both model and data, so a recipe names its classes (``class_path``/``init_args``)
and any family of models plugs in. Conventions every family follows:

- sizes only the data knows are linked from the DataModule into the model argument of
  the same name (``DATA_TO_MODEL``: ``vocab_size`` for token models, ``input_size`` = features
  per step for the forecaster, ``num_classes`` for the classifier), so no one types them; the DataModule exposes each one it has
  at construction, and a model without that argument ignores it;
- a recipe sets ``trainer.default_root_dir: runs/<recipe name>`` and no logger: the CLI
  logs each run to ``<default_root_dir>/version_N/`` (``metrics.csv``, ``config.yaml``,
  ``checkpoints/``), with a CSVLogger, plus a TensorBoardLogger there with ``--tensorboard true``.
  ``--trainer.default_root_dir DIR`` moves the whole run; ``--trainer.logger ...`` replaces
  these loggers with your own (their ``save_dir`` then decides);
- a ``ModelCheckpoint`` is always added (``--checkpoint.*``): best by
  ``val_loss`` unless the recipe says otherwise, saved as ``best.ckpt``, plus
  ``last.ckpt`` at each validation; a second one (``--periodic_checkpoint.*``) refreshes
  ``last.ckpt`` every 500 training steps, so a killed process loses at most that many;
- a ``SaveOnInterrupt`` is always added (``--interrupted.filename``): a run stopped by an
  exception or Ctrl-C leaves ``interrupted.ckpt`` beside them, to resume from exactly
  (``--ckpt_path``; see ``lightning_rnn.data.resumable``);
- a run never overwrites another run's checkpoints (``KeepExistingCheckpoints``), and a
  bad checkpoint or a bad value in the configuration stops it with one line, before training.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import sys
import warnings
from collections.abc import Sequence
from functools import partial

from lightning_rnn.checkpoints import CheckpointError, add_checkpoint_arguments, load_for_command

USAGE = """usage: lightning-rnn {fit,validate,test,generate,translate,classify,caption,bench,visualize,plot} ...

  fit | validate | test   train or evaluate from a recipe:  --config recipes/<name>.yaml [--dotted.override value]
  generate                sample text from a language-model checkpoint:  --ckpt PATH --prompt TEXT
  translate               run a seq2seq checkpoint (lightning_rnn.seq2seq)
  classify                label a text with a classifier checkpoint:  --ckpt PATH --text TEXT
  caption                 caption an image with a captioner checkpoint:  --ckpt PATH --image FILE
  bench                   benchmark the recurrent kernels (lightning_rnn.bench)
  visualize               look at a language model's hidden units over a text:  --ckpt PATH --text FILE
  plot                    training curves of a run folder, or the plot of a benchmark's results.json

Run `lightning-rnn <command> --help` for the options of a command.
"""

# Subcommands implemented outside this file, imported only when used.
DELEGATED = {"translate": "lightning_rnn.seq2seq.translate", "bench": "lightning_rnn.bench.cli",
             "visualize": "lightning_rnn.visualize", "plot": "lightning_rnn.plots",
             "classify": "lightning_rnn.classify.command", "caption": "lightning_rnn.caption.command"}
LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test")
# DataModule attributes linked into the model's init argument of the same name (see the docstring).
DATA_TO_MODEL = ("vocab_size", "input_size", "num_classes")


def _quiet_known_warnings() -> None:
    # Our loaders are in-memory tensors delivered in order on purpose (see StreamWindows):
    # worker processes would not speed them up.
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")


def _data_attribute(name: str, data) -> object:
    return getattr(data, name, None)


def _drop_links_the_model_does_not_take(model) -> None:
    """Each ``DATA_TO_MODEL`` link also lands in the hyperparameters LightningCLI records for the
    model, including names its ``__init__`` does not take (as None). Drop those, so checkpoints
    and hparams.yaml hold only real arguments and ``test --ckpt_path`` can rebuild the model."""
    accepted = inspect.signature(type(model).__init__).parameters
    for hparams in (model.hparams, getattr(model, "_hparams_initial", None) or {}):
        for name in DATA_TO_MODEL:
            if name not in accepted:
                hparams.pop(name, None)


class ConfigError(ValueError):
    """A bad value in a recipe or on the command line; the message is one line."""


# Lightning's own names for checkpoints it finds itself, not files to check
SPECIAL_CKPT_PATHS = ("last", "best", "hpc", "registry")
PERIODIC_STEPS = 500


def _import(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _innermost(err: BaseException) -> BaseException:
    while (err.__cause__ or err.__context__) is not None:
        err = err.__cause__ or err.__context__
    return err


def _default_loggers(config) -> None:
    """Without ``--trainer.logger``, log to ``<default_root_dir>/version_N`` (CSV, and TensorBoard
    on request), so that the run's checkpoints and ``config.yaml`` land there too."""
    from jsonargparse import Namespace
    from lightning.pytorch.loggers import CSVLogger

    trainer = config.trainer
    if trainer.logger not in (None, True):
        if config.tensorboard:
            raise ConfigError("--tensorboard adds to the default logger; with --trainer.logger, "
                              "add lightning.pytorch.loggers.TensorBoardLogger there instead")
        return
    root = trainer.default_root_dir or "."
    version = CSVLogger(root, name="").version  # the next free version_N, shared by both loggers
    loggers = [Namespace(class_path="lightning.pytorch.loggers.CSVLogger",
                         init_args=Namespace(save_dir=root, name="", version=version))]
    if config.tensorboard:
        if importlib.util.find_spec("tensorboard") is None and importlib.util.find_spec("tensorboardX") is None:
            raise ConfigError("--tensorboard: the tensorboard package is not installed "
                              "(pip install 'lightning-rnn[tensorboard]', or pip install tensorboard)")
        loggers.append(Namespace(class_path="lightning.pytorch.loggers.TensorBoardLogger",
                                 init_args=Namespace(save_dir=root, name="", version=version)))
    trainer.logger = loggers if len(loggers) > 1 else loggers[0]


def build_cli(args: Sequence[str] | None, run: bool = True):
    """Create (and by default run) the LightningCLI for ``fit``/``validate``/``test`` args
    (``None``: read ``sys.argv``). With ``run=False`` there is no subcommand: ``args`` are
    just the options, and the caller drives ``cli.trainer`` itself."""
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.cli import LightningCLI

    from lightning_rnn.checkpoints import KeepExistingCheckpoints, check_checkpoint
    from lightning_rnn.interrupted import SaveOnInterrupt

    if args is not None:  # called from Python (demo, tests): sys.argv is not ours to compare with
        warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended")

    class LightningRNNCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            for name in DATA_TO_MODEL:  # a DataModule without the attribute links None, which models without it ignore
                parser.link_arguments(
                    "data", f"model.init_args.{name}", compute_fn=partial(_data_attribute, name), apply_on="instantiate"
                )
            # Both checkpoint callbacks write last.ckpt, so neither may rename it last-v1.ckpt
            # (Lightning's version counter); KeepExistingCheckpoints protects earlier runs instead.
            parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
            parser.set_defaults(
                {"checkpoint.monitor": "val_loss", "checkpoint.mode": "min", "checkpoint.filename": "best",
                 "checkpoint.save_last": True, "checkpoint.enable_version_counter": False}
            )
            parser.add_lightning_class_args(ModelCheckpoint, "periodic_checkpoint")
            parser.set_defaults(
                {"periodic_checkpoint.save_top_k": 0, "periodic_checkpoint.save_last": True,
                 "periodic_checkpoint.every_n_train_steps": PERIODIC_STEPS,
                 "periodic_checkpoint.enable_version_counter": False}
            )
            parser.add_lightning_class_args(SaveOnInterrupt, "interrupted")
            parser.add_lightning_class_args(KeepExistingCheckpoints, "keep_existing_checkpoints")
            parser.add_argument("--tensorboard", type=bool, default=False,
                                help="also log to TensorBoard in the run folder (needs the tensorboard package)")

        def _subcommand_config(self):
            subcommand = self.config.get("subcommand")
            return self.config[subcommand] if subcommand else self.config

        def parse_arguments(self, parser, args) -> None:
            super().parse_arguments(parser, args)
            # before LightningCLI reads the checkpoint's hyperparameters, which fails with pages of text
            config = self._subcommand_config()
            ckpt_path = config.get("ckpt_path")
            if ckpt_path and str(ckpt_path) not in SPECIAL_CKPT_PATHS:
                check_checkpoint(ckpt_path, _import(config.model.class_path))

        def before_instantiate_classes(self) -> None:
            _default_loggers(self._subcommand_config())

        def instantiate_classes(self) -> None:
            try:
                super().instantiate_classes()
            except (ValueError, TypeError) as err:
                # jsonargparse wraps the class's own message in pages of context: keep that message
                cause = _innermost(err)
                raise ConfigError(str(cause).strip().splitlines()[0] if str(cause).strip() else repr(cause)) from err
            _drop_links_the_model_does_not_take(self.model)

    return LightningRNNCLI(
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=None if args is None else list(args),
        run=run,
        save_config_kwargs={"overwrite": True},
    )


def _delegate(command: str, argv: list[str]) -> int:
    module_name = DELEGATED[command]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        print(f"lightning-rnn {command}: {module_name} is not available ({err})", file=sys.stderr)
        return 2
    entry = getattr(module, "main", None)
    if entry is None:
        print(f"lightning-rnn {command}: {module_name} has no main(argv) function", file=sys.stderr)
        return 2
    return int(entry(argv) or 0)


def generate_main(argv: list[str]) -> int:
    """``lightning-rnn generate``: print the prompt and its continuation."""
    parser = argparse.ArgumentParser(prog="lightning-rnn generate", description="Sample text from a LanguageModel checkpoint.")
    add_checkpoint_arguments(parser)
    parser.add_argument("--prompt", required=True, help="text to continue")
    parser.add_argument("--max_new_tokens", type=int, default=300)
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    parser.add_argument("--top_k", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    opts = parser.parse_args(argv)

    from lightning_rnn.lm import LanguageModel

    model = load_for_command(LanguageModel, opts, "generate")
    if model is None:
        return 2
    try:
        text = model.generate(opts.prompt, opts.max_new_tokens, opts.temperature, opts.top_k, opts.seed)
    except ValueError as err:
        parser.error(str(err))
    needs_space = model.vocab.level == "word" and not opts.prompt.endswith(("\n", " ")) and not text.startswith("\n")
    separator = " " if needs_space else ""
    print(opts.prompt + separator + text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command = argv[0]
    _quiet_known_warnings()
    if command not in ("generate", *DELEGATED, *LIGHTNING_SUBCOMMANDS):
        print(f"lightning-rnn: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    try:
        if command == "generate":
            return generate_main(argv[1:])
        if command in DELEGATED:
            return _delegate(command, argv[1:])
        build_cli(None if from_command_line else argv)
    except (CheckpointError, ConfigError) as err:  # one line, no traceback: the message says it all
        print(f"lightning-rnn {command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
