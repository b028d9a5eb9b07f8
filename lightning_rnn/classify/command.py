"""``lightning-rnn classify``: label sentences with a SequenceClassifier checkpoint.

    lightning-rnn classify --ckpt runs/sst2_bilstm/version_0/checkpoints/best.ckpt --text "a gripping , funny film ."
    printf 'dull .\\nmoving and funny .\\n' | lightning-rnn classify --ckpt best.ckpt     # one answer per line

Each input gets one line: the most probable label and its probability (``positive 0.931``).
Texts are split at whitespace like the training data (the SST-2 files are lower-cased and
tokenized: ``is n't``, ``film .``); words outside the vocabulary count as ``<unk>``.
Exit status: 0; 1 when an input could not be classified (an empty line: the message on stderr and
an empty output line, the others are still answered); 2 on bad arguments or a bad checkpoint.
"""

from __future__ import annotations

import argparse
import sys

from lightning_rnn.checkpoints import add_checkpoint_arguments, load_for_command


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lightning-rnn classify",
                                description="Label texts with a SequenceClassifier checkpoint.")
    add_checkpoint_arguments(p)
    p.add_argument("--text", action="append", help="a text to classify (repeatable); default: lines of stdin")
    return p


def main(argv: list[str]) -> int:
    opts = _parser().parse_args(argv)

    from lightning_rnn.classify.model import SequenceClassifier

    model = load_for_command(SequenceClassifier, opts, "classify")
    if model is None:
        return 2
    if model.vocab is None:
        print(f"lightning-rnn classify: error: {opts.ckpt}: holds no vocabulary "
              "(not trained with TextClassificationData)", file=sys.stderr)
        return 2

    texts = opts.text if opts.text is not None else [line.rstrip("\r\n") for line in sys.stdin]
    # all non-empty texts in one call (batched); an empty one is reported and the others still answered
    answers = iter(model.classify([text for text in texts if text.split()]))
    status = 0
    for number, text in enumerate(texts, start=1):
        if not text.split():
            print(f"lightning-rnn classify: error: input {number} is empty: nothing to classify", file=sys.stderr)
            print("", flush=True)  # keep output lines aligned with input lines
            status = 1
            continue
        label, probability = next(answers)
        print(f"{label} {probability:.3f}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
