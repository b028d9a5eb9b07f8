"""Data: vocabularies, stream batching and DataModules (the language models'; each task's own live with
the task: lightning_rnn.seq2seq.data, lightning_rnn.classify.data, lightning_rnn.forecast.data)."""

from lightning_rnn.data.batchify import StreamWindows, batchify
from lightning_rnn.data.presets import PennTreebank, PythonStdlibChars, TinyShakespeare, WikiText2
from lightning_rnn.data.text import TextDataModule
from lightning_rnn.data.vocabulary import Vocabulary

__all__ = [
    "PennTreebank",
    "PythonStdlibChars",
    "StreamWindows",
    "TextDataModule",
    "TinyShakespeare",
    "Vocabulary",
    "WikiText2",
    "batchify",
]
