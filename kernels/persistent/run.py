"""Host side of the persistent engine: choosing a plan (or why not), launching, resource configs.

The cells' wrappers (`kernels/<cell>/function.py`) call `choose` once per layer call; with a plan
they call `forward` / `backward`, else their per-step kernels. On a GPU `choose` compiles the
plan's kernels (no launch) and applies the rule of `kernels.resources`, trying the next candidate
where one does not fit; whatever the compiler or a launch reports is a reason to fall back, never
an error for the user (`mark_failed` makes the fallback stick for that shape).

A bidirectional layer runs both directions in one launch where a plan for half the SMs fits
(`choose(..., directions=2)`, `forward_two` / `backward_two`, kernels/bidirectional.py), else as two
launches of the one-direction plan, the reason recorded (kernels.paths).

No launch may hang. The engine runs only where Triton can launch a cooperative grid (all programs
resident, or the launch is refused), and every barrier wait is bounded (`MAX_POLLS`): a program
that gives up sets its launch's error word and leaves. The host reads that word where it costs no
synchronization: at once in the CPU interpreter or under LIGHTNING_RNN_ENGINE_CHECK=1 (which
synchronizes after each forward and backward), so the layer falls back before it returns anything;
else on the layer's next call for that shape (`choose`), when the results of the failed launch
were already returned: then the shape is marked failed and a RuntimeError says so.
"""
from __future__ import annotations

import functools
import logging
import os
from typing import NamedTuple

import torch
from torch import Tensor

from . import plan as P
from .engine import persistent_backward_kernel, persistent_forward_kernel

log = logging.getLogger(__name__)

#: Steps per launch; None: the whole sequence in one. Tests set 1 to run a GPU plan's grid (many
#: programs) in the interpreter, which runs programs one after another: a barrier between two would
#: never open there, and a launch never waits after its last step.
STEPS_PER_LAUNCH: int | None = None
#: Polls a barrier wait may take before its program gives up (`engine._wait`): over a minute at the
#: ~1 us an L2 round trip takes, far beyond any step; tests make it small.
MAX_POLLS = 2**26
#: int32 words after the batch tiles' sync words: the launch's error word, on a 128-byte line of its own.
ERROR_WORDS = 32
_logged: set[str] = set()
#: (cell, B, H, dtype, device, variant, precision, interpreted) -> (plan or None, reason): decided once per shape.
_chosen: dict[tuple, tuple[P.Plan | None, str]] = {}
#: (cell, B, H, dtype, device) -> [(forward/backward, error word, CUDA event or None)]: launches whose
#: error word the host has not read yet (kept alive until read).
_unchecked: dict[tuple, list[tuple[str, Tensor, object]]] = {}


def log_once(message: str) -> None:
    if message not in _logged:
        _logged.add(message)
        log.warning(message)


def dot_precision(dtype: torch.dtype) -> str:
    """tl.dot's input_precision: TF32 for fp32 weights only where the user allowed it for matmuls."""
    return "tf32" if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32 else "ieee"


def _triton_version() -> str:
    import triton

    return triton.__version__


def _cooperative_option() -> dict:
    """launch_cooperative_grid=True where this Triton's CUDA backend has it: a grid that cannot be
    co-resident is refused at launch instead of waiting at the barrier. {} where not (Triton before
    3.2): then the engine is not used (`_gpu_choice`)."""
    try:
        from triton.backends.nvidia.compiler import CUDAOptions
    except ImportError:
        return {}
    return {"launch_cooperative_grid": True} if "launch_cooperative_grid" in CUDAOptions.__dataclass_fields__ else {}


def _options(p: P.Plan, interpreted: bool) -> dict:
    """Launch options: the plan's warps, no software pipelining (the loop is the time loop), every
    register of the SM allowed where the plan says so (see Plan.maxnreg), cooperative."""
    if interpreted:
        return {}
    return {"num_warps": p.num_warps, "num_stages": 1, **({"maxnreg": p.maxnreg} if p.maxnreg else {}),
            **_cooperative_option()}


