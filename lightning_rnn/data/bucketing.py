"""Variable-length sequences: padding a batch, and batches of similar lengths.

A batch of sequences is padded to its longest member, so a batch that mixes a 5-token and a
50-token sentence spends 90% of the short one's steps on padding. :class:`BucketBatchSampler`
groups examples of similar length: each epoch it shuffles the examples, cuts the order into
buckets of ``bucket_batches`` batches, sorts each bucket by length, cuts it into batches and
shuffles the batches. Batches are then nearly free of padding, yet still random from epoch to epoch.

Its order is a pure function of its index sampler's ``(seed, epoch)`` (an
:class:`~lightning_rnn.data.resumable.EpochSampler`, or a ``DistributedSampler``), so a run
resumed mid-epoch makes the same batches again (``ResumableData.train_batch_loader``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import Sampler


def pad_sequences(sequences: Sequence[Tensor], padding_value: int = 0) -> tuple[Tensor, Tensor]:
    """Right-pad 1-D tensors ``[L_i]`` into ``padded [B, max L_i]`` and return ``lengths [B]`` (int64)."""
    if not sequences:
        raise ValueError("sequences must not be empty")
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    padded = torch.nn.utils.rnn.pad_sequence(list(sequences), batch_first=True, padding_value=padding_value)
    return padded, lengths


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of indices whose examples have similar ``lengths``.

    Args:
        sampler: the order of the examples for this epoch (iterating it yields indices); its
            ``seed`` and ``epoch`` also seed the shuffle of the batches. Lightning's ``set_epoch``
            reaches it as ``loader.batch_sampler.sampler``.
        lengths: ``lengths[i]`` is example ``i``'s length (any sortable number).
        batch_size: examples per batch (the last batch of a bucket may be smaller).
        bucket_batches: batches per bucket. 1 sorts within each batch only (no grouping);
            ``None`` sorts the whole epoch at once (for evaluation: the fewest padded steps).
        shuffle_batches: shuffle the order of the batches (training). Off, batches come in
            the order of the buckets, shortest first within each.

    ``len()`` is ``ceil(N / batch_size)`` batches for every epoch. ``skip_once(n)`` drops the
    first ``n`` batches of the next pass only (a resumed epoch).
    """

    def __init__(self, sampler: Sampler[int], lengths: Sequence[int], batch_size: int,
                 bucket_batches: int | None = 50, shuffle_batches: bool = True) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if bucket_batches is not None and (isinstance(bucket_batches, bool) or not isinstance(bucket_batches, int)
                                           or bucket_batches < 1):
            raise ValueError(f"bucket_batches must be a positive integer or None, got {bucket_batches!r}")
        self.sampler, self.lengths = sampler, list(lengths)
        self.batch_size, self.bucket_batches, self.shuffle_batches = batch_size, bucket_batches, shuffle_batches
        self._skip = 0

    def skip_once(self, batches: int) -> None:
        self._skip = batches

    def __len__(self) -> int:
        # every bucket but the last holds a whole number of batches, so bucketing adds no batch
        return -(-len(self.sampler) // self.batch_size)  # type: ignore[arg-type]

    def batches(self) -> list[list[int]]:
        """This epoch's batches, in order (without the skip)."""
        order = list(self.sampler)
        bucket = len(order) if self.bucket_batches is None else self.bucket_batches * self.batch_size
        batches = []
        for start in range(0, len(order), max(bucket, 1)):
            # a stable sort: examples of equal length keep the sampler's (shuffled) order
            ranked = sorted(order[start:start + bucket], key=lambda i: self.lengths[i])
            batches += [ranked[i:i + self.batch_size] for i in range(0, len(ranked), self.batch_size)]
        if self.shuffle_batches:
            seed = int(getattr(self.sampler, "seed", 0)) + int(getattr(self.sampler, "epoch", 0))
            # offset from the index sampler's seed, so the two permutations are not drawn alike
            generator = torch.Generator().manual_seed(seed + 0x5EED)
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        start, self._skip = self._skip, 0  # read now, not when the generator first runs
        return iter(self.batches()[start:])
