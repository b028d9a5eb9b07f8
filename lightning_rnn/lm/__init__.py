"""Recurrent language models: the LightningModule and text generation."""

from lightning_rnn.lm.model import LanguageModel

__all__ = ["LanguageModel"]
