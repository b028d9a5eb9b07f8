"""Run a ``LanguageModel`` over a text one step at a time and keep every layer's inside.

The fused layers (cuDNN, oneDNN, our Triton kernel) return only each layer's output, so
this replays the recurrence in plain PyTorch on the model's own weights, with torch.nn's
equations (the ones ``kernels.lstm.reference`` and ``lightning_rnn.nn.functional`` follow),
and keeps, per layer and step:

- LSTM: ``h`` (the output, after ``proj_size`` if any), ``c`` (the cell state) and the
  gates ``i``, ``f``, ``o`` (sigmoids) and ``g`` (tanh);
- GRU: ``h`` and the gates ``r``, ``z`` (sigmoids) and ``n`` (tanh);
- RNN: ``h``.

``tests/test_visualize.py`` checks the replayed ``h`` against the model's own layers.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_rnn.data.vocabulary import Level, tokenize
from lightning_rnn.lm import LanguageModel

#: Which captured signals are gates (values in [0, 1]) for each cell type.
SIGMOID_GATES = {"lstm": ("i", "f", "o"), "gru": ("r", "z"), "rnn": ()}


@dataclass
class Activations:
    """What the model computed over ``tokens``.

    ``layers[l][name]`` is a float tensor ``(T, units)`` for signal ``name`` of layer ``l``
    (``"h"``, ``"c"``, gate names; see the module docstring). ``T = len(tokens)``.
    """

    tokens: list[str]
    level: Level
    cell: str
    layers: list[dict[str, Tensor]]


def _layer_weights(rnn: torch.nn.Module, layer: int) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    return tuple(getattr(rnn, f"{name}_l{layer}", None) for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))


def _lstm_layer(x: Tensor, rnn: torch.nn.Module, layer: int) -> dict[str, Tensor]:
    w_ih, w_hh, b_ih, b_hh = _layer_weights(rnn, layer)
    w_hr = getattr(rnn, f"weight_hr_l{layer}", None)
    hidden = rnn.hidden_size
    h = x.new_zeros(w_hh.shape[1])
    c = x.new_zeros(hidden)
    steps: dict[str, list[Tensor]] = {k: [] for k in ("h", "c", "i", "f", "g", "o")}
    x_proj = F.linear(x, w_ih, b_ih)  # (T, 4H), all steps at once
    for t in range(x.shape[0]):
        pre_i, pre_f, pre_g, pre_o = (x_proj[t] + F.linear(h, w_hh, b_hh)).chunk(4)
        i, f, g, o = torch.sigmoid(pre_i), torch.sigmoid(pre_f), torch.tanh(pre_g), torch.sigmoid(pre_o)
        c = f * c + i * g
        h = o * torch.tanh(c)
        if w_hr is not None:
            h = F.linear(h, w_hr)
        for name, value in (("h", h), ("c", c), ("i", i), ("f", f), ("g", g), ("o", o)):
            steps[name].append(value)
    return {name: torch.stack(values) for name, values in steps.items()}


def _gru_layer(x: Tensor, rnn: torch.nn.Module, layer: int) -> dict[str, Tensor]:
    w_ih, w_hh, b_ih, b_hh = _layer_weights(rnn, layer)
    h = x.new_zeros(rnn.hidden_size)
    steps: dict[str, list[Tensor]] = {k: [] for k in ("h", "r", "z", "n")}
    x_proj = F.linear(x, w_ih, b_ih)
    for t in range(x.shape[0]):
        i_r, i_z, i_n = x_proj[t].chunk(3)
        h_r, h_z, h_n = F.linear(h, w_hh, b_hh).chunk(3)
        r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        h = (1 - z) * n + z * h
        for name, value in (("h", h), ("r", r), ("z", z), ("n", n)):
            steps[name].append(value)
    return {name: torch.stack(values) for name, values in steps.items()}


def _rnn_layer(x: Tensor, rnn: torch.nn.Module, layer: int) -> dict[str, Tensor]:
    w_ih, w_hh, b_ih, b_hh = _layer_weights(rnn, layer)
    act = torch.tanh if rnn.nonlinearity == "tanh" else torch.relu
    h = x.new_zeros(rnn.hidden_size)
    x_proj = F.linear(x, w_ih, b_ih)
    outputs = []
    for t in range(x.shape[0]):
        h = act(x_proj[t] + F.linear(h, w_hh, b_hh))
        outputs.append(h)
    return {"h": torch.stack(outputs)}


@torch.no_grad()
def capture(model: LanguageModel, text: str, max_tokens: int | None = None) -> Activations:
    """Activations of every layer of ``model`` over ``text`` (at most ``max_tokens`` tokens),
    starting from a zero state. Tokens outside the vocabulary are read as ``<unk>``."""
    if model.vocab is None:
        raise ValueError("the model has no vocabulary: load it from a checkpoint written by lightning-rnn")
    if getattr(model, "rnn", None) is None:
        raise ValueError("visualize does not support a model with one module per layer (locked_dropout or "
                         "tie_last_layer, e.g. the AWD recipes) yet")
    level = model.vocab.level
    tokens = tokenize(text, level)[:max_tokens]
    if not tokens:
        raise ValueError("the text to visualize is empty")
    ids = torch.tensor([model.vocab.stoi.get(t, model.vocab.unk_id) for t in tokens], device=model.device)
    cell = model.hparams.cell
    run_layer = {"lstm": _lstm_layer, "gru": _gru_layer, "rnn": _rnn_layer}[cell]
    x = model.embedding(ids).float()  # eval: no dropout anywhere, so layers feed each other directly
    rnn = _FloatView(model.rnn)
    layers = []
    for layer in range(model.rnn.num_layers):
        signals = run_layer(x, rnn, layer)
        layers.append({name: value.cpu() for name, value in signals.items()})
        x = signals["h"]
    return Activations(tokens, level, cell, layers)


class _FloatView:
    """The attributes of an RNN module that the layer functions read, in float32
    (a checkpoint trained in bf16/fp16 is replayed in fp32)."""

    def __init__(self, rnn: torch.nn.Module) -> None:
        self.__dict__.update({name: p.float() for name, p in rnn.named_parameters()})
        self.hidden_size = rnn.hidden_size
        self.nonlinearity = getattr(rnn, "nonlinearity", "tanh")

    def __getattr__(self, name: str) -> None:  # weights absent from the module (no bias, no proj)
        return None
