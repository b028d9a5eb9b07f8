"""Drop-in `LSTMCell`, `GRUCell`, `RNNCell`: one time step, torch.nn's interface and state_dicts.

Each can run its Triton kernel (kernels/lstm, kernels/gru, kernels/rnn) on a one-step sequence.
On the CPU under autocast all three use our plain cell math instead of torch.nn's.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import Tensor, nn

from .backend import Backend, BackendChoice
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
        if backend == "torch":
            return nn.LSTMCell.forward(self, input, hx)
        x = input if batched else input.unsqueeze(0)
        if hx is None:
            h = c = x.new_zeros(x.shape[0], self.hidden_size)
        else:
            h, c = (hx[0], hx[1]) if batched else (hx[0].unsqueeze(0), hx[1].unsqueeze(0))
        if backend == "triton":
            from kernels.lstm.function import lstm_layer

            _, h, c = lstm_layer(x.unsqueeze(0), h, c, *self._weights())
        else:
            h, c = lstm_cell(x, h, c, *self._weights())
        h, c = _autocast_output(h), _autocast_output(c)
        return (h, c) if batched else (h.squeeze(0), c.squeeze(0))


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
