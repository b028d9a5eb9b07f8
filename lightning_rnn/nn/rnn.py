"""Drop-in `LSTM`, `GRU` and `RNN`: torch.nn's modules with a `backend` argument.

They subclass their torch.nn twins, so constructor arguments, parameter names and shapes
(`weight_ih_l0`, `bias_hh_l1_reverse`, `weight_hr_l0`, ...), `forward`'s signature and return
values, and state_dicts are the same both ways; `isinstance(m, torch.nn.LSTM)` holds. What
changes is which implementation runs (see `lightning_rnn.nn.backend`); `last_backend` says which
one served the latest call.

Variable-length batches: a PackedSequence runs on our kernels too (unpacked on the device into a
padded batch plus per-row lengths, packed back with the input's own batch_sizes and indices).
Our addition to torch.nn's signature: `forward(x, hx=None, lengths=None)` takes a padded tensor and
the lengths of its rows (a 1-D integer tensor or list, each in 1..L), and returns what the packed
call would give, padded: zeros past each row's length, h_n/c_n each row's state at its last step.
"""
from __future__ import annotations

import functools
from typing import Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from . import autotune
from .backend import Backend, BackendChoice, compute_dtype, cpu_autocast_dtype, run_fused_in_fp32
from .regularize import RegularizedRNNMixin
from .functional import (
    LayerFn,
    PairFn,
    State,
    gru_cell,
    lstm_layer_loop,
    rnn_cell,
    single_state_layer_loop,
    stacked_rnn,
)
from .packing import chunked_torch_layer, pack_like, padded_from_packed, torch_forward_with_lengths
from .validation import check_lengths, check_matches_parameters, check_sequence_input, check_state


def _triton_lstm_layer(x: Tensor, state: State, weights: Sequence[Tensor | None],
                       lengths: Tensor | None = None) -> tuple[Tensor, State]:
    from kernels.lstm.op import lstm_layer  # imports triton: only when it is going to run

    y, h, c = lstm_layer(x, state[0], state[1], *weights, lengths=lengths)
    return y, (h, c)


def _triton_gru_layer(x: Tensor, state: State, weights: Sequence[Tensor | None],
                      lengths: Tensor | None = None) -> tuple[Tensor, State]:
    from kernels.gru.function import gru_layer  # imports triton: only when it is going to run

    y, h = gru_layer(x, state[0], *weights, lengths=lengths)
    return y, (h,)


def _triton_rnn_layer(x: Tensor, state: State, weights: Sequence[Tensor | None],
                      lengths: Tensor | None = None, nonlinearity: str = "tanh") -> tuple[Tensor, State]:
    from kernels.rnn.function import rnn_layer  # imports triton: only when it is going to run

    y, h = rnn_layer(x, state[0], *weights, nonlinearity=nonlinearity, lengths=lengths)
    return y, (h,)


def _triton_bidirectional(cell_name: str, x: Tensor, x_reversed: Tensor, states: Sequence[State],
                          weights: Sequence[Sequence[Tensor | None]], lengths: Tensor | None = None):
    from kernels.bidirectional import bidirectional_layer  # imports triton: only when it is going to run

    return bidirectional_layer(cell_name, x, x_reversed, states, weights, lengths)


