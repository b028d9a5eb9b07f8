"""Sequence-to-sequence models: encoder-decoder with reverse/peeky/attention, greedy and beam decoding.

    from lightning_rnn.seq2seq import Seq2Seq, CharPairDataModule

Data: `data.py` (the DataModules) on `pairs.py` (reading pairs, padding them into id tensors).
"""

from lightning_rnn.seq2seq.attention import Attention
from lightning_rnn.seq2seq.data import CharPairDataModule, GeneratedPairDataModule, PairsFileDataModule
from lightning_rnn.seq2seq.decoding import beam_search, greedy_decode
from lightning_rnn.seq2seq.module import Seq2Seq
from lightning_rnn.seq2seq.network import Seq2SeqNet

__all__ = ["Attention", "CharPairDataModule", "GeneratedPairDataModule", "PairsFileDataModule", "Seq2Seq",
           "Seq2SeqNet", "beam_search", "greedy_decode"]
