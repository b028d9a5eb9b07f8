"""The kernel benchmark harness (`python -m lightning_rnn.bench`, `lightning-rnn bench`): cli, timing,
providers, report, plot. It sits above both `kernels` and `lightning_rnn.nn`, the two things it compares.

Nothing here imports Triton at import time: the CPU-only path must work without a GPU, and
`kernels.lstm.function` must be imported only after TRITON_INTERPRET has been decided.
"""
