"""Pieces of the kernel benchmark harness (`kernels.bench`): timing, providers, report, plot.

Nothing here imports Triton at import time: the CPU-only path must work without a GPU, and
`kernels.lstm.function` must be imported only after TRITON_INTERPRET has been decided.
"""
