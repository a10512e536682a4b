"""The learning-rate range test (Smith, "Cyclical learning rates", 2017; fastai's `lr_find`).

Train on up to `steps` batches while the learning rate grows exponentially from `start_lr` to
`end_lr`, recording the loss after each step. Batch losses are noisy, so they are smoothed
(an exponential moving average, bias-corrected like Adam's); once the smoothed loss exceeds
4× the lowest so far, the rate is too high, training is diverging, and the sweep stops.

The suggestion is one tenth of the rate at which the smoothed loss is lowest ("minimum / 10",
as fastai recommends): there the loss still falls steeply, an order of magnitude below the
point where it turns and blows up. The sweep trains a copy of the model, so the run that uses
the suggestion starts from the original (fresh or pretrained) weights.

    cnnlab lr-find --data fashion-mnist --model guide-cnn        # plot + suggestion
    cnnlab train --data fashion-mnist --model guide-cnn --lr auto  # sweep, then train with it
"""

from __future__ import annotations

import contextlib

import copy
import csv
import dataclasses
import io
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch
from torch import nn

from cnnlab.console import Console
from cnnlab.data.loader import Batches
from cnnlab.io import write_text_atomic
from cnnlab.tasks.base import Task
from cnnlab.train.optim import build_optimizer
from cnnlab.train.stages import StagePlan, apply_stage

if TYPE_CHECKING:
    from cnnlab.config import TrainConfig
    from cnnlab.train.trainer import RunStart

DEFAULT_STEPS = 200
START_LR = 1e-7
END_LR = 10.0
SMOOTHING = 0.9  # the running average spans ~10 batches; fastai's 0.98 (~50) lags the raw losses
                 # by a decade or more of learning rate at 25 steps per decade
DIVERGENCE = 4.0  # stop once the smoothed loss is this many times its minimum
PLOT = "lr_find.png"
TABLE = "lr_find.csv"


@dataclass
class LrFinding:
    """The sweep: one entry per step, and what it suggests."""

    lrs: list[float]
    losses: list[float]  # each batch's loss at that rate
    smoothed: list[float]
    suggestion: float
    lowest_loss_lr: float
    stop_reason: str

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["step", "lr", "loss", "smoothed_loss"])
        for step, row in enumerate(zip(self.lrs, self.losses, self.smoothed), start=1):
            writer.writerow([step, *(f"{value:.6g}" for value in row)])
        return buffer.getvalue()


