"""Classic language-model batching: B parallel streams cut into BPTT windows.

The token stream of a split is cut into ``world_size * batch_size`` contiguous
streams of equal length (the tail that does not fit is dropped). Rank ``r`` owns
streams ``r * batch_size .. (r + 1) * batch_size - 1``, so every rank reads its
own contiguous text, and all ranks see the same number of windows (DDP needs
them in lock-step). Window ``k`` holds columns ``k * bptt .. (k + 1) * bptt`` of
those streams; window ``k + 1`` continues exactly where window ``k`` stopped,
which is what lets the model carry its hidden state across batches (truncated
backpropagation through time).

With ``variable_bptt`` (AWD-LSTM, Merity et al. 2017) the windows of an epoch have random lengths
around ``bptt``: each drawn as ``max(5, N(m, 5))`` with ``m = bptt`` with probability 0.95, else
``bptt / 2``; there are as many windows as with fixed ``bptt``, and the drawn lengths are scaled
to cover the stream exactly. The lengths are a function of ``(seed, epoch)``, so a resumed epoch
cuts its windows where the interrupted one did.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import IterableDataset

# Lightning warns about any IterableDataset with __len__ because worker processes could
# each yield the whole dataset; StreamWindows is always read with 0 workers, so __len__ is exact.
warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")


def batchify(tokens: torch.Tensor, num_streams: int) -> torch.Tensor:
    """Reshape a 1-D token stream of length N into ``[num_streams, N // num_streams]``.

    Row ``j`` is the contiguous slice ``tokens[j * L : (j + 1) * L]``.
    """
    if tokens.dim() != 1:
        raise ValueError(f"tokens must be 1-D, got shape {tuple(tokens.shape)}")
    if num_streams < 1:
        raise ValueError(f"num_streams must be >= 1, got {num_streams}")
    length = tokens.numel() // num_streams
    if length < 2:
        raise ValueError(
            f"{tokens.numel()} tokens are too few for {num_streams} streams "
            "(each stream needs at least 2 tokens); use a smaller batch size or fewer devices"
        )
    return tokens[: num_streams * length].view(num_streams, length)


class StreamWindows(IterableDataset):
    """In-order BPTT windows of this rank's streams.

    Each item is ``(inputs, targets)``, both ``[batch_size, T]`` with
    ``T == bptt`` except possibly the last window; ``targets`` is ``inputs``
    shifted by one token. It is an ``IterableDataset`` on purpose: Lightning
    then never inserts its round-robin ``DistributedSampler``, which would deal
    windows to ranks and break the stream continuity. Use it with
    ``DataLoader(dataset, batch_size=None)``.
    """

    def __init__(self, tokens: torch.Tensor, batch_size: int, bptt: int, rank: int = 0, world_size: int = 1,
                 variable_bptt: bool = False, seed: int = 0, epoch: Callable[[], int] = lambda: 0) -> None:
        if not isinstance(bptt, int) or bptt < 1:
            raise ValueError(f"bptt must be a positive integer, got {bptt!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        streams = batchify(tokens, world_size * batch_size)
        self.streams = streams[rank * batch_size : (rank + 1) * batch_size]
        self.bptt = bptt
        self.variable_bptt, self.seed, self.epoch = variable_bptt, seed, epoch
        self._skip = 0

    def window_bounds(self) -> list[int]:
        """Where this epoch's windows start, and where the last one ends (length - 1)."""
        total = self.streams.shape[1] - 1
        count = -(-total // self.bptt)
        if not self.variable_bptt:
            return [min(k * self.bptt, total) for k in range(count + 1)]
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch())
        means = torch.where(torch.rand(count, generator=g) < 0.95, float(self.bptt), self.bptt / 2)
        lengths = (means + 5.0 * torch.randn(count, generator=g, dtype=torch.float64)).floor().clamp(min=5)
        ends = (lengths.cumsum(0) * (total / lengths.sum())).round().long().tolist()
        bounds = [0] + [min(e, total) for e in ends]
        bounds[-1] = total
        return bounds

    def skip_once(self, windows: int) -> None:
        """Start the next pass at window ``windows`` (a resumed epoch); later passes start at 0."""
        self._skip = windows

    def __len__(self) -> int:
        # the last column has no target, hence length - 1 predictable positions. A resumed pass
        # yields fewer, but the epoch's length is what Lightning must count batches against.
        return -(-(self.streams.shape[1] - 1) // self.bptt)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        first, self._skip = self._skip, 0  # read now, not when the generator first runs
        return self._windows(first)

    def _windows(self, first: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        length = self.streams.shape[1]
        bounds = self.window_bounds()
        for start, end in zip(bounds[first:-1], bounds[first + 1:]):
            if end > start:
                yield self.streams[:, start:end], self.streams[:, start + 1 : end + 1]
