"""Host side of the persistent engine: choosing a plan (or why not), launching, resource configs.

The cells' wrappers (`kernels/<cell>/function.py`) call `choose` once per layer call; with a plan
they call `forward` / `backward`, else their per-step kernels. On a GPU `choose` compiles the
plan's kernels (no launch) and applies the rule of `kernels.resources`, trying the next candidate
where one does not fit; whatever the compiler or a launch reports is a reason to fall back, never
an error for the user (`mark_failed` makes the fallback stick for that shape).
"""
from __future__ import annotations

import functools
import logging

import torch
from torch import Tensor

from . import plan as P
from .engine import persistent_backward_kernel, persistent_forward_kernel

log = logging.getLogger(__name__)

#: Steps per launch; None: the whole sequence in one. Tests set 1 to run a GPU plan's grid (many
#: programs) in the interpreter, which runs programs one after another: a barrier between two would
#: never open there, and a launch never waits after its last step.
STEPS_PER_LAUNCH: int | None = None
_logged: set[str] = set()
#: (cell, B, H, dtype, device, variant, interpreted) -> (plan or None, reason): decided once per shape.
_chosen: dict[tuple, tuple[P.Plan | None, str]] = {}


def log_once(message: str) -> None:
    if message not in _logged:
        _logged.add(message)
        log.warning(message)


def dot_precision(dtype: torch.dtype) -> str:
    """tl.dot's input_precision: TF32 for fp32 weights only where the user allowed it for matmuls."""
    return "tf32" if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32 else "ieee"


def _cooperative_option() -> dict:
    """launch_cooperative_grid=True where this Triton's CUDA backend has it: a grid that cannot be
    co-resident is refused at launch instead of hanging at the barrier."""
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


def _forward_constexprs(p: P.Plan, save: bool, precision: str, lengths: bool = False) -> dict:
    return dict(p.constexprs(), **p.forward_constexprs(), SAVE=save, PRECISION=precision, HAS_LENGTHS=lengths)


def _backward_constexprs(p: P.Plan, precision: str, lengths: bool = False) -> dict:
    return dict(p.constexprs(), P_BLOCK=p.p_block, PRECISION=precision, HAS_LENGTHS=lengths)


# --- launches -------------------------------------------------------------------------------------------


def forward_launch(p: P.Plan, xg: Tensor, hs: Tensor, state0: Tensor, c_out: Tensor, c_stride: int,
                   saved: Tensor, w_rows: Tensor, b_hn: Tensor, n_steps: int, save: bool, interpreted: bool,
                   lengths: Tensor | None = None, t0: int = 0) -> None:
    """`n_steps` steps in one launch; every tensor is already offset to the launch's first step (time t0)."""
    B, H = hs.shape[-2], hs.shape[-1]
    sync = torch.zeros(p.tiles * p.sync_stride, dtype=torch.int32, device=hs.device)
    persistent_forward_kernel[(p.slices, p.tiles)](
        xg, hs, state0, c_out, saved, w_rows, b_hn, sync, p.sync_stride, n_steps, B, H, p.k_total, c_stride,
        lengths if lengths is not None else sync, t0,
        **_forward_constexprs(p, save, dot_precision(w_rows.dtype), lengths is not None), **_options(p, interpreted),
    )


def backward_launch(p: P.Plan, dy: Tensor, dg: Tensor, saved: Tensor, hs: Tensor, cs: Tensor, dstate: Tensor,
                    w_rows: Tensor, shares: Tensor, t_last: int, n_steps: int, interpreted: bool,
                    lengths: Tensor | None = None) -> None:
    """Steps t_last down to t_last-n_steps+1 in one launch; tensors offset to the LAST step."""
    B, H = dstate.shape
    sync = torch.zeros(p.tiles * p.sync_stride, dtype=torch.int32, device=dstate.device)
    persistent_backward_kernel[(p.slices, p.tiles)](
        dy, dg, saved, hs, cs, dstate, w_rows, shares, sync, p.sync_stride, t_last, n_steps, B, H, p.k_total,
        lengths if lengths is not None else sync,
        **_backward_constexprs(p, dot_precision(w_rows.dtype), lengths is not None), **_options(p, interpreted),
    )


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
    T, B, _ = xg.shape
    H = w_hh.shape[1]
    dev = xg.device
    hs = _new(poison, (T + 1, B, H), P.exchange_dtype(p.variant, w_hh.dtype), dev)
    hs[0] = h0
    f32 = torch.float32
    state = state0.float().contiguous() if state0 is not None else hs[0]
    lstm = p.cell == P.LSTM
    cs = _new(poison, (T + 1 if save else 1, B, H), f32, dev) if lstm else hs
    if lstm and save:
        cs[0] = state0
    keeps = save and p.cell in (P.LSTM, P.GRU)
    saved = _new(poison, (T, B, 4 * H), f32, dev) if keeps else hs
    b = b_hn.float().contiguous() if b_hn is not None else torch.zeros(H, dtype=f32, device=dev)
    xg, w_rows = xg.contiguous(), P.interleave(w_hh, p)
    n = STEPS_PER_LAUNCH or T
    for t in range(0, T, n):
        if t > 0:  # the state a launch starts from is what the one before it left
            state = (cs[t] if save else cs[0]) if lstm else hs[t].float()
        c_out = cs[t + 1] if lstm and save else cs[0]
        forward_launch(p, xg[t], hs[t], state, c_out, B * H if lstm and save else 0, saved[t] if keeps else hs[t],
                       w_rows, b, min(n, T - t), save, interpreted, lengths, t)
    return hs, cs if lstm else None, saved if keeps else None


