"""Look inside a recurrent language model (``lightning-rnn visualize``).

After Karpathy, Johnson and Fei-Fei (2015), "Visualizing and Understanding Recurrent
Networks": replay the model over a text keeping every hidden state, cell state and gate
(``activations``), correlate units with features of the text (``features``, ``search``),
and draw them (``heatmap``, ``page``, ``saturation``). ``command.main`` is the CLI.
"""
from lightning_rnn.visualize.activations import Activations, capture
from lightning_rnn.visualize.command import main
from lightning_rnn.visualize.features import token_features
from lightning_rnn.visualize.saturation import gate_saturation
from lightning_rnn.visualize.search import Match, Unit, best_units

__all__ = ["Activations", "Match", "Unit", "best_units", "capture", "gate_saturation", "main", "token_features"]
