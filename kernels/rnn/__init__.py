"""Fused Elman RNN (tanh/relu): Triton kernels (`function.rnn_layer`) beside their PyTorch reference.

`common` holds the host-side launch helpers shared with kernels/gru. Importing this package does
not import Triton; `kernels.rnn.function` does (set TRITON_INTERPRET=1 before it for the CPU).
"""
from .reference import rnn_cell, rnn_layer_reference

__all__ = ["rnn_cell", "rnn_layer_reference"]
