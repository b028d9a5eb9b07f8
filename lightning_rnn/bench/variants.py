"""Every persistent-engine variant (`kernels.persistent.plan.VARIANTS`) timed on one GPU, in one run.

    python -m lightning_rnn.bench.variants OUT_DIR                 # the GPU run (about 3 minutes on an H200)
    python -m lightning_rnn.bench.variants OUT_DIR --dry-run       # tiny, seconds, on the CPU (interpreter)
    lightning-rnn bench --preset variants --out OUT_DIR [...]      # the same (cli.py delegates here)

In one process it measures
  1. the barrier alone: us per step of empty steps (`engine.barrier_kernel`) for BARRIER 0, 1, 2
     at 132 and 96 programs;
  2. each variant's LSTM forward (inference, no grad) and forward+backward at B x H (default
     {8, 16, 64, 128} x {768, 1024}, T = 256) in bf16 and fp16 (`lightning_rnn.nn.LSTM(backend=
     "triton")` under `kernels.persistent.use_variant(name)`), and the GRU and the Elman RNN (tanh)
     forward+backward at B16 H768 bf16 for every variant;
  3. torch.nn (cuDNN) at the same points and dtypes, the baseline of the speed-ups.
Before the timing, a pool of `--jobs` processes (spawned, each with its own CUDA context) runs each
configuration once at a short T, which fills Triton's on-disk kernel cache (TRITON_CACHE_DIR): the
timing process then loads compiled kernels instead of compiling ~10 variants x 16 points one by one.

Writes OUT_DIR/results.json (the harness's metadata + one row per measurement: which path and plan
ran, as `kernels.paths` recorded it, or that the engine fell back and why), results.csv and table.md,
rewritten after every point, so a run cut short still leaves its data. A configuration that fails
gets a row with its error; the run goes on.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import math
import multiprocessing
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

# Nothing from `kernels` at import time: --dry-run must set TRITON_INTERPRET first (see main).

DEFAULT_POINTS: list[tuple[int, int]] = [(b, h) for h in (768, 1024) for b in (8, 16, 64, 128)]
DEFAULT_DTYPES = ["bfloat16", "float16"]
MODES = ("fwd", "fwdbwd")
#: GRU and Elman (tanh) are timed at this one point (B, H, dtype), forward+backward only.
DEFAULT_EXTRA_CELLS = ["gru", "rnn"]
DEFAULT_EXTRA_POINT = (16, 768, "bfloat16")
BARRIER_KINDS = {0: "atomic spin", 1: "arrive + load spin", 2: "flag per program"}

#: --dry-run: tiny, in Triton's interpreter on a CPU (bf16 is excluded there: its math is wrong).
DRY_RUN = dict(points=[(3, 17)], dtypes=["float32", "float16"], variants=["default", "fast"], seq_len=3,
               extra_point=(5, 24, "float16"), barrier_programs=[1], barrier_steps=20, warmup_ms=1.0, rep_ms=2.0,
               jobs=1)
GPU_DEFAULTS = dict(points=DEFAULT_POINTS, dtypes=DEFAULT_DTYPES, variants=None, seq_len=256,
                    extra_point=DEFAULT_EXTRA_POINT, barrier_programs=[132, 96], barrier_steps=2000,
                    warmup_ms=10.0, rep_ms=50.0, jobs=max(1, (os.cpu_count() or 4) - 2))

#: Rough costs for the first estimate printed (replaced by measured rates as the run goes).
EST_COMPILE_S_PER_TASK = 6.0
EST_OVERHEAD_MS_PER_MEASUREMENT = 60.0

CSV_FIELDS = (
    "provider", "label", "variant", "cell", "batch", "hidden", "seq_len", "dtype", "mode", "status",
    "median_ms", "q20_ms", "q80_ms", "us_per_step", "reps", "timing_method", "engine", "path", "plan",
    "fallback_reason", "impl", "speedup_vs_cudnn_fp16", "speedup_vs_cudnn_same", "barrier", "programs", "n_steps",
    "error",
)


@dataclass
class Options:
    out: Path
    points: list[tuple[int, int]]
    dtypes: list[str]
    variants: list[str]
    seq_len: int
    extra_cells: list[str]
    extra_point: tuple[int, int, str]
    barrier_programs: list[int]
    barrier_steps: int
    warmup_ms: float
    rep_ms: float
    jobs: int
    dry_run: bool = False
    compile_timeout_s: float = 150.0
    time_limit_s: float | None = None
    seed: int = 0
    min_reps: int = 5  # CPU timing only (the interpreter is slow: the dry run takes 2)
    command: str = ""
    log: Callable[[str], None] = field(default=lambda line: print(line, flush=True), repr=False)


# --- the groups of measurements --------------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    """One (cell, B, H, dtype): torch.nn, then every variant, each in `modes`."""

    cell: str
    batch: int
    hidden: int
    dtype: str
    modes: tuple[str, ...]

    def point(self, seq_len: int):
        from lightning_rnn.bench.providers import Point

        return Point(self.batch, self.hidden, seq_len, 1, self.dtype, self.hidden, self.cell)

    def title(self) -> str:
        return f"{self.cell} B={self.batch} H={self.hidden} {_short(self.dtype)}"


def groups(opts: Options) -> list[Group]:
    out = [Group("lstm", b, h, d, MODES) for b, h in opts.points for d in opts.dtypes]
    b, h, d = opts.extra_point
    out += [Group(c, b, h, d, ("fwdbwd",)) for c in opts.extra_cells]
    return out


def warm_seq_len(T: int) -> int:
    """A short T whose kernels are the same compiled kernels as T's. Triton specializes integer
    arguments on == 1 and on divisibility by 16: the engine's n_steps (T) and t_last (T - 1) must
    fall in the same classes, so T = 2 would compile other kernels (n_steps 2, t_last == 1)."""
    return T if T <= 32 else 16 + T % 16


# --- pre-compiling in a pool of processes ----------------------------------------------------------------


@dataclass(frozen=True)
class WarmTask:
    """One configuration run once in a worker: a layer (cell, B, H, dtype) under a variant, or the
    barrier kernels (cell "barrier": (kind, programs) pairs in `barriers`)."""

    cell: str
    batch: int = 0
    hidden: int = 0
    dtype: str = ""
    variant: str = ""
    seq_len: int = 0
    modes: tuple[str, ...] = ()
    barriers: tuple[tuple[int, int], ...] = ()
    n_steps: int = 0

    def title(self) -> str:
        if self.cell == "barrier":
            return f"barrier kernels {list(self.barriers)}"
        return f"{self.cell} B={self.batch} H={self.hidden} {_short(self.dtype)} {self.variant}"


def warm_tasks(opts: Options) -> list[WarmTask]:
    tasks = []
    if opts.barrier_programs:
        tasks.append(WarmTask("barrier", barriers=tuple((k, p) for p in opts.barrier_programs for k in BARRIER_KINDS),
                              n_steps=warm_seq_len(opts.barrier_steps)))
    for g in groups(opts):
        tasks += [WarmTask(g.cell, g.batch, g.hidden, g.dtype, v, warm_seq_len(opts.seq_len), g.modes)
                  for v in opts.variants]
    return tasks


def _compile_estimate_s(device: torch.device) -> float:
    """A first guess of one warm task's seconds: compiling on a GPU machine, interpreting on a CPU."""
    return EST_COMPILE_S_PER_TASK if device.type == "cuda" else 0.5


