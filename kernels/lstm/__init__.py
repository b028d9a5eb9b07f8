"""Fused LSTM: Triton kernels (`op.lstm_layer`) beside their PyTorch reference.

Importing this package does not import Triton; `kernels.lstm.function` does. Set
TRITON_INTERPRET=1 before that import to run the kernels on the CPU.
"""
from .reference import lstm_cell, lstm_layer_reference

__all__ = ["lstm_cell", "lstm_layer_reference"]
