"""Weight drop, variational recurrent dropout and zoneout for the drop-in LSTM, GRU and RNN.

Three constructor arguments of `lightning_rnn.nn.LSTM`/`GRU`/`RNN`, all 0 by default (then nothing
here runs and the layers behave exactly as before):

- ``weight_drop=p`` (Wan et al. 2013; Merity et al.'s AWD-LSTM): in training, one Bernoulli mask
  per layer and direction over W_hh, drawn once per forward call, kept entries scaled by 1/(1-p).
  The mask is applied on the host to the parameter (``W_hh * mask``) and the masked tensor is given
  to whichever path runs (Triton kernels, torch.nn's fused RNN via ``torch._VF``, our cell loop), so
  it works on every backend, the gradient of a dropped entry is exactly 0 (autograd multiplies by
  the mask's 0), and no parameter is re-registered or ``_flat_weights`` touched.
- ``recurrent_dropout=p`` (Gal and Ghahramani 2016, "variational"): in training, h_{t-1} is
  multiplied by one mask per (batch row, unit), the same for every step of the call, scaled by
  1/(1-p), where it enters the recurrent product ``W_hh h_{t-1}`` (the GRU's update
  ``z * h_{t-1}`` and the LSTM's cell path keep the undropped state).
- ``zoneout=p`` (Krueger et al. 2017), or ``(p_h, p_c)`` for the LSTM: in training, per step and
  unit, h (and c) keep their previous value with probability p; in evaluation they are the
  expectation ``p * prev + (1 - p) * new`` (as haste does). The layer's output at a step is the
  zoned-out h.

The fused kernels (Triton engine and per-step, torch.nn's cuDNN/oneDNN) do not implement recurrent
dropout or zoneout yet: while either is active every backend runs ``regularized_layer``, our plain
PyTorch time loop below (logged once). Its backward is autograd's through the same masks.

Masks come from torch's global generator, drawn in one fixed order before anything runs (W_hh
masks for every layer and direction, then the recurrent-dropout masks, then the zoneout masks), so
a seed reproduces them on every path. Dropout *between* layers (torch.nn's ``dropout``) is drawn by
each path as before; torch.nn's fused RNN draws it its own way.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, _VF
from torch.nn.utils.rnn import PackedSequence

from .backend import cpu_autocast_dtype, run_fused_in_fp32
from .functional import LayerFn, State

logger = logging.getLogger("lightning_rnn")
_logged: set[str] = set()


def check_probability(owner: str, name: str, value: object) -> float:
    """A drop probability in [0, 1); ValueError naming the argument otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{owner}: {name} must be a number in [0, 1), got {value!r}")
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{owner}: {name} must be in [0, 1), got {value!r}")
    return float(value)


def check_zoneout(owner: str, value: object, two_states: bool) -> tuple[float, float]:
    """`zoneout` as (p_h, p_c): a number for both, or a pair (LSTM only)."""
    if isinstance(value, (tuple, list)):
        if not two_states:
            raise ValueError(f"{owner}: zoneout must be one number in [0, 1) (a pair (p_h, p_c) is for the LSTM), "
                             f"got {value!r}")
        if len(value) != 2:
            raise ValueError(f"{owner}: zoneout must be a number or a pair (p_h, p_c), got {value!r}")
        return check_probability(owner, "zoneout[0] (p_h)", value[0]), check_probability(owner, "zoneout[1] (p_c)", value[1])
    p = check_probability(owner, "zoneout", value)
    return p, p


def _log_once(message: str) -> None:
    if message not in _logged:
        _logged.add(message)
        logger.info("lightning_rnn: %s", message)


def dropout_mask(shape: Sequence[int], p: float, like: Tensor) -> Tensor:
    """A Bernoulli(1-p) keep-mask scaled by 1/(1-p), in `like`'s dtype and device (torch's global RNG)."""
    return torch.empty(tuple(shape), dtype=like.dtype, device=like.device).bernoulli_(1.0 - p).div_(1.0 - p)