def _worker_init() -> None:
    torch.set_num_threads(1)  # the pool has a core each; the compiler is what should use it


def warm(task: WarmTask) -> dict:
    """Run one configuration once (in a pool worker): compiles its kernels into Triton's disk cache."""
    start = time.monotonic()
    try:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if task.cell == "barrier":
            for kind, programs in task.barriers:
                if _barrier_skip_reason(programs, device) is None:
                    _barrier_fn(kind, programs, task.n_steps, device)()
        else:
            from kernels.persistent import use_variant
            from lightning_rnn.bench.providers import Point, build_triton, make_workload

            w = make_workload(Point(task.batch, task.hidden, task.seq_len, 1, task.dtype, task.hidden, task.cell),
                              device)
            forward, _ = build_triton(w)
            with use_variant(task.variant):
                for mode in task.modes:
                    if mode == "fwd":
                        with torch.no_grad():
                            forward(w.x)
                    else:
                        forward(w.x.detach().requires_grad_(True)).backward(w.dy)
        if device.type == "cuda":
            torch.cuda.synchronize()
        error = None
    except Exception as err:  # noqa: BLE001 - reported with the task; the timing records its own error
        error = _error_text(err)
    return {"task": task, "seconds": time.monotonic() - start, "error": error}


def precompile(opts: Options, progress: "Progress") -> dict:
    """Run every configuration once in `opts.jobs` spawned workers; a summary for the metadata."""
    tasks = warm_tasks(opts)
    summary = {"jobs": opts.jobs, "tasks": len(tasks), "done": 0, "seconds": None, "errors": [],
               "seq_len": warm_seq_len(opts.seq_len), "timed_out": False,
               "triton_cache_dir": os.environ.get("TRITON_CACHE_DIR")}
    if opts.jobs <= 0 or not tasks:
        summary["skipped"] = "--jobs 0: every kernel compiles in the timing process, at its first call"
        return summary
    est = len(tasks) * _compile_estimate_s(torch.device("cuda" if torch.cuda.is_available() else "cpu")) / opts.jobs
    progress.log(f"pre-compile: {len(tasks)} configurations in {opts.jobs} spawned workers at T="
                 f"{summary['seq_len']} (estimate {est:.0f} s)")
    start = time.monotonic()
    ctx = multiprocessing.get_context("spawn")  # CUDA in each worker: fork would inherit a broken context
    pool = ctx.Pool(opts.jobs, initializer=_worker_init)
    try:
        results = pool.imap_unordered(warm, tasks, chunksize=1)
        for i in range(1, len(tasks) + 1):
            remaining = opts.compile_timeout_s - (time.monotonic() - start)
            try:
                r = results.next(timeout=max(0.0, remaining))
            except multiprocessing.TimeoutError:
                summary["timed_out"] = True
                progress.log(f"pre-compile: time limit {opts.compile_timeout_s:.0f} s reached after {i - 1}/"
                             f"{len(tasks)}; the rest compile at their first timed call")
                break
            summary["done"] = i
            if r["error"]:
                summary["errors"].append({"config": r["task"].title(), "error": r["error"]})
            elapsed = time.monotonic() - start
            eta = elapsed / i * (len(tasks) - i)
            progress.log(f"pre-compile {i}/{len(tasks)} {r['task'].title()}: {r['seconds']:.1f} s"
                         + (f" ERROR {r['error']}" if r["error"] else "") + f" (ETA {eta:.0f} s)")
    finally:
        pool.terminate()
        pool.join()
    summary["seconds"] = round(time.monotonic() - start, 1)
    progress.log(f"pre-compile: {summary['done']}/{len(tasks)} in {summary['seconds']} s, "
                 f"{len(summary['errors'])} with errors")
    return summary


