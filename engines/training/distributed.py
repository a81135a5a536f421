"""PyTorch distributed data parallel glue for training under ``torchrun``.

``torchrun`` sets ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``; without them training runs as
one process and every helper here is a no-op, so the same code serves both.
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["DistributedContext"]

# How long a closing rank lets gloo's threads take the GIL to release finished collectives (see close()).
_GLOO_SETTLE_S = 0.2


class DistributedContext:
    """The process's place in a DDP run (or a single process)."""

    def __init__(self, device_preference: str) -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world_size > 1
        self.cuda = device_preference != "cpu" and torch.cuda.is_available()
        if self.enabled and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if self.cuda else "gloo")
            if self.cuda:
                torch.cuda.set_device(self.local_rank)

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes files and reports progress."""
        return self.rank == 0

    def device(self, selected: torch.device) -> torch.device:
        """One GPU per rank under DDP; otherwise the device already selected."""
        if self.enabled and self.cuda:
            return torch.device("cuda", self.local_rank)
        return selected

    def shard(self, items: list) -> list:
        """This rank's share of a list (every ``world_size``-th item)."""
        return items[self.rank :: self.world_size] if self.enabled else items

    def mean(self, value: float) -> float:
        """The mean of a float over all ranks."""
        if not self.enabled:
            return value
        tensor = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(tensor)
        return float(tensor.item()) / self.world_size

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on one (a stop request must stop all ranks together)."""
        if not self.enabled:
            return flag
        tensor = torch.tensor([int(flag)])
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())

    def gather(self, items: list[Any]) -> list[Any]:
        """Every rank's items, concatenated in rank order."""
        if not self.enabled:
            return items
        parts: list[list[Any]] = [[] for _ in range(self.world_size)]
        dist.all_gather_object(parts, items)
        return [item for part in parts for item in part]

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        """Leave the process group, once every rank has finished its collectives and gloo's threads are idle.

        A rank could otherwise hang for ever when the DDP model is freed: the process group's destructor
        joins gloo's worker threads while holding the GIL, and a worker thread that is still releasing
        the last collective's Python-owned tensors waits for the GIL (a deadlock, seen on rank 1 after
        the final validation's all-gather). The barrier makes every rank finish its collectives; the
        pause releases the GIL so that gloo's threads drop those tensors before anything is destroyed.
        """
        if self.enabled and dist.is_initialized():
            dist.barrier()
            time.sleep(_GLOO_SETTLE_S)
            dist.destroy_process_group()
