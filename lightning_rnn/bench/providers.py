"""What is benchmarked: one LSTM, GRU or Elman RNN computation (a point), four implementations
(providers).

Every provider at a point gets the same weights, initial state, input and upstream gradient
(a `Workload`), so the harness times the same computation four ways; tests check that their
forward outputs agree with torch.nn's (LSTM, GRU, RNN).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}
#: The recurrent cells: torch.nn's layer and cell class names (the Elman RNN is tanh).
CELLS: dict[str, tuple[str, str]] = {"lstm": ("LSTM", "LSTMCell"), "gru": ("GRU", "GRUCell"), "rnn": ("RNN", "RNNCell")}


def canonical_dtype(name: str) -> str:
    """'bf16' -> 'bfloat16' etc.; raises ValueError on an unknown name."""
    name = DTYPE_ALIASES.get(name.lower(), name.lower())
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; use one of {sorted(DTYPES) + sorted(DTYPE_ALIASES)}")
    return name


@dataclass(frozen=True)
class Point:
    """One benchmark configuration (time-major input of shape (seq_len, batch, input_size))."""

    batch: int
    hidden: int
    seq_len: int
    layers: int
    dtype: str
    input_size: int
    cell: str = "lstm"  # a key of CELLS

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class Workload:
    """The tensors every provider shares at one point."""

    point: Point
    device: torch.device
    module: nn.RNNBase  # torch.nn.LSTM, GRU or RNN; holds the weights, in the point's dtype
    x: Tensor  # (T, B, I)
    h0: Tensor  # (L, B, H)
    c0: Tensor | None  # (L, B, H) for the LSTM, else None
    dy: Tensor  # upstream gradient of the output, (T, B, H)

    @property
    def states(self) -> tuple[Tensor, ...]:
        """(h0, c0) for the LSTM, (h0,) otherwise."""
        return (self.h0,) if self.c0 is None else (self.h0, self.c0)

    @property
    def hx(self) -> Tensor | tuple[Tensor, Tensor]:
        """The initial state as torch.nn's forward takes it."""
        return self.h0 if self.c0 is None else (self.h0, self.c0)


def make_workload(point: Point, device: torch.device, seed: int = 0) -> Workload:
    """Random (not zero) input, state and upstream gradient; torch.nn's default weight init."""
    torch.manual_seed(seed)  # same weights and inputs for every provider and every rerun
    dtype = DTYPES[point.dtype]
    T, B, I, H, L = point.seq_len, point.batch, point.input_size, point.hidden, point.layers
    module = getattr(nn, CELLS[point.cell][0])(I, H, L).to(device=device, dtype=dtype)

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, device=device, dtype=dtype)

    x, h0 = randn(T, B, I), randn(L, B, H)
    c0 = randn(L, B, H) if point.cell == "lstm" else None
    return Workload(point, device, module, x, h0, c0, randn(T, B, H))


#: A built provider: forward(x) -> y (T, B, H), and the parameters whose grads it accumulates.
Built = tuple[Callable[[Tensor], Tensor], list[Tensor]]


def _drop_in(w: Workload, backend: str) -> nn.Module:
    import lightning_rnn.nn

    p = w.point
    layer_class = getattr(lightning_rnn.nn, CELLS[p.cell][0])
    m = layer_class(p.input_size, p.hidden, p.layers, backend=backend, device=w.device, dtype=DTYPES[p.dtype])
    m.load_state_dict(w.module.state_dict())
    return m


def build_triton(w: Workload) -> Built:
    m = _drop_in(w, "triton")

    def forward(x: Tensor) -> Tensor:
        y, _ = m(x, w.hx)
        if m.last_backend != "triton":  # never time something else under this provider's name
            raise RuntimeError(f"expected the Triton kernel, got backend {m.last_backend!r}")
        return y

    forward.module = m  # type: ignore[attr-defined]  # the runner reads m.last_backend for `impl`
    return forward, list(m.parameters())


def build_fallback(w: Workload) -> Built:
    m = _drop_in(w, "torch")
    cell_loop = m._cell_loop()

    def forward(x: Tensor) -> Tensor:
        return m._run_stacked(x, w.states, True, cell_loop)[0]

    return forward, list(m.parameters())


def build_torch(w: Workload) -> Built:
    m = w.module

    def forward(x: Tensor) -> Tensor:
        return m(x, w.hx)[0]

    return forward, list(m.parameters())