# --- the barrier alone -------------------------------------------------------------------------------------


def _barrier_skip_reason(programs: int, device: torch.device) -> str | None:
    if device.type != "cuda":
        if programs > 1:
            return "the interpreter runs programs one after another: a barrier between two never opens"
        return None
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    if programs > sms:
        return f"{programs} programs > {sms} SMs: not all resident, the barrier would never open"
    return None


def _barrier_fn(kind: int, programs: int, n_steps: int, device: torch.device) -> Callable[[], None]:
    import triton

    from kernels.persistent import run as engine
    from kernels.persistent.engine import barrier_kernel

    p_pow2 = triton.next_power_of_2(programs)
    words = max(32, p_pow2)
    sync = torch.zeros(words + engine.ERROR_WORDS, dtype=torch.int32, device=device)  # then the error word
    # As the engine launches: cooperative where this Triton can (a grid that cannot be resident is
    # refused instead of waiting at the barrier until its polls run out).
    options = {"num_warps": 8, **engine._cooperative_option()} if device.type == "cuda" else {}

    def fn() -> None:
        sync.zero_()
        barrier_kernel[(programs,)](sync, sync[words:], engine.MAX_POLLS, n_steps, BARRIER=kind, P_POW2=p_pow2,
                                    **options)

    fn.sync = sync  # type: ignore[attr-defined]
    fn.error = sync[words:words + 1]  # type: ignore[attr-defined]
    return fn


def _barrier_rows(opts: Options, device: torch.device) -> list[dict]:
    from kernels.persistent.plan import VARIANTS

    return [{"provider": "barrier", "label": f"barrier {kind} ({name})", "variant": None, "mode": "barrier",
             "barrier": kind, "programs": programs, "n_steps": opts.barrier_steps, "status": "ok", "error": None,
             "variants": [v for v, spec in VARIANTS.items() if spec.barrier == kind]}
            for programs in opts.barrier_programs for kind, name in BARRIER_KINDS.items()]


def measure_barrier(row: dict, opts: Options, device: torch.device) -> None:
    from lightning_rnn.bench.runner import measure

    reason = _barrier_skip_reason(row["programs"], device)
    if reason:
        row.update(status="skipped", error=reason)
        return
    try:
        fn = _barrier_fn(row["barrier"], row["programs"], row["n_steps"], device)
        fn()
        sync = fn.sync.cpu()  # type: ignore[attr-defined]
        if int(fn.error.item()):  # type: ignore[attr-defined]
            raise RuntimeError(f"a program gave up at the barrier of step {int(fn.error.item()) - 1} "
                               "(its polls ran out: the grid was not resident at once)")
        n = row["n_steps"]
        ok = (bool((sync[:row["programs"]] == n).all()) if row["barrier"] == 2
              else int(sync[0]) == n * row["programs"])
        if not ok:
            raise RuntimeError(f"the barrier's sync words after the run are {sync[:4].tolist()}..., not the count "
                               f"of {n} steps x {row['programs']} programs")
        t = measure(fn, device, [], opts.warmup_ms, opts.rep_ms, opts.min_reps)
        row.update(median_ms=t.median_ms, q20_ms=t.q20_ms, q80_ms=t.q80_ms, reps=t.reps, timing_method=t.method,
                   us_per_step=t.median_ms * 1e3 / n)
    except Exception as err:  # noqa: BLE001 - recorded; the run goes on
        row.update(status="error", error=_error_text(err))


# --- layers --------------------------------------------------------------------------------------------


