"""``lightning-rnn translate``: run a seq2seq checkpoint on text.

    lightning-rnn translate --ckpt runs/seq2seq_addition/checkpoints/best.ckpt --input "57+5"
    printf '57+5\\n1+1\\n' | lightning-rnn translate --ckpt best.ckpt      # one answer per line

Also runnable as ``python -m lightning_rnn.seq2seq.translate``. Exit status: 0, or 1 when an
input could not be translated (message on stderr; other lines are still answered), 2 on bad
arguments.
"""

from __future__ import annotations

import argparse
import sys

from lightning_rnn.checkpoints import add_checkpoint_arguments, load_for_command


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lightning-rnn translate", description="Decode text with a Seq2Seq checkpoint.")
    add_checkpoint_arguments(p)
    p.add_argument("--input", action="append", help="a source text (repeatable); default: lines of stdin")
    p.add_argument("--beam_size", type=int, default=None, help="beam width (default: the checkpoint's; 1 = greedy)")
    return p


def main(argv: list[str]) -> int:
    parser = _parser()
    opts = parser.parse_args(argv)
    if opts.beam_size is not None and opts.beam_size < 1:
        parser.error(f"--beam_size must be >= 1, got {opts.beam_size}")

    from lightning_rnn.seq2seq.module import Seq2Seq

    model = load_for_command(Seq2Seq, opts, "translate")
    if model is None:
        return 2
    if model.vocab is None:
        print(f"error: {opts.ckpt} holds no vocabulary (not trained with a pair datamodule)", file=sys.stderr)
        return 2

    texts = opts.input if opts.input is not None else [line.rstrip("\r\n") for line in sys.stdin]
    status = 0
    for lineno, text in enumerate(texts, start=1):
        try:  # one at a time, so a bad line is reported and the others are still answered
            print(model.translate([text], opts.beam_size)[0], flush=True)
        except ValueError as err:
            print(f"error: input {lineno}: {err}", file=sys.stderr)
            print("", flush=True)  # keep output lines aligned with input lines
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
