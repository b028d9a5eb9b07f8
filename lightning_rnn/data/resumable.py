"""Resume a training epoch exactly where it stopped: the position in the data and the random state.

A checkpoint written in the middle of an epoch (every N steps, on Ctrl-C, on an error) holds the
run at a step boundary: the weights after the last finished step. Lightning restores the weights,
optimizer, schedulers and loop counters, but it restarts a plain DataLoader from its first batch
and keeps no random state. For the resumed run to be the run that would have been, three more
things must come back at that same boundary:

- the position: how many batches of the epoch were used, so the loader goes on with the next one;
- the random state (dropout masks, and anything else drawn from the global generators);
- for truncated BPTT, the carried hidden state (the model's business, see ``LanguageModel``).

``ResumableData`` is a DataModule mixin for the first two. A DataModule puts it first among its
bases, builds its training loader with :meth:`ResumableData.train_loader` (or, for a sampler of
whole batches such as ``BucketBatchSampler``, :meth:`ResumableData.train_batch_loader`; or asks
:meth:`ResumableData.resume_batches` and skips that many batches itself, like ``StreamWindows``),
and calls ``super()`` in any ``state_dict``/``load_state_dict``/``on_before_batch_transfer`` it
overrides. Shuffled loaders use :class:`EpochSampler`, whose order is a function of (seed, epoch),
so the interrupted epoch's order can be made again.

Under DDP the position and random state of rank 0 are saved; exact resume is for one device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sized
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import DataLoader, Dataset, Sampler


def random_state() -> dict[str, Any]:
    """The global random states (torch, CUDA, numpy, Python) in types that ``torch.load(weights_only=True)``
    accepts: numpy's key array is kept as a tensor."""
    state = _collect_rng_states()
    if "numpy" in state:
        kind, keys, position, has_gauss, gauss = state["numpy"]
        state["numpy"] = (kind, torch.from_numpy(keys.astype("int64")), position, has_gauss, gauss)
    return state


def set_random_state(state: dict[str, Any]) -> None:
    state = dict(state)
    if "numpy" in state:
        import numpy as np

        kind, keys, position, has_gauss, gauss = state["numpy"]
        state["numpy"] = (kind, np.asarray(keys.tolist(), dtype=np.uint32), position, has_gauss, gauss)
    _set_rng_states(state)


def finished_batches(trainer: L.Trainer) -> int:
    """Training batches of the current epoch whose step has finished: where a run resumed from a
    checkpoint written now carries on (0 at an epoch boundary).

    ``processed`` is Lightning's count of batches whose training step returned. A checkpoint written
    in ``on_train_batch_end`` counts its batch as done; one written from inside a step (an exception,
    Ctrl-C) does not, and Lightning runs that batch again on resume."""
    done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
    return 0 if done >= trainer.num_training_batches else done


def inside_a_step(trainer: L.Trainer) -> bool:
    """Whether a training batch has been fetched but its step has not finished."""
    progress = trainer.fit_loop.epoch_loop.batch_progress.current
    return progress.ready > progress.processed


class EpochSampler(Sampler[int]):
    """``range(size)``, shuffled anew each epoch (``set_epoch``, which Lightning calls) or in order.

    The order is a pure function of ``(seed, epoch)``, as with ``DistributedSampler``, so it does
    not depend on the global random state and a resumed run makes the same order again.
    ``skip_once(n)`` drops the first ``n`` indices of the next pass only."""

    def __init__(self, size: int, shuffle: bool, seed: int = 0) -> None:
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip_once(self, count: int) -> None:
        self._skip = count

    def __len__(self) -> int:
        return self.size  # the whole epoch: Lightning's count of batches per epoch must not change

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        start, self._skip = self._skip, 0
        return iter(order[start:])


