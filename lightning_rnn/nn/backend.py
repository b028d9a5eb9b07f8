"""Which implementation runs a recurrent layer: our Triton kernel, torch.nn's, or our cell loop.

- "triton":    kernels.lstm, kernels.gru or kernels.rnn (fused Triton steps), on CUDA, or on the
               CPU under TRITON_INTERPRET=1.
- "torch":     torch.nn's own fused RNN (cuDNN on GPU, oneDNN or ATen on CPU).
- "reference": our plain PyTorch cell loop, for what torch.nn's fused RNN cannot do
               (CPU autocast, where oneDNN fails for bf16, for modules without the fp32 path below).

On the CPU under autocast, modules that set `_fp32_fused_under_cpu_autocast` (LSTM, LSTMCell)
run torch.nn's fused RNN in fp32 on up-cast inputs and return outputs in the autocast dtype, as
autocast does for the ops on its fp32 list: tens of times faster than the cell loop.

A user asks for "auto" (the default), "triton" or "torch"; `resolve_backend` turns that into one
of the three above for a given input, or raises with the reason when "triton" cannot run.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable, Literal

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

Backend = Literal["auto", "triton", "torch"]
BACKENDS: tuple[str, ...] = ("auto", "triton", "torch")

logger = logging.getLogger("lightning_rnn")
_logged_fallbacks: set[str] = set()


def check_backend_arg(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype the layer computes in: the autocast dtype if autocast is on, else x's."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


#: The Triton kernel families: "lstm", "gru", "rnn" (Elman), each a package kernels/<kind>/.
KernelKind = Literal["lstm", "gru", "rnn"]


def _kernel_function_module(kind: KernelKind):
    """kernels/<kind>/function.py. Plain import statements, not importlib: dynamo traces these
    (torch.compile(fullgraph=True) goes through this function) but refuses importlib."""
    if kind == "gru":
        from kernels.gru import function
    elif kind == "rnn":
        from kernels.rnn import function
    else:
        from kernels.lstm import function
    return function


def triton_unavailable_reason(x: Tensor, kind: KernelKind = "lstm") -> str | None:
    """Why the Triton kernel of cell `kind` cannot run on `x`, or None if it can."""
    device = x.device.type
    interpret_env = os.environ.get("TRITON_INTERPRET", "0") == "1"
    if device == "cpu" and not interpret_env:
        return "input is on the CPU and TRITON_INTERPRET=1 is not set"
    if device not in ("cpu", "cuda"):
        return f"device type {device!r} is not supported by the Triton kernel"
    try:
        function = _kernel_function_module(kind)
    except ImportError as err:  # no triton wheel for this platform, or a broken install
        return f"triton could not be imported ({err})"
    if device == "cpu" and not function.INTERPRETED:
        return f"TRITON_INTERPRET=1 was set after kernels.{kind}.function was imported"
    if device == "cpu" and not torch.compiler.is_compiling():  # the probe launches a kernel: not traceable
        from kernels.interpreter_check import interpreter_problem

        if (problem := interpreter_problem()) is not None:
            return problem
    if device == "cuda" and function.INTERPRETED:
        return "the kernels were imported under TRITON_INTERPRET=1 (interpreter only); unset it for the GPU"
    dtype = compute_dtype(x)
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return f"dtype {dtype} is not supported by the Triton kernel (float32, float16, bfloat16 are)"
    if device == "cpu" and dtype == torch.bfloat16:
        return "bfloat16 is not supported in the Triton CPU interpreter (its bf16 math is wrong)"
    return None


def cpu_autocast_dtype(x: Tensor) -> torch.dtype | None:
    """The autocast dtype where `x` is on the CPU under autocast, else None."""
    if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        return torch.get_autocast_dtype("cpu")
    return None


def torch_backend_for(x: Tensor, fp32_fused: bool = False) -> str:
    """torch.nn's fused RNN. On the CPU under autocast, our cell loop instead, unless the module can
    run the fused RNN in fp32 on up-cast inputs (`fp32_fused`, see `run_fused_in_fp32`)."""
    if cpu_autocast_dtype(x) is not None and not fp32_fused:
        return "reference"
    return "torch"


def _cast_floats(value: Any, dtype: torch.dtype) -> Any:
    """`value` (a tensor, PackedSequence, tuple of them or None) with its float tensors cast to `dtype`."""
    if isinstance(value, PackedSequence):
        return PackedSequence(value.data.to(dtype), value.batch_sizes, value.sorted_indices, value.unsorted_indices)
    if isinstance(value, Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, (tuple, list)):
        return type(value)(_cast_floats(v, dtype) for v in value)
    return value


def run_fused_in_fp32(forward: Callable[..., Any], input: Any, hx: Any, param_dtype: torch.dtype,
                      out_dtype: torch.dtype) -> Any:
    """torch.nn's `forward(input, hx)` with autocast off, on inputs up-cast to the parameters' dtype
    (fp32), its outputs cast to `out_dtype` (the autocast dtype): what CPU autocast would do if the
    fused RNN were on its fp32 list. Gradients flow back through both casts."""
    with torch.autocast("cpu", enabled=False):
        out = forward(_cast_floats(input, param_dtype), _cast_floats(hx, param_dtype))
    return _cast_floats(out, out_dtype)


def resolve_backend(requested: str, x: Tensor, unsupported: str | None = None, fp32_fused: bool = False,
                    kind: KernelKind = "lstm") -> str:
    """Pick "triton", "torch" or "reference" for this call.

    `unsupported` is the caller's reason the Triton kernel cannot serve this configuration
    (e.g. a PackedSequence); None if it can. `fp32_fused`: see `torch_backend_for`.
    """
    if requested == "torch":
        return torch_backend_for(x, fp32_fused)
    reason = unsupported or triton_unavailable_reason(x, kind)
    if reason is None:
        return "triton"
    if requested == "triton":
        raise RuntimeError(f"backend='triton' cannot run here: {reason}")
    if reason not in _logged_fallbacks:  # once per reason, not once per call
        _logged_fallbacks.add(reason)
        logger.debug("lightning_rnn: falling back from Triton to PyTorch: %s", reason)
    return torch_backend_for(x, fp32_fused)


class BackendChoice:
    """Mixin for the drop-in modules: the `backend` argument, `last_backend`, and the choice per call."""

    backend: str
    last_backend: str | None
    _kernel_kind: KernelKind  # which Triton kernel family serves the module (kernels/<kind>)
    _fp32_fused_under_cpu_autocast = False  # see run_fused_in_fp32: set by the modules that use it

    def _setup_backend(self, backend: str) -> None:
        check_backend_arg(backend)
        self.backend = backend
        self.last_backend = None

    def extra_repr(self) -> str:
        return super().extra_repr() + f", backend={self.backend!r}"  # type: ignore[misc]

    def _fp32_fused_ok(self) -> bool:
        """Whether this module runs torch.nn's fused RNN in fp32 under CPU autocast (fp32 parameters)."""
        return self._fp32_fused_under_cpu_autocast and all(
            p.dtype == torch.float32 for p in self.parameters()  # type: ignore[attr-defined]
        )

    def _choose_backend(self, x: Tensor, unsupported: str | None = None) -> str:
        self.last_backend = resolve_backend(self.backend, x, unsupported, self._fp32_fused_ok(), self._kernel_kind)
        return self.last_backend
