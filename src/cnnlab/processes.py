"""Numbers shared between the processes of a distributed run (DDP under torchrun).

Every process scores its own share of the images; these combine the shares so that each process
sees the whole run's numbers and takes the same decisions. With one process they return their
input unchanged. Used by the training loop and by the tasks' metric accumulators.
"""

from __future__ import annotations

from typing import Any, TypeVar

import torch

T = TypeVar("T")


def distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def sum_across_processes(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over all processes (identity when training on one)."""
    import torch.distributed as dist

    if not distributed():
        return values
    total = values.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def gather_across_processes(value: T) -> list[T]:
    """Every process's `value`, in rank order (picklable Python or NumPy objects; [value] on one)."""
    import torch.distributed as dist

    if not distributed():
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered
