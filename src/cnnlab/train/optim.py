"""Optimisers and learning-rate schedules.

Schedules are step-wise multipliers of the base learning rate (a `LambdaLR`), so their whole
state is one step counter — which is what makes `--resume` exact:
  constant  the same rate throughout;
  cosine    half a cosine from the full rate down to zero over the run;
  onecycle  warm up from 1/25 of the rate over the first 30% of steps, then cosine down to ~0
            (Smith's one-cycle policy, as in fastai's fit_one_cycle).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from cnnlab.errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle")


def build_optimizer(model: nn.Module, name: str, *, lr: float, momentum: float = 0.9,
                    weight_decay: float = 0.0, groups: list[dict] | None = None) -> torch.optim.Optimizer:
    """The optimiser over the model's trainable parameters, or over `groups` (each with its own lr)."""
    parameters = groups if groups is not None else [p for p in model.parameters() if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay, fused=_can_fuse(model))
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, fused=_can_fuse(model))
    raise ConfigError(f"--optimizer must be one of {', '.join(OPTIMIZERS)} (got {name!r})")


def _can_fuse(model: nn.Module) -> bool:
    """Whether Adam can update all weights in one fused kernel (CPU and CUDA have one).

    The fused step is PyTorch's own; it does the same arithmetic as the default per-tensor one in
    a single pass: 0.8 ms of a guide-cnn training step's 12 ms on 2 CPU cores becomes ~0.2 ms."""
    return all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in model.parameters())


def schedule_factor(name: str, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the base learning rate at each optimisation step."""
    total = max(total_steps, 1)
    if name == "constant":
        return lambda step: 1.0
    if name == "cosine":
        return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
    if name == "onecycle":
        warmup = max(int(0.3 * total), 1)
        start = 1.0 / 25.0

        def one_cycle(step: int) -> float:
            if step < warmup:
                return start + (1.0 - start) * step / warmup
            progress = min(step - warmup, total - warmup) / max(total - warmup, 1)
            return 0.5 * (1.0 + math.cos(math.pi * progress)) * (1.0 - 1e-4) + 1e-4

        return one_cycle
    raise ConfigError(f"--schedule must be one of {', '.join(SCHEDULES)} (got {name!r})")


def build_scheduler(optimizer: torch.optim.Optimizer, name: str, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule_factor(name, total_steps))