def backward(p: P.Plan, dy: Tensor, dstate: Tensor | None, hs: Tensor | None, cs: Tensor | None, saved: Tensor | None,
             w_hh: Tensor, interpreted: bool, poison: bool = False, lengths: Tensor | None = None) -> Tensor:
    """dg (T, B, G*H) fp32 (G = 4 LSTM/GRU, 1 Elman) from dy (T, B, H) fp32 (dh_T added to dy[T-1]);
    dstate (B, H) fp32 goes in as dL/dc_T (LSTM; zeros for the GRU) and comes out at step 0.
    hs (T+1, B, H) from the forward (GRU, Elman), cs (T+1, B, H) (LSTM), saved (T, B, 4H) (LSTM, GRU).
    With `lengths` (as the forward's): dy zero past each row's length and dh_T added at its last
    step instead (kernels.lengths.grad_in); steps past the length get zero gate gradients."""
    T, B, H = dy.shape
    dev = dy.device
    dg = _new(poison, (T, B, P.ROWS_PER_UNIT[p.cell] * H), torch.float32, dev)
    if dstate is None:  # the Elman cell carries nothing back but dh
        dstate = torch.zeros(B, H, dtype=torch.float32, device=dev)
    shares = torch.zeros(2, p.slices, B, H, dtype=torch.float32, device=dev)
    w_rows = P.interleave(w_hh, p)
    n = STEPS_PER_LAUNCH or T
    for t in range(T - 1, -1, -n):
        backward_launch(p, dy[t], dg[t], saved[t] if saved is not None else dy[t], hs[t + 1] if hs is not None else dy[t],
                        cs[t + 1] if cs is not None else dy[t], dstate, w_rows, shares, t, min(n, t + 1), interpreted,
                        lengths)
    return dg


# --- choosing -------------------------------------------------------------------------------------------


def _compile_fits(p: P.Plan, B: int, H: int, dtype: torch.dtype, device: torch.device, sms: int,
                  lengths: bool = False) -> tuple[bool, str]:
    """Compile the plan's forward (training) and backward for this B and H (no launch; Triton specializes
    on its integer arguments, so the sizes are the layer's, the step counts ones it is not specialized
    for) and apply kernels.resources.fits to what the compiler made. The tensors only carry dtypes.
    `lengths`: the kernels built for per-row lengths (HAS_LENGTHS), which `choose` decides apart."""
    from kernels.resources import fits

    def tiny(dtype_: torch.dtype) -> Tensor:
        return torch.empty(16, dtype=dtype_, device=device)

    f32 = tiny(torch.float32)
    w, hs, sync = tiny(dtype), tiny(P.exchange_dtype(p.variant, dtype)), tiny(torch.int32)
    precision = dot_precision(dtype)
    n_steps, t_last = 2, 3
    for name, fn, args, consts in (
        ("forward", persistent_forward_kernel,
         (f32, hs, f32, f32, f32, w, f32, sync, p.sync_stride, n_steps, B, H, p.k_total, B * H, sync, 0),
         _forward_constexprs(p, True, precision, lengths)),
        ("backward", persistent_backward_kernel,
         (f32, f32, f32, hs, f32, f32, w, f32, sync, p.sync_stride, t_last, n_steps, B, H, p.k_total, sync),
         _backward_constexprs(p, precision, lengths)),
    ):
        compiled = fn.warmup(*args, grid=(p.slices, p.tiles), **consts, **_options(p, False))
        if hasattr(compiled, "_init_handles"):
            compiled._init_handles()
        ok, reason = fits(compiled.n_regs, compiled.metadata.shared, p.num_warps, p.programs, persistent=True,
                          sms=sms, spill_bytes=getattr(compiled, "n_spills", 0))
        if not ok:
            return False, f"{name}: {reason}"
    return True, ""