def _forward_constexprs(p: P.Plan, save: bool, precision: str, lengths: bool = False, directions: int = 1) -> dict:
    return dict(p.constexprs(), **p.forward_constexprs(), SAVE=save, PRECISION=precision, HAS_LENGTHS=lengths,
                **_two_dirs(directions))


def _backward_constexprs(p: P.Plan, precision: str, lengths: bool = False, directions: int = 1) -> dict:
    return dict(p.constexprs(), P_BLOCK=p.p_block, PRECISION=precision, HAS_LENGTHS=lengths, **_two_dirs(directions))


def _two_dirs(directions: int) -> dict:
    """TWO_DIRS only where set: a one-direction launch passes the constexprs it passed before there were two."""
    return {"TWO_DIRS": True} if directions == 2 else {}


# --- launches -------------------------------------------------------------------------------------------


def forward_launch(p: P.Plan, xg: Tensor, hs: Tensor, state0: Tensor, c_out: Tensor, c_stride: int,
                   saved: Tensor, w_rows: Tensor, b_hn: Tensor, n_steps: int, save: bool, interpreted: bool,
                   lengths: Tensor | None = None, t0: int = 0, dir_steps: int = 0) -> Tensor:
    """`n_steps` steps in one launch; every tensor is already offset to the launch's first step (time t0).
    `dir_steps` > 0: both directions of a bidirectional layer in this launch (grid (slices, tiles, 2)):
    every tensor is direction 0's part of a stacked (2, ...) buffer of `dir_steps` steps (see the engine).
    Returns the launch's error word (1,) int32: nonzero where a program gave up at a barrier."""
    B, H = hs.shape[-2], hs.shape[-1]
    directions = 2 if dir_steps else 1
    sync = _sync_words(p, hs.device, directions)
    persistent_forward_kernel[(p.slices, p.tiles, directions)](
        xg, hs, state0, c_out, saved, w_rows, b_hn, sync, p.sync_stride, MAX_POLLS, n_steps, B, H, p.k_total,
        c_stride, lengths if lengths is not None else sync, t0, dir_steps,
        **_forward_constexprs(p, save, dot_precision(w_rows.dtype), lengths is not None, directions),
        **_options(p, interpreted),
    )
    return sync[-ERROR_WORDS:-ERROR_WORDS + 1]


def backward_launch(p: P.Plan, dy: Tensor, dg: Tensor, saved: Tensor, hs: Tensor, cs: Tensor, dstate: Tensor,
                    w_rows: Tensor, shares: Tensor, t_last: int, n_steps: int, interpreted: bool,
                    lengths: Tensor | None = None, dir_steps: int = 0) -> Tensor:
    """Steps t_last down to t_last-n_steps+1 in one launch; tensors offset to the LAST step (direction 0's
    with `dir_steps`, as `forward_launch`). Returns the launch's error word, as `forward_launch`."""
    B, H = dstate.shape[-2], dstate.shape[-1]
    directions = 2 if dir_steps else 1
    sync = _sync_words(p, dstate.device, directions)
    persistent_backward_kernel[(p.slices, p.tiles, directions)](
        dy, dg, saved, hs, cs, dstate, w_rows, shares, sync, p.sync_stride, MAX_POLLS, t_last, n_steps, B, H,
        p.k_total, lengths if lengths is not None else sync, dir_steps,
        **_backward_constexprs(p, dot_precision(w_rows.dtype), lengths is not None, directions),
        **_options(p, interpreted),
    )
    return sync[-ERROR_WORDS:-ERROR_WORDS + 1]


def _sync_words(p: P.Plan, device: torch.device, directions: int = 1) -> Tensor:
    """Zeroed int32: each direction's batch tiles' barrier words, then the launch's error word (see the kernels)."""
    return torch.zeros(directions * p.tiles * p.sync_stride + ERROR_WORDS, dtype=torch.int32, device=device)


