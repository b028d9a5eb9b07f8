"""Image captioning: a CNN encoder starting our LSTM/GRU/RNN decoder, generated shapes and real caption data.

    from lightning_rnn.caption import Captioner, ShapesCaptions, CaptionFolder
"""

from lightning_rnn.caption.data import CaptionBatch, CaptionFolder, ImageError, ShapesCaptions, read_image, save_image
from lightning_rnn.caption.model import CaptionNet, Captioner, ImageMemory

__all__ = [
    "CaptionBatch",
    "CaptionFolder",
    "CaptionNet",
    "Captioner",
    "ImageError",
    "ImageMemory",
    "ShapesCaptions",
    "read_image",
    "save_image",
]