def _batches_forever(batches: Batches) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batch after batch, epoch after epoch (a small dataset has fewer batches than the sweep)."""
    epoch = 1
    while True:
        empty = True
        for batch in batches.epoch(epoch):
            empty = False
            yield batch
        if empty:
            return
        epoch += 1


def lr_range_test(model: nn.Module, task: Task, normalizer: nn.Module, batches: Batches,
                  optimizer: torch.optim.Optimizer, *, start_lr: float = START_LR, end_lr: float = END_LR,
                  steps: int = DEFAULT_STEPS,
                  progress: Callable[[int, int, float, float], Any] | None = None) -> LrFinding:
    """Sweep the rate exponentially from `start_lr` to `end_lr`, one optimiser step per batch.

    `model` is trained in place (pass a copy) and must already be in training mode. `progress` is
    called after each step with (step, images in it, rate, loss).
    """
    lrs, losses, smoothed = [], [], []
    average, lowest, stop_reason = 0.0, math.inf, f"reached {end_lr:g} after {steps} steps"
    for step, (inputs, targets) in zip(range(steps), _batches_forever(batches)):
        lr = start_lr * (end_lr / start_lr) ** (step / max(steps - 1, 1))
        for group in optimizer.param_groups:
            group["lr"] = lr
        _, loss, _ = task.forward_loss(model, normalizer(inputs), targets, contextlib.nullcontext)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        if progress is not None:
            progress(step + 1, len(targets), lr, value)
        if not math.isfinite(value):
            stop_reason = f"the loss became {value} at lr {lr:.3g}"
            break
        average = SMOOTHING * average + (1 - SMOOTHING) * value
        current = average / (1 - SMOOTHING ** (step + 1))  # bias correction: the average starts at 0
        lrs.append(lr), losses.append(value), smoothed.append(current)
        lowest = min(lowest, current)
        if current > DIVERGENCE * lowest:
            stop_reason = f"the loss exceeded {DIVERGENCE:g}× its minimum at lr {lr:.3g}"
            break
    if not lrs:
        raise ValueError("the learning-rate sweep got no finite loss; check the data and the model")
    suggestion, lowest_lr = suggest_lr(lrs, smoothed)
    return LrFinding(lrs, losses, smoothed, suggestion, lowest_lr, stop_reason)


def suggest_lr(lrs: list[float], smoothed: list[float]) -> tuple[float, float]:
    """(suggested rate, rate at the lowest smoothed loss): one tenth of the latter.

    >>> suggest_lr([1e-4, 1e-3, 1e-2, 1e-1], [2.0, 1.0, 0.5, 3.0])
    (0.001, 0.01)
    """
    best = min(range(len(smoothed)), key=smoothed.__getitem__)
    return max(lrs[best] / 10, lrs[0]), lrs[best]


def plot_finding(finding: LrFinding, path: Path, title: str) -> Path:
    """Loss against learning rate (log axis), with the suggestion and the lowest loss marked."""
    import numpy as np

    from cnnlab.plotting import new_figure, save_figure

    figure = new_figure(7.5, 4.6)
    axes = figure.add_subplot()
    axes.plot(finding.lrs, finding.losses, color="0.75", linewidth=0.8, label="loss of each batch")
    axes.plot(finding.lrs, finding.smoothed, color="C0", linewidth=2.2, label="smoothed loss")
    axes.set_xscale("log")
    at = int(np.clip(np.searchsorted(finding.lrs, finding.suggestion), 0, len(finding.lrs) - 1))
    lowest = int(np.argmin(finding.smoothed))
    axes.axvline(finding.suggestion, color="C3", linestyle="--", linewidth=1)
    axes.plot([finding.suggestion], [finding.smoothed[at]], "o", color="C3", markersize=9,
              label=f"suggested lr {finding.suggestion:.2g} (lowest ÷ 10)")
    axes.plot([finding.lowest_loss_lr], [finding.smoothed[lowest]], "v", color="0.25", markersize=8,
              label=f"lowest smoothed loss, lr {finding.lowest_loss_lr:.2g}")
    finite = [v for v in finding.losses if math.isfinite(v)]
    top = min(max(finite), max(finding.smoothed[0], finding.smoothed[lowest]) * 1.6)
    axes.set_ylim(max(0.0, min(finite) * 0.9), top)
    axes.set_xlabel("learning rate (log scale)")
    axes.set_ylabel("training loss")
    axes.set_title(title)
    axes.grid(True, which="major", alpha=0.35)
    axes.legend(loc="best")
    return save_figure(figure, path)


def save_finding(finding: LrFinding, folder: Path, title: str) -> Path:
    """lr_find.png and lr_find.csv (step, lr, loss, smoothed_loss) in `folder`; return the plot."""
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / TABLE, finding.to_csv())
    return plot_finding(finding, folder / PLOT, title)


def sweep(model: nn.Module, task: Task, normalizer: nn.Module, batches: Batches, config: "TrainConfig",
          plan: StagePlan | None, *, steps: int = DEFAULT_STEPS, start_lr: float = START_LR,
          end_lr: float = END_LR, console: Console | None = None) -> LrFinding:
    """The range test on a copy of `model` as its run would train it: the same optimiser, and only the
    head when the run starts with the backbone frozen (the rate found is the head's)."""
    trial = copy.deepcopy(model).to(batches.device)
    trial.train()
    if plan is not None:
        apply_stage(trial, plan, plan.stage(1))
    optimizer = build_optimizer(trial, config.optimizer, lr=start_lr, momentum=config.momentum,
                                weight_decay=config.weight_decay, beta2=config.beta2)
    with SweepProgress(steps, batches.batch_size, console) as progress:
        finding = lr_range_test(trial, task, normalizer.to(batches.device), batches, optimizer,
                                start_lr=start_lr, end_lr=end_lr, steps=steps, progress=progress.step)
    if console is not None:
        console.info(f"learning-rate sweep: {len(finding.lrs)} steps, {finding.stop_reason}; lowest loss at "
                     f"lr {finding.lowest_loss_lr:.3g}, suggested lr {finding.suggestion:.3g}")
    return finding


class SweepProgress:
    """The sweep's progress, as training shows an epoch's: in a terminal a live bar (images, images/s,
    time left, the rate and loss reached); elsewhere (a log, a notebook's captured output) a line at
    each quarter of the sweep, so that a long one (resnet18 at 224×224 on a CPU: minutes) is never
    silent. Nothing with `console` None or quiet."""

    QUARTERS = 4

    def __init__(self, steps: int, batch_size: int, console: Console | None):
        from tqdm.auto import tqdm

        self.steps, self.console = steps, console
        quiet = console is None or console.quiet
        self.bar = tqdm(total=steps * batch_size, desc="learning-rate sweep", unit="img", leave=False,
                        dynamic_ncols=True, disable=True if quiet else None)  # None: off when not a terminal
        self.lines = not quiet and self.bar.disable
        self.started = time.perf_counter()
        self.images = 0
        self._next_line = 1

    def step(self, step: int, images: int, lr: float, loss: float) -> None:
        self.images += images
        self.bar.update(images)
        self.bar.set_postfix(lr=f"{lr:.2g}", loss=f"{loss:.4f}", refresh=False)
        if self.lines and step >= self._next_line * self.steps / self.QUARTERS:
            self._next_line += 1
            seconds = time.perf_counter() - self.started
            left = seconds * (self.steps - step) / step
            self.console.info(f"learning-rate sweep: step {step}/{self.steps}, lr {lr:.2g}, loss {loss:.4f}, "
                              f"{self.images / max(seconds, 1e-9):,.0f} img/s"
                              + (f", at most {_format_seconds(left)} left" if step < self.steps else ""))

    def __enter__(self) -> "SweepProgress":
        return self

    def __exit__(self, *exception: object) -> None:
        self.bar.close()


def _format_seconds(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


# The sweep needs this many different batches an epoch. With fewer it shows each image dozens of times
# (200 steps over 2 batches: 100 passes over 50 images) and its loss falls because the network learns
# those images by heart, whatever the rate: it then suggests a rate far too high (1.0 for guide-cnn's
# new dense head on 50 digits), or one that fits memorising rather than learning.
MIN_SWEEP_BATCHES = 8
TOO_FEW_IMAGES_FACTOR = 3.0  # --lr auto without a sweep: this × the optimiser's default rate


def rate_without_sweep(config: "TrainConfig", batches: Batches) -> float | None:
    """`--lr auto` on too few images for a range test (fewer than MIN_SWEEP_BATCHES batches an epoch):
    three times the optimiser's default rate (0.009 for Adam), measured on scikit-learn's digits with
    10 images per class (docs/transfer-learning.md, section 6); None when the sweep can run."""
    if len(batches) >= MIN_SWEEP_BATCHES:
        return None
    return round(TOO_FEW_IMAGES_FACTOR * dataclasses.replace(config, lr=None).resolved_lr(), 12)


def sweep_for_training(start: "RunStart", model: nn.Module, plan: StagePlan | None, batches: Batches,
                       folder: Path, console: Console) -> LrFinding | float:
    """`train --lr auto`: sweep, save the plot into the run folder, return the finding; on too few
    images for a sweep, the rate `rate_without_sweep` gives instead, saying why."""
    rate = rate_without_sweep(start.config, batches)
    if rate is not None:
        console.info(f"--lr auto: {len(batches)} batch(es) an epoch are too few for the range test (it would "
                     f"show each image {DEFAULT_STEPS // max(len(batches), 1)} times and measure memorising): "
                     f"training with lr {rate:.3g}, {TOO_FEW_IMAGES_FACTOR:g}× the default; pass --lr to choose")
        return rate
    finding = sweep(model, start.task, start.input_spec.normalizer(), batches, start.config, plan,
                    console=console)
    plot = save_finding(finding, folder, _title(start))
    console.info(f"--lr auto: training with lr {finding.suggestion:.3g} (plot: {plot})")
    return finding


def _title(start: "RunStart") -> str:
    return f"learning-rate range test: {start.architecture.short_name} on {Path(start.config.data).name}"


@dataclass
class LrFindResult:
    finding: LrFinding
    folder: Path

    @property
    def suggestion(self) -> float:
        return self.finding.suggestion

    @property
    def plot(self) -> Path:
        return self.folder / PLOT


def find_lr(config: "TrainConfig | str | Path | None" = None, *, output: str | Path | None = None,
            steps: int = DEFAULT_STEPS, start_lr: float = START_LR, end_lr: float = END_LR,
            quiet: bool = False, **fields: Any) -> LrFindResult:
    """Run the range test for a training configuration; the keyword arguments are `TrainConfig` fields.

    >>> result = find_lr(data="fashion-mnist", model="guide-cnn")   # doctest: +SKIP
    >>> result.suggestion, result.plot                              # doctest: +SKIP
    (0.0021, PosixPath('runs/lr-find-guide-cnn-fashion-mnist/lr_find.png'))
    """
    from cnnlab.errors import ConfigError
    from cnnlab.runs import default_run_name
    from cnnlab.train.trainer import merge_config, prepare_run, training_batches

    if steps < 10:
        raise ConfigError(f"--steps must be at least 10 (got {steps})")
    if not 0 < start_lr < end_lr:
        raise ConfigError(f"--start-lr must be positive and below --end-lr (got {start_lr:g} and {end_lr:g})")
    console = Console(quiet=quiet)
    start = prepare_run(merge_config(config, fields).validate(), console)
    model, report = start.initial_model(console)
    train_batches, _ = training_batches(start.config, start.data, start.device, start.task)
    finding = sweep(model, start.task, start.input_spec.normalizer(), train_batches, start.config,
                    start.stage_plan(model, report), steps=steps, start_lr=start_lr, end_lr=end_lr,
                    console=console)
    folder = Path(output) if output else Path(start.config.runs_dir) / (
        "lr-find-" + default_run_name(start.architecture.label, start.config.data))
    save_finding(finding, folder, _title(start))
    return LrFindResult(finding, folder)