def keep_mask(shape: Sequence[int], p: float, like: Tensor) -> Tensor:
    """A bool mask, True with probability p (zoneout: where the unit keeps its previous value)."""
    return torch.empty(tuple(shape), dtype=torch.float32, device=like.device).bernoulli_(p).bool()


@dataclass
class LayerMasks:
    """What one layer and direction of one forward call uses (None: that option is off)."""

    w_hh: Tensor | None = None  # (G*H, R), scaled keep-mask of weight_drop
    h: Tensor | None = None  # (B, R), scaled keep-mask of recurrent_dropout
    zone_h: Tensor | None = None  # (T, B, R) bool: h keeps its previous value
    zone_c: Tensor | None = None  # (T, B, H) bool (LSTM)


def zoneout_update(prev: Tensor, new: Tensor, keep: Tensor | None, p: float, training: bool) -> Tensor:
    """Krueger et al.: where `keep`, the previous value, else the new one; in evaluation the expectation."""
    if p == 0.0:
        return new
    if training:
        assert keep is not None
        return torch.where(keep, prev, new)
    return p * prev + (1.0 - p) * new


def regularized_layer(cell: str, x: Tensor, state: State, weights: Sequence[Tensor | None], masks: LayerMasks,
                      zoneout: tuple[float, float], training: bool, nonlinearity: str = "tanh") -> tuple[Tensor, State]:
    """One layer over x (T, B, I) in plain PyTorch, with recurrent dropout and zoneout.

    cell: "lstm", "gru" or "rnn"; weights (w_ih, w_hh, b_ih, b_hh[, w_hr]) with W_hh already
    weight-dropped; state (h,) or (h, c). The input projection runs for all steps at once; the
    recurrence follows torch.nn's equations, with h_{t-1} * masks.h in ``W_hh h_{t-1}``.
    """
    w_ih, w_hh, b_ih, b_hh = weights[:4]
    w_hr = weights[4] if len(weights) > 4 else None
    p_h, p_c = zoneout
    x_proj = F.linear(x, w_ih, b_ih)
    h = state[0]
    c = state[1] if cell == "lstm" else None
    outputs = []
    for t in range(x.shape[0]):
        h_in = h if masks.h is None else h * masks.h
        gh = F.linear(h_in, w_hh, b_hh)
        gx = x_proj[t]
        if cell == "lstm":
            i, f, g, o = (gx + gh).chunk(4, dim=-1)
            c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h_new = torch.sigmoid(o) * torch.tanh(c_new)
            if w_hr is not None:
                h_new = F.linear(h_new, w_hr)
            c = zoneout_update(c, c_new, None if masks.zone_c is None else masks.zone_c[t], p_c, training)
        elif cell == "gru":
            x_r, x_z, x_n = gx.chunk(3, dim=-1)
            h_r, h_z, h_n = gh.chunk(3, dim=-1)
            r = torch.sigmoid(x_r + h_r)
            z = torch.sigmoid(x_z + h_z)
            n = torch.tanh(x_n + r * h_n)
            h_new = (1 - z) * n + z * h
        else:
            pre = gx + gh
            h_new = torch.tanh(pre) if nonlinearity == "tanh" else torch.relu(pre)
        h = zoneout_update(h, h_new, None if masks.zone_h is None else masks.zone_h[t], p_h, training)
        outputs.append(h)
    y = torch.stack(outputs, 0)
    return y, ((h, c) if cell == "lstm" else (h,))


