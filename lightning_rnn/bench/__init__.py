"""The kernel benchmark harness (`python -m lightning_rnn.bench`, `lightning-rnn bench`): cli, timing,
providers, report (its plot.png is drawn by `lightning_rnn.plots`); `variants` times the persistent engine's
design variants against each other and cuDNN (`python -m lightning_rnn.bench.variants`). It sits above
both `kernels` and `lightning_rnn.nn`, the two things it compares.

Nothing here imports Triton at import time: the CPU-only path must work without a GPU, and
`kernels.lstm.function` must be imported only after TRITON_INTERPRET has been decided.
"""
