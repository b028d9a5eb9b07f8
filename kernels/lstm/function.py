"""The Triton LSTM layer: one layer, one direction, whole sequence, forward and backward.

Forward:  xg = x @ W_ih^T + b               one GEMM for all T steps
          the persistent engine (kernels/persistent): all T steps in one launch, where a plan fits;
          else for t in 0..T-1: step kernel h_t, c_t, gates_t    (+ h_t = h_t @ W_hr^T with proj_size)
Backward: the engine, or for t in T-1..0: step kernel   dgates_t, dc_{t-1} (dh_t's recurrent part fused in)
          dx, dW_ih, dW_hh, db, dW_hr       large GEMMs over all steps

Each dtype runs on its own units: the GEMMs and the recurrent product take their operands in the
compute dtype (x's, or the autocast dtype) and accumulate in fp32, as torch.matmul does for
fp16/bf16, so those run on the tensor cores; fp32 uses TF32 only where the user allowed it
(`torch.backends.cuda.matmul.allow_tf32`). The cell state and the gate math are fp32 always.

`layer_forward` and `layer_backward` launch the kernels; `kernels.lstm.op` registers them as
torch.library custom ops (autograd, torch.compile) and holds the public entry point, `op.lstm_layer`
(the ops import the launchers, never the other way round).
Without a gradient to compute, the forward keeps nothing for a backward (no gates, no c history).
"""
from __future__ import annotations

import functools
import os
from typing import Callable, Sequence

import torch
import triton
from torch import Tensor

from kernels import paths
from kernels.device import device_guard
from kernels.lengths import grad_in, valid_steps, zero_past
from kernels.persistent import plan as engine_plan
from kernels.persistent import run as engine

from . import graphs
from .triton_kernels import lstm_backward_step_kernel, lstm_forward_step_kernel

#: Whether triton.jit compiled these kernels for its CPU interpreter (read once, at import).
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"

#: Tile sizes of the per-step kernels: the GPU's unless interpreted (tests force the GPU's in the
#: interpreter too, so that the multi-tile indexing and the K loop the GPU runs are exercised).
GPU_TILES = not INTERPRETED

#: Warps per program of the per-step kernels (what `kernels.resources` compiles them with). With 4,
#: Triton 3.6's sm_90 build of the backward spilled 8 B; with 8 neither 3.6 nor 3.9 spills.
STEP_NUM_WARPS = 8

#: Tests set this to fill every buffer a kernel writes with NaN first, so that an element
#: the kernel forgets to write shows up as NaN instead of as stale zeros.
POISON_BUFFERS = False


def _empty(*shape: int, device: torch.device, dtype: torch.dtype = torch.float32) -> Tensor:
    if POISON_BUFFERS:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


def _block_sizes(batch: int, hidden: int, reduce: int, gpu_tiles: bool | None = None) -> tuple[int, int, int]:
    """Tile sizes (BLOCK_B, BLOCK_H, BLOCK_K); tl.dot wants every dimension >= 16."""

    def fit(n: int, cap: int) -> int:
        return max(16, min(triton.next_power_of_2(n), cap))

    if not (GPU_TILES if gpu_tiles is None else gpu_tiles):
        # The interpreter runs programs one after another: few, large tiles are fastest.
        return fit(batch, 64), fit(hidden, 128), fit(reduce, 128)
    # sm_90 builds at BLOCK_K = 64 used all 255 registers and spilled (152 B fp32, 8 B 16-bit in the
    # forward); at 32 no step kernel spills (`python -m kernels.resources --families lstm`).
    return fit(batch, 16), fit(hidden, 32), fit(reduce, 32)


#: tl.dot's input_precision for the recurrent product: TF32 for fp32 operands only where the user
#: allowed it for fp32 matmuls (torch.backends.cuda.matmul.allow_tf32, set_float32_matmul_precision);
#: fp16/bf16 operands go to the tensor cores either way.
dot_precision = engine.dot_precision


def _forward_steps(b: dict[str, Tensor], keep: bool, precision: str) -> None:
    """The forward time loop. Reads b["xg"], b["h0"], b["cs"][0], b["w_hh"] (and b["w_hr"]); writes
    b["y"], b["cs"] (all of c_1..c_T with `keep`, else a ping-pong pair), b["gates"] with `keep`,
    and b["h_cell"] with a projection. With b["valid"] ((T, B) bool, kernels.lengths) a row past its
    length keeps its h (in y) and c."""
    xg, h0, cs, w_hh, y, gates = b["xg"], b["h0"], b["cs"], b["w_hh"], b["y"], b.get("gates")
    w_hr = b.get("w_hr")
    h_cell = b["h_cell"] if w_hr is not None else y
    T, B, R = y.shape
    H = w_hh.shape[0] // 4
    BB, BH, BK = _block_sizes(B, H, R)
    grid = (triton.cdiv(B, BB), triton.cdiv(H, BH))
    for t in range(T):
        c_prev, c_next = (cs[t], cs[t + 1]) if keep else (cs[t % 2], cs[(t + 1) % 2])
        lstm_forward_step_kernel[grid](
            xg[t], h0 if t == 0 else y[t - 1], c_prev, w_hh, h_cell[t], c_next,
            gates[t] if gates is not None else xg[t],  # never written without STORE_GATES
            B, H, R, w_hh.stride(0),
            STORE_GATES=keep, DOT_PRECISION=precision, BLOCK_B=BB, BLOCK_H=BH, BLOCK_K=BK,
            num_warps=STEP_NUM_WARPS,
        )
        if w_hr is not None:
            torch.mm(h_cell[t], w_hr.t(), out=y[t])
        if "valid" in b:
            v = b["valid"][t][:, None]
            y[t].copy_(torch.where(v, y[t], h0 if t == 0 else y[t - 1]))
            c_next.copy_(torch.where(v, c_next, c_prev))


def _backward_steps(b: dict[str, Tensor], precision: str) -> None:
    """The backward time loop. Reads b["dh_in"], b["dgates"][T] (zero), b["w_hh"], b["gates"], b["cs"],
    b["dc"] (dL/dc_T); writes b["dgates"][:T], b["dc"] (dL/dc_0) and, with a projection (b["w_hr32"]),
    b["dh_in"] (the full dL/dh_t, kept for dW_hr). With b["valid"] a step past a row's length has no
    gate gradients and passes dc through."""
    dh_in, dgates, w_hh, gates, cs, dc = b["dh_in"], b["dgates"], b["w_hh"], b["gates"], b["cs"], b["dc"]
    T, B, _ = dh_in.shape
    H = w_hh.shape[0] // 4
    BB, BH, BK = _block_sizes(B, H, H)
    grid = (triton.cdiv(B, BB), triton.cdiv(H, BH))
    valid = b.get("valid")
    if "w_hr32" not in b:
        for t in range(T - 1, -1, -1):
            dc_next = dc.clone() if valid is not None else dc
            lstm_backward_step_kernel[grid](
                dh_in[t], dgates[t + 1], w_hh, gates[t], cs[t + 1], cs[t], dc, dgates[t],
                B, H, w_hh.stride(0),
                FUSE_RECURRENT=True, DOT_PRECISION=precision, BLOCK_B=BB, BLOCK_H=BH, BLOCK_K=BK,
                num_warps=STEP_NUM_WARPS,
            )
            if valid is not None:
                _freeze_grads(valid[t], dgates[t], dc, dc_next)
        return
    # With a projection dh_t (B, P) must pass through W_hr before it reaches the cell, so its
    # recurrent part is a GEMM on the host instead of being fused into the kernel.
    w_hh32, w_hr32, dh_cell = b["w_hh32"], b["w_hr32"], b["dh_cell"]
    for t in range(T - 1, -1, -1):
        dh_in[t].addmm_(dgates[t + 1].float(), w_hh32)  # dh_t, kept for dW_hr
        torch.mm(dh_in[t], w_hr32, out=dh_cell)
        dc_next = dc.clone() if valid is not None else dc
        lstm_backward_step_kernel[grid](
            dh_cell, dgates[t + 1], w_hh, gates[t], cs[t + 1], cs[t], dc, dgates[t],
            B, H, w_hh.stride(0),
            FUSE_RECURRENT=False, DOT_PRECISION=precision, BLOCK_B=BB, BLOCK_H=BH, BLOCK_K=BK,
            num_warps=STEP_NUM_WARPS,
        )
        if valid is not None:
            _freeze_grads(valid[t], dgates[t], dc, dc_next)


def _freeze_grads(valid: Tensor, dgates: Tensor, dc: Tensor, dc_next: Tensor) -> None:
    """Rows past their length at this step: no gate gradients, dL/dc passes through unchanged."""
    dgates.masked_fill_(~valid[:, None], 0.0)
    dc.copy_(torch.where(valid[:, None], dc, dc_next))


def _launch_loop(steps: Callable[..., None], tensors: dict[str, Tensor | None], inputs: Sequence[str],
                 outputs: Sequence[str], **options: object) -> None:
    """Run a time loop eagerly, or as a CUDA-graph replay where enabled (kernels.lstm.graphs)."""
    present = {k: t for k, t in tensors.items() if t is not None}
    if present.get("h_cell") is present.get("y"):
        present.pop("h_cell", None)  # no projection: the cell output is y itself
    launch = functools.partial(steps, **options)
    device = next(iter(present.values())).device
    if not graphs.graphs_enabled(device):
        launch(present)
        return
    key = (steps.__name__, device, tuple(sorted(options.items())),
           tuple((k, tuple(t.shape), t.dtype, t.stride()) for k, t in present.items()))
    graphs.run(key, launch, present, [k for k in inputs if k in present], [k for k in outputs if k in present])


def layer_forward(
    x: Tensor, h0: Tensor, c0: Tensor, w_ih: Tensor, w_hh: Tensor, bias: Tensor | None, w_hr: Tensor | None,
    save: bool, lengths: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """Run the layer; x, h0 and the weights share the compute dtype, c0 may be any float dtype.
    `lengths` ((B,) int on x's device, 1..T, or None): see kernels.lengths; y is zero past them.

    Returns (y (T, B, R), h_T, c_T, cs, gates, h_cell). With `save` (a backward will follow),
    cs (T+1, B, H) fp32 holds c_0..c_T, gates (T, B, 4H) fp32 the activated gates and, with a
    projection, h_cell (T, B, H) the cell outputs before W_hr; without it those three are None
    and the kernels keep only the c of the current step.
    """
    T, B, I = x.shape
    H = w_hh.shape[0] // 4
    R = w_hh.shape[1]
    dtype, dev = x.dtype, x.device
    with device_guard(dev):
        w_hh = w_hh.contiguous()
        h0 = h0.contiguous()
        x2 = x.reshape(T * B, I)
        # All steps' input projection in one GEMM, in the compute dtype (fp32 accumulation inside).
        xg = (torch.addmm(bias.to(dtype), x2, w_ih.t()) if bias is not None else x2 @ w_ih.t()).view(T, B, 4 * H)

        lengths32 = lengths.to(torch.int32) if lengths is not None else None
        plan = engine.plan_or_log(engine_plan.LSTM, B, H, w_hh.dtype, dev, INTERPRETED, unsupported=(
            "proj_size is not supported by the persistent engine" if w_hr is not None else None),
            lengths=lengths is not None)
        if plan is not None:
            try:
                hs, cs, gates = engine.forward(plan, xg, h0, c0, w_hh, None, save, INTERPRETED, POISON_BUFFERS,
                                               lengths32)
            except Exception as error:  # a compiler or launch report: the per-step kernels run instead
                engine.fall_back(engine_plan.LSTM, B, H, w_hh.dtype, dev, error)
                plan = None
        if plan is not None:
            paths.record("lstm", "persistent", plan.describe() + paths.lengths_note(lengths))
            # A tensor of its own (offset 0, as the custom op's fake implementation says), not a view of hs.
            h_T = hs[T].to(dtype, copy=True)  # with lengths: each row's state at its last step
            y = zero_past(hs[1:], lengths).to(dtype, copy=True)
            c_T = cs[-1].to(dtype, copy=True)
            if not save:
                return y, h_T, c_T, None, None, None
            return y, h_T, c_T, cs, gates, None

        y = _empty(T, B, R, device=dev, dtype=dtype)  # h_t of every step: the output, and h_{t+1}'s input
        h_cell = _empty(T, B, H, device=dev, dtype=dtype) if w_hr is not None else y
        cs = _empty(T + 1 if save else 2, B, H, device=dev)  # fp32; without `save` a ping-pong pair
        cs[0] = c0
        gates = _empty(T, B, 4 * H, device=dev) if save else None
        loop = {"xg": xg, "h0": h0, "cs": cs, "w_hh": w_hh, "y": y, "gates": gates, "h_cell": h_cell, "w_hr": w_hr,
                "valid": valid_steps(lengths, T) if lengths is not None else None}
        paths.record("lstm", "step+cuda-graphs" if graphs.graphs_enabled(dev) else "step",
                     paths.lengths_note(lengths))
        _launch_loop(_forward_steps, loop, inputs=("xg", "h0", "cs", "w_hh", "w_hr", "valid"),
                     outputs=("y", "cs", "gates", "h_cell"), keep=save, precision=dot_precision(dtype))

        c_T = cs[T if save else T % 2].to(dtype, copy=True)
        h_T = y[-1].clone()  # with lengths: each row's h at its last step (frozen since)
        if lengths is not None:
            y = zero_past(y, lengths)
        if not save:
            return y, h_T, c_T, None, None, None
        return y, h_T, c_T, cs, gates, h_cell if w_hr is not None else None


def layer_backward(
    dy: Tensor, dh_T: Tensor, dc_T: Tensor, x: Tensor, h0: Tensor, w_ih: Tensor, w_hh: Tensor,
    w_hr: Tensor | None, y: Tensor, cs: Tensor, gates: Tensor, h_cell: Tensor | None, needs: list[bool],
    lengths: Tensor | None = None,
) -> list[Tensor | None]:
    """Gradients [dx, dh0, dc0 (fp32), dw_ih, dw_hh, db (fp32), dw_hr] of `layer_forward(save=True)`,
    each None where needs[i] is False; the rest in the compute dtype (db is summed in fp32).
    (y is zero past the lengths, but no step there has a gate gradient: dW_hh needs no h from there.)"""
    T, B, I = x.shape
    H = w_hh.shape[0] // 4
    R = w_hh.shape[1]
    dtype, dev = x.dtype, x.device
    with device_guard(dev):
        w_hh = w_hh.contiguous()
        # dL/dh_t arriving from above; the final state's gradient joins the (row's) last step. (The
        # kernels index rows densely, so every buffer they touch is made contiguous here.)
        dh_in = grad_in(dy, dh_T, lengths)
        dc = dc_T.to(torch.float32, memory_format=torch.contiguous_format, copy=True)
        dgates = _empty(T + 1, B, 4 * H, device=dev, dtype=dtype)  # the GEMMs' operand: compute dtype
        dgates[T] = 0.0  # "step T" contributes nothing to dh_{T-1}

        plan = engine.plan_or_log(engine_plan.LSTM, B, H, w_hh.dtype, dev, INTERPRETED, unsupported=(
            "proj_size is not supported by the persistent engine" if w_hr is not None else None),
            lengths=lengths is not None)
        if plan is not None:
            try:
                dgates[:T] = engine.backward(plan, dh_in, dc, None, cs, gates, w_hh, INTERPRETED, POISON_BUFFERS,
                                             lengths.to(torch.int32) if lengths is not None else None)
            except Exception as error:  # a compiler or launch report: the per-step kernels run instead
                engine.fall_back(engine_plan.LSTM, B, H, w_hh.dtype, dev, error)
                dc.copy_(dc_T)
                plan = None
        if plan is None:
            loop = {"dh_in": dh_in, "dgates": dgates, "w_hh": w_hh, "gates": gates, "cs": cs, "dc": dc,
                    "valid": valid_steps(lengths, T) if lengths is not None else None}
            if w_hr is not None:  # the projection's GEMMs run in fp32 on the host, between the kernels
                loop.update(w_hh32=w_hh.float(), w_hr32=w_hr.float(), dh_cell=_empty(B, H, device=dev))
            _launch_loop(_backward_steps, loop,
                         inputs=("dh_in", "dgates", "w_hh", "gates", "cs", "dc", "w_hh32", "w_hr32", "valid"),
                         outputs=("dgates", "dc", "dh_in"), precision=dot_precision(dtype))

        dg = dgates[:T].view(T * B, 4 * H)
        grads: list[Tensor | None] = [None] * 7
        if needs[0]:
            grads[0] = (dg @ w_ih).view(T, B, I)
        if needs[1]:
            grads[1] = dgates[0] @ w_hh
        if needs[2]:
            grads[2] = dc
        if needs[3]:
            grads[3] = dg.t() @ x.reshape(T * B, I)
        if needs[4]:  # h_{t-1} is h0 for the first step and y[t-1] after it
            grads[4] = torch.addmm(dgates[0].t() @ h0, dg[B:].t(), y[: T - 1].reshape((T - 1) * B, R))
        if needs[5]:
            grads[5] = dg.sum(0, dtype=torch.float32)
        if needs[6] and w_hr is not None and h_cell is not None:
            grads[6] = dh_in.view(T * B, R).t() @ h_cell.view(T * B, H).float()
        return grads


_W_TYPE = {"fp32": "fp32", "fp16": "fp16", "bf16": "bf16"}


def resource_configs(B: int, H: int, dtype: str, sms: int) -> list:
    """The launches `lstm_layer` makes on a GPU for (B, H, weight dtype), for `kernels.resources`."""
    from kernels.resources import LaunchConfig

    w = "*" + _W_TYPE[dtype]
    BB, BH, BK = _block_sizes(B, H, H, gpu_tiles=True)
    programs = triton.cdiv(B, BB) * triton.cdiv(H, BH)
    f32, i32 = "*fp32", "i32"
    # x, h, the input projection and the gate gradients are in the compute dtype (= the weights'),
    # the cell state and the saved gates in fp32 (see layer_forward / layer_backward).
    c = "constexpr"
    fwd_sig = (("xg_ptr", w), ("h_prev_ptr", w), ("c_prev_ptr", f32), ("w_hh_ptr", w), ("h_out_ptr", w),
               ("c_out_ptr", f32), ("gates_ptr", f32), ("B", i32), ("H", i32), ("R", i32), ("stride_w", i32),
               ("STORE_GATES", c), ("DOT_PRECISION", c), ("BLOCK_B", c), ("BLOCK_H", c), ("BLOCK_K", c))
    bwd_sig = (("dh_ptr", f32), ("dgates_next_ptr", w), ("w_hh_ptr", w), ("gates_ptr", f32), ("c_ptr", f32),
               ("c_prev_ptr", f32), ("dc_ptr", f32), ("dgates_ptr", w), ("B", i32), ("H", i32),
               ("stride_w", i32), ("FUSE_RECURRENT", c), ("DOT_PRECISION", c), ("BLOCK_B", c),
               ("BLOCK_H", c), ("BLOCK_K", c))
    tiles = (("DOT_PRECISION", "ieee"), ("BLOCK_B", BB), ("BLOCK_H", BH), ("BLOCK_K", BK))
    common = dict(family="lstm", B=B, H=H, dtype=dtype, num_warps=STEP_NUM_WARPS, programs=programs,
                  persistent=False, ints=(("B", B), ("H", H), ("R", H), ("stride_w", H)))  # as layer_forward passes them
    configs = [
        LaunchConfig(kernel="lstm.step.forward", fn_path="kernels.lstm.triton_kernels:lstm_forward_step_kernel",
                     signature=fwd_sig, constexprs=(("STORE_GATES", True),) + tiles, **common),
        LaunchConfig(kernel="lstm.step.backward", fn_path="kernels.lstm.triton_kernels:lstm_backward_step_kernel",
                     signature=bwd_sig, constexprs=(("FUSE_RECURRENT", True),) + tiles, **common),
    ]
    return configs + engine.resource_configs("lstm", B, H, dtype, sms)
