"""NT-ASGD (Merity et al. 2017): SGD that switches to averaged SGD when validation stalls.

Non-monotonically triggered: after each validation, if there are more than ``nonmono`` earlier
results and this one is worse than the best of all but the last ``nonmono`` of them, averaging
starts (AWD-LSTM's rule, its ``t0``). From then on the optimizer keeps taking its usual steps and
``ParameterAverage`` keeps the running mean of the parameters after every step since the switch
(torch.optim.ASGD with ``lambd=0, t0=0`` is the same: plain SGD steps plus this average).
Validation, test and the saved checkpoints use the average, as AWD-LSTM evaluates and saves it.
"""
from __future__ import annotations

import torch
from torch import nn


def stalled(history: list[float], value: float, nonmono: int) -> bool:
    """AWD-LSTM's trigger: `value` is worse than the best result before the last `nonmono` ones."""
    return len(history) > nonmono and value > min(history[:-nonmono])


class ParameterAverage:
    """The running mean of a module's parameters over the optimizer steps since `start`."""

    def __init__(self) -> None:
        self.average: dict[str, torch.Tensor] | None = None
        self.steps = 0

    @property
    def active(self) -> bool:
        return self.average is not None

    def start(self, module: nn.Module) -> None:
        self.average = {name: p.detach().clone() for name, p in module.named_parameters()}
        self.steps = 1

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        assert self.average is not None
        self.steps += 1
        for name, p in module.named_parameters():
            avg = self.average[name]
            avg.add_(p.detach().to(avg.dtype) - avg, alpha=1.0 / self.steps)

    @torch.no_grad()
    def swap(self, module: nn.Module) -> None:
        """Exchange the parameters' values with the average (twice: back to where it was)."""
        assert self.average is not None
        for name, p in module.named_parameters():
            current = p.detach().clone()
            p.copy_(self.average[name])
            self.average[name] = current

    def state_dict(self) -> dict:
        return {"average": self.average, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.average, self.steps = state["average"], state["steps"]
