"""Drop-in `LSTMCell`, `GRUCell`, `RNNCell`: one time step, torch.nn's interface and state_dicts.

Each can run its Triton kernel (kernels/lstm, kernels/gru, kernels/rnn) on a one-step sequence;
with backend="auto" on a GPU, LSTMCell takes it only where it was timed faster than torch.nn. On the
CPU under autocast LSTMCell runs torch.nn's cell in fp32 on up-cast inputs, the other two our cell math.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import Tensor, nn

from . import autotune
from .backend import Backend, BackendChoice, compute_dtype, cpu_autocast_dtype, run_fused_in_fp32
from .functional import gru_cell, lstm_cell, rnn_cell
from .validation import check_float_tensor, check_matches_parameters, check_state


class _DropInCellMixin(BackendChoice):
    input_size: int
    hidden_size: int
    weight_ih: Tensor
    def _check_forward(self, input: object, states: tuple[object, ...] | None, names: tuple[str, ...]) -> bool:
        """Check input (N, H_in) or (H_in,) and states (N, H) or (H,); return whether batched."""
        owner = type(self).__name__
        x = check_float_tensor("input", owner, input)
        if x.dim() not in (1, 2):
            raise ValueError(f"{owner}: input must be 2-D (N, H_in) or 1-D (H_in,), got shape {tuple(x.shape)}")
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"{owner}: input.shape[-1] must equal input_size={self.input_size}, got shape {tuple(x.shape)}"
            )
        if x.dim() == 2 and x.shape[0] == 0:
            raise ValueError(f"{owner}: input has batch size 0 (shape {tuple(x.shape)}); N must be >= 1")
        check_matches_parameters(owner, x, self.weight_ih)
        if states is not None:
            shape = (x.shape[0], self.hidden_size) if x.dim() == 2 else (self.hidden_size,)
            for name, s in zip(names, states):
                check_state(owner, name, s, shape, x)
        return x.dim() == 2

    def _weights(self) -> tuple[Tensor | None, ...]:
        return (self.weight_ih, getattr(self, "weight_hh"), getattr(self, "bias_ih", None),
                getattr(self, "bias_hh", None))


def _autocast_output(t: Tensor) -> Tensor:
    if torch.is_autocast_enabled(t.device.type):
        return t.to(torch.get_autocast_dtype(t.device.type))
    return t


def _one_step(layer: Callable[..., tuple[Tensor, Tensor]], x: Tensor, h: Tensor,
              weights: tuple[Tensor | None, ...]) -> Tensor:
    """h' of a single-state cell (GRU, Elman) from its Triton layer run on a one-step sequence.
    x (N, H_in) or (H_in,), h like the result."""
    batched = x.dim() == 2
    x, h = (x, h) if batched else (x.unsqueeze(0), h.unsqueeze(0))
    _, h_new = layer(x.unsqueeze(0), h, *weights)
    h_new = _autocast_output(h_new)
    return h_new if batched else h_new.squeeze(0)


class LSTMCell(_DropInCellMixin, nn.LSTMCell):
    """`torch.nn.LSTMCell` with a `backend` argument.

    Shapes: input (N, H_in) or (H_in,); hx = (h (N, H), c (N, H)), optional; returns (h', c').
    """

    _kernel_kind = "lstm"
    _fp32_fused_under_cpu_autocast = True

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                 backend: Backend = "auto") -> None:
        nn.LSTMCell.__init__(self, input_size, hidden_size, bias=bias, device=device, dtype=dtype)
        self._setup_backend(backend)

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        if hx is not None and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
            raise TypeError("LSTMCell: hx must be a tuple (h, c) of two tensors")
        batched = self._check_forward(input, hx, ("hx[0] (h)", "hx[1] (c)"))
        backend = self._choose_backend(input)
        if (backend == "triton" and self.backend == "auto" and not torch.compiler.is_compiling()
                and autotune.autotune_enabled(input.device)):
            backend = self.last_backend = self._faster_backend(input, hx)
        if backend == "torch":
            return self._torch_forward(input, hx)
        x = input if batched else input.unsqueeze(0)
        if hx is None:
            h = c = x.new_zeros(x.shape[0], self.hidden_size)
        else:
            h, c = (hx[0], hx[1]) if batched else (hx[0].unsqueeze(0), hx[1].unsqueeze(0))
        if backend == "triton":
            _, h, c = self._triton_step(x, h, c)
        else:
            h, c = lstm_cell(x, h, c, *self._weights())
        h, c = _autocast_output(h), _autocast_output(c)
        return (h, c) if batched else (h.squeeze(0), c.squeeze(0))

    def _triton_step(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        from kernels.lstm.op import lstm_layer

        return lstm_layer(x.unsqueeze(0), h, c, *self._weights())

    def _torch_forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor]:
        """torch.nn.LSTMCell's forward; on the CPU under autocast, in fp32 (see run_fused_in_fp32)."""
        dtype = cpu_autocast_dtype(input)
        if dtype is None:
            return nn.LSTMCell.forward(self, input, hx)
        return run_fused_in_fp32(functools.partial(nn.LSTMCell.forward, self), input, hx, self.weight_ih.dtype, dtype)

    def _faster_backend(self, input: Tensor, hx: tuple[Tensor, Tensor] | None) -> str:
        """Triton or torch.nn for this step's configuration, timed once (lightning_rnn.nn.autotune):
        a one-step Triton launch sequence is not always cheaper than cuDNN's two or three kernels."""
        x = input.detach().requires_grad_(input.requires_grad)
        x2 = x if x.dim() == 2 else x.unsqueeze(0)
        states = tuple(s.detach() for s in hx) if hx is not None else None
        h, c = (states[0], states[1]) if states is not None else (x2.new_zeros(x2.shape[0], self.hidden_size),) * 2
        h, c = (h, c) if h.dim() == 2 else (h.unsqueeze(0), c.unsqueeze(0))
        wrt = [p for p in self.parameters() if p.requires_grad] + ([x] if x.requires_grad else [])
        with_backward = torch.is_grad_enabled() and bool(wrt)
        key = ("LSTMCell", self.input_size, self.hidden_size, self.bias, x2.shape[0], str(compute_dtype(input)),
               with_backward)

        def timed(run):
            def fn() -> None:
                with torch.set_grad_enabled(with_backward):
                    out = run()[0]
                    if with_backward:
                        torch.autograd.grad(out.float().sum(), wrt, allow_unused=True)
            return fn

        return autotune.choose(key, {
            "triton": timed(lambda: self._triton_step(x2, h, c)[1:]),
            "torch": timed(lambda: nn.LSTMCell.forward(self, x, states)),
        }, input.device, default="torch")