def _engine_cell(cell: str) -> int:
    from kernels.persistent import plan as P

    return {"lstm": P.LSTM, "gru": P.GRU, "rnn": P.ELMAN_TANH}[cell]


def annotate_engine(row: dict, variant: str | None, device: torch.device) -> None:
    """engine / path / plan / fallback_reason from the records kernels.paths took during the row."""
    records = [r for r in row.get("paths") or [] if r["cell"] == row["cell"]]
    persistent = [r for r in records if r["path"] == "persistent"]
    row["path"] = " + ".join(dict.fromkeys(r["path"] for r in records)) or None
    row["plan"] = persistent[0]["detail"] if persistent else None
    if variant is None:
        return
    if row["status"] == "skipped":  # never ran: asking choose() could compile a plan for nothing
        row["engine"] = row["fallback_reason"] = None
        return
    row["engine"] = any(r["detail"].startswith(f"variant={variant} ") for r in persistent)
    row["fallback_reason"] = None
    if not row["engine"]:
        from kernels.lstm.function import INTERPRETED
        from kernels.persistent import run as engine
        from kernels.persistent import use_variant
        from lightning_rnn.bench.providers import DTYPES

        try:
            with use_variant(variant):
                _, reason = engine.choose(_engine_cell(row["cell"]), row["batch"], row["hidden"],
                                          DTYPES[row["dtype"]], device, INTERPRETED)
        except Exception as err:  # noqa: BLE001
            reason = f"choose() raised {_error_text(err)}"
        if not reason:
            reason = (f"no persistent record for variant {variant}" if row["status"] == "ok"
                      else f"the measurement failed ({row['status']})")
        row["fallback_reason"] = reason


def run_group(g: Group, opts: Options, device: torch.device, progress: "Progress", rows: list[dict],
              impl_cache: dict) -> None:
    """torch.nn, then each variant, at one point; rows appended as they are measured."""
    from kernels.persistent import use_variant
    from lightning_rnn.bench.providers import PROVIDERS, build_torch, build_triton, make_workload, point_skip_reason
    from lightning_rnn.bench.runner import Config, _run_one

    point = g.point(opts.seq_len)
    cfg = Config([point], [], list(g.modes), device, opts.warmup_ms, opts.rep_ms,
                 interpreter=device.type == "cpu", seed=opts.seed, log=progress.log, min_reps=opts.min_reps)
    try:
        w = make_workload(point, device, opts.seed)
        setup_error = None
    except Exception as err:  # noqa: BLE001 - e.g. out of memory: every row of the point says so
        w, setup_error = None, _error_text(err)
    for provider, variant in [("torch", None)] + [("triton", v) for v in opts.variants]:
        base = {"provider": provider, "label": PROVIDERS[provider].label(device, g.cell), "variant": variant,
                **point.as_dict()}
        reason = point_skip_reason(provider, w.x, g.cell) if w is not None else None
        built, build_error = None, setup_error
        if w is not None and not reason:
            try:
                built = (build_torch if provider == "torch" else build_triton)(w)
            except Exception as err:  # noqa: BLE001
                build_error = _error_text(err)
        for mode in g.modes:
            row = {**base, "mode": mode, "status": "ok", "error": None, "impl": None, "paths": []}
            if progress.out_of_time():
                row.update(status="skipped", error=f"time limit ({opts.time_limit_s:.0f} s) reached")
            elif reason:
                row.update(status="skipped", error=reason)
            elif build_error:
                row.update(status="error", error=build_error)
            else:
                if variant is None:
                    row.update(_run_one(cfg, provider, mode, built, w, impl_cache))
                else:
                    with use_variant(variant):
                        row.update(_run_one(cfg, provider, mode, built, w, impl_cache))
            if row["status"] == "ok":
                row["us_per_step"] = row["median_ms"] * 1e3 / point.seq_len
            annotate_engine(row, variant, device)
            rows.append(row)
            progress.measured(row)
        del built
    del w
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --- speed-ups, outputs ---------------------------------------------------------------------------------


def add_speedups(rows: list[dict], device_type: str) -> None:
    """speedup_vs_cudnn_fp16 / _same = torch.nn's median (fp16 / the row's dtype) / the row's median,
    same cell, shape and mode; on CUDA a torch.nn row counts only where it ran cuDNN."""
    base = {(r["cell"], r["batch"], r["hidden"], r["seq_len"], r["mode"], r["dtype"]): r["median_ms"]
            for r in rows if r["provider"] == "torch" and r["status"] == "ok"
            and (device_type != "cuda" or r.get("impl") == "cuDNN")}
    for r in rows:
        if r["provider"] == "barrier":
            continue
        key = (r["cell"], r["batch"], r["hidden"], r["seq_len"], r["mode"])
        ok = r["status"] == "ok"
        for name, dtype in (("fp16", "float16"), ("same", r["dtype"])):
            b = base.get((*key, dtype))
            r[f"speedup_vs_cudnn_{name}"] = b / r["median_ms"] if ok and b else None


