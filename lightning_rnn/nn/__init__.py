"""Drop-in replacements for torch.nn's recurrent layers.

    from lightning_rnn.nn import LSTM      # instead of: from torch.nn import LSTM

Same constructor, parameter names, shapes, forward and state_dicts as torch.nn, plus a
`backend` argument ("auto" | "triton" | "torch"); `module.last_backend` tells which ran.
"""
from . import autotune  # the GPU backend chooser (lightning_rnn.nn.autotune)
from .backend import Backend
from .cells import GRUCell, LSTMCell, RNNCell
from .rnn import GRU, LSTM, RNN

__all__ = ["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell", "Backend", "autotune"]
