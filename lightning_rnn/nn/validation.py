"""Input checks shared by the recurrent layers and cells.

torch.nn's own errors come from deep inside ATen and often name neither the argument nor the
shape it expected; these run first and do. Nothing is broadcast: a state of the wrong shape is
an error, never silently expanded.
"""
from __future__ import annotations

import torch
from torch import Tensor


def check_float_tensor(name: str, owner: str, value: object) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{owner}: {name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{owner}: {name} must be a floating-point tensor, got dtype {value.dtype}")
    return value


def check_matches_parameters(owner: str, input: Tensor, param: Tensor) -> None:
    """Same device as the parameters, and the same dtype unless autocast will cast both."""
    if input.device != param.device:
        raise ValueError(
            f"{owner}: input is on {input.device} but the parameters are on {param.device}; "
            "move one of them with .to(device)"
        )
    if input.dtype != param.dtype and not torch.is_autocast_enabled(input.device.type):
        raise TypeError(
            f"{owner}: input dtype {input.dtype} does not match the parameters' dtype {param.dtype}; "
            "convert the module with .to(dtype) or run under torch.autocast"
        )


def check_sequence_input(owner: str, input: object, input_size: int, batch_first: bool) -> bool:
    """Check an RNN input; return whether it is batched (3-D) rather than unbatched (2-D)."""
    x = check_float_tensor("input", owner, input)
    layout = "(N, L, H_in)" if batch_first else "(L, N, H_in)"
    if x.dim() not in (2, 3):
        raise ValueError(
            f"{owner}: input must be 3-D {layout} or 2-D (L, H_in) unbatched, got shape {tuple(x.shape)}"
        )
    if x.shape[-1] != input_size:
        raise ValueError(
            f"{owner}: input.shape[-1] must equal input_size={input_size}, got shape {tuple(x.shape)}"
        )
    batched = x.dim() == 3
    time_dim = 1 if (batched and batch_first) else 0
    if x.shape[time_dim] == 0:
        raise ValueError(f"{owner}: input has a zero-length sequence (shape {tuple(x.shape)}); L must be >= 1")
    if batched and x.shape[1 - time_dim] == 0:
        raise ValueError(f"{owner}: input has batch size 0 (shape {tuple(x.shape)}); N must be >= 1")
    return batched


def check_state(owner: str, name: str, state: object, expected_shape: tuple[int, ...], input: Tensor) -> Tensor:
    """A hidden or cell state: exact shape, and the input's device and (outside autocast) dtype."""
    s = check_float_tensor(name, owner, state)
    if tuple(s.shape) != tuple(expected_shape):
        raise ValueError(f"{owner}: {name} must have shape {tuple(expected_shape)}, got {tuple(s.shape)}")
    if s.device != input.device:
        raise ValueError(f"{owner}: {name} is on {s.device} but input is on {input.device}")
    if s.dtype != input.dtype and not torch.is_autocast_enabled(input.device.type):
        raise TypeError(f"{owner}: {name} has dtype {s.dtype} but input has dtype {input.dtype}; they must match")
    return s


def check_lengths(owner: str, lengths: object, batch: int, T: int, device: torch.device) -> Tensor:
    """`lengths` as an int64 tensor on `device`, or ValueError naming it. The range check needs the
    values: one host sync (a single bool), as torch.nn's pack_padded_sequence has them on the CPU."""
    if isinstance(lengths, (list, tuple)):
        lengths = torch.tensor(lengths)
    if not isinstance(lengths, Tensor):
        raise ValueError(f"{owner}: lengths must be a 1-D integer tensor or a list of ints, "
                         f"got {type(lengths).__name__}")
    if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
        raise ValueError(f"{owner}: lengths must have an integer dtype, got {lengths.dtype}")
    if lengths.shape != (batch,):
        raise ValueError(f"{owner}: lengths must have shape ({batch},), one per batch row, got {tuple(lengths.shape)}")
    lengths = lengths.to(device, torch.int64)
    if bool(((lengths < 1) | (lengths > T)).any()):
        raise ValueError(f"{owner}: lengths must be in 1..{T} (the sequence length), "
                         f"got values from {int(lengths.min())} to {int(lengths.max())}")
    return lengths
