"""The ``lightning-rnn`` command.

    lightning-rnn fit      --config recipes/char_lm.yaml [--trainer.max_epochs 3 ...]
    lightning-rnn validate --config recipes/ptb_small.yaml --ckpt_path runs/.../best.ckpt
    lightning-rnn test     --config recipes/ptb_small.yaml --ckpt_path runs/.../best.ckpt
    lightning-rnn generate --ckpt runs/.../best.ckpt --prompt "def " [--max_new_tokens 300]
    lightning-rnn translate ...   (seq2seq: lightning_rnn.seq2seq.translate)
    lightning-rnn bench ...       (kernel benchmarks: lightning_rnn.bench)

``fit``/``validate``/``test`` are Lightning's ``LightningCLI`` with subclass mode for
both model and data, so a recipe names its classes (``class_path``/``init_args``)
and any family of models plugs in. Conventions every family follows:

- the DataModule exposes ``vocab_size`` at construction, and every model takes a
  ``vocab_size`` init argument; the CLI links the first into the second, so no
  one types it;
- a ``ModelCheckpoint`` is always added (``--checkpoint.*``): best by
  ``val_loss`` unless the recipe says otherwise, saved as ``best.ckpt``, plus
  ``last.ckpt``; recipes put their logs under ``runs/<recipe name>/``;
- a ``SaveOnInterrupt`` is always added (``--interrupted.filename``): a run stopped by an
  exception or Ctrl-C leaves ``interrupted.ckpt`` beside them, to resume from.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

USAGE = """usage: lightning-rnn {fit,validate,test,generate,translate,bench} ...

  fit | validate | test   train or evaluate from a recipe:  --config recipes/<name>.yaml [--dotted.override value]
  generate                sample text from a language-model checkpoint:  --ckpt PATH --prompt TEXT
  translate               run a seq2seq checkpoint (lightning_rnn.seq2seq)
  bench                   benchmark the recurrent kernels (lightning_rnn.bench)

Run `lightning-rnn <command> --help` for the options of a command.
"""

# Subcommands implemented outside this file, imported only when used.
DELEGATED = {"translate": "lightning_rnn.seq2seq.translate", "bench": "lightning_rnn.bench.cli"}
LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test")


def _quiet_known_warnings() -> None:
    # Our loaders are in-memory tensors delivered in order on purpose (see StreamWindows):
    # worker processes would not speed them up.
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")


def build_cli(args: Sequence[str] | None, run: bool = True):
    """Create (and by default run) the LightningCLI for ``fit``/``validate``/``test`` args
    (``None``: read ``sys.argv``). With ``run=False`` there is no subcommand: ``args`` are
    just the options, and the caller drives ``cli.trainer`` itself."""
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.cli import LightningCLI

    from lightning_rnn.interrupted import SaveOnInterrupt

    if args is not None:  # called from Python (demo, tests): sys.argv is not ours to compare with
        warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended")

    class LightningRNNCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            parser.link_arguments(
                "data", "model.init_args.vocab_size", compute_fn=lambda data: data.vocab_size, apply_on="instantiate"
            )
            parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
            parser.set_defaults(
                {"checkpoint.monitor": "val_loss", "checkpoint.mode": "min",
                 "checkpoint.filename": "best", "checkpoint.save_last": True}
            )
            parser.add_lightning_class_args(SaveOnInterrupt, "interrupted")

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
    parser.add_argument("--ckpt", required=True, help="checkpoint written by `lightning-rnn fit` (best.ckpt, last.ckpt)")
    parser.add_argument("--prompt", required=True, help="text to continue")
    parser.add_argument("--max_new_tokens", type=int, default=300)
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    parser.add_argument("--top_k", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--device", default="cpu", help="e.g. cpu, cuda")
    parser.add_argument("--backend", choices=("auto", "triton", "torch"), default=None,
                        help="override the recurrent backend stored in the checkpoint")
    opts = parser.parse_args(argv)
    if not Path(opts.ckpt).is_file():
        parser.error(f"--ckpt: no such checkpoint file: {opts.ckpt}")

    from lightning_rnn.lm import LanguageModel

    overrides = {"backend": opts.backend} if opts.backend else {}
    model = LanguageModel.load_from_checkpoint(opts.ckpt, map_location=opts.device, **overrides)
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
    if command == "generate":
        return generate_main(argv[1:])
    if command in DELEGATED:
        return _delegate(command, argv[1:])
    if command not in LIGHTNING_SUBCOMMANDS:
        print(f"lightning-rnn: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    build_cli(None if from_command_line else argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