class _DropInRNNMixin(RegularizedRNNMixin, BackendChoice):
    """What LSTM, GRU and RNN share: checks, backend choice, the stacked loop for non-torch paths."""

    # Provided by torch.nn.RNNBase:
    input_size: int
    hidden_size: int
    num_layers: int
    bidirectional: bool
    batch_first: bool
    dropout: float
    training: bool
    weight_ih_l0: Tensor

    @property
    def _num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _state_sizes(self) -> list[tuple[str, int]]:
        """(name, feature size) of each state tensor, e.g. [("h_0", R), ("c_0", H)] for LSTM."""
        return [("hx", self.hidden_size)]

    def _layer_weights(self) -> list[list[Tensor | None]]:
        names = ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
        weights = []
        for layer in range(self.num_layers):
            for suffix in ["", "_reverse"][: self._num_directions]:
                weights.append([getattr(self, f"{n}_l{layer}{suffix}", None) for n in names])
        return weights

    def _check_forward(self, input: object, states: Sequence[object] | None) -> bool:
        owner = type(self).__name__
        batched = check_sequence_input(owner, input, self.input_size, self.batch_first)
        assert isinstance(input, Tensor)
        check_matches_parameters(owner, input, self.weight_ih_l0)
        if states is not None:
            lead = (self.num_layers * self._num_directions,)
            batch = (input.shape[0 if self.batch_first else 1],) if batched else ()
            for (name, size), s in zip(self._state_sizes(), states):
                check_state(owner, name, s, lead + batch + (size,), input)
        return batched

    def _cell_loop(self) -> LayerFn:
        """Our plain PyTorch layer loop for this module's cell: the fallback where torch.nn cannot run."""
        raise NotImplementedError

    def _run_stacked(self, input: Tensor, states: Sequence[Tensor] | None, batched: bool,
                     layer_fn: LayerFn, lengths: Tensor | None = None,
                     pair_fn: PairFn | None = None) -> tuple[Tensor, State]:
        """Our own layer/direction loop (Triton kernel or PyTorch cell loop per layer)."""
        x = input if batched else input.unsqueeze(1)
        if self.batch_first and batched:
            x = x.transpose(0, 1)
        lead = self.num_layers * self._num_directions
        if states is None:
            states = tuple(x.new_zeros(lead, x.shape[1], size) for _, size in self._state_sizes())
        elif not batched:
            states = tuple(s.unsqueeze(1) for s in states)
        y, final = stacked_rnn(x, tuple(states), self._layer_weights(), layer_fn, self.num_layers,
                               self.bidirectional, float(self.dropout), self.training, lengths, pair_fn)
        if torch.is_autocast_enabled(x.device.type):  # return what torch.nn returns under autocast
            dtype = torch.get_autocast_dtype(x.device.type)
            y, final = y.to(dtype), tuple(s.to(dtype) for s in final)
        if self.batch_first and batched:
            y = y.transpose(0, 1)
        if not batched:
            y, final = y.squeeze(1), tuple(s.squeeze(1) for s in final)
        return y, final

    def _triton_layer(self) -> LayerFn:
        """The Triton layer function of this module's cell."""
        raise NotImplementedError

    def _engine_cell(self) -> str:
        """The engine's name of this module's cell (kernels.persistent.plan.CELLS)."""
        return self._kernel_kind

    def _triton_pair(self) -> PairFn:
        """Both directions of a bidirectional layer in one engine launch (kernels.bidirectional)."""
        return functools.partial(_triton_bidirectional, self._engine_cell())

    def _torch_forward_states(self, input: Tensor | PackedSequence,
                              states: tuple[Tensor, ...] | None) -> tuple[Tensor | PackedSequence, State]:
        """torch.nn's forward, with the states as a tuple both ways."""
        raise NotImplementedError

    def _fused_layer(self):
        """torch's fused one-layer RNN function for this cell (torch.lstm, torch.gru, torch.rnn_tanh/relu)."""
        raise NotImplementedError

    def _chunks_serve(self, input: Tensor) -> bool:
        """Whether torch.nn's side takes a padded batch with lengths= in chunks (packing.chunked_torch_layer)
        rather than packed: on the CPU, where its packed RNN is the slower, outside autocast, without a
        projection. (On a GPU cuDNN's packed RNN is fast, and the chunks would need the lengths on the host.)"""
        return input.device.type == "cpu" and cpu_autocast_dtype(input) is None and not getattr(self, "proj_size", 0)

    def _faster_backend(self, input: Tensor, states: tuple[Tensor, ...] | None, batched: bool) -> str:
        """What "auto" takes for this configuration on a GPU (timed once, then looked up)."""
        return self._time_backends(input, states, batched, self._triton_layer(), self._torch_forward_states,
                                   self._autotune_key())

    def _forward_any(self, input: Tensor | PackedSequence, states: tuple[Tensor, ...] | None,
                     lengths: object) -> tuple[Tensor | PackedSequence, State]:
        """What LSTM/GRU/RNN.forward share: a tensor (with or without lengths) or a PackedSequence, on
        the backend chosen for it."""
        owner = type(self).__name__
        packed = input if isinstance(input, PackedSequence) else None
        if packed is not None:
            if lengths is not None:
                raise ValueError(f"{owner}: lengths is for a padded tensor input; a PackedSequence carries its own")
            input, lengths = padded_from_packed(packed, self.batch_first)
        batched = self._check_forward(input, states)
        if lengths is not None and packed is None:
            if not batched:
                raise ValueError(f"{owner}: lengths needs a batched (3-D) input, got shape {tuple(input.shape)}")
            t_dim = 1 if self.batch_first else 0
            lengths = check_lengths(owner, lengths, input.shape[1 - t_dim], input.shape[t_dim], input.device)
        backend = self._choose_backend(input)
        if (backend == "triton" and self.backend == "auto" and lengths is None and not torch.compiler.is_compiling()
                and autotune.autotune_enabled(input.device)):
            backend = self.last_backend = self._faster_backend(input, states, batched)
        torch_forward = self._torch_forward_states
        if backend == "torch":
            if packed is not None:
                return torch_forward(packed, states)
            if lengths is not None and self._chunks_serve(input):
                return self._run_stacked(input, states, batched, chunked_torch_layer(self._fused_layer()), lengths)
            if lengths is not None:
                return torch_forward_with_lengths(torch_forward, input, states, lengths, self.batch_first)
            return torch_forward(input, states)
        layer_fn = self._triton_layer() if backend == "triton" else self._cell_loop()
        pair_fn = self._triton_pair() if backend == "triton" else None
        y, final = self._run_stacked(input, states, batched, layer_fn, lengths, pair_fn)
        return (pack_like(y, packed, self.batch_first) if packed is not None else y), final

    def _autotune_key(self) -> tuple:
        """What besides the shared configuration decides the timing (LSTM: proj_size)."""
        return ()

    def _time_backends(self, input: Tensor, hx: Sequence[Tensor] | None, batched: bool,
                       triton_layer: LayerFn, torch_forward, extra_key: tuple = ()) -> str:
        """Triton or torch.nn, whichever is faster for this configuration (lightning_rnn.nn.autotune).

        The timed runs see detached copies of the input and states (the user's autograd graph
        is not extended), return gradients instead of accumulating them, and run without dropout;
        autotune leaves the random number generators as it found them.
        """
        time_dim = 1 if (batched and self.batch_first) else 0
        batch = input.shape[1 - time_dim] if batched else 1
        needs_input_grad = input.requires_grad
        with_backward = torch.is_grad_enabled() and (needs_input_grad or any(
            p.requires_grad for p in self.parameters()))  # type: ignore[attr-defined]
        key = (type(self).__name__, getattr(self, "nonlinearity", None), *extra_key, self.input_size,
               self.hidden_size, self.num_layers, self.bidirectional, getattr(self, "bias", True), batch,
               autotune.length_bucket(input.shape[time_dim]), str(compute_dtype(input)), with_backward)
        decided = autotune.cached(key, input.device)
        if decided is not None:  # every call after the first for this configuration: a lookup
            return decided
        x = input.detach().requires_grad_(needs_input_grad)
        states = tuple(s.detach() for s in hx) if hx is not None else None
        wrt = [p for p in self.parameters() if p.requires_grad] + ([x] if x.requires_grad else [])  # type: ignore[attr-defined]

        def timed(run):
            def fn() -> None:
                with torch.set_grad_enabled(with_backward):
                    y = run()[0]
                    if with_backward:
                        torch.autograd.grad(y.float().sum(), wrt, allow_unused=True)
            return fn

        # No dropout in the timed runs. (Not through eval mode: cuDNN refuses a backward in eval mode.)
        dropout, self.dropout = self.dropout, 0.0
        try:
            return autotune.choose(key, {
                "triton": timed(lambda: self._run_stacked(x, states, batched, triton_layer, None, self._triton_pair())),
                "torch": timed(lambda: torch_forward(x, states)),
            }, input.device, default="torch")
        finally:
            self.dropout = dropout


