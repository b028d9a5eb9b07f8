"""Drop-in replacements for torch.nn's recurrent layers.

    from lightning_rnn.nn import LSTM      # instead of: from torch.nn import LSTM

Same constructor, parameter names, shapes, forward and state_dicts as torch.nn, plus a
`backend` argument ("auto" | "triton" | "torch"); `module.last_backend` tells which ran, and the
regularisers `weight_drop`, `recurrent_dropout` and `zoneout` (lightning_rnn.nn.regularize).
`LockedDropout` and `EmbeddingDropout` are AWD-LSTM's sequence dropouts (lightning_rnn.nn.dropout).
"""
from . import autotune  # the GPU backend chooser (lightning_rnn.nn.autotune)
from .backend import Backend
from .cells import GRUCell, LSTMCell, RNNCell
from .dropout import EmbeddingDropout, LockedDropout, embedding_dropout, locked_dropout
from .rnn import GRU, LSTM, RNN

__all__ = ["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell", "Backend", "autotune",
           "LockedDropout", "locked_dropout", "EmbeddingDropout", "embedding_dropout"]
