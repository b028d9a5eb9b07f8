"""``lightning-rnn caption``: caption image files with a Captioner checkpoint.

    lightning-rnn caption --ckpt runs/captions_shapes/version_0/checkpoints/best.ckpt --image shapes.png
    lightning-rnn caption --ckpt best.ckpt --image a.png --image b.jpg --beam_size 3   # one line per image

Also runnable as ``python -m lightning_rnn.caption.command``. Each image is read with Pillow as
RGB and resized to the size the model was trained on. Exit status: 0; 1 when an image could
not be read (one line on stderr naming it, an empty output line in its place, the other images
still captioned); 2 on bad arguments or a bad checkpoint.
"""

from __future__ import annotations

import argparse
import sys

from lightning_rnn.checkpoints import add_checkpoint_arguments, load_for_command


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lightning-rnn caption", description="Caption images with a Captioner checkpoint.")
    add_checkpoint_arguments(p)
    p.add_argument("--image", action="append", required=True, help="an image file (repeatable)")
    p.add_argument("--beam_size", type=int, default=None, help="beam width (default: the checkpoint's; 1 = greedy)")
    return p


def main(argv: list[str]) -> int:
    parser = _parser()
    opts = parser.parse_args(argv)
    if opts.beam_size is not None and opts.beam_size < 1:
        parser.error(f"--beam_size must be >= 1, got {opts.beam_size}")

    from lightning_rnn.caption.data import ImageError, read_image
    from lightning_rnn.caption.model import Captioner

    model = load_for_command(Captioner, opts, "caption")
    if model is None:
        return 2
    if model.vocab is None or model.image_size is None:
        print(f"lightning-rnn caption: error: {opts.ckpt} holds no vocabulary (not trained with a caption DataModule)",
              file=sys.stderr)
        return 2

    status = 0
    for path in opts.image:
        try:  # one at a time, so a bad file is reported and the others are still captioned
            image = read_image(path, model.image_size)
        except (ImageError, ModuleNotFoundError) as err:  # a file that does not decode; no Pillow
            print(f"lightning-rnn caption: error: {err}", file=sys.stderr)
            print("", flush=True)  # keep output lines aligned with the images
            status = 1
            continue
        print(model.caption(image, opts.beam_size)[0], flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