class LSTM(_DropInRNNMixin, nn.LSTM):
    """`torch.nn.LSTM` with a Triton kernel on CUDA and an automatic PyTorch fallback.

    Args are those of torch.nn.LSTM, plus `backend`: "auto" (Triton where it can run, else
    PyTorch), "triton" (raise where it cannot run) or "torch"; and the regularisers `weight_drop`,
    `recurrent_dropout`, `zoneout` (p or (p_h, p_c)), 0 by default (lightning_rnn.nn.regularize).

    Shapes (D = 2 if bidirectional else 1, R = proj_size or hidden_size):
        input (L, N, H_in), or (N, L, H_in) with batch_first, or (L, H_in) unbatched;
        hx = (h_0 (D*num_layers, N, R), c_0 (D*num_layers, N, hidden_size)), optional;
        returns output (L, N, D*R) [or (N, L, D*R)], (h_n, c_n) shaped like (h_0, c_0).
    """

    _kernel_kind = "lstm"
    _fp32_fused_under_cpu_autocast = True

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        backend: Backend = "auto",
        weight_drop: float = 0.0,
        recurrent_dropout: float = 0.0,
        zoneout: float | tuple[float, float] = 0.0,
    ) -> None:
        nn.LSTM.__init__(
            self, input_size, hidden_size, num_layers=num_layers, bias=bias, batch_first=batch_first,
            dropout=dropout, bidirectional=bidirectional, proj_size=proj_size, device=device, dtype=dtype,
        )
        self._setup_backend(backend)
        self._setup_regularizers(weight_drop, recurrent_dropout, zoneout)

    def _state_sizes(self) -> list[tuple[str, int]]:
        return [("h_0", self.proj_size or self.hidden_size), ("c_0", self.hidden_size)]

    def _layer_weights(self) -> list[list[Tensor | None]]:
        weights = super()._layer_weights()
        for idx, w in enumerate(weights):
            suffix = "_reverse" if idx % self._num_directions else ""
            w.append(getattr(self, f"weight_hr_l{idx // self._num_directions}{suffix}", None))
        return weights

    def _cell_loop(self) -> LayerFn:
        return lstm_layer_loop

    def forward(  # type: ignore[override]
        self, input: Tensor | PackedSequence, hx: tuple[Tensor, Tensor] | None = None,
        lengths: Tensor | Sequence[int] | None = None,
    ) -> tuple[Tensor | PackedSequence, tuple[Tensor, Tensor]]:
        """torch.nn.LSTM's forward; `lengths` (our addition): per-row lengths of a padded input (see the module doc)."""
        if self._regularizing():  # weight_drop / recurrent_dropout / zoneout (lightning_rnn.nn.regularize)
            self._refuse_lengths(lengths)
            return self._regularized_forward(input, hx, {"triton": _triton_lstm_layer, "reference": self._cell_loop()})
        if hx is not None and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
            raise TypeError("LSTM: hx must be a tuple (h_0, c_0) of two tensors")
        y, (h, c) = self._forward_any(input, tuple(hx) if hx is not None else None, lengths)
        return y, (h, c)

    def _triton_layer(self) -> LayerFn:
        return _triton_lstm_layer

    def _fused_layer(self):
        return torch.lstm

    def _torch_forward_states(self, input, states):
        y, (h, c) = self._torch_forward(input, states)
        return y, (h, c)

    def _torch_forward(self, input: Tensor | PackedSequence, hx: tuple[Tensor, Tensor] | None):
        """torch.nn.LSTM's own forward; on the CPU under autocast, in fp32 (see run_fused_in_fp32)."""
        data = input.data if isinstance(input, PackedSequence) else input
        dtype = cpu_autocast_dtype(data)
        if dtype is None:
            return nn.LSTM.forward(self, input, hx)
        return run_fused_in_fp32(functools.partial(nn.LSTM.forward, self), input, hx, self.weight_ih_l0.dtype, dtype)

    def _autotune_key(self) -> tuple:
        return (self.proj_size,)


