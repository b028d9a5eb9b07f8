"""The CUDA device a layer's kernels launch on: the input's.

Triton launches on the *current* CUDA device and its current stream, which need not be the input's
(a model on cuda:1 while cuda:0 is current): the kernels would run on the wrong device, unordered
after the work the layer queued on the input's stream (the engine's zeroed sync words among it).
Every cell's wrapper runs its forward and its backward under `device_guard` of the input's device.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Callable

import torch


def device_guard(device: torch.device) -> contextlib.AbstractContextManager:
    """Make `device` current (and so its current stream) inside the block; nothing for a CPU tensor."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def on_input_device(method: Callable) -> Callable:
    """An autograd.Function's forward(ctx, x, ...) or backward(ctx, dy, ...), run under `device_guard`
    of its first tensor (x, or the gradient that arrives: on the same device)."""

    @functools.wraps(method)
    def guarded(ctx, first, *args):
        with device_guard(first.device):
            return method(ctx, first, *args)

    return guarded
