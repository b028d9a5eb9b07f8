"""Moved to `lightning_rnn.seq2seq.data`; this name stays for configs saved before (their class_path)."""

from lightning_rnn.seq2seq.data import CharPairDataModule, GeneratedPairDataModule, PairsFileDataModule

__all__ = ["CharPairDataModule", "GeneratedPairDataModule", "PairsFileDataModule"]
