"""weight_drop, recurrent_dropout and zoneout on lightning_rnn.nn.LSTM/GRU/RNN (lightning_rnn.nn.regularize).

Each option is judged against a float64 reference written here from its paper's equations, given
the masks the module drew (re-drawn from the same seed through the module's `_draw_masks`, which
is the first thing its forward draws): the output, final state and the gradients of the input,
initial state and every parameter, on the "torch" and "triton" (CPU interpreter) backends, with
the reference computed in float32 as the yardstick (tests/tolerance.py). Eval mode is checked
against the deterministic formula; weight drop's dropped entries against an exact zero gradient.
"""
from __future__ import annotations

import re

import pytest
import torch

from lightning_rnn import nn as lrnn
from lightning_rnn.nn.regularize import LayerMasks
from tests.conftest import requires_triton_interpreter
from tests.tolerance import assert_no_worse_than_torch

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CELLS = {"lstm": (lrnn.LSTM, {}), "lstm-proj": (lrnn.LSTM, {"proj_size": 3}), "gru": (lrnn.GRU, {}),
         "rnn-tanh": (lrnn.RNN, {"nonlinearity": "tanh"}), "rnn-relu": (lrnn.RNN, {"nonlinearity": "relu"})}
BACKENDS = ["torch", pytest.param("triton", marks=requires_triton_interpreter)]
T, B, I, H = 5, 3, 4, 6


# -- the reference: the papers' equations, one layer and direction, float64 -------------------------

def reference_layer(kind: str, x, state, w, masks: LayerMasks, zoneout, training, nonlinearity="tanh"):
    """x (T, B, I); w = (w_ih, w_hh, b_ih, b_hh[, w_hr]) with W_hh unmasked: weight drop is applied
    here (W_hh * mask, Wan et al.), recurrent dropout on h_{t-1} in W_hh h_{t-1} (Gal and Ghahramani),
    zoneout h_t = d h_{t-1} + (1 - d) h~_t, in evaluation p h_{t-1} + (1 - p) h~_t (Krueger et al.)."""
    w_ih, w_hh, b_ih, b_hh = w[:4]
    w_hr = w[4] if len(w) > 4 else None
    if masks.w_hh is not None:
        w_hh = w_hh * masks.w_hh
    p_h, p_c = zoneout
    h, c = state[0], (state[1] if kind == "lstm" else None)

    def zone(prev, new, keep, p):
        if p == 0:
            return new
        if training:
            d = keep.to(new.dtype)
            return d * prev + (1 - d) * new
        return p * prev + (1 - p) * new

    ys = []
    for t in range(x.shape[0]):
        hd = h * masks.h if masks.h is not None else h
        rec = hd @ w_hh.T + (b_hh if b_hh is not None else 0)
        inp = x[t] @ w_ih.T + (b_ih if b_ih is not None else 0)
        if kind == "lstm":
            Hc = c.shape[-1]
            i = torch.sigmoid(inp[:, :Hc] + rec[:, :Hc])
            f = torch.sigmoid(inp[:, Hc:2 * Hc] + rec[:, Hc:2 * Hc])
            g = torch.tanh(inp[:, 2 * Hc:3 * Hc] + rec[:, 2 * Hc:3 * Hc])
            o = torch.sigmoid(inp[:, 3 * Hc:] + rec[:, 3 * Hc:])
            c_new = f * c + i * g
            h_new = o * torch.tanh(c_new)
            if w_hr is not None:
                h_new = h_new @ w_hr.T
            c = zone(c, c_new, None if masks.zone_c is None else masks.zone_c[t], p_c)
        elif kind == "gru":
            Hh = h.shape[-1]
            r = torch.sigmoid(inp[:, :Hh] + rec[:, :Hh])
            z = torch.sigmoid(inp[:, Hh:2 * Hh] + rec[:, Hh:2 * Hh])
            n = torch.tanh(inp[:, 2 * Hh:] + r * rec[:, 2 * Hh:])
            h_new = (1 - z) * n + z * h
        else:
            pre = inp + rec
            h_new = torch.tanh(pre) if nonlinearity == "tanh" else torch.relu(pre)
        h = zone(h, h_new, None if masks.zone_h is None else masks.zone_h[t], p_h)
        ys.append(h)
    return torch.stack(ys), ((h, c) if kind == "lstm" else (h,))


