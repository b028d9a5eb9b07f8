"""CUDA-graph replay of the per-step launch loops (opt-in: LIGHTNING_RNN_CUDA_GRAPHS=1).

The step kernels are launched from Python once per time step, layer and direction: several
microseconds of CPU time each, more than cuDNN's whole step at small batch. A CUDA graph records
the T launches of a loop once and replays them with one call.

A graph bakes in the addresses of its buffers, so each captured configuration owns static copies
of the loop's tensors: the call's inputs are copied in before a replay and its outputs copied out
after (one pass over memory, cheap next to T launches; the static copies cost that much memory
again per configuration). A configuration is captured the second time it is seen, so shapes met
once (the last, shorter batch of an epoch) run eagerly; at most MAX_GRAPHS are kept, least
recently used first out. Off by default until measured on a GPU.
"""
from __future__ import annotations

import os
from collections import Counter, OrderedDict
from typing import Callable, Hashable, Sequence

import torch
from torch import Tensor

MAX_GRAPHS = 8
_seen: Counter = Counter()
_graphs: OrderedDict[Hashable, tuple[Callable[[], None], dict[str, Tensor]]] = OrderedDict()

Launch = Callable[[dict[str, Tensor]], None]


def graphs_enabled(device: torch.device) -> bool:
    return device.type == "cuda" and os.environ.get("LIGHTNING_RNN_CUDA_GRAPHS", "0") == "1"


def _capture(launch: Launch, static: dict[str, Tensor]) -> Callable[[], None]:
    """Record `launch(static)` in a CUDA graph; returns its replay."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture: Triton compiles on a first launch
        launch(static)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        launch(static)
    return graph.replay


def run(key: Hashable, launch: Launch, tensors: dict[str, Tensor], inputs: Sequence[str],
        outputs: Sequence[str]) -> None:
    """`launch(tensors)`, or a replay of it: `launch` reads the `inputs` entries of the dict it is
    given and writes the `outputs` entries (a name may be both); `key` must determine every shape,
    dtype, device and launch parameter inside it."""
    replay = _graphs.get(key)
    if replay is None:
        _seen[key] += 1
        if _seen[key] < 2:
            launch(tensors)
            return
        static = {name: torch.empty_like(t) for name, t in tensors.items()}
        for name in inputs:
            static[name].copy_(tensors[name])
        _graphs[key] = replay = (_capture(launch, static), static)
        while len(_graphs) > MAX_GRAPHS:
            _graphs.popitem(last=False)
    _graphs.move_to_end(key)
    graph_replay, static = replay
    for name in inputs:
        static[name].copy_(tensors[name])
    graph_replay()
    for name in outputs:
        tensors[name].copy_(static[name])


def clear() -> None:
    _seen.clear()
    _graphs.clear()
