"""Fused GRU: Triton kernels (`function.gru_layer`) beside their PyTorch reference.

Importing this package does not import Triton; `kernels.gru.function` does (set
TRITON_INTERPRET=1 before that import to run the kernels on the CPU).
"""
from .reference import gru_cell, gru_layer_reference

__all__ = ["gru_cell", "gru_layer_reference"]