@functools.lru_cache(maxsize=None)
def _gpu_choice(cell: int, B: int, H: int, dtype: torch.dtype, device: torch.device,
                variant: str, lengths: bool = False) -> tuple[P.Plan | None, str]:
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    if B * 4 * H >= 2**31:
        return None, f"B*4H = {B * 4 * H} elements per step passes 32-bit offsets"
    candidates = P.gpu_plans(cell, B, H, dtype.itemsize, sms, variant)
    if not candidates:
        return None, (f"no slice of H={H} fits {sms} SMs with its weights in registers "
                      f"({dtype.itemsize} B each) and B={B} in parallel")
    reasons = []
    for p in candidates:
        try:
            ok, reason = _compile_fits(p, B, H, dtype, device, sms, lengths)
        except Exception as e:  # OutOfResources and any other compiler report: try the next, then fall back
            ok, reason = False, f"{type(e).__name__}: {str(e)[:200]}"
        if ok:
            return p, ""
        reasons.append(f"[{p.describe()}] {reason}")
    return None, "; ".join(reasons)


def choose(cell: int, B: int, H: int, dtype: torch.dtype, device: torch.device, interpreted: bool,
           unsupported: str | None = None, lengths: bool = False) -> tuple[P.Plan | None, str]:
    """(plan, "") where the engine runs this layer, else (None, why not). Runs on every layer call:
    after the first call for a shape it is two environment reads and one dict lookup. With `lengths`
    the kernels built for per-row lengths are the ones that must fit (a choice of their own)."""
    if not P.engine_enabled():
        return None, "LIGHTNING_RNN_PERSISTENT=0"
    if unsupported:
        return None, unsupported
    key = (cell, B, H, dtype, device, P.variant_name(), interpreted, lengths)
    choice = _chosen.get(key)
    if choice is None:
        if interpreted:
            choice = P.interpreter_plan(cell, B, H, key[5]), ""
        elif device.type != "cuda":
            choice = None, f"no persistent engine for device {device.type}"
        else:
            choice = _gpu_choice(cell, B, H, dtype, device, key[5], lengths)
        _chosen[key] = choice
    return choice


def mark_failed(cell: int, B: int, H: int, dtype: torch.dtype, device: torch.device, error: BaseException) -> str:
    """A launch of the engine failed: run the per-step kernels for this shape from now on."""
    reason = f"the engine's launch failed ({type(error).__name__}: {str(error)[:200]})"
    for interpreted in (False, True):
        for lengths in (False, True):
            _chosen[(cell, B, H, dtype, device, P.variant_name(), interpreted, lengths)] = None, reason
    return reason


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


def _signature(kernel, dtype: str, exchange: str) -> tuple:
    import inspect

    types = {"w_ptr": f"*{dtype}", "hs_ptr": f"*{exchange}", "sync_ptr": "*i32", "len_ptr": "*i32"}
    return tuple((n, "constexpr" if "constexpr" in str(prm.annotation) else types.get(n, "*fp32")
                  if n.endswith("_ptr") else "i32")
                 for n, prm in inspect.signature(kernel.fn).parameters.items())


def resource_configs(cell_name: str, B: int, H: int, dtype: str, sms: int, variant: str = P.DEFAULT_VARIANT) -> list:
    """The engine launches for `kernels.resources`: every GPU plan the dispatcher would try, in its order,
    as one group of candidates (resources compiles them in turn until one fits, as `choose` does)."""
    from kernels.resources import LaunchConfig

    cell = P.CELLS[cell_name]
    w_bytes = {"fp32": 4, "fp16": 2, "bf16": 2}[dtype]
    exchange = dtype if P.VARIANTS[variant].h16 and dtype != "fp32" else "fp32"
    configs = []
    # With per-row lengths (HAS_LENGTHS) the kernels are other builds, chosen apart (`choose`): a group of their own.
    for lengths, suffix in ((False, ""), (True, ".lengths")):
        for i, p in enumerate(P.gpu_plans(cell, B, H, w_bytes, sms, variant)):
            common = dict(family=cell_name.split("_")[0], B=B, H=H, dtype=dtype, num_warps=p.num_warps, num_stages=1,
                          programs=p.programs, persistent=True, candidate=i, maxnreg=p.maxnreg,
                          group=f"{cell_name}.engine{suffix} B{B} H{H} {dtype} {variant}")
            for name, kernel, consts in (
                    ("forward", persistent_forward_kernel, _forward_constexprs(p, True, "ieee", lengths)),
                    ("backward", persistent_backward_kernel, _backward_constexprs(p, "ieee", lengths))):
                configs.append(LaunchConfig(
                    kernel=f"{cell_name}.engine.{name}{suffix}", fn_path=f"{kernel.fn.__module__}:{kernel.fn.__name__}",
                    signature=_signature(kernel, dtype, exchange), constexprs=tuple(consts.items()), **common))
    return configs