class GRUCell(_DropInCellMixin, nn.GRUCell):
    """`torch.nn.GRUCell` with a `backend` argument.

    Shapes: input (N, H_in) or (H_in,); hx (N, H) or (H,), optional; returns h' like hx.
    """

    _kernel_kind = "gru"

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                 backend: Backend = "auto") -> None:
        nn.GRUCell.__init__(self, input_size, hidden_size, bias=bias, device=device, dtype=dtype)
        self._setup_backend(backend)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:  # type: ignore[override]
        self._check_forward(input, None if hx is None else (hx,), ("hx",))
        backend = self._choose_backend(input)
        if backend == "torch":
            return nn.GRUCell.forward(self, input, hx)
        h = hx if hx is not None else input.new_zeros(input.shape[:-1] + (self.hidden_size,))
        if backend == "triton":
            from kernels.gru.function import gru_layer

            return _one_step(gru_layer, input, h, self._weights())
        return _autocast_output(gru_cell(input, h, *self._weights()))


class RNNCell(_DropInCellMixin, nn.RNNCell):
    """`torch.nn.RNNCell` (tanh or relu) with a `backend` argument.

    Shapes: input (N, H_in) or (H_in,); hx (N, H) or (H,), optional; returns h' like hx.
    """

    _kernel_kind = "rnn"

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh",
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                 backend: Backend = "auto") -> None:
        nn.RNNCell.__init__(self, input_size, hidden_size, bias=bias, nonlinearity=nonlinearity,
                            device=device, dtype=dtype)
        self._setup_backend(backend)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:  # type: ignore[override]
        self._check_forward(input, None if hx is None else (hx,), ("hx",))
        backend = self._choose_backend(input)
        if backend == "torch":
            return nn.RNNCell.forward(self, input, hx)
        h = hx if hx is not None else input.new_zeros(input.shape[:-1] + (self.hidden_size,))
        if backend == "triton":
            from kernels.rnn.function import rnn_layer

            return _one_step(functools.partial(rnn_layer, nonlinearity=self.nonlinearity), input, h, self._weights())
        return _autocast_output(rnn_cell(input, h, *self._weights(), nonlinearity=self.nonlinearity))
