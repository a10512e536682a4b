"""Staged fine-tuning: the new head alone first, then (optionally) the whole network.

    --freeze          one stage: the head trains, the pretrained backbone stays as it is
    --fine-tune N     stage 1, epochs 1..N: the head alone;
                      stage 2, epochs N+1..: the whole network, the backbone at --lr × --backbone-lr-factor

The "head" is every layer that did not come from the pretrained weights (`TransferReport.new_layers`:
the re-initialised classifier, and any layer skipped for a shape mismatch); the backbone is the
rest. The optimiser holds both from the start, as two parameter groups (head at the full rate,
backbone at the lower one): a frozen parameter has no gradient, so the optimiser leaves it alone.
Unfreezing is then only `requires_grad = True`, and the stage follows from the epoch number alone —
which is what keeps `--resume` exact across the boundary.

While the backbone is frozen its batch-norm layers stay in eval mode: they normalise with the
statistics the weights were trained with instead of drifting towards the new batches' (as
Keras' fine-tuning guide advises). `fit` puts the model in training mode before the epoch
callbacks, so `on_epoch_begin` is the place to set them back. In stage 2 they train as usual.

The learning-rate schedule runs once per stage (fastai's `fine_tune` does the same): stage 2
warms up again from a low rate, which spares the pretrained backbone a large first step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from cnnlab.train.loop import FitState
from cnnlab.train.optim import schedule_factor


@dataclass(frozen=True)
class StagePlan:
    """When the backbone trains: never (`head_epochs` None = --freeze) or after `head_epochs`."""

    head_layers: tuple[str, ...]  # module paths of the new layers
    head_epochs: int | None
    backbone_lr_factor: float

    @property
    def count(self) -> int:
        return 1 if self.head_epochs is None else 2

    def stage(self, epoch: int) -> int:
        """1 (head only) or 2 (whole network) for a 1-based epoch number."""
        return 1 if self.head_epochs is None or epoch <= self.head_epochs else 2

    def is_head(self, name: str) -> bool:
        return any(name == layer or name.startswith(layer + ".") for layer in self.head_layers)


def parameter_groups(model: nn.Module, plan: StagePlan, lr: float) -> list[dict[str, Any]]:
    """The head's parameters at `lr` (group 0, the rate metrics.csv shows), the backbone's at a fraction."""
    head, backbone = [], []
    for name, parameter in model.named_parameters():
        (head if plan.is_head(name.rpartition(".")[0]) else backbone).append(parameter)
    groups = [{"params": head, "lr": lr}]
    if backbone:
        groups.append({"params": backbone, "lr": lr * plan.backbone_lr_factor})
    return groups


def apply_stage(model: nn.Module, plan: StagePlan, stage: int) -> int:
    """Freeze or unfreeze the backbone for `stage`; return the number of trainable parameters."""
    whole = stage == 2
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(whole or plan.is_head(name.rpartition(".")[0]))
    if not whole:
        for name, module in model.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and not plan.is_head(name):
                module.eval()
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def staged_schedule(name: str, plan: StagePlan, steps_per_epoch: int, epochs: int,
                    warmup: float | None = None) -> Callable[[int], float]:
    """The schedule `name` (with its `warmup` share) run once over each stage: a multiplier of the
    base rate per step."""
    if plan.head_epochs is None:
        return schedule_factor(name, epochs * steps_per_epoch, warmup)
    boundary = plan.head_epochs * steps_per_epoch
    first = schedule_factor(name, boundary, warmup)
    second = schedule_factor(name, (epochs - plan.head_epochs) * steps_per_epoch, warmup)
    return lambda step: first(step) if step < boundary else second(step - boundary)


def describe_stage(plan: StagePlan, stage: int, trainable: int) -> str:
    """e.g. "stage 2/2: whole network, backbone lr × 0.1 (93,322 trainable parameters)"."""
    what = "head only" if stage == 1 else f"whole network, backbone lr × {plan.backbone_lr_factor:g}"
    return f"stage {stage}/{plan.count}: {what} ({trainable:,} trainable parameters)"


class FineTuneStages:
    """Callback: at each epoch's start, the stage that epoch belongs to; says so when it changes."""

    def __init__(self, model: nn.Module, plan: StagePlan, log: Callable[[str], None]):
        self.model, self.plan, self.log = model, plan, log
        self._announced: int | None = None

    def enter(self, epoch: int) -> int:
        """Set the model up for `epoch` (1-based); return its trainable parameter count."""
        stage = self.plan.stage(epoch)
        trainable = apply_stage(self.model, self.plan, stage)
        if stage != self._announced:
            self._announced = stage
            self.log(describe_stage(self.plan, stage, trainable))
        return trainable

    def on_epoch_begin(self, state: FitState, epoch: int, num_images: int) -> None:
        self.enter(epoch)
