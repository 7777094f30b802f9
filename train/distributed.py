"""Process-group setup for ``torchrun`` (NCCL on GPUs, gloo on CPU) and per-rank seeds.

``torchrun`` sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; plain ``python -m``
is the one-process case of the same path (no process group). Rank 0 alone logs and writes; the
process group is always destroyed (:func:`teardown`, also on errors).
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["Dist", "setup", "teardown", "rank_seed", "seed_everything", "all_mean", "barrier",
           "all_gather_object"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dist:
    """Where this process stands: rank, world size, local rank, device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto") -> Dist:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1) and pick the device.

    Parameters
    ----------
    device : "auto", "cpu", "cuda" or "cuda:N"
        auto: this process's GPU (LOCAL_RANK) when CUDA is available, else the CPU.

    Raises
    ------
    ValueError
        ``cuda`` asked for on a machine without a usable GPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    want_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if want_cuda and not torch.cuda.is_available():
        raise ValueError(f"[train] device = {device!r}, but this machine has no usable GPU "
                         "(torch.cuda.is_available() is False): use device = 'cpu' or 'auto'")
    if want_cuda:
        dev = torch.device(device if ":" in device else f"cuda:{local}")
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if want_cuda else "gloo",
                                device_id=dev if want_cuda else None)
    if world > 1:
        rank, world = dist.get_rank(), dist.get_world_size()
    return Dist(rank=rank, world_size=world, local_rank=local, device=dev)


def teardown() -> None:
    """Destroy the process group if there is one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_seed(seed: int, rank: int) -> int:
    """A per-rank seed derived from one seed (independent streams, reproducible)."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1, np.uint32)[0])


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), NumPy's global generator and Python's ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    random.seed(seed)


def all_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over ranks (a no-op in one process)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= dist.get_world_size()
    return values


def barrier() -> None:
    """Wait for every rank (a no-op in one process)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def all_gather_object(obj) -> list:
    """Every rank's object, in rank order (``[obj]`` in one process)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        out = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]
