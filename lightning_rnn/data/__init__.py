"""Data: vocabularies, stream batching and DataModules."""

from lightning_rnn.data.batchify import StreamWindows, batchify
from lightning_rnn.data.pair_datamodules import CharPairDataModule, GeneratedPairDataModule, PairsFileDataModule
from lightning_rnn.data.presets import PennTreebank, PythonStdlibChars, TinyShakespeare, WikiText2
from lightning_rnn.data.text import TextDataModule
from lightning_rnn.data.vocabulary import Vocabulary

__all__ = [
    "CharPairDataModule",
    "GeneratedPairDataModule",
    "PairsFileDataModule",
    "PennTreebank",
    "PythonStdlibChars",
    "StreamWindows",
    "TextDataModule",
    "TinyShakespeare",
    "Vocabulary",
    "WikiText2",
    "batchify",
]