class RegularizedRNNMixin:
    """The three options on the drop-in modules: arguments, checks and the forward that uses them.

    The modules call `_setup_regularizers` in __init__ and, at the top of forward,
    ``if self._regularizing(input): return self._regularized_forward(input, hx)``.
    """

    weight_drop: float
    recurrent_dropout: float
    zoneout: tuple[float, float]

    def _setup_regularizers(self, weight_drop: float, recurrent_dropout: float,
                            zoneout: float | tuple[float, float]) -> None:
        owner = type(self).__name__
        self.weight_drop = check_probability(owner, "weight_drop", weight_drop)
        self.recurrent_dropout = check_probability(owner, "recurrent_dropout", recurrent_dropout)
        self.zoneout = check_zoneout(owner, zoneout, two_states=self._regularized_cell() == "lstm")

    def _regularized_cell(self) -> str:
        return getattr(self, "_kernel_kind", "lstm")

    def _in_loop(self) -> bool:
        """Whether this call needs our time loop (recurrent dropout or zoneout active)."""
        return (self.recurrent_dropout > 0 and self.training) or self.zoneout != (0.0, 0.0)

    def _regularizing(self) -> bool:
        """Whether anything here changes this call (weight drop and recurrent dropout: training only)."""
        return (self.weight_drop > 0 and self.training) or self._in_loop()  # type: ignore[attr-defined]

    def _draw_masks(self, x: Tensor, batch: int, steps: int) -> list[LayerMasks]:
        """Every mask of this call, in the fixed order of the module docstring."""
        weights = self._layer_weights()  # type: ignore[attr-defined]
        masks = [LayerMasks() for _ in weights]
        training = self.training  # type: ignore[attr-defined]
        if self.weight_drop > 0 and training:
            for m, w in zip(masks, weights):
                m.w_hh = dropout_mask(w[1].shape, self.weight_drop, w[1])
        h_size = weights[0][1].shape[1]  # R: W_hh is (G*H, R)
        like = x if x.is_floating_point() else weights[0][1]
        if self.recurrent_dropout > 0 and training:
            for m in masks:
                m.h = dropout_mask((batch, h_size), self.recurrent_dropout, like)
        p_h, p_c = self.zoneout
        if training and (p_h > 0 or p_c > 0):
            for m in masks:
                if p_h > 0:
                    m.zone_h = keep_mask((steps, batch, h_size), p_h, like)
                if p_c > 0 and self._regularized_cell() == "lstm":
                    m.zone_c = keep_mask((steps, batch, self.hidden_size), p_c, like)  # type: ignore[attr-defined]
        return masks

    def _refuse_lengths(self, lengths) -> None:
        """Per-row lengths are not combined with the regularisers yet: say so instead of ignoring them."""
        if lengths is not None:
            raise NotImplementedError(f"{type(self).__name__}: weight_drop, recurrent_dropout and zoneout do not "
                                      "support lengths= yet")

    def _regularized_forward(self, input: Tensor | PackedSequence, hx, layer_fns: dict[str, LayerFn]):
        """forward with the options on; `layer_fns` maps "triton" and "reference" to the module's layer functions."""
        owner = type(self).__name__
        if isinstance(input, PackedSequence):
            raise NotImplementedError(f"{owner}: weight_drop, recurrent_dropout and zoneout do not support "
                                      "PackedSequence input yet")
        if self._regularized_cell() == "lstm" and hx is not None and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
            raise TypeError(f"{owner}: hx must be a tuple (h_0, c_0) of two tensors")
        states = None if hx is None else (tuple(hx) if self._regularized_cell() == "lstm" else (hx,))
        batched = self._check_forward(input, states)  # type: ignore[attr-defined]
        time_dim = 1 if (batched and self.batch_first) else 0  # type: ignore[attr-defined]
        batch = input.shape[1 - time_dim] if batched else 1
        masks = self._draw_masks(input, batch, input.shape[time_dim])
        if self._in_loop():
            _log_once("recurrent_dropout / zoneout run in our PyTorch time loop on every backend "
                      "(the fused kernels do not support them yet)")
            self.last_backend = "reference"  # type: ignore[attr-defined]
            cell, zoneout, training = self._regularized_cell(), self.zoneout, self.training  # type: ignore[attr-defined]
            nonlinearity = getattr(self, "nonlinearity", "tanh")

            def base(x: Tensor, state: State, weights: Sequence[Tensor | None], m: LayerMasks) -> tuple[Tensor, State]:
                return regularized_layer(cell, x, state, weights, m, zoneout, training, nonlinearity)
        else:
            backend = self._choose_backend(input)  # type: ignore[attr-defined]
            if backend == "torch":
                return self._vf_forward(input, hx, masks)
            layer_fn = layer_fns[backend]

            def base(x: Tensor, state: State, weights: Sequence[Tensor | None], m: LayerMasks) -> tuple[Tensor, State]:
                return layer_fn(x, state, weights)

        y, final = self._run_stacked(input, states, batched, _with_masks(base, masks))  # type: ignore[attr-defined]
        return y, (final if self._regularized_cell() == "lstm" else final[0])

    def _vf_forward(self, input: Tensor, hx, masks: list[LayerMasks]):
        """torch.nn's fused RNN (the "torch" backend) on weights with W_hh masked: torch._VF's function
        called the way torch.nn's forward calls it, with the masked tensors in the weight list."""
        names = self._flat_weights_names  # type: ignore[attr-defined]
        per_layer = len(names) // len(masks)
        flat = []
        for idx, name in enumerate(names):
            w = getattr(self, name)
            m = masks[idx // per_layer].w_hh
            flat.append(w * m if (m is not None and name.startswith("weight_hh")) else w)
        dtype = cpu_autocast_dtype(input)
        if dtype is None:
            return self._vf_call(input, hx, flat)
        return run_fused_in_fp32(lambda i, h: self._vf_call(i, h, flat), input, hx, self.weight_ih_l0.dtype, dtype)  # type: ignore[attr-defined]

    def _vf_call(self, input: Tensor, hx, flat: list[Tensor]):
        cell = self._regularized_cell()
        batched = input.dim() == 3
        x = input if batched else input.unsqueeze(1)
        lead = self.num_layers * (2 if self.bidirectional else 1)  # type: ignore[attr-defined]
        batch = x.shape[0 if (self.batch_first and batched) else 1]  # type: ignore[attr-defined]
        args = (self.bias, self.num_layers, float(self.dropout), self.training, self.bidirectional,  # type: ignore[attr-defined]
                self.batch_first if batched else False)  # type: ignore[attr-defined]
        if cell == "lstm":
            if hx is None:
                r = self.proj_size or self.hidden_size  # type: ignore[attr-defined]
                hx = (x.new_zeros(lead, batch, r), x.new_zeros(lead, batch, self.hidden_size))  # type: ignore[attr-defined]
            elif not batched:
                hx = tuple(s.unsqueeze(1) for s in hx)
            y, h, c = _VF.lstm(x, tuple(hx), flat, *args)
            final = (h, c) if batched else (h.squeeze(1), c.squeeze(1))
        else:
            if hx is None:
                hx = x.new_zeros(lead, batch, self.hidden_size)  # type: ignore[attr-defined]
            elif not batched:
                hx = hx.unsqueeze(1)
            if cell == "gru":
                fn = _VF.gru
            else:
                fn = _VF.rnn_tanh if self.nonlinearity == "tanh" else _VF.rnn_relu  # type: ignore[attr-defined]
            y, h = fn(x, hx, flat, *args)
            final = h if batched else h.squeeze(1)
        return (y if batched else y.squeeze(1)), final

    def extra_repr(self) -> str:
        return super().extra_repr() + self._regularizer_repr()  # type: ignore[misc]

    def _regularizer_repr(self) -> str:
        parts = []
        if self.weight_drop:
            parts.append(f"weight_drop={self.weight_drop}")
        if self.recurrent_dropout:
            parts.append(f"recurrent_dropout={self.recurrent_dropout}")
        if self.zoneout != (0.0, 0.0):
            parts.append(f"zoneout={self.zoneout}")
        return "".join(", " + p for p in parts)


def _with_masks(base: Callable[..., tuple[Tensor, State]], masks: list[LayerMasks]) -> LayerFn:
    """A LayerFn for `stacked_rnn`, which calls it once per layer and direction, in order: the
    call's masks are handed out in that order, W_hh multiplied by its weight-drop mask."""
    remaining = iter(masks)

    def run(x: Tensor, state: State, weights: Sequence[Tensor | None]) -> tuple[Tensor, State]:
        m = next(remaining)
        if m.w_hh is not None:
            weights = [weights[0], weights[1] * m.w_hh, *weights[2:]]  # type: ignore[operator]
        return base(x, state, weights, m)

    return run
