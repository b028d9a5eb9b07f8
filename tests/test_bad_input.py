"""Bad input gets a clear error naming the argument and what was expected; nothing is broadcast."""
from __future__ import annotations

import pytest
import torch

from lightning_rnn.nn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

LAYERS = [LSTM, GRU, RNN]


@pytest.mark.parametrize("cls", LAYERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    "shape,match",
    [((5,), "must be 3-D"), ((2, 3, 4, 5), "must be 3-D"), ((5, 2, 7), r"input_size=4"), ((0, 2, 4), "zero-length"),
     ((5, 0, 4), "batch size 0")],
    ids=["rank1", "rank4", "feature-size", "zero-length", "zero-batch"],
)
def test_input_shape_errors(cls, shape, match):
    with pytest.raises(ValueError, match=match):
        cls(4, 3, backend="torch")(torch.randn(shape))


@pytest.mark.parametrize("cls", LAYERS, ids=lambda c: c.__name__)
def test_zero_length_batch_first(cls):
    with pytest.raises(ValueError, match="zero-length"):
        cls(4, 3, batch_first=True)(torch.randn(2, 0, 4))


@pytest.mark.parametrize("cls", LAYERS + [LSTMCell, GRUCell, RNNCell], ids=lambda c: c.__name__)
def test_integer_input(cls):
    with pytest.raises(TypeError, match="floating-point"):
        cls(4, 3)(torch.ones(5, 2, 4, dtype=torch.long)[0] if "Cell" in cls.__name__ else torch.ones(5, 2, 4, dtype=torch.long))


@pytest.mark.parametrize("cls", LAYERS, ids=lambda c: c.__name__)
def test_input_dtype_must_match_parameters(cls):
    with pytest.raises(TypeError, match="does not match the parameters' dtype"):
        cls(4, 3)(torch.randn(5, 2, 4, dtype=torch.float64))


def test_not_a_tensor():
    with pytest.raises(TypeError, match="input must be a torch.Tensor"):
        LSTM(4, 3)([[1.0] * 4])


@pytest.mark.parametrize(
    "h_shape,c_shape,name",
    [((2, 2, 3), (1, 2, 3), "h_0"), ((1, 2, 3), (1, 5, 3), "c_0"), ((1, 3), (1, 2, 3), "h_0"), ((1, 1, 3), (1, 2, 3), "h_0")],
    ids=["layers", "batch", "rank", "no-broadcast"],
)
def test_lstm_state_shape(h_shape, c_shape, name):
    with pytest.raises(ValueError, match=rf"{name} must have shape \(1, 2, 3\)"):
        LSTM(4, 3)(torch.randn(5, 2, 4), (torch.zeros(h_shape), torch.zeros(c_shape)))


def test_lstm_projected_state_shape_named():
    with pytest.raises(ValueError, match=r"h_0 must have shape \(2, 2, 2\)"):
        LSTM(4, 3, proj_size=2, num_layers=2)(torch.randn(5, 2, 4), (torch.zeros(2, 2, 3), torch.zeros(2, 2, 3)))


def test_lstm_hx_must_be_a_pair():
    with pytest.raises(TypeError, match=r"hx must be a tuple \(h_0, c_0\)"):
        LSTM(4, 3)(torch.randn(5, 2, 4), torch.zeros(1, 2, 3))


@pytest.mark.parametrize("cls", [GRU, RNN], ids=lambda c: c.__name__)
def test_single_state_shape(cls):
    with pytest.raises(ValueError, match=r"hx must have shape \(2, 2, 3\)"):
        cls(4, 3, bidirectional=True)(torch.randn(5, 2, 4), torch.zeros(1, 2, 3))


def test_state_dtype_mismatch():
    with pytest.raises(TypeError, match="h_0 has dtype torch.float16 but input has dtype torch.float32"):
        LSTM(4, 3)(torch.randn(5, 2, 4), (torch.zeros(1, 2, 3, dtype=torch.float16), torch.zeros(1, 2, 3)))


def test_device_mismatch_is_reported():
    m = LSTM(4, 3).to("meta")
    with pytest.raises(ValueError, match="input is on cpu but the parameters are on meta"):
        m(torch.randn(5, 2, 4))
    with pytest.raises(ValueError, match="c_0 is on meta but input is on cpu"):
        LSTM(4, 3)(torch.randn(5, 2, 4), (torch.zeros(1, 2, 3), torch.zeros(1, 2, 3, device="meta")))


@pytest.mark.parametrize("cls,hx", [(LSTMCell, (torch.zeros(2, 3), torch.zeros(3, 3))), (GRUCell, torch.zeros(2, 4)),
                                    (RNNCell, torch.zeros(3))], ids=["LSTMCell", "GRUCell", "RNNCell"])
def test_cell_state_shape(cls, hx):
    with pytest.raises(ValueError, match=r"must have shape \(2, 3\)"):
        cls(4, 3)(torch.randn(2, 4), hx)


@pytest.mark.parametrize("cls", [LSTMCell, GRUCell, RNNCell], ids=lambda c: c.__name__)
def test_cell_input_shape(cls):
    with pytest.raises(ValueError, match="must be 2-D"):
        cls(4, 3)(torch.randn(2, 2, 4))
    with pytest.raises(ValueError, match="input_size=4"):
        cls(4, 3)(torch.randn(2, 5))