def write_outputs(opts: Options, meta: dict, rows: list[dict], device_type: str) -> None:
    from lightning_rnn.bench import report

    add_speedups(rows, device_type)
    opts.out.mkdir(parents=True, exist_ok=True)
    payload = {
        "metadata": meta,
        "modes": {"fwd": "forward only, torch.no_grad() (inference)",
                  "fwdbwd": "forward + backward of a random upstream gradient (input and weights require grad)",
                  "barrier": "empty steps of kernels.persistent.engine.barrier_kernel: the barrier alone"},
        "speedup": "torch.nn's median (cuDNN on CUDA) / this median, same cell, shape and mode: speedup_vs_cudnn_fp16 "
                   "against torch.nn in fp16, speedup_vs_cudnn_same in the row's dtype (> 1: faster than cuDNN)",
        "results": rows,
    }
    for name, write in (("results.json", lambda p: report.write_json(p, payload)),
                        ("results.csv", lambda p: report.write_csv(p, rows, meta, CSV_FIELDS)),
                        ("table.md", lambda p: p.write_text(format_markdown(meta, rows)))):
        tmp = opts.out / f".{name}.tmp"
        write(tmp)
        os.replace(tmp, opts.out / name)  # never a half-written file, even if the run is killed


def _short(dtype: str) -> str:
    return {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}.get(dtype, dtype)


def _x(s: float | None) -> str:
    return "-" if not s else f"{s:.2f}x" if s >= 0.1 else f"{s:.2g}x"


def _cell_text(r: dict | None) -> list[str]:
    """ms, us/step, vs cuDNN fp16, vs cuDNN same dtype."""
    if r is None:
        return ["", "", "", ""]
    if r["status"] != "ok":
        return [r["status"], "", "", ""]
    return [f"{r['median_ms']:.3f}", f"{r['us_per_step']:.2f}", _x(r.get("speedup_vs_cudnn_fp16")),
            _x(r.get("speedup_vs_cudnn_same"))]


def _path_text(rs: Sequence[dict]) -> str:
    texts = []
    for r in rs:
        if r["status"] != "ok":
            text = f"{r['mode']} {r['status']}: {r['error']}"
        elif r["provider"] == "torch":
            text = r.get("impl") or ""
        elif r.get("engine"):
            text = (r.get("plan") or "").removeprefix(f"variant={r['variant']} ")
        else:
            text = f"**fallback** ({r.get('path') or '?'}): {r.get('fallback_reason')}"
        if text not in texts:
            texts.append(text)
    return "; ".join(t.replace("|", "/") for t in texts)


