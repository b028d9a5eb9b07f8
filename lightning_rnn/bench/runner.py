"""The sweep: every point x provider x mode, timed, one result row each.

A provider that cannot run at all is skipped once, with its reason; one that cannot run at a
point (e.g. bf16 in the Triton interpreter) gets a "skipped" row; one that fails at a point
(OOM, cuDNN without bf16 RNNs, ...) gets an "error" row, and the sweep goes on.

Every row that ran says what ran: `impl` (one string, e.g. "triton:persistent(...)", "cuDNN",
"oneDNN", "auto->torch") and `paths` (the kernel paths the Triton dispatchers recorded through
kernels.paths during that measurement, see `describe_impl`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from kernels import paths as kernel_paths

from .providers import (CELLS, PROVIDERS, Point, Workload, make_workload, point_skip_reason, provider_skip_reason,
                        torch_rnn_impl)
from .timing import Timing, time_cpu, time_cuda

MODES: dict[str, str] = {
    "fwd": "forward only, with grad disabled (torch.no_grad(): inference)",
    "fwdbwd": ("forward + backward of a random upstream gradient dy (input and weights require "
               "grad; their .grad is set to None between reps, untimed)"),
}


@dataclass
class Config:
    points: list[Point]
    providers: list[str]
    modes: list[str]
    device: torch.device
    warmup_ms: float = 25.0
    rep_ms: float = 100.0
    interpreter: bool = False
    seed: int = 0
    log: Callable[[str], None] = field(default=print)
    min_reps: int = 5  # timed calls at least, on the CPU (do_bench chooses its own on CUDA)


def _timed_fn(forward: Callable[[Tensor], Tensor], w: Workload, mode: str,
              params: Sequence[Tensor]) -> tuple[Callable[[], None], list[Tensor]]:
    """The callable to time for `mode`, and the tensors whose grads must be reset between reps."""
    if mode == "fwd":
        def fwd() -> None:
            with torch.no_grad():
                forward(w.x)

        return fwd, []
    x = w.x.detach().requires_grad_(True)

    def fwdbwd() -> None:
        forward(x).backward(w.dy)

    return fwdbwd, [x, *params]


def measure(fn: Callable[[], None], device: torch.device, grads: list[Tensor],
            warmup_ms: float, rep_ms: float, min_reps: int = 5) -> Timing:
    if device.type == "cuda":
        return time_cuda(fn, warmup_ms, rep_ms, grad_to_none=grads)

    def reset() -> None:
        for t in grads:
            t.grad = None

    return time_cpu(fn, warmup_ms, rep_ms, reset=reset, min_reps=min_reps)


def _error_text(err: BaseException) -> str:
    first_line = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {first_line}"[:300]


def run_benchmark(cfg: Config) -> tuple[list[dict], list[dict]]:
    """Run the sweep; returns (result rows, skipped providers with reasons)."""
    skipped: list[dict] = []
    active = []
    for name in cfg.providers:
        reason = provider_skip_reason(name, cfg.device, cfg.interpreter)
        if reason:
            skipped.append({"provider": name, "label": PROVIDERS[name].label(torch.device("cuda")), "reason": reason})
            cfg.log(f"skipped {name}: {reason}")
        else:
            active.append(name)
    if cfg.device.type != "cuda" and "torch" in cfg.providers:
        reason = "running on the CPU: torch.nn's RNNs are timed on their CPU path instead ('torch.nn.LSTM (oneDNN)')"
        # Not a provider of its own: recorded so that the JSON says cuDNN was not measured.
        skipped.append({"provider": "cudnn", "label": "torch.nn (cuDNN)", "reason": reason})
        cfg.log(f"skipped cuDNN: {reason}")

    rows: list[dict] = []
    impl_cache: dict[tuple, str] = {}  # torch.nn's real kernel per (cell, dtype, mode)
    for i, point in enumerate(cfg.points, 1):
        w = make_workload(point, cfg.device, cfg.seed)
        for name in active:
            label = PROVIDERS[name].label(cfg.device, point.cell)
            base = {"provider": name, "label": label, **point.as_dict()}
            reason = point_skip_reason(name, w.x, point.cell)
            try:
                built = None if reason else PROVIDERS[name].build(w)
                build_error = None
            except Exception as err:  # noqa: BLE001 - record it for this point, keep sweeping
                built, build_error = None, _error_text(err)
            for mode in cfg.modes:
                row = {**base, "mode": mode, "status": "ok", "error": None, "impl": None, "paths": []}
                if reason:
                    row.update(status="skipped", error=reason)
                elif build_error:
                    row.update(status="error", error=build_error)
                else:
                    row.update(_run_one(cfg, name, mode, built, w, impl_cache))
                    if name == "torch" and cfg.device.type == "cuda" and row["impl"] not in (None, "cuDNN"):
                        # e.g. bf16 before cuDNN 9.13: torch.nn.LSTM quietly runs ATen's cell loop
                        row["label"] = f"torch.nn.{CELLS[point.cell][0]} ({row['impl']}, not cuDNN)"
                rows.append(row)
                _log_row(cfg, i, row)
            del built
        del w
        if cfg.device.type == "cuda":
            torch.cuda.empty_cache()
    return rows, skipped


def _run_one(cfg: Config, name: str, mode: str, built, w: Workload, impl_cache: dict) -> dict:
    forward, params = built
    out: dict = {}
    kernel_paths.reset()  # what the kernels record from here on is this measurement's
    try:
        fn, grads = _timed_fn(forward, w, mode, params)
        fn()  # one checked call first: a failure here is this point's error, not do_bench's
        if cfg.device.type == "cuda":
            torch.cuda.synchronize()
        if name == "torch":
            key = (w.point.cell, w.point.dtype, mode)
            if key not in impl_cache:
                impl_cache[key] = torch_rnn_impl(fn)
            out["impl"] = impl_cache[key]
        t = measure(fn, cfg.device, grads, cfg.warmup_ms, cfg.rep_ms, cfg.min_reps)
        out.update(median_ms=t.median_ms, q20_ms=t.q20_ms, q80_ms=t.q80_ms, reps=t.reps, timing_method=t.method)
    except Exception as err:  # noqa: BLE001 - e.g. OOM or cuDNN bf16: record, keep sweeping
        if cfg.device.type == "cuda":
            torch.cuda.empty_cache()
        out.update(status="error", error=_error_text(err))
    finally:
        for t in params:
            t.grad = None
    # Also on an error row: the path that was being tried is what failed.
    records = kernel_paths.snapshot()
    out["paths"] = records
    if name != "torch":
        out["impl"] = describe_impl(name, w.point.cell, records, getattr(forward, "module", None))
    return out


def describe_impl(provider: str, cell: str, records: list[dict], module=None) -> str:
    """One string for what a provider ran: "triton:persistent(variant=... BLOCK_J=8)" (the kernel
    paths recorded through kernels.paths; "triton:unrecorded" where no dispatcher recorded one),
    "reference:cell-loop" (our PyTorch loop), "naive:nn.LSTMCell-loop", and for backend="auto" the
    backend it chose, "auto->triton:..." or "auto->torch". torch.nn's own rows are named elsewhere,
    from the profiler (`torch_rnn_impl`: cuDNN, oneDNN or ATen)."""
    if provider == "fallback":
        return "reference:cell-loop"
    if provider == "naive":
        return f"naive:nn.{CELLS[cell][1]}-loop"
    backend = "triton" if provider == "triton" else getattr(module, "last_backend", None)
    if backend == "triton":
        text = "triton:" + (_format_paths(cell, records) or "unrecorded")
    else:  # "torch" or "reference"; Triton records here would be from auto's timing runs only
        text = str(backend or "unknown")
    return text if provider == "triton" else f"auto->{text}"  # the autocast provider: backend="auto"


def _format_paths(cell: str, records: list[dict]) -> str:
    """'persistent(BLOCK_J=8 ...)' per record, joined by ' + ' (e.g. a persistent forward and a
    per-step backward); the cell is named only for a record of another cell than the row's."""
    parts = []
    for r in records:
        text = r["path"] + (f"({r['detail']})" if r["detail"] else "")
        parts.append(text if r["cell"] == cell else f"{r['cell']}:{text}")
    return " + ".join(parts)


def _log_row(cfg: Config, i: int, row: dict) -> None:
    where = (f"[{i}/{len(cfg.points)}] {row['cell']} B={row['batch']} H={row['hidden']} T={row['seq_len']} "
             f"L={row['layers']} {row['dtype']}")
    what = f"{row['provider']:<8} {row['mode']:<6}"
    if row["status"] == "ok":
        cfg.log(f"{where} {what} {row['median_ms']:.3f} ms" + (f"  [{row['impl']}]" if row.get("impl") else ""))
    else:
        cfg.log(f"{where} {what} {row['status']}: {row['error']}")