def build_naive(w: Workload) -> Built:
    """nn.LSTMCell (GRUCell, RNNCell) per layer, Python loop over time steps: the textbook baseline."""
    p, src = w.point, w.module
    cell_class = getattr(nn, CELLS[p.cell][1])
    cells = nn.ModuleList()
    for layer in range(p.layers):
        cell = cell_class(p.input_size if layer == 0 else p.hidden, p.hidden, device=w.device,
                          dtype=DTYPES[p.dtype])
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).data.copy_(getattr(src, f"{name}_l{layer}"))
        cells.append(cell)

    def forward(x: Tensor) -> Tensor:
        for layer, cell in enumerate(cells):
            state = tuple(s[layer] for s in w.states)
            outs = []
            for x_t in x.unbind(0):
                state = cell(x_t, state if len(state) == 2 else state[0])
                state = state if isinstance(state, tuple) else (state,)
                outs.append(state[0])
            x = torch.stack(outs, 0)
        return x

    return forward, list(cells.parameters())


def build_autocast(w: Workload) -> Built:
    """Ours, fp32 weights, called under bf16 autocast on the point's device: on the CPU, where
    torch.nn's fused RNN cannot run bf16, the LSTM runs it in fp32 on up-cast inputs (see
    lightning_rnn.nn.backend.run_fused_in_fp32). Timed against torch.nn in plain fp32."""
    m = _drop_in(w, "auto")

    def forward(x: Tensor) -> Tensor:
        with torch.autocast(w.device.type, dtype=torch.bfloat16):
            y, _ = m(x, w.hx)
        return y

    forward.module = m  # type: ignore[attr-defined]  # the runner reads m.last_backend (auto's choice)
    return forward, list(m.parameters())


@dataclass(frozen=True)
class Provider:
    name: str
    build: Callable[[Workload], Built]
    description: str

    def label(self, device: torch.device, cell: str = "lstm") -> str:
        layer, cell_class = CELLS[cell]
        if self.name == "triton" and device.type == "cpu":
            return "ours (Triton, interpreter)"
        if self.name == "torch":
            return f"torch.nn.{layer} (cuDNN)" if device.type == "cuda" else f"torch.nn.{layer} (oneDNN)"
        if self.name == "naive":
            return f"naive nn.{cell_class} loop"
        return LABELS[self.name]


LABELS = {"triton": "ours (Triton)", "fallback": "ours (PyTorch fallback)", "autocast": "ours under bf16 autocast"}

PROVIDERS: dict[str, Provider] = {
    p.name: p
    for p in (
        Provider("triton", build_triton, "lightning_rnn.nn.LSTM/GRU/RNN(backend='triton'): the Triton kernels"),
        Provider("fallback", build_fallback, "lightning_rnn.nn's PyTorch cell loop (kernels/<cell>/reference.py)"),
        Provider("torch", build_torch, "torch.nn.LSTM/GRU/RNN: cuDNN on CUDA, oneDNN (or ATen) on the CPU"),
        Provider("naive", build_naive, "a Python loop over nn.LSTMCell/GRUCell/RNNCell, one cell per layer"),
        Provider("autocast", build_autocast, "lightning_rnn.nn.LSTM/GRU/RNN (fp32 weights) under torch.autocast bf16"),
    )
}


def provider_skip_reason(name: str, device: torch.device, interpreter: bool) -> str | None:
    """Why a provider cannot (or should not) run at all on this device; None if it can."""
    if name != "triton":
        return None
    if device.type == "cpu" and not interpreter:
        return ("running on the CPU, where Triton runs only in its interpreter: far too slow to be "
                "worth timing (pass --interpreter to time it anyway, labelled 'interpreter')")
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET", "0") != "1":
        return "TRITON_INTERPRET=1 is not set (lightning_rnn.bench sets it with --interpreter before importing triton)"
    return point_skip_reason(name, torch.empty(1, device=device))


def point_skip_reason(name: str, x: Tensor, cell: str = "lstm") -> str | None:
    """Why a provider cannot run on this input (e.g. bf16 in the Triton interpreter); None if it can."""
    if name == "autocast" and x.dtype != torch.float32:
        return "autocast is measured on float32 points (fp32 weights, bf16 autocast)"
    if name != "triton":
        return None
    from lightning_rnn.nn.backend import triton_unavailable_reason

    return triton_unavailable_reason(x, cell)


def torch_rnn_impl(fn: Callable[[], object]) -> str:
    """Which kernel torch.nn.LSTM (GRU, RNN) really ran (cuDNN, oneDNN or ATen's cell loop), from the
    profiler's op names: e.g. bf16 RNNs before cuDNN 9.13 may silently avoid cuDNN."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    names = {e.name for e in prof.events()}
    if any("cudnn_rnn" in n for n in names):
        return "cuDNN"
    if any("mkldnn_rnn" in n for n in names):
        return "oneDNN"
    return "ATen"