class _SingleStateRNN(_DropInRNNMixin):
    """GRU and RNN: one state tensor hx; the Triton kernel of kernels/gru or kernels/rnn."""

    def forward(  # type: ignore[override]
        self, input: Tensor | PackedSequence, hx: Tensor | None = None,
        lengths: Tensor | Sequence[int] | None = None,
    ) -> tuple[Tensor | PackedSequence, Tensor]:
        """torch.nn's forward; `lengths` (our addition): per-row lengths of a padded input (see the module doc)."""
        if self._regularizing():  # weight_drop / recurrent_dropout / zoneout (lightning_rnn.nn.regularize)
            self._refuse_lengths(lengths)
            return self._regularized_forward(input, hx, {"triton": self._triton_layer(), "reference": self._cell_loop()})
        y, (h,) = self._forward_any(input, (hx,) if hx is not None else None, lengths)
        return y, h

    def _torch_forward_states(self, input, states):
        y, h = super().forward(input, states[0] if states is not None else None)  # torch.nn.GRU / RNN's
        return y, (h,)


class GRU(_SingleStateRNN, nn.GRU):
    """`torch.nn.GRU` with a Triton kernel (kernels/gru) on CUDA and an automatic PyTorch fallback.

    Args are those of torch.nn.GRU, plus `backend` ("auto", "triton", "torch"; see LSTM) and
    `weight_drop`, `recurrent_dropout`, `zoneout` (see LSTM; zoneout one number).
    Shapes: input (L, N, H_in) [(N, L, H_in) with batch_first, (L, H_in) unbatched];
    hx (D*num_layers, N, hidden_size), optional; returns (output (L, N, D*hidden_size), h_n).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        backend: Backend = "auto",
        weight_drop: float = 0.0,
        recurrent_dropout: float = 0.0,
        zoneout: float | tuple[float, float] = 0.0,
    ) -> None:
        nn.GRU.__init__(
            self, input_size, hidden_size, num_layers=num_layers, bias=bias, batch_first=batch_first,
            dropout=dropout, bidirectional=bidirectional, device=device, dtype=dtype,
        )
        self._setup_backend(backend)
        self._setup_regularizers(weight_drop, recurrent_dropout, zoneout)

    _kernel_kind = "gru"

    def _cell_loop(self) -> LayerFn:
        return single_state_layer_loop(gru_cell)

    def _triton_layer(self) -> LayerFn:
        return _triton_gru_layer

    def _fused_layer(self):
        return torch.gru



class RNN(_SingleStateRNN, nn.RNN):
    """`torch.nn.RNN` (Elman, tanh or relu) with a Triton kernel (kernels/rnn) on CUDA and an
    automatic PyTorch fallback; `backend` and the regularisers as for GRU. Shapes as for GRU."""

    _kernel_kind = "rnn"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        backend: Backend = "auto",
        weight_drop: float = 0.0,
        recurrent_dropout: float = 0.0,
        zoneout: float | tuple[float, float] = 0.0,
    ) -> None:
        nn.RNN.__init__(
            self, input_size, hidden_size, num_layers=num_layers, nonlinearity=nonlinearity, bias=bias,
            batch_first=batch_first, dropout=dropout, bidirectional=bidirectional, device=device, dtype=dtype,
        )
        self._setup_backend(backend)
        self._setup_regularizers(weight_drop, recurrent_dropout, zoneout)

    def _cell_loop(self) -> LayerFn:
        return single_state_layer_loop(functools.partial(rnn_cell, nonlinearity=self.nonlinearity))

    def _triton_layer(self) -> LayerFn:
        return functools.partial(_triton_rnn_layer, nonlinearity=self.nonlinearity)

    def _engine_cell(self) -> str:
        return f"rnn_{self.nonlinearity}"

    def _fused_layer(self):
        return torch.rnn_tanh if self.nonlinearity == "tanh" else torch.rnn_relu