def _new(poison: bool, shape: tuple, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A buffer the kernels fill; NaN-filled under `poison`, so an unwritten element shows."""
    if poison:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


def forward(p: P.Plan, xg: Tensor, h0: Tensor, state0: Tensor | None, w_hh: Tensor, b_hn: Tensor | None,
            save: bool, interpreted: bool, poison: bool = False,
            lengths: Tensor | None = None) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """The whole sequence in one launch.

    xg (T, B, X*H) the input projections with biases (any float dtype), h0 (B, H), state0 (B, H)
    c_0 for the LSTM / h_0 in fp32 for the GRU, w_hh (G*H, H) in the compute dtype, b_hn (H,) GRU.
    Returns hs (T+1, B, H) in the exchange dtype (hs[0] = h0), the LSTM's cs (T+1, B, H) fp32 with
    `save` (else c_T alone, (1, B, H)), and saved (T, B, 4H) fp32 with `save` (LSTM, GRU).
    With `lengths` ((B,) int32 on xg's device, 1..T) a row's h and c stay as they were at its last
    step, so hs[T] and the last c are its h_n and c_n; hs past a row's length is not its output.
    """
    one = lambda t: t.unsqueeze(0) if t is not None else None  # noqa: E731
    hs, cs, saved = _forward(p, one(xg), one(h0), one(state0), one(w_hh), one(b_hn), save, interpreted, poison,
                             lengths)
    return hs[0], cs[0] if cs is not None else None, saved[0] if saved is not None else None


def forward_two(p: P.Plan, xg: Tensor, h0: Tensor, state0: Tensor | None, w_hh: Tensor, b_hn: Tensor | None,
                save: bool, interpreted: bool, poison: bool = False,
                lengths: Tensor | None = None) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Both directions of a bidirectional layer in one launch (grid (slices, tiles, 2)): `forward`'s
    arguments and results, each stacked over the two directions along a leading axis of 2:
    xg (2, T, B, X*H), h0 (2, B, H), state0 (2, B, H), w_hh (2, G*H, H), b_hn (2, H); returns hs
    (2, T+1, B, H), cs (2, T+1 or 1, B, H), saved (2, T, B, 4H). The reverse direction is a forward-direction
    problem on its reversed inputs (kernels.lengths.reverse_within): the engine knows no direction."""
    return _forward(p, xg, h0, state0, w_hh, b_hn, save, interpreted, poison, lengths)


def _forward(p: P.Plan, xg: Tensor, h0: Tensor, state0: Tensor | None, w_hh: Tensor, b_hn: Tensor | None,
             save: bool, interpreted: bool, poison: bool,
             lengths: Tensor | None) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """`forward_two` for D = xg.shape[0] directions (1: the one-direction build, a grid of two axes)."""
    D, T, B, _ = xg.shape
    H = w_hh.shape[2]
    dev = xg.device
    dir_steps = T if D == 2 else 0
    hs = _new(poison, (D, T + 1, B, H), P.exchange_dtype(p.variant, w_hh.dtype), dev)
    hs[:, 0] = h0
    f32 = torch.float32
    state = state0.float().contiguous() if state0 is not None else hs[:, 0]
    lstm = p.cell == P.LSTM
    cs = _new(poison, (D, T + 1 if save else 1, B, H), f32, dev) if lstm else hs
    if lstm and save:
        cs[:, 0] = state0
    keeps = save and p.cell in (P.LSTM, P.GRU)
    saved = _new(poison, (D, T, B, 4 * H), f32, dev) if keeps else hs
    b = b_hn.float().contiguous() if b_hn is not None else torch.zeros(D, H, dtype=f32, device=dev)
    xg = xg.contiguous()
    w_rows = torch.stack([P.interleave(w_hh[d], p) for d in range(D)])
    n = STEPS_PER_LAUNCH or T
    errors = []
    for t in range(0, T, n):
        if t > 0:  # the state a launch starts from is what the one before it left ((D, B, H) dense: the
            #        kernel finds direction 1's at B*H)
            state = ((cs[:, t] if save else cs[:, 0]) if lstm else hs[:, t].float()).contiguous()
        c_out = cs[:, t + 1] if lstm and save else cs[:, 0]
        errors.append(forward_launch(p, xg[:, t], hs[:, t], state, c_out, B * H if lstm and save else 0,
                                     saved[:, t] if keeps else hs[:, t], w_rows, b, min(n, T - t), save, interpreted,
                                     lengths, t, dir_steps))
    _settle((p.cell, B, H, w_hh.dtype, dev), "forward", errors)
    return hs, cs if lstm else None, saved if keeps else None


def backward(p: P.Plan, dy: Tensor, dstate: Tensor | None, hs: Tensor | None, cs: Tensor | None, saved: Tensor | None,
             w_hh: Tensor, interpreted: bool, poison: bool = False, lengths: Tensor | None = None) -> Tensor:
    """dg (T, B, G*H) fp32 (G = 4 LSTM/GRU, 1 Elman) from dy (T, B, H) fp32 (dh_T added to dy[T-1]);
    dstate (B, H) fp32 goes in as dL/dc_T (LSTM; zeros for the GRU) and comes out at step 0.
    hs (T+1, B, H) from the forward (GRU, Elman), cs (T+1, B, H) (LSTM), saved (T, B, 4H) (LSTM, GRU).
    With `lengths` (as the forward's): dy zero past each row's length and dh_T added at its last
    step instead (kernels.lengths.grad_in); steps past the length get zero gate gradients."""
    one = lambda t: t.unsqueeze(0) if t is not None else None  # noqa: E731
    return _backward(p, one(dy), one(dstate), one(hs), one(cs), one(saved), one(w_hh), interpreted, poison,
                     lengths)[0]


def backward_two(p: P.Plan, dy: Tensor, dstate: Tensor | None, hs: Tensor | None, cs: Tensor | None,
                 saved: Tensor | None, w_hh: Tensor, interpreted: bool, poison: bool = False,
                 lengths: Tensor | None = None) -> Tensor:
    """Both directions in one launch: `backward`'s arguments and result stacked over the directions
    (dy (2, T, B, H), dstate (2, B, H) in and out, hs / cs (2, T+1, B, H), saved (2, T, B, 4H), w_hh
    (2, G*H, H); returns dg (2, T, B, G*H)), as `forward_two`'s."""
    return _backward(p, dy, dstate, hs, cs, saved, w_hh, interpreted, poison, lengths)


def _backward(p: P.Plan, dy: Tensor, dstate: Tensor | None, hs: Tensor | None, cs: Tensor | None,
              saved: Tensor | None, w_hh: Tensor, interpreted: bool, poison: bool,
              lengths: Tensor | None) -> Tensor:
    """`backward_two` for D = dy.shape[0] directions (1: the one-direction build)."""
    D, T, B, H = dy.shape
    dev = dy.device
    dg = _new(poison, (D, T, B, P.ROWS_PER_UNIT[p.cell] * H), torch.float32, dev)
    if dstate is None:  # the Elman cell carries nothing back but dh
        dstate = torch.zeros(D, B, H, dtype=torch.float32, device=dev)
    shares = torch.zeros(D, 2, p.slices, B, H, dtype=torch.float32, device=dev)
    w_rows = torch.stack([P.interleave(w_hh[d], p) for d in range(D)])
    n = STEPS_PER_LAUNCH or T
    dir_steps = T if D == 2 else 0
    errors = [backward_launch(p, dy[:, t], dg[:, t], saved[:, t] if saved is not None else dy[:, t],
                              hs[:, t + 1] if hs is not None else dy[:, t],
                              cs[:, t + 1] if cs is not None else dy[:, t],
                              dstate, w_rows, shares, t, min(n, t + 1), interpreted, lengths, dir_steps)
              for t in range(T - 1, -1, -n)]
    _settle((p.cell, B, H, w_hh.dtype, dev), "backward", errors)
    return dg


# --- the launches' error words --------------------------------------------------------------------------


class EngineFailure(RuntimeError):
    """A program of an engine launch gave up at a grid barrier: that launch's results are invalid."""


def _check_at_once(device: torch.device) -> bool:
    """Whether to read a launch's error word before its results are returned: free on the CPU (the
    interpreter has finished the launch), a synchronization on a GPU (LIGHTNING_RNN_ENGINE_CHECK=1)."""
    return device.type != "cuda" or os.environ.get("LIGHTNING_RNN_ENGINE_CHECK", "0") == "1"


def _failure(shape: tuple, what: str, code: int) -> str:
    cell, B, H, dtype, device = shape
    return (f"the persistent {_CELL_NAMES[cell]} engine's {what} launch for B={B} H={H} {dtype} on {device} gave "
            f"up at a grid barrier after {code} of its steps ({MAX_POLLS} polls for a program that never "
            "arrived: its grid was not resident at once, or a program failed)")


def _settle(shape: tuple, what: str, errors: list[Tensor]) -> None:
    """After a forward's or backward's launches: raise EngineFailure now where reading their error words
    costs no extra synchronization (`_check_at_once`), before any result is returned; else copy them to
    the host behind an event, for `_check_earlier_launches` on the layer's next call."""
    error = errors[0] if len(errors) == 1 else torch.cat(errors).amax(0, keepdim=True)
    if _check_at_once(error.device):
        code = int(error.item())
        if code:
            raise EngineFailure(_failure(shape, what, code))
        return
    event = None
    if error.device.type == "cuda":
        host = torch.empty(1, dtype=torch.int32, pin_memory=True)
        error, event = host.copy_(error, non_blocking=True), torch.cuda.Event()
        event.record(torch.cuda.current_stream(shape[4]))
    _unchecked.setdefault(shape, []).append((what, error, event))


def _check_earlier_launches(shape: tuple) -> None:
    """The error words of this shape's earlier launches that have finished (no waiting for the others):
    where one is set, the shape is marked failed and a RuntimeError says that results already returned
    were invalid and how to turn the engine off."""
    pending = _unchecked.pop(shape, None)
    if not pending:
        return
    failed, waiting = None, []
    for what, error, event in pending:
        if event is not None and not event.query():
            waiting.append((what, error, event))
        elif int(error.item()) and failed is None:
            failed = what, int(error.item())
    if waiting:
        _unchecked[shape] = waiting
    if failed is not None:
        error = RuntimeError(
            f"lightning_rnn: {_failure(shape, *failed)}. The results of that call were returned before this was "
            "known and are invalid; this shape runs the per-step kernels from now on. Set "
            "LIGHTNING_RNN_PERSISTENT=0 to turn the engine off, or LIGHTNING_RNN_ENGINE_CHECK=1 to check each "
            "launch before its results are returned (a synchronization after each).")
        mark_failed(*shape, error)
        raise error


# --- choosing -------------------------------------------------------------------------------------------


class Launch(NamedTuple):
    """One kernel a layer of a plan launches: the arguments (a torch dtype for a pointer, the value
    for an integer) and the constexprs, as `forward_launch` / `backward_launch` pass them."""

    name: str  # "forward" (as training runs it), "forward.inference", "backward"
    kernel: object
    args: dict
    constexprs: dict


def launches(p: P.Plan, B: int, H: int, dtype: torch.dtype, precision: str, lengths: bool = False,
             directions: int = 1) -> list[Launch]:
    """Every kernel a layer of plan `p` launches at (B, H): what `choose` compiles and checks, and what
    `kernels.resources` measures. The step counts stand for any (the kernels do not specialize on them).
    `lengths`: the builds for per-row lengths (HAS_LENGTHS), which `choose` decides apart (names end in
    ".lengths"); t0 is 0 as in a launch of the whole sequence. `directions` 2: the builds that run both
    directions of a bidirectional layer in one launch (TWO_DIRS, names end in ".2dir"; `choose` decides
    them apart too); dir_steps stands for any T (not specialized on), 0 in a one-direction launch."""
    ints = dict(sync_stride=p.sync_stride, max_polls=MAX_POLLS, n_steps=2, t_last=3, B=B, H=H, K_TOTAL=p.k_total,
                t0=0, dir_steps=3 if directions == 2 else 0)
    suffix = (".lengths" if lengths else "") + (".2dir" if directions == 2 else "")
    saves = (True, False) if p.cell in (P.LSTM, P.GRU) else (False,)  # the Elman forward keeps nothing
    out = [Launch(("forward" if save == saves[0] else "forward.inference") + suffix, persistent_forward_kernel,
                  _arguments(persistent_forward_kernel, p, dtype, save, False,
                             dict(ints, c_stride=B * H if p.cell == P.LSTM and save else 0)),
                  _forward_constexprs(p, save, precision, lengths, directions)) for save in saves]
    return out + [Launch("backward" + suffix, persistent_backward_kernel,
                         _arguments(persistent_backward_kernel, p, dtype, True, True, ints),
                         _backward_constexprs(p, precision, lengths, directions))]


def _arguments(kernel, p: P.Plan, dtype: torch.dtype, save: bool, backward: bool, ints: dict) -> dict:
    import inspect

    return {name: _pointer_dtype(p, name, dtype, save, backward) if name.endswith("_ptr") else ints[name]
            for name, prm in inspect.signature(kernel.fn).parameters.items()
            if "constexpr" not in str(prm.annotation)}


def _pointer_dtype(p: P.Plan, name: str, dtype: torch.dtype, save: bool, backward: bool) -> torch.dtype:
    """The dtype of the tensor `forward` / `backward` pass as `name` (where a cell leaves a pointer
    unused it passes some buffer of its own: hs or dy)."""
    exchange = P.exchange_dtype(p.variant, dtype)
    lstm, elman = p.cell == P.LSTM, p.cell in (P.ELMAN_TANH, P.ELMAN_RELU)
    if name == "w_ptr":
        return dtype
    if name in ("sync_ptr", "len_ptr"):  # without lengths the host passes the sync words as len_ptr
        return torch.int32
    if name == "xg_ptr":  # the LSTM's input projection is in the compute dtype, the others' in fp32
        return dtype if lstm else torch.float32
    if name == "hs_ptr":
        return torch.float32 if backward and lstm else exchange
    stands_in = {"state0_ptr": elman, "c_ptr": not lstm, "saved_ptr": not save or elman}
    return exchange if not backward and stands_in.get(name, False) else torch.float32


def _compile_fits(p: P.Plan, B: int, H: int, dtype: torch.dtype, device: torch.device, sms: int,
                  precision: str, lengths: bool = False, directions: int = 1) -> tuple[bool, str]:
    """Compile every kernel the plan launches for this B and H (`launches`: no launch; tiny tensors
    carry the dtypes and, 16-byte aligned, the divisibility of the host's buffers) and apply
    kernels.resources.fits to what the compiler made, the build a launch with these arguments gets."""
    from kernels.resources import fits

    for launch in launches(p, B, H, dtype, precision, lengths, directions):
        args = [torch.empty(16, dtype=v, device=device) if isinstance(v, torch.dtype) else v
                for v in launch.args.values()]
        compiled = launch.kernel.warmup(*args, grid=(p.slices, p.tiles, directions), **launch.constexprs,
                                        **_options(p, False))
        if hasattr(compiled, "_init_handles"):
            compiled._init_handles()
        ok, reason = fits(compiled.n_regs, compiled.metadata.shared, p.num_warps, directions * p.programs,
                          persistent=True, sms=sms, spill_bytes=getattr(compiled, "n_spills", 0))
        if not ok:
            return False, f"{launch.name}: {reason}"
    return True, ""


@functools.lru_cache(maxsize=None)
def _gpu_choice(cell: int, B: int, H: int, dtype: torch.dtype, device: torch.device,
                variant: str, precision: str, lengths: bool = False, directions: int = 1) -> tuple[P.Plan | None, str]:
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    if not _cooperative_option():
        return None, (f"this Triton ({_triton_version()}) cannot launch a cooperative grid (launch_cooperative_grid, "
                      "Triton >= 3.2): without one the programs are not sure to be resident at once")
    if B * 4 * H >= 2**31:
        return None, f"B*4H = {B * 4 * H} elements per step passes 32-bit offsets"
    # Two directions: each gets half of the SMs (its own grid of slices x tiles, its own barriers).
    candidates = two_direction_plans(cell, B, H, dtype.itemsize, sms, variant) if directions == 2 else \
        P.gpu_plans(cell, B, H, dtype.itemsize, sms, variant)
    if not candidates:
        if directions == 2:
            return None, _two_directions_do_not_fit(cell, B, H, dtype.itemsize, sms, variant)
        return None, (f"no slice of H={H} fits {sms} SMs with its weights in registers "
                      f"({dtype.itemsize} B each) and B={B} in parallel")
    reasons = []
    for p in candidates:
        try:
            ok, reason = _compile_fits(p, B, H, dtype, device, sms, precision, lengths, directions)
        except Exception as e:  # OutOfResources and any other compiler report: try the next, then fall back
            ok, reason = False, f"{type(e).__name__}: {str(e)[:200]}"
        if ok:
            return p, ""
        reasons.append(f"[{p.describe()}] {reason}")
    return None, ("2 directions as two launches: no plan for both fits: " if directions == 2 else "") + "; ".join(reasons)


def two_direction_plans(cell: int, B: int, H: int, w_bytes: int, sms: int, variant: str) -> list[P.Plan]:
    """The GPU plans for both directions of a layer in one launch, best first: `gpu_plans` for half the
    SMs (the grid is twice the plan's programs)."""
    return [p for p in P.gpu_plans(cell, B, H, w_bytes, sms // 2, variant) if 2 * p.programs <= sms]


def _two_directions_do_not_fit(cell: int, B: int, H: int, w_bytes: int, sms: int, variant: str) -> str:
    """Why a bidirectional layer runs its directions as two launches (the first one-direction plan's grid)."""
    one = P.gpu_plans(cell, B, H, w_bytes, sms, variant)
    programs = f"{one[0].programs}" if one else "any number of"
    return f"2 directions as two launches: 2 x {programs} programs > {sms} SMs (no plan fits half of them)"


def choose(cell: int, B: int, H: int, dtype: torch.dtype, device: torch.device, interpreted: bool,
           unsupported: str | None = None, lengths: bool = False, directions: int = 1) -> tuple[P.Plan | None, str]:
    """(plan, "") where the engine runs this layer, else (None, why not). Runs on every layer call:
    after the first call for a shape it is two environment reads and two dict lookups (and a query of
    the events of the shape's earlier launches: see `_check_earlier_launches`, which may raise). With
    `lengths` the kernels built for per-row lengths are the ones that must fit (a choice of their own).
    `directions` 2: a plan for both directions of a bidirectional layer in one launch (`forward_two`,
    decided apart: its grid is twice the plan's programs); None where there is none (the reason says
    why): the directions then run as two launches of the one-direction plan (`choose` with 1)."""
    _check_earlier_launches((cell, B, H, dtype, device))
    if not P.engine_enabled():
        return None, "LIGHTNING_RNN_PERSISTENT=0"
    if unsupported:
        return None, unsupported
    key = (cell, B, H, dtype, device, P.variant_name(), dot_precision(dtype), interpreted, lengths) + \
        ((directions,) if directions == 2 else ())
    choice = _chosen.get(key)
    if choice is None:
        if interpreted:  # (its programs run one after another: two directions are always one launch there)
            choice = P.interpreter_plan(cell, B, H, key[5]), ""
        elif device.type != "cuda":
            choice = None, f"no persistent engine for device {device.type}"
        else:
            choice = _gpu_choice(cell, B, H, dtype, device, key[5], key[6], lengths, directions)
        _chosen[key] = choice
    return choice


def mark_failed(cell: int, B: int, H: int, dtype: torch.dtype, device: torch.device, error: BaseException) -> str:
    """A launch of the engine failed: run the per-step kernels for this shape from now on."""
    reason = f"the engine's launch failed ({type(error).__name__}: {str(error)[:400]})"
    for precision in ("ieee", "tf32"):
        for interpreted in (False, True):
            for lengths in (False, True):
                for two in ((), (2,)):
                    _chosen[(cell, B, H, dtype, device, P.variant_name(), precision, interpreted, lengths) + two] = \
                        None, reason
    return reason


def fall_back_to_two_launches(cell: int, B: int, H: int, dtype: torch.dtype, device: torch.device,
                              error: Exception) -> None:
    """A launch of both directions failed: log why once; this shape's bidirectional layers run their
    directions as two launches from now on (the one-direction choice stands)."""
    reason = f"2 directions as two launches: the joint launch failed ({type(error).__name__}: {str(error)[:400]})"
    for precision in ("ieee", "tf32"):
        for interpreted in (False, True):
            for lengths in (False, True):
                key = (cell, B, H, dtype, device, P.variant_name(), precision, interpreted, lengths, 2)
                _chosen[key] = None, reason
    log_once(f"persistent {_CELL_NAMES[cell]} B={B} H={H} {dtype}: {reason}")


_CELL_NAMES = {P.LSTM: "LSTM", P.GRU: "GRU", P.ELMAN_TANH: "Elman RNN (tanh)", P.ELMAN_RELU: "Elman RNN (relu)"}


def plan_or_log(cell: int, B: int, H: int, dtype: torch.dtype, device: torch.device, interpreted: bool,
                unsupported: str | None = None, lengths: bool = False) -> P.Plan | None:
    """`choose`'s plan for the cells' wrappers; where there is none, the reason is logged once (the
    per-step kernels run)."""
    plan, reason = choose(cell, B, H, dtype, device, interpreted, unsupported, lengths)
    if plan is None and reason != "LIGHTNING_RNN_PERSISTENT=0":
        log_once(f"persistent {_CELL_NAMES[cell]} not used for B={B} H={H} {dtype}: {reason}; "
                 "running the per-step kernels")
    return plan


def fall_back(cell: int, B: int, H: int, dtype: torch.dtype, device: torch.device, error: Exception) -> None:
    """An engine launch raised: log why once; this shape runs the per-step kernels from now on."""
    reason = mark_failed(cell, B, H, dtype, device, error)
    log_once(f"persistent {_CELL_NAMES[cell]} not used for B={B} H={H} {dtype}: {reason}; running the per-step kernels")


# --- kernels.resources ----------------------------------------------------------------------------------


_TRITON_TYPES = {torch.float32: "*fp32", torch.float16: "*fp16", torch.bfloat16: "*bf16", torch.int32: "*i32"}
_TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _signature(launch: Launch) -> tuple:
    """(argument, Triton type) in the kernel's order, constexprs as "constexpr" (kernels.resources)."""
    import inspect

    return tuple((n, "constexpr" if n not in launch.args else _TRITON_TYPES.get(launch.args[n], "i32"))
                 for n in inspect.signature(launch.kernel.fn).parameters)


def resource_configs(cell_name: str, B: int, H: int, dtype: str, sms: int, variant: str = P.DEFAULT_VARIANT) -> list:
    """The engine launches for `kernels.resources`: every GPU plan the dispatcher would try, in its order,
    as one group of candidates (resources compiles them in turn until one fits, as `choose` does), each
    with every kernel it launches (`launches`) and the integer arguments Triton specializes on."""
    from kernels.resources import LaunchConfig

    cell, torch_dtype = P.CELLS[cell_name], _TORCH_DTYPES[dtype]
    configs = []
    # With per-row lengths (HAS_LENGTHS) the kernels are other builds, chosen apart (`choose`): a group of their
    # own; so are the builds for both directions in one launch (TWO_DIRS: plans for half the SMs, a grid of two).
    for lengths, directions in ((False, 1), (True, 1), (False, 2), (True, 2)):
        suffix = (".lengths" if lengths else "") + (".2dir" if directions == 2 else "")
        plans = (two_direction_plans if directions == 2 else P.gpu_plans)(cell, B, H, torch_dtype.itemsize, sms,
                                                                          variant)
        for i, p in enumerate(plans):
            common = dict(family=cell_name.split("_")[0], B=B, H=H, dtype=dtype, num_warps=p.num_warps, num_stages=1,
                          programs=directions * p.programs, persistent=True, candidate=i, maxnreg=p.maxnreg,
                          group=f"{cell_name}.engine{suffix} B{B} H{H} {dtype} {variant}")
            for launch in launches(p, B, H, torch_dtype, "ieee", lengths, directions):
                kernel = launch.kernel
                configs.append(LaunchConfig(
                    kernel=f"{cell_name}.engine.{launch.name}", fn_path=f"{kernel.fn.__module__}:{kernel.fn.__name__}",
                    signature=_signature(launch), constexprs=tuple(launch.constexprs.items()),
                    ints=tuple((n, v) for n, v in launch.args.items() if isinstance(v, int)), **common))
    return configs
