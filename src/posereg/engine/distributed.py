"""Data-parallel helpers: process-group set-up from torchrun's environment, sharded batches.

``torchrun --nproc_per_node N -m posereg.cli train CONFIG`` (or ``posereg train`` under torchrun)
sets RANK, WORLD_SIZE and LOCAL_RANK; :func:`setup` reads them. Backend: NCCL on CUDA, gloo on
the CPU.

User errors follow the rank-0 rule (:func:`user_error_line`): until the ranks start on their
shards of the data (:func:`mark_shards_started`) they all run the same code on the same files
and meet the same error, which rank 0 alone prints; after that an error is one rank's own and
its line says which rank.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

__all__ = [
    "DistInfo",
    "env_rank",
    "setup",
    "teardown",
    "EpochBatchSampler",
    "all_gather_objects",
    "barrier",
    "mark_shards_started",
    "user_error_line",
]

#: How long a rank other than 0 waits, after a user error met before the shards started, for
#: torchrun to stop it once rank 0 has failed (and printed the same error); it prints its own
#: line after this, so an error that rank 0 did not meet (rank 0 waiting at a barrier) is not lost.
RANK0_WAIT_S = 20.0

_shards_started = False


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def env_rank() -> int:
    """This process's rank in torchrun's environment (RANK; 0 outside torchrun)."""
    return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0


def setup(device: torch.device) -> DistInfo:
    """Initialise the default process group when launched by torchrun (WORLD_SIZE > 1).

    Rank 0 alone reports: the other ranks' ``posereg`` loggers keep errors only, so a data
    report or warning that every rank would repeat is printed once.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(env_rank(), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not info.is_main:
        logging.getLogger("posereg").setLevel(logging.ERROR)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return info


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def mark_shards_started() -> None:
    """Note that the ranks now work on their own shards: a user error from here on is tagged
    with this rank (:func:`user_error_line`)."""
    global _shards_started
    _shards_started = True


def user_error_line(command: str, message: str, wait_s: float = RANK0_WAIT_S) -> str | None:
    """The line this process prints for a user error: ``posereg CMD: error: MESSAGE``.

    Under torchrun (WORLD_SIZE > 1): before :func:`mark_shards_started`, rank 0 alone prints it
    and another rank returns None after waiting up to ``wait_s`` seconds for torchrun to stop it
    (which it does as soon as rank 0 exits with the same error); past the wait it prints the line
    with its rank. After the shards started, every rank's line says which rank it is,
    ``posereg CMD (rank N): error: ...``.
    """
    rank = env_rank()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return f"posereg {command}: error: {message}"
    if not _shards_started and rank == 0:
        return f"posereg {command}: error: {message}"
    if not _shards_started:
        time.sleep(wait_s)  # torchrun's SIGTERM ends this process here when rank 0 failed
    return f"posereg {command} (rank {rank}): error: {message}"


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_gather_objects(obj: object, info: DistInfo) -> list[object]:
    """Every rank's ``obj``, in rank order (just ``[obj]`` without a process group)."""
    if not info.distributed:
        return [obj]
    out: list[object] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


class EpochBatchSampler(Sampler[list[int]]):
    """Shuffled batches, sharded across ranks, reproducible per (seed, epoch), resumable.

    Every epoch draws one permutation from ``seed + epoch``; global batch j is
    ``perm[j * B * W : (j + 1) * B * W]`` (W ranks, B per rank; the last partial global batch
    is dropped) and rank r takes its r-th contiguous chunk of B. So W ranks of B see exactly
    the samples that one process sees with batches of B * W, which makes data-parallel
    training comparable to a single process, and ``start_batch`` skips the batches already
    trained when a run resumes mid-epoch.

    Arguments:
        num_samples: dataset length.
        batch_size: B, per rank.
        seed: base seed.
        epoch: epoch number (changes the permutation).
        rank, world_size: this rank and the number of ranks.
        start_batch: first batch to yield (resume).
        shuffle: False gives the identity order (evaluation).
        drop_last: drop the final partial global batch (training) or keep it (evaluation).
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        seed: int = 0,
        epoch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        start_batch: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
    ) -> None:
        if num_samples < batch_size * world_size and drop_last:
            raise ValueError(
                f"{num_samples} samples cannot fill one global batch of {batch_size} x {world_size}; "
                "lower train.batch_size"
            )
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed, self.epoch = seed, epoch
        self.rank, self.world_size = rank, world_size
        self.start_batch = start_batch
        self.shuffle, self.drop_last = shuffle, drop_last

    def num_batches(self) -> int:
        per_global = self.batch_size * self.world_size
        if self.drop_last:
            return self.num_samples // per_global
        return -(-self.num_samples // per_global)

    def __len__(self) -> int:
        return max(self.num_batches() - self.start_batch, 0)

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            perm = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            perm = list(range(self.num_samples))
        per_global = self.batch_size * self.world_size
        for j in range(self.start_batch, self.num_batches()):
            chunk = perm[j * per_global : (j + 1) * per_global]
            mine = chunk[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
            if mine:
                yield mine