def _geomean(values: list[float]) -> float | None:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def format_markdown(meta: dict, rows: list[dict]) -> str:
    lines = ["# Persistent engine variants", "",
             f"{meta.get('device')} ({meta.get('device_type')}) · torch {meta.get('torch')} · triton "
             f"{meta.get('triton')} · cuDNN {meta.get('cudnn')} · commit {str(meta.get('git_commit'))[:12]} · "
             f"{meta.get('timestamp')}", "",
             f"Command: `{meta.get('command')}`", "",
             f"T = {meta.get('seq_len')}; {meta.get('timing')}. Speed-up = torch.nn's median / this median "
             "(> 1: faster than cuDNN), against torch.nn in fp16 and in the row's own dtype.", ""]
    if meta.get("dry_run"):
        lines += ["**Dry run**: tiny sizes" + (", Triton's CPU interpreter, torch.nn on the CPU in place of cuDNN: "
                                               "the times say nothing about a GPU." if meta.get("device_type") == "cpu"
                                               else "."), ""]
    pre = meta.get("precompile") or {}
    if pre:
        lines += [f"Pre-compile: {pre.get('done')}/{pre.get('tasks')} configurations in {pre.get('seconds')} s "
                  f"with {pre.get('jobs')} workers, {len(pre.get('errors') or [])} with errors"
                  + (" (time limit reached)" if pre.get("timed_out") else "")
                  + (f"; {pre['skipped']}" if pre.get("skipped") else "") + ".", ""]

    barrier = [r for r in rows if r["provider"] == "barrier"]
    if barrier:
        lines += ["## The barrier alone", "",
                  f"us per empty step (median of launches of {barrier[0]['n_steps']} steps); variants per kind: "
                  + "; ".join(f"{k}: {', '.join(next((r['variants'] for r in barrier if r['barrier'] == k), []))}"
                              for k in BARRIER_KINDS), "",
                  "| programs | " + " | ".join(f"{k}: {n}" for k, n in BARRIER_KINDS.items()) + " |",
                  "|---:|" + "---:|" * len(BARRIER_KINDS)]
        for programs in dict.fromkeys(r["programs"] for r in barrier):
            cells = []
            for k in BARRIER_KINDS:
                r = next((r for r in barrier if r["programs"] == programs and r["barrier"] == k), None)
                cells.append("" if r is None else f"{r['us_per_step']:.3f}" if r["status"] == "ok"
                             else f"{r['status']}: {r['error']}".replace("|", "/"))
            lines.append(f"| {programs} | " + " | ".join(cells) + " |")
        lines.append("")

    layer_rows = [r for r in rows if r["provider"] != "barrier"]
    variants = list(dict.fromkeys(r["variant"] for r in layer_rows if r["variant"]))
    lstm = [r for r in layer_rows if r["cell"] == "lstm" and r["provider"] == "triton"]
    if lstm:
        dm = [(d, m) for d in dict.fromkeys(r["dtype"] for r in lstm) for m in MODES]
        lines += ["## Summary: LSTM, geometric mean of the speed-up vs cuDNN fp16 over the points", "",
                  "| variant | " + " | ".join(f"{_short(d)} {m}" for d, m in dm) + " | engine ran |",
                  "|---|" + "---:|" * (len(dm) + 1)]
        for v in variants:
            mine = [r for r in lstm if r["variant"] == v]
            cells = []
            for d, m in dm:
                s = [r["speedup_vs_cudnn_fp16"] for r in mine if r["dtype"] == d and r["mode"] == m
                     and r.get("speedup_vs_cudnn_fp16")]
                cells.append(f"{_x(_geomean(s))} (n={len(s)})" if s else "-")
            ran = sum(1 for r in mine if r.get("engine"))
            lines.append(f"| {v} | " + " | ".join(cells) + f" | {ran}/{len(mine)} |")
        lines.append("")

    heads = {"fwd": "fwd", "fwdbwd": "fwd+bwd"}
    for key in dict.fromkeys((r["cell"], r["batch"], r["hidden"], r["seq_len"]) for r in layer_rows):
        cell, b, h, t = key
        mine = [r for r in layer_rows if (r["cell"], r["batch"], r["hidden"], r["seq_len"]) == key]
        modes = [m for m in MODES if any(r["mode"] == m for r in mine)]
        lines += [f"## {cell.upper() if cell != 'rnn' else 'Elman RNN (tanh)'} B={b} H={h} T={t}", "",
                  "| dtype | variant | " + " | ".join(f"{heads[m]} ms | us/step | vs cuDNN fp16 | vs same dtype"
                                                     for m in modes) + " | path |",
                  "|---|---|" + "---:|" * (4 * len(modes)) + "---|"]
        for d in dict.fromkeys(r["dtype"] for r in mine):
            for provider, v in [("torch", None)] + [("triton", v) for v in variants]:
                rs = [r for r in mine if r["dtype"] == d and r["provider"] == provider and r["variant"] == v]
                if not rs:
                    continue
                name = rs[0]["label"] if provider == "torch" else v
                cells = [c for m in modes for c in _cell_text(next((r for r in rs if r["mode"] == m), None))]
                lines.append(f"| {_short(d)} | {name} | " + " | ".join(cells) + f" | {_path_text(rs)} |")
        lines.append("")
    return "\n".join(lines)


def _error_text(err: BaseException) -> str:
    first_line = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {first_line}"[:300]


# --- progress ---------------------------------------------------------------------------------------------


class Progress:
    """Timestamped lines, measurement counts and an estimate of the time left."""

    def __init__(self, opts: Options, total: int, start: float):
        self.opts, self.total, self.start = opts, total, start
        self.done = 0
        self.timing_start: float | None = None

    def log(self, message: str) -> None:
        self.opts.log(f"[{time.strftime('%H:%M:%S')} +{time.monotonic() - self.start:6.1f}s] {message}")

    def out_of_time(self) -> bool:
        limit = self.opts.time_limit_s
        return limit is not None and time.monotonic() - self.start > limit

    def measured(self, row: dict) -> None:
        now = time.monotonic()
        if self.timing_start is None:
            self.timing_start = now
        self.done += 1
        rate = (now - self.timing_start) / max(1, self.done - 1) if self.done > 1 else None
        eta = f"ETA {rate * (self.total - self.done):.0f} s" if rate is not None else "ETA ?"
        where = (f"barrier {row['barrier']} x{row['programs']}" if row["provider"] == "barrier" else
                 f"{row['cell']} B={row['batch']} H={row['hidden']} {_short(row['dtype'])} "
                 f"{row['variant'] or row['provider']} {row['mode']}")
        if row["status"] == "ok":
            what = f"{row['median_ms']:.3f} ms ({row['us_per_step']:.2f} us/step)"
            if row["provider"] == "triton":
                what += (f" [{(row.get('plan') or '').removeprefix('variant=' + row['variant'] + ' ')}]"
                         if row.get("engine") else f" [FALLBACK {row.get('path')}: {row.get('fallback_reason')}]")
            elif row["provider"] == "torch":
                what += f" [{row.get('impl')}]"
        else:
            what = f"{row['status']}: {row['error']}"
        self.log(f"[{self.done}/{self.total} {eta}] {where}: {what}")