def reference_forward(module, x, hx, masks: list[LayerMasks], dtype):
    """The whole stack (layers, directions; batch_first=False, no inter-layer dropout) in `dtype`."""
    kind = module._regularized_cell()
    D = 2 if module.bidirectional else 1
    states = hx if isinstance(hx, tuple) else (hx,)
    weights = module._layer_weights()
    finals = []
    inp = x.to(dtype)
    for layer in range(module.num_layers):
        outs = []
        for d in range(D):
            idx = layer * D + d
            w = [None if t is None else t.to(dtype) for t in weights[idx]]
            m = masks[idx]
            m = LayerMasks(*(None if t is None else (t if t.dtype == torch.bool else t.to(dtype)) for t in
                             (m.w_hh, m.h, m.zone_h, m.zone_c)))
            seq = inp if d == 0 else inp.flip(0)
            y, fin = reference_layer(kind, seq, tuple(s[idx].to(dtype) for s in states), w, m, module.zoneout,
                                     module.training, getattr(module, "nonlinearity", "tanh"))
            outs.append(y if d == 0 else y.flip(0))
            finals.append(fin)
        inp = torch.cat(outs, -1)
    final = tuple(torch.stack([f[k] for f in finals]) for k in range(len(states)))
    return inp, (final if kind == "lstm" else final[0])


def make(cell, backend, layers=2, bidirectional=True, **options):
    cls, extra = CELLS[cell]
    return cls(I, H, num_layers=layers, bidirectional=bidirectional, backend=backend, **extra, **options)


def inputs(module):
    D = 2 if module.bidirectional else 1
    x = torch.randn(T, B, I)
    R = getattr(module, "proj_size", 0) or H
    h0 = torch.randn(module.num_layers * D, B, R)
    hx = (h0, torch.randn(module.num_layers * D, B, H)) if isinstance(module, torch.nn.LSTM) else h0
    return x, hx


def forward_and_grads(forward, module, x, hx, upstream):
    """Output, final state and the gradients of x, the initial state(s) and every parameter of `module`."""
    x = x.detach().clone().requires_grad_()
    hs = tuple(s.detach().clone().requires_grad_() for s in (hx if isinstance(hx, tuple) else (hx,)))
    y, final = forward(x, hs if len(hs) == 2 else hs[0])
    finals = final if isinstance(final, tuple) else (final,)
    params = [p for _, p in module.named_parameters()]
    grads = torch.autograd.grad([y, *finals], [x, *hs, *params], [upstream[0].to(y.dtype),
                                *(u.to(f.dtype) for u, f in zip(upstream[1:], finals))])
    names = ["input"] + [f"state {k}" for k in range(len(hs))] + [f"grad {n}" for n, _ in module.named_parameters()]
    return {"output": y, **{f"final {k}": f for k, f in enumerate(finals)}, **dict(zip(names, grads))}


def upstream_for(module):
    """Random upstream gradients for the output and the final state(s)."""
    D = 2 if module.bidirectional else 1
    R = getattr(module, "proj_size", 0) or H
    ups = [torch.randn(T, B, D * R), torch.randn(module.num_layers * D, B, R)]
    if isinstance(module, torch.nn.LSTM):
        ups.append(torch.randn(module.num_layers * D, B, H))
    return ups


def check_against_reference(module, seed=0):
    """The module (float32) against the reference in float64, the reference in float32 as the yardstick."""
    x, hx = inputs(module)
    up = upstream_for(module)
    torch.manual_seed(seed)
    masks = module._draw_masks(x, B, T)
    torch.manual_seed(seed)
    ours = forward_and_grads(module, module, x, hx, up)
    exact = forward_and_grads(lambda a, b: reference_forward(module, a, b, masks, torch.float64), module, x, hx, up)
    fp32 = forward_and_grads(lambda a, b: reference_forward(module, a, b, masks, torch.float32), module, x, hx, up)
    for name in ours:
        assert_no_worse_than_torch(name, ours[name], fp32[name], exact[name])
    return masks


# -- parity with the papers' equations, every option, cell and backend -----------------------------

