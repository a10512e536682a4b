"""Optimisers and learning-rate schedules.

Schedules are step-wise multipliers of the base learning rate (a `LambdaLR`), so their whole
state is one step counter — which is what makes `--resume` exact:
  constant  the same rate throughout;
  cosine    half a cosine from the full rate down to zero over the run;
  onecycle  warm up from 1/25 of the rate over the first 30% of steps, then cosine down to ~0
            (Smith's one-cycle policy, as in fastai's fit_one_cycle).
`--warmup F` sets the warm-up's share of the steps for any of them (default: 0.3 for onecycle,
none for the others): a linear rise from 1/25 of the rate, then the schedule over the rest.
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
                    weight_decay: float = 0.0, beta2: float = 0.999,
                    groups: list[dict] | None = None) -> torch.optim.Optimizer:
    """The optimiser over the model's trainable parameters, or over `groups` (each with its own lr).

    `beta2` is Adam's decay rate for its running average of squared gradients (PyTorch's default
    0.999 averages over ~1,000 steps; 0.99 over ~100, which follows the gradients' scale sooner —
    what a run of a few hundred steps per epoch needs)."""
    parameters = groups if groups is not None else [p for p in model.parameters() if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay)
    betas = (0.9, beta2)
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr, betas=betas, weight_decay=weight_decay, fused=_can_fuse(model))
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, betas=betas, weight_decay=weight_decay, fused=_can_fuse(model))
    raise ConfigError(f"--optimizer must be one of {', '.join(OPTIMIZERS)} (got {name!r})")


def _can_fuse(model: nn.Module) -> bool:
    """Whether Adam can update all weights in one fused kernel (CPU and CUDA have one).

    The fused step is PyTorch's own; it does the same arithmetic as the default per-tensor one in
    a single pass: 0.8 ms of a guide-cnn training step's 12 ms on 2 CPU cores becomes ~0.2 ms."""
    return all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in model.parameters())


# The warm-up's share of the steps when --warmup is not given.
DEFAULT_WARMUP = {"constant": 0.0, "cosine": 0.0, "onecycle": 0.3}
WARMUP_START = 1.0 / 25.0  # the warm-up starts at this fraction of the rate (fastai's one-cycle: 1/25)


def _after_warmup(name: str) -> Callable[[float], float]:
    """The schedule's multiplier at `progress` (0 → 1) through the steps after the warm-up."""
    if name == "constant":
        return lambda progress: 1.0
    if name == "cosine":
        return lambda progress: 0.5 * (1.0 + math.cos(math.pi * progress))
    if name == "onecycle":  # down to 1e-4 of the rate rather than 0: the last steps still count
        return lambda progress: 0.5 * (1.0 + math.cos(math.pi * progress)) * (1.0 - 1e-4) + 1e-4
    raise ConfigError(f"--schedule must be one of {', '.join(SCHEDULES)} (got {name!r})")


def schedule_factor(name: str, total_steps: int, warmup: float | None = None) -> Callable[[int], float]:
    """Multiplier of the base learning rate at each optimisation step: a linear warm-up over
    `warmup` of the steps (the schedule's default when None), then the schedule over the rest."""
    total = max(total_steps, 1)
    after = _after_warmup(name)
    fraction = DEFAULT_WARMUP[name] if warmup is None else warmup
    warmup_steps = max(int(fraction * total), 1) if fraction > 0 else 0

    def factor(step: int) -> float:
        if step < warmup_steps:
            return WARMUP_START + (1.0 - WARMUP_START) * step / warmup_steps
        return after(min(step - warmup_steps, total - warmup_steps) / max(total - warmup_steps, 1))

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, name: str, total_steps: int,
                    warmup: float | None = None) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule_factor(name, total_steps, warmup))


def follow_schedule(scheduler: torch.optim.lr_scheduler.LambdaLR) -> None:
    """Give each parameter group the rate `scheduler` sets at the step it has reached.

    A resumed run's optimiser comes back with the rate it last used, which is right when the schedule
    is the one it was saved with. Resumed with a larger --epochs, the schedule is rebuilt for the new
    length, and the run must go on at that schedule's rate for this step, not at the old schedule's
    last one (a one-cycle run ends near zero). With the same --epochs the two are the same number."""
    rates = [base * factor(scheduler.last_epoch) for factor, base in zip(scheduler.lr_lambdas, scheduler.base_lrs)]
    for group, rate in zip(scheduler.optimizer.param_groups, rates):
        group["lr"] = rate
    scheduler._last_lr = rates  # what get_last_lr() reports, as after a scheduler step