# --- the run ----------------------------------------------------------------------------------------------


def run(opts: Options) -> int:
    """The whole benchmark; 0 if at least one engine row and one torch.nn row were measured."""
    from kernels.persistent.plan import VARIANTS
    from lightning_rnn.bench import report

    start = time.monotonic()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gs = groups(opts)
    total = len(opts.barrier_programs) * len(BARRIER_KINDS) + sum(len(g.modes) * (1 + len(opts.variants)) for g in gs)
    progress = Progress(opts, total, start)
    meta = report.collect_metadata(device, [])
    meta.update(
        command=opts.command, dry_run=opts.dry_run, seq_len=opts.seq_len,
        points=[f"{b}x{h}" for b, h in opts.points], dtypes=opts.dtypes,
        extra_cells=opts.extra_cells, extra_point="x".join(map(str, opts.extra_point)),
        variants={v: dataclasses.asdict(VARIANTS[v]) for v in opts.variants},
        barrier_programs=opts.barrier_programs, barrier_steps=opts.barrier_steps,
        warmup_ms=opts.warmup_ms, rep_ms=opts.rep_ms, seed=opts.seed, time_limit_s=opts.time_limit_s,
        timing=(f"{'triton.testing.do_bench' if device.type == 'cuda' else 'time.perf_counter'} median, "
                f"warm-up {opts.warmup_ms:g} ms, timed {opts.rep_ms:g} ms per measurement"),
        sms=torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else None,
        layout="time-major input (T, B, H), input size = hidden, 1 layer, 1 direction",
    )
    progress.log(f"device {meta['device']} ({device.type}), torch {meta['torch']}, triton {meta['triton']}, "
                 f"cuDNN {meta['cudnn']}, commit {meta['git_commit']}")
    progress.log(f"kernel-path variables: {report.format_path_env(meta['path_env']) or 'none set'}")
    n_tasks = len(warm_tasks(opts)) if opts.jobs > 0 else 0
    est = (n_tasks * _compile_estimate_s(device) / max(1, opts.jobs)
           + total * (opts.warmup_ms + opts.rep_ms + EST_OVERHEAD_MS_PER_MEASUREMENT) / 1e3)
    progress.log(f"{len(opts.variants)} variants x {len(gs)} points x modes + torch.nn: {total} measurements, "
                 f"T={opts.seq_len}; estimate {est:.0f} s (pre-compile {n_tasks} configurations with "
                 f"{opts.jobs} jobs, then timing)")

    rows: list[dict] = []
    meta["precompile"] = precompile(opts, progress)
    write_outputs(opts, meta, rows, device.type)

    for row in _barrier_rows(opts, device):
        if progress.out_of_time():
            row.update(status="skipped", error=f"time limit ({opts.time_limit_s:.0f} s) reached")
        else:
            measure_barrier(row, opts, device)
        rows.append(row)
        progress.measured(row)
    write_outputs(opts, meta, rows, device.type)

    impl_cache: dict = {}
    for g in gs:
        run_group(g, opts, device, progress, rows, impl_cache)
        meta["seconds"] = round(time.monotonic() - start, 1)
        write_outputs(opts, meta, rows, device.type)
        progress.log(f"wrote {g.title()} to {opts.out}")

    meta["seconds"] = round(time.monotonic() - start, 1)
    meta["finished"] = True
    write_outputs(opts, meta, rows, device.type)
    counts = {s: sum(1 for r in rows if r["status"] == s) for s in ("ok", "skipped", "error")}
    fallbacks = sum(1 for r in rows if r["provider"] == "triton" and r["status"] == "ok" and not r.get("engine"))
    progress.log(f"done in {meta['seconds']} s: {counts['ok']} ok, {counts['skipped']} skipped, {counts['error']} "
                 f"errors, {fallbacks} engine fallbacks; wrote {opts.out}/results.json, results.csv, table.md")
    ok = {r["provider"] for r in rows if r["status"] == "ok"}
    return 0 if {"triton", "torch"} <= ok else 1


# --- command line -----------------------------------------------------------------------------------------


def _list(kind: type):
    return lambda text: [kind(v) for v in text.split(",") if v and v != "none"]


def _point(text: str) -> tuple[int, int]:
    b, h = text.lower().split("x")
    return int(b), int(h)