OPTIONS = {
    "weight_drop": dict(weight_drop=0.5),
    "recurrent_dropout": dict(recurrent_dropout=0.3),
    "zoneout": dict(zoneout=0.25),
    "all": dict(weight_drop=0.4, recurrent_dropout=0.2, zoneout=0.3),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("option", list(OPTIONS))
def test_training_matches_the_papers_equations_given_the_same_masks(option, cell, backend):
    if backend == "triton" and option != "weight_drop" and cell not in ("lstm", "gru"):
        pytest.skip("the loop options run the same PyTorch loop on every backend: two cells suffice there")
    module = make(cell, backend, **OPTIONS[option])
    check_against_reference(module)
    expected = "reference" if option != "weight_drop" else backend
    assert module.last_backend == expected


def test_lstm_zoneout_pair_for_h_and_c():
    module = make("lstm", "torch", zoneout=(0.0, 0.5))
    masks = check_against_reference(module)
    assert masks[0].zone_h is None and masks[0].zone_c is not None


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn-tanh"])
def test_eval_zoneout_is_the_expectation_and_the_dropouts_are_off(cell):
    module = make(cell, "torch", weight_drop=0.5, recurrent_dropout=0.5, zoneout=0.3).eval()
    x, hx = inputs(module)
    y, final = module(x, hx)
    masks = [LayerMasks() for _ in module._layer_weights()]  # no mask in evaluation
    y_ref, final_ref = reference_forward(module, x.double(), tuple(s.double() for s in hx) if isinstance(hx, tuple)
                                         else hx.double(), masks, torch.float64)
    torch.testing.assert_close(y.double(), y_ref, atol=1e-5, rtol=1e-5)
    # without zoneout, evaluation is torch.nn's own forward, untouched
    module.zoneout = (0.0, 0.0)
    plain = CELLS[cell][0](I, H, num_layers=2, bidirectional=True, backend="torch", **CELLS[cell][1]).eval()
    plain.load_state_dict(module.state_dict())
    torch.testing.assert_close(module(x, hx)[0], plain(x, hx)[0], atol=0, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn-relu"])
def test_dropped_recurrent_weights_get_exactly_zero_gradient_and_the_kept_fraction_is_1_minus_p(cell, backend):
    p = 0.4
    module = make(cell, backend, layers=1, bidirectional=False, weight_drop=p)
    x, hx = inputs(module)
    torch.manual_seed(7)
    masks = module._draw_masks(x, B, T)
    torch.manual_seed(7)
    y, _ = module(x, hx)
    y.square().sum().backward()
    dropped = masks[0].w_hh == 0
    assert (module.weight_hh_l0.grad[dropped] == 0).all()
    assert (module.weight_hh_l0.grad[~dropped] != 0).float().mean() > 0.5  # (relu: dead units have none)
    kept = (~dropped).float().mean().item()
    n = dropped.numel()
    assert abs(kept - (1 - p)) < 5 * (p * (1 - p) / n) ** 0.5 + 0.02, kept
    assert torch.allclose(masks[0].w_hh[~dropped], torch.tensor(1 / (1 - p)))


def test_kept_fraction_of_a_large_weight_mask_is_within_statistics():
    p = 0.3
    module = lrnn.LSTM(64, 128, backend="torch", weight_drop=p)
    kept = torch.cat([(module._draw_masks(torch.zeros(2, 1, 64), 1, 2)[0].w_hh != 0).flatten() for _ in range(4)])
    frac, n = kept.float().mean().item(), kept.numel()
    assert abs(frac - (1 - p)) < 5 * (p * (1 - p) / n) ** 0.5


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("option", list(OPTIONS))
def test_same_seed_gives_bitwise_the_same_result_twice(option, backend):
    module = make("lstm", backend, dropout=0.3, **OPTIONS[option])
    x, hx = inputs(module)
    results = []
    for _ in range(2):
        torch.manual_seed(123)
        y, (h, c) = module(x, hx)
        grads = torch.autograd.grad(y.sum() + c.sum(), list(module.parameters()))
        results.append((y, h, c, *grads))
    for a, b in zip(*results):
        assert torch.equal(a, b)


@requires_triton_interpreter
def test_same_seed_same_masks_on_every_path():
    """torch (torch._VF) and triton with weight drop: the same masks, hence the same result within rounding;
    with recurrent dropout both run the same loop: bitwise equal."""
    torch_m = make("gru", "torch", weight_drop=0.5)
    triton_m = make("gru", "triton", weight_drop=0.5)
    triton_m.load_state_dict(torch_m.state_dict())
    x, hx = inputs(torch_m)
    torch.manual_seed(5)
    y1, _ = torch_m(x, hx)
    torch.manual_seed(5)
    y2, _ = triton_m(x, hx)
    torch.testing.assert_close(y1, y2, atol=1e-5, rtol=1e-5)
    torch_m.recurrent_dropout = triton_m.recurrent_dropout = 0.3
    torch.manual_seed(5)
    y1, _ = torch_m(x, hx)
    torch.manual_seed(5)
    y2, _ = triton_m(x, hx)
    assert torch.equal(y1, y2)


def test_the_reference_backend_under_cpu_autocast_takes_the_masked_weight():
    """GRU under CPU bf16 autocast runs our cell loop ("reference"); weight drop reaches it too."""
    module = make("gru", "torch", layers=1, bidirectional=False, weight_drop=0.5)
    x, hx = inputs(module)
    torch.manual_seed(3)
    masks = module._draw_masks(x, B, T)
    torch.manual_seed(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, _ = module(x, hx)
    assert module.last_backend == "reference"
    y_ref, _ = reference_forward(module, x, hx, masks, torch.float64)
    torch.testing.assert_close(y.double(), y_ref, atol=3e-2, rtol=3e-2)


def test_unbatched_and_batch_first_inputs():
    module = lrnn.LSTM(I, H, batch_first=True, backend="torch", weight_drop=0.5, recurrent_dropout=0.2)
    x = torch.randn(B, T, I)
    y, (h, c) = module(x)
    assert y.shape == (B, T, H) and h.shape == (1, B, H)
    y1, (h1, _) = module(x[0])
    assert y1.shape == (T, H) and h1.shape == (1, H)
    module.recurrent_dropout = 0.0  # weight drop alone: torch._VF path
    y1, (h1, _) = module(x[0])
    assert y1.shape == (T, H) and h1.shape == (1, H)


def test_defaults_leave_the_modules_as_they_were():
    module = lrnn.LSTM(I, H, backend="torch")
    assert (module.weight_drop, module.recurrent_dropout, module.zoneout) == (0.0, 0.0, (0.0, 0.0))
    assert not module._regularizing()
    assert "weight_drop" not in repr(module)


def test_weight_drop_under_torch_compile():
    """One graph (fullgraph=True), same masks from the same seed. Dynamo's "eager" backend: torch 2.13's
    aot_eager fails on the CPU for plain torch.nn.LSTM already (a None among its saved tensors)."""
    torch._dynamo.reset()
    module = make("lstm", "torch", layers=1, bidirectional=False, weight_drop=0.5)
    x, hx = inputs(module)
    with torch._dynamo.config.patch(allow_rnn=True):
        compiled = torch.compile(module, backend="eager", fullgraph=True)
        torch.manual_seed(9)
        y, _ = compiled(x, hx)
    torch.manual_seed(9)
    y_eager, _ = module(x, hx)
    torch.testing.assert_close(y, y_eager)
    torch._dynamo.reset()


@pytest.mark.parametrize("cls, kwargs, name", [
    (lrnn.LSTM, {"weight_drop": -0.1}, "weight_drop"),
    (lrnn.LSTM, {"weight_drop": 1.0}, "weight_drop"),
    (lrnn.GRU, {"recurrent_dropout": 1.5}, "recurrent_dropout"),
    (lrnn.RNN, {"recurrent_dropout": float("nan")}, "recurrent_dropout"),
    (lrnn.RNN, {"zoneout": -1}, "zoneout"),
    (lrnn.GRU, {"zoneout": (0.1, 0.2)}, "zoneout"),
    (lrnn.LSTM, {"zoneout": (0.1, 1.0)}, "zoneout[1]"),
    (lrnn.LSTM, {"zoneout": (0.1, 0.2, 0.3)}, "zoneout"),
    (lrnn.LSTM, {"weight_drop": "0.5"}, "weight_drop"),
])
def test_bad_values_raise_a_value_error_naming_the_argument(cls, kwargs, name):
    with pytest.raises(ValueError, match=re.escape(f"{cls.__name__}: {name}")):
        cls(I, H, **kwargs)


def test_packed_sequences_are_refused_while_regularizing():
    module = lrnn.LSTM(I, H, backend="torch", weight_drop=0.5)
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.randn(T, 2, I), [T, 2])
    with pytest.raises(NotImplementedError, match="PackedSequence"):
        module(packed)
    module.eval()  # evaluation: weight drop is off, torch.nn's packed forward serves it
    module(packed)
