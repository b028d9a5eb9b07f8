"""The persistent engine: a layer's whole time loop in one launch, shared by the LSTM, GRU and Elman cells.

`engine.py` holds the Triton kernels (one time loop; each cell's math chosen by a constexpr),
`plan.py` the variants and launch plans, `run.py` the host side (choosing a plan or why not,
launching, what `kernels.resources` compiles). Importing this package imports Triton.
"""
from .plan import VARIANTS, Plan, Variant, engine_enabled, use_variant, variant_name

__all__ = ["VARIANTS", "Plan", "Variant", "engine_enabled", "use_variant", "variant_name"]
