"""Training on several processes with PyTorch's own DistributedDataParallel (DDP).

`torchrun --nproc-per-node N -m cnnlab train ...` starts N copies of the trainer; torchrun tells
each its RANK, LOCAL_RANK and WORLD_SIZE (and MASTER_ADDR/PORT) through the environment. Each
process holds a full copy of the model and trains on its own share of every batch; after each
backward pass DDP averages the gradients across processes, so all copies stay identical.

  * backend: NCCL between GPUs, gloo on CPUs;
  * --batch-size stays the global batch: each of N processes takes batch-size / N images per step,
    so a run means the same thing (same steps, same learning rate) on 1 process or on 8;
  * rank 0 alone prints progress and writes the run folder; losses and accuracies are summed
    across processes before they are reported, so the numbers are those of the whole batch.

`cnnlab train --nproc N` is a shortcut that launches torchrun on this machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Sequence

import torch

from cnnlab.errors import ConfigError


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context_from_environment() -> DistributedContext:
    """The process's place in a torchrun launch (a single-process context otherwise)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    return DistributedContext(int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world_size)


def local_processes(context: DistributedContext) -> int:
    """How many processes of the run share this machine (torchrun's LOCAL_WORLD_SIZE)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", context.world_size)) if context.enabled else 1


def start(context: DistributedContext, device: torch.device) -> torch.device:
    """Join the process group; return this process's device (its own GPU under NCCL)."""
    import torch.distributed as dist

    if not context.enabled or dist.is_initialized():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", context.local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise ConfigError(f"--device {device}: distributed training runs on CUDA GPUs or CPUs")
    dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
    return device


def stop(*, wait_for_others: bool = True) -> None:
    """Leave the process group. After a run that ended normally, together: a process that tears its
    connections down while another is still finishing (rank 0 writes the last checkpoint and plots)
    made gloo abort that other process at exit ("terminate called without an active exception",
    2 of 6 two-process resumes in tests/train/test_distributed.py). After an error, at once: the
    others may be mid-epoch, and torchrun stops them when this process exits with the error."""
    import torch.distributed as dist

    if dist.is_initialized():
        if wait_for_others:
            dist.barrier()
        dist.destroy_process_group()


def sum_across_processes(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over all processes (identity when training on one)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return values
    total = values.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def share_from_main(value: object) -> object:
    """Rank 0's `value`, on every process (for decisions only rank 0 makes: the run folder, --lr auto)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def wrap(model: torch.nn.Module, context: DistributedContext, device: torch.device) -> torch.nn.Module:
    """The DDP wrapper that averages gradients; `model` itself keeps its state_dict keys."""
    if not context.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def per_process_batch(batch_size: int, context: DistributedContext) -> int:
    if batch_size % context.world_size:
        raise ConfigError(f"--batch-size {batch_size} must be divisible by the {context.world_size} processes "
                          f"(each takes an equal share of every batch)")
    return batch_size // context.world_size


def launch(nproc: int, train_arguments: Sequence[str]) -> int:
    """Run `cnnlab train ARGS` as `nproc` processes on this machine via torchrun; return its exit status.

    The processes' output passes through. When they stop on a user error (each prints the same
    `error: ...` line), the line is shown once and torchrun's own traceback about the failed
    children is left out: it says nothing the error line doesn't.
    """
    if nproc < 1:
        raise ConfigError(f"--nproc must be at least 1 (got {nproc})")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "cnnlab", "train", *train_arguments]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, bufsize=1, env=_child_environment(nproc))
    assert process.stderr is not None
    errors_seen: set[str] = set()
    for line in process.stderr:
        if line.startswith("error: "):
            if line in errors_seen:
                continue
            errors_seen.add(line)
        elif errors_seen and line.startswith("Traceback (most recent call last):"):
            break  # torchrun reporting the children that stopped on that error
        elif errors_seen and "torch/distributed/elastic" in line:
            continue  # torchrun's log line about the same failure
        sys.stderr.write(line)
    process.stderr.close()
    status = process.wait()
    return 2 if errors_seen and status else status


def _child_environment(nproc: int) -> dict[str, str]:
    """The environment for torchrun, with OMP_NUM_THREADS set (to the user's value if they chose one).

    Left unset, torchrun sets it to 1 for every process and prints a banner saying so, which the
    user can do nothing about. Set here, the cores are shared out instead: each of `nproc` processes
    computes with its share of them."""
    environment = dict(os.environ)
    if not environment.get("OMP_NUM_THREADS"):
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        environment["OMP_NUM_THREADS"] = str(max(1, cores // nproc))
    return environment
