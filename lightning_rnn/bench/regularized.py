"""The cost of AWD-LSTM's regularisers on one LSTM layer, ours against AWD's own way, side by side.

    python -m lightning_rnn.bench.regularized OUT_DIR              # the GPU run: B80 T70 H1150 bf16, fwd+bwd
    python -m lightning_rnn.bench.regularized OUT_DIR --dry-run    # tiny, seconds, on the CPU (interpreter)
    lightning-rnn bench --preset awd --out OUT_DIR [...]           # the same (cli.py delegates here)

Rows (forward + backward of one layer, input size = hidden size, training mode, a fresh mask per call):
  ours-plain      lightning_rnn.nn.LSTM, no regulariser (the engine or the per-step kernels)
  ours-wd         weight_drop=0.5 (W_hh masked on the host, the same kernels)
  ours-wd-rd      weight_drop=0.5, recurrent_dropout=0.25 (issue 22's target: <= 1.05 x ours-plain).
                  Recurrent dropout is not in the kernels yet: this row runs our PyTorch time loop,
                  so it is expected to miss the target by far until the engine implements it.
  cudnn-plain     torch.nn.LSTM (cuDNN)
  awd-cudnn-wd    AWD-LSTM's WeightDrop: torch.nn.LSTM whose weight_hh_l0 is re-registered each call as
                  dropout(raw weight) (cuDNN then copies the weights into its flat buffer every call).
Writes OUT_DIR/results.json and prints a table: median ms and the ratio to the plain row of the same family.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

GPU = dict(batch=80, seq_len=70, hidden=1150, dtype="bfloat16", warmup_ms=25.0, rep_ms=200.0)
DRY_RUN = dict(batch=2, seq_len=3, hidden=16, dtype="float32", warmup_ms=1.0, rep_ms=2.0)
ROWS = ("ours-plain", "ours-wd", "ours-wd-rd", "cudnn-plain", "awd-cudnn-wd")


class AWDWeightDrop(torch.nn.Module):
    """AWD-LSTM's WeightDrop (salesforce/awd-lstm-lm, weight_drop.py) for W_hh of layer 0: the raw
    weight is a parameter of its own, and each call sets the LSTM's weight_hh_l0 to its dropout."""

    def __init__(self, lstm: torch.nn.LSTM, p: float) -> None:
        super().__init__()
        self.lstm, self.p = lstm, p
        raw = lstm.weight_hh_l0
        del lstm._parameters["weight_hh_l0"]
        self.weight_hh_raw = torch.nn.Parameter(raw.detach().clone())

    def forward(self, x: torch.Tensor):
        setattr(self.lstm, "weight_hh_l0", F.dropout(self.weight_hh_raw, self.p, training=self.training))
        return self.lstm(x)


def build(row: str, hidden: int, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    from lightning_rnn.nn import LSTM

    if row.startswith("ours"):
        options = {"ours-plain": {}, "ours-wd": {"weight_drop": 0.5},
                   "ours-wd-rd": {"weight_drop": 0.5, "recurrent_dropout": 0.25}}[row]
        return LSTM(hidden, hidden, backend="triton", **options).to(device, dtype)
    lstm = torch.nn.LSTM(hidden, hidden).to(device, dtype)
    return lstm if row == "cudnn-plain" else AWDWeightDrop(lstm, 0.5)


def measure(row: str, opts: dict, device: torch.device) -> dict:
    from lightning_rnn.bench.timing import time_cpu, time_cuda

    dtype = getattr(torch, opts["dtype"])
    module = build(row, opts["hidden"], device, dtype).train()
    x = torch.randn(opts["seq_len"], opts["batch"], opts["hidden"], device=device, dtype=dtype, requires_grad=True)
    params = [p for p in module.parameters()]

    def step() -> None:
        y, _ = module(x)
        y.float().sum().backward()

    def reset() -> None:
        for t in [x, *params]:
            t.grad = None

    if device.type == "cuda":
        timing = time_cuda(step, opts["warmup_ms"], opts["rep_ms"], grad_to_none=[x, *params])
    else:
        timing = time_cpu(step, opts["warmup_ms"], opts["rep_ms"], reset=reset, min_reps=2)
    ran = getattr(module, "last_backend", "torch")
    return {"row": row, "median_ms": timing.median_ms, "q20_ms": timing.q20_ms, "q80_ms": timing.q80_ms,
            "backend": ran, "method": timing.method}


def main(argv: list[str] | None = None, program: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=" ".join(program or ["python -m lightning_rnn.bench.regularized"]))
    parser.add_argument("out", nargs="?", type=Path)
    parser.add_argument("--out", dest="out_flag", type=Path)
    parser.add_argument("--dry-run", action="store_true", help="tiny, on the CPU in Triton's interpreter")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    out = args.out_flag or args.out
    if out is None:
        parser.error("give OUT_DIR (or --out OUT_DIR)")
    if args.dry_run:
        if os.environ.get("TRITON_INTERPRET") != "1" and "triton" in sys.modules:
            import subprocess

            return subprocess.call([sys.executable, "-m", "lightning_rnn.bench.regularized", str(out), "--dry-run"],
                                   env={**os.environ, "TRITON_INTERPRET": "1"})
        os.environ["TRITON_INTERPRET"] = "1"
        device, opts = torch.device("cpu"), DRY_RUN
    else:
        if not torch.cuda.is_available():
            parser.error("the full run needs a CUDA GPU; use --dry-run on a CPU")
        device, opts = torch.device("cuda"), GPU
    rows = []
    for row in ROWS:
        try:
            rows.append(measure(row, opts, device))
        except Exception as err:  # one failing row is reported, the others still run
            rows.append({"row": row, "error": f"{type(err).__name__}: {err}"})
    base = {r["row"]: r.get("median_ms") for r in rows}
    for r in rows:
        plain = base["ours-plain"] if r["row"].startswith("ours") else base["cudnn-plain"]
        if r.get("median_ms") and plain:
            r["x_plain"] = r["median_ms"] / plain
    out.mkdir(parents=True, exist_ok=True)
    payload = {"options": opts, "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
               "dry_run": args.dry_run, "torch": torch.__version__, "rows": rows}
    (out / "results.json").write_text(json.dumps(payload, indent=1))
    print(f"B{opts['batch']} T{opts['seq_len']} H{opts['hidden']} {opts['dtype']} fwd+bwd on {payload['device']}")
    for r in rows:
        if "error" in r:
            print(f"  {r['row']:<14} error: {r['error']}")
        else:
            print(f"  {r['row']:<14} {r['median_ms']:9.3f} ms  x{r.get('x_plain', float('nan')):.3f}  ({r['backend']})")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