def build_parser(prog: str = "python -m lightning_rnn.bench.variants") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("out_dir", nargs="?", type=Path, help="output folder (default benchmarks/results/<time>-variants)")
    p.add_argument("--out", type=Path, help="the same as OUT_DIR")
    p.add_argument("--dry-run", action="store_true",
                   help="tiny sizes (LSTM B3 H17, GRU/Elman B5 H24, T 3, variants default and fast, fp32 and "
                        "fp16); without CUDA in Triton's CPU interpreter, with torch.nn on the CPU for cuDNN")
    p.add_argument("--points", type=lambda t: [_point(v) for v in t.split(",") if v], metavar="BxH[,BxH...]",
                   help="LSTM points (default 8,16,64,128 x 768,1024)")
    p.add_argument("--dtypes", type=_list(str), metavar="D[,D...]", help="LSTM dtypes (default bf16,fp16)")
    p.add_argument("--variants", type=_list(str), metavar="V[,V...]",
                   help="variants of kernels.persistent.plan.VARIANTS (default: all)")
    p.add_argument("--seq-len", "-T", type=int, help="T (default 256)")
    p.add_argument("--extra-cells", type=_list(str), metavar="C[,C...]",
                   help="cells timed fwd+bwd at --extra-point only (default gru,rnn; 'none' for none)")
    p.add_argument("--extra-point", metavar="BxHxDTYPE", help="default 16x768xbf16")
    p.add_argument("--barrier-programs", type=_list(int), metavar="P[,P...]",
                   help="grid sizes of the barrier-alone test (default 132,96; 'none' to skip)")
    p.add_argument("--barrier-steps", type=int, help="empty steps per barrier launch (default 2000)")
    p.add_argument("--jobs", type=int, help="pre-compile workers (default: CPU count - 2; 0: no pre-compile)")
    p.add_argument("--compile-timeout", type=float, default=150.0,
                   help="seconds the pre-compile phase may take at most (default 150)")
    p.add_argument("--time-limit", type=float,
                   help="seconds after which no new measurement starts (rows say so); default none")
    p.add_argument("--warmup", type=float, help="warm-up budget per measurement, ms (default 10)")
    p.add_argument("--rep", type=float, help="timed budget per measurement, ms (default 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--recorded-command", help=argparse.SUPPRESS)  # the command line a re-run records
    return p


def options_from_args(args: argparse.Namespace, command: str) -> Options:
    from lightning_rnn.bench.providers import canonical_dtype

    base = DRY_RUN if args.dry_run else GPU_DEFAULTS

    def pick(name: str, value):
        return base[name] if value is None else value

    out = args.out or args.out_dir or Path("benchmarks") / "results" / f"{dt.datetime.now():%Y%m%d-%H%M%S}-variants"
    extra = base["extra_point"]
    if args.extra_point:
        b, h, d = args.extra_point.lower().split("x")
        extra = (int(b), int(h), d)
    from kernels.persistent.plan import VARIANTS

    variants = pick("variants", args.variants) or list(VARIANTS)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    extra_cells = DEFAULT_EXTRA_CELLS if args.extra_cells is None else args.extra_cells
    unknown = [c for c in extra_cells if c not in ("lstm", "gru", "rnn")]
    if unknown:
        raise ValueError(f"unknown cells {unknown}; choose from lstm, gru, rnn")
    return Options(
        out=out, points=pick("points", args.points), dtypes=[canonical_dtype(d) for d in pick("dtypes", args.dtypes)],
        variants=variants, seq_len=pick("seq_len", args.seq_len), extra_cells=extra_cells,
        extra_point=(extra[0], extra[1], canonical_dtype(extra[2])),
        barrier_programs=pick("barrier_programs", args.barrier_programs),
        barrier_steps=pick("barrier_steps", args.barrier_steps), warmup_ms=pick("warmup_ms", args.warmup),
        rep_ms=pick("rep_ms", args.rep), jobs=pick("jobs", args.jobs), dry_run=args.dry_run,
        compile_timeout_s=args.compile_timeout, time_limit_s=args.time_limit, seed=args.seed, command=command,
        min_reps=2 if args.dry_run else 5,
    )


def main(argv: list[str] | None = None,
         program: Sequence[str] = ("python", "-m", "lightning_rnn.bench.variants")) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(" ".join(program))
    args = parser.parse_args(argv)
    command = args.recorded_command or shlex.join([*program, *argv])
    if not torch.cuda.is_available():
        if not args.dry_run:
            parser.error("no CUDA device: the variants are timed on a GPU (--dry-run runs tiny in the interpreter)")
        if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
            # Triton was imported before the interpreter was asked for (`lightning-rnn bench` does: its
            # imports load it), so its own @jit helpers (tl.min's combine, ...) cannot be interpreted:
            # run in a fresh Python with TRITON_INTERPRET=1 from the start.
            import subprocess

            print("Triton is already imported without its interpreter: running the dry run in a fresh process",
                  flush=True)
            return subprocess.call([sys.executable, "-m", "lightning_rnn.bench.variants", *argv,
                                    "--recorded-command", command], env={**os.environ, "TRITON_INTERPRET": "1"})
        # Must precede the first import of the kernels (triton.jit reads it then); the spawned
        # pre-compile workers inherit it.
        os.environ["TRITON_INTERPRET"] = "1"
    try:
        opts = options_from_args(args, command)
    except ValueError as err:
        parser.error(str(err))
    return run(opts)


if __name__ == "__main__":
    sys.exit(main())
