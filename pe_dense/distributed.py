"""The few collective steps of a job under torchrun (one process per GPU or machine slot): who this process
is, waiting for the others, a value from rank 0, values gathered on rank 0. Without torchrun the job is rank 0
of 1 and nothing here touches torch.distributed."""

from __future__ import annotations

import os
from datetime import timedelta

import torch.distributed as dist

# A rank that finishes its shards waits for the slowest at the closing barrier: allow a long run.
BARRIER_TIMEOUT = timedelta(hours=12)


def start() -> tuple[int, int]:
    """(rank, world size): torchrun's (its environment variables), gloo as the backend, which needs no GPU and
    carries the small messages these runs exchange; (0, 1) outside torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)
    return dist.get_rank(), dist.get_world_size()


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def from_rank_0(value, world: int):
    """``value`` as rank 0 has it, on every rank."""
    if world == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_on_rank_0(value, world: int) -> list | None:
    """Every rank's ``value`` in rank order on rank 0; None on the others."""
    if world == 1:
        return [value]
    gathered = [None] * world if dist.get_rank() == 0 else None
    dist.gather_object(value, gathered, dst=0)
    return gathered


def stop(world: int) -> None:
    if world > 1 and dist.is_initialized():
        dist.destroy_process_group()