class ResumableLoader(DataLoader):
    """A DataLoader Lightning treats as resumable (it has ``state_dict``/``load_state_dict``), so it
    does not warn when resuming mid-epoch. Its position is kept by the DataModule (``ResumableData``)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class ResumableData:
    """Mixin for a ``LightningDataModule`` (list it before ``LightningDataModule``): saves the
    training position and the global random state in every checkpoint, and restores them on resume."""

    _RESUME_KEY = "resume"

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()  # type: ignore[misc]
        trainer = getattr(self, "trainer", None)
        if trainer is None or trainer.state.fn != TrainerFn.FITTING:
            return state
        done = finished_batches(trainer)
        snapshot = getattr(self, "_random_state_at_batch_start", None)
        # from inside a step, the random state must be the one before it: the step will run again
        saved_random = snapshot if inside_a_step(trainer) and snapshot is not None else random_state()
        state[self._RESUME_KEY] = {
            "finished_batches": done,
            "random_state": saved_random,
            "shuffle_seed": self._shuffle_seed(),
        }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)  # type: ignore[misc]
        saved = state.get(self._RESUME_KEY)
        if saved is not None:
            self._resume_at = saved["finished_batches"]
            self._random_state_to_restore = saved["random_state"]
            self._saved_shuffle_seed = saved["shuffle_seed"]

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.training:
            # restored here, right before the first step, so that nothing run between loading the
            # checkpoint and training (sanity check, loader set-up) changes what the steps draw
            pending = getattr(self, "_random_state_to_restore", None)
            if pending is not None:
                set_random_state(pending)
                self._random_state_to_restore = None
            self._random_state_at_batch_start = random_state()
        return super().on_before_batch_transfer(batch, dataloader_idx)  # type: ignore[misc]

    def resume_batches(self) -> int:
        """Batches of the current epoch to skip because the run being resumed used them (once)."""
        count, self._resume_at = getattr(self, "_resume_at", 0), 0
        return count

    def _shuffle_seed(self) -> int:
        # the run's seed (seed_everything), fixed at the first training loader, kept across resumes
        if getattr(self, "_saved_shuffle_seed", None) is None:
            self._saved_shuffle_seed = torch.initial_seed() % 2**32
        return self._saved_shuffle_seed

    def train_loader(self, dataset: Dataset, batch_size: int, shuffle: bool = True,
                     collate_fn: Callable | None = None, **loader_args: Any) -> ResumableLoader:
        """The training DataLoader: epochs shuffled by :class:`EpochSampler`, and a resumed epoch
        starting at the batch after the last one the interrupted run finished."""
        assert isinstance(dataset, Sized), "train_loader needs a dataset with a length"
        sampler = EpochSampler(len(dataset), shuffle, self._shuffle_seed())
        trainer = getattr(self, "trainer", None)
        sampler.set_epoch(trainer.current_epoch if trainer is not None else 0)  # Lightning sets it too late on resume
        sampler.skip_once(self.resume_batches() * batch_size)
        # a generator of its own: the loader then never draws from the global random state
        return ResumableLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate_fn,
                               generator=torch.Generator().manual_seed(sampler.seed), **loader_args)

    def train_batch_loader(self, dataset: Dataset, batch_sampler: Callable[[EpochSampler], Sampler[list[int]]],
                           shuffle: bool = True, collate_fn: Callable | None = None,
                           **loader_args: Any) -> ResumableLoader:
        """The training DataLoader for a sampler that forms the batches itself (e.g. by length,
        ``lightning_rnn.data.bucketing.BucketBatchSampler``).

        ``batch_sampler(order)`` builds it on the epoch's :class:`EpochSampler` ``order``: it must
        draw its randomness from ``order.seed`` and ``order.epoch`` only, keep ``order`` as its
        ``.sampler`` (where Lightning's ``set_epoch`` reaches it), and have ``skip_once(batches)``.
        A resumed epoch then starts at the batch after the last one the interrupted run finished."""
        assert isinstance(dataset, Sized), "train_batch_loader needs a dataset with a length"
        order = EpochSampler(len(dataset), shuffle, self._shuffle_seed())
        trainer = getattr(self, "trainer", None)
        order.set_epoch(trainer.current_epoch if trainer is not None else 0)  # Lightning sets it too late on resume
        batches = batch_sampler(order)
        if getattr(batches, "sampler", None) is not order:
            raise ValueError("batch_sampler(order) must keep order as its .sampler, so that set_epoch reaches it")
        batches.skip_once(self.resume_batches())  # type: ignore[attr-defined]
        return ResumableLoader(dataset, batch_sampler=batches, collate_fn=collate_fn,
                               generator=torch.Generator().manual_seed(order.seed), **loader_args)
