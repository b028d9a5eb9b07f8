"""Helpers for the two-process CPU DDP tests (ddp_spawn, gloo)."""

import gc

import lightning as L
import torch


class LeaveTogether(L.Callback):
    """Close the gloo process group on every rank, together, before the worker exits.

    Lightning destroys the group at exit only for NCCL. With gloo, rank 1 used to exit while
    rank 0 was still saving its weights, and one CI run died in C++ teardown ("terminate called
    without an active exception", SIGABRT) after training had finished."""

    def teardown(self, trainer, pl_module, stage) -> None:
        if torch.distributed.is_initialized():
            torch.distributed.barrier()
            gc.collect()  # drop the unwrapped DistributedDataParallel, which still holds the group
            torch.distributed.destroy_process_group()
