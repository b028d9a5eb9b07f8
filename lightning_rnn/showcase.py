"""Showcase: the same LSTM trained twice, with PyTorch and with our Triton kernel.

The task is Hochreiter & Schmidhuber's adding problem: each step carries a random value and a
marker; the target is the sum of the two marked values, which the LSTM must remember across the
sequence. Both runs start from the same weights and see the same batches, so their losses should
agree to many digits: the Triton kernel computes the same function and gradients as PyTorch.

Without a GPU the kernel runs in Triton's CPU interpreter (TRITON_INTERPRET=1, set here before
the kernels are imported): slow, but the very code that runs on the GPU.

    python -m lightning_rnn.showcase [--steps 60]
"""
from __future__ import annotations

import argparse
import os
import time

import torch


def adding_problem(batch: int, length: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """x (batch, length, 2): value in [0, 1) and a 0/1 marker on two steps; y (batch,): their sum."""
    values = torch.rand(batch, length, generator=generator)
    marks = torch.zeros(batch, length)
    first = torch.randint(0, length // 2, (batch,), generator=generator)
    second = torch.randint(length // 2, length, (batch,), generator=generator)
    marks[torch.arange(batch), first] = 1.0
    marks[torch.arange(batch), second] = 1.0
    return torch.stack([values, marks], dim=-1), (values * marks).sum(dim=1)


class Regressor(torch.nn.Module):
    def __init__(self, hidden: int, backend: str) -> None:
        super().__init__()
        from lightning_rnn.nn import LSTM

        self.lstm = LSTM(2, hidden, batch_first=True, backend=backend)
        self.head = torch.nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm(x)
        return self.head(y[:, -1]).squeeze(-1)


def train(backend: str, steps: int, hidden: int, length: int, batch: int, seed: int) -> tuple[list[float], float, str]:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(seed)
    model = Regressor(hidden, backend).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    data = torch.Generator().manual_seed(seed)
    losses = []
    start = time.perf_counter()
    for _ in range(steps):
        x, y = (t.to(device) for t in adding_problem(batch, length, data))
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    return losses, time.perf_counter() - start, str(model.lstm.last_backend)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=240)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--length", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before kernels.lstm.function is imported

    shape = dict(steps=args.steps, hidden=args.hidden, length=args.length, batch=args.batch, seed=args.seed)
    print(f"Adding problem, LSTM(2, {args.hidden}), sequences of {args.length}, batch {args.batch}; "
          f"always predicting the mean (loss ~0.17) is the baseline to beat.")
    torch_losses, torch_s, torch_ran = train("torch", **shape)
    triton_losses, triton_s, triton_ran = train("triton", **shape)
    every = max(1, args.steps // 8)
    print(f"mean training loss over each {every} steps:")
    print(f"{'steps':>9} {'loss (' + torch_ran + ')':>16} {'loss (' + triton_ran + ')':>16}")
    for start in range(0, args.steps, every):
        window = slice(start, start + every)
        mean = lambda xs: sum(xs[window]) / len(xs[window])  # noqa: E731
        print(f"{start + 1:>4}-{min(start + every, args.steps):<4} {mean(torch_losses):>16.6f} {mean(triton_losses):>16.6f}")
    where = "GPU" if torch.cuda.is_available() else "CPU interpreter"
    print(f"wall time: torch {torch_s:.1f} s, triton ({where}) {triton_s:.1f} s; "
          f"largest loss difference {max(abs(a - b) for a, b in zip(torch_losses, triton_losses)):.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
