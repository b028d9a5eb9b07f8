"""Sentence classification (many-to-one): a recurrent classifier and a labelled-text DataModule.

    from lightning_rnn.classify import SequenceClassifier, TextClassificationData
"""

from lightning_rnn.classify.data import TextBatch, TextClassificationData, read_examples
from lightning_rnn.classify.encoder import LengthAwareRNN
from lightning_rnn.classify.model import SequenceClassifier, pool

__all__ = [
    "LengthAwareRNN",
    "SequenceClassifier",
    "TextBatch",
    "TextClassificationData",
    "pool",
    "read_examples",
]
