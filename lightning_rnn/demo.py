"""``make demo``: train the embedded character-level model on the CPU, then sample from it.

Runs ``recipes/char_lm.yaml`` (Python standard-library source, no download) for at
most about five minutes, prints the validation perplexity as it falls, and prints
a sample generated from the best checkpoint.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback

from lightning_rnn.cli import _quiet_known_warnings, build_cli
from lightning_rnn.lm import LanguageModel

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "char_lm.yaml"
TIME_LIMIT = "00:00:04:30"  # trainer.max_time (DD:HH:MM:SS); the demo must end in ~5 minutes


class PrintPerplexity(Callback):
    """Print one line per validation so the falling perplexity is easy to see."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or "val_ppl" not in trainer.callback_metrics:
            return
        ppl = float(trainer.callback_metrics["val_ppl"])
        minutes = (time.monotonic() - self.start) / 60
        print(f"\n[demo] step {trainer.global_step:5d}  ({minutes:4.1f} min)  validation perplexity {ppl:7.2f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    if not RECIPE.is_file():
        print(f"demo: recipe not found at {RECIPE}; run it from a clone of the repository", file=sys.stderr)
        return 1
    _quiet_known_warnings()
    # One thread: this model's per-step matrices are small, so a second thread gains little,
    # and on a busy machine two threads contending for two cores run many times slower.
    torch.set_num_threads(1)
    args = ["--config", str(RECIPE), "--model.init_args.backend", "torch",
            "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.max_time", TIME_LIMIT,
            *(argv or [])]
    run = build_cli(args, run=False)
    run.trainer.callbacks.append(PrintPerplexity())
    print(f"[demo] character-level LSTM on {run.datamodule.vocab_size}-symbol Python source "
          f"(standard library of this interpreter); before training, uniform guessing has perplexity "
          f"{run.datamodule.vocab_size}", flush=True)
    run.trainer.validate(run.model, run.datamodule, verbose=False)
    run.trainer.fit(run.model, run.datamodule)

    best = run.trainer.checkpoint_callback.best_model_path or run.trainer.checkpoint_callback.last_model_path
    model = LanguageModel.load_from_checkpoint(best, map_location="cpu", backend="torch")
    sample = model.generate("def ", max_new_tokens=500, temperature=0.7, seed=0)
    print(f"\n[demo] best checkpoint: {best}")
    print(f"[demo] best validation perplexity: {float(run.trainer.checkpoint_callback.best_model_score or float('nan')):.2f}")
    print("[demo] sample (prompt 'def ', temperature 0.7):\n")
    print("def " + sample)
    print(f"\n[demo] more: lightning-rnn generate --ckpt {best} --prompt 'class ' --temperature 0.8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
