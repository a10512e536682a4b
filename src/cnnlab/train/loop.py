"""The training loop: forward pass, loss, backpropagation, optimiser step — once per batch.

    for each epoch:
        for each batch:  outputs = model(normalise(images))      # forward pass (task.forward_loss)
                         loss = task.loss(outputs, targets)     # e.g. cross-entropy
                         loss.backward()                        # backpropagation: d loss / d weights
                         optimizer.step()                       # e.g. SGD: w -= lr * gradient
        score the validation set; callbacks log, checkpoint, plot and maybe stop early

Everything else (progress bars, checkpoints, metrics.csv, early stopping) is a callback, so this
file stays one readable loop. Running sums stay on the device: reading a number back to the host
(`.item()`) waits for the device to finish, so the loop only does it when a callback asks.
"""

from __future__ import annotations

import contextlib
import functools
import math
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from cnnlab.data.loader import Batches, epoch_seed
from cnnlab.errors import CnnlabError
from cnnlab.strict_json import finite_or_none
from cnnlab.tasks.base import Task
from cnnlab.train.batch_threads import BatchThreads, add_gradients, batch_parts, part_models
from cnnlab.processes import sum_across_processes
from cnnlab.train.distributed import context_from_environment
from cnnlab.performance import Performance


@dataclass
class FitState:
    """Where training stands; saved with the training state so --resume continues from here."""

    epochs: int
    epoch: int = 0  # completed epochs
    history: list[dict[str, Any]] = field(default_factory=list)
    best_val_loss: float = math.inf
    best_epoch: int = 0
    epochs_without_improvement: int = 0
    stop_reason: str | None = None

    def record(self, row: dict[str, Any]) -> bool:
        """Add an epoch's row; return whether it is the best so far (lowest validation loss)."""
        self.epoch = row["epoch"]
        self.history.append(row)
        loss = row["val_loss"] if not math.isnan(row["val_loss"]) else row["train_loss"]
        if loss < self.best_val_loss:
            self.best_val_loss, self.best_epoch, self.epochs_without_improvement = loss, self.epoch, 0
            return True
        self.epochs_without_improvement += 1
        return False

    @property
    def improved(self) -> bool:
        return self.best_epoch == self.epoch

    def to_json(self) -> dict[str, Any]:
        """Plain JSON: the metrics a run without validation images lacks (nan) become null."""
        return finite_or_none(asdict(self))

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> "FitState":
        values = dict(values)
        values["best_val_loss"] = math.inf if values.get("best_val_loss") is None else values["best_val_loss"]
        # Every metric in a row is a float; null was a nan (older files hold the nan itself).
        values["history"] = [{key: math.nan if value is None else value for key, value in row.items()}
                             for row in values.get("history", [])]
        return cls(**values)


# How often, in steps, the running loss is read back to catch nan or inf. Reading waits for the device
# to finish its queued work, so it is not done every step; one nan makes the running sum nan for the
# rest of the epoch, so a read every few steps still sees every step since the last.
DIVERGENCE_CHECK_STEPS = 8


class TrainingDiverged(CnnlabError):
    """The loss or the weights became nan or inf. `where` names the epoch and step; the trainer
    adds what the run kept and what to change."""

    def __init__(self, where: str):
        self.where = where
        super().__init__(f"training diverged: {where}")


class _DivergenceWatch:
    """Stops the epoch within `DIVERGENCE_CHECK_STEPS` steps of a non-finite loss, naming that step."""

    def __init__(self, epoch: int, steps: int, every: int = DIVERGENCE_CHECK_STEPS):
        self.epoch, self.steps, self.every = epoch, steps, every
        self._window: list[tuple[int, Tensor, float]] = []  # (step, batch loss on the device, its rate)

    def after_step(self, step: int, loss: Tensor, lr: float, loss_sum: Tensor) -> None:
        self._window.append((step, loss.detach(), lr))
        if step % self.every == 0:
            self.check(loss_sum)

    def check(self, loss_sum: Tensor) -> None:
        """Raise TrainingDiverged if any loss so far this epoch was not finite (in any process)."""
        if not self._window:
            return
        # Summed over the processes of a distributed run, so that every one stops at the same step.
        bad = sum_across_processes((~torch.isfinite(loss_sum)).to(torch.float64).reshape(1))
        if float(bad) == 0:
            self._window.clear()
            return
        values = torch.stack([loss.float() for _, loss, _ in self._window]).tolist()
        first = next((i for i, value in enumerate(values) if not math.isfinite(value)), None)
        if first is None:  # another process saw it; here only the span is known
            steps = f"steps {self._window[0][0]}–{self._window[-1][0]}"
            raise TrainingDiverged(f"epoch {self.epoch}, {steps} of {self.steps}: the training loss became "
                                   f"nan or inf (learning rate {self._window[0][2]:.3g})")
        step, _, lr = self._window[first]
        raise TrainingDiverged(f"epoch {self.epoch}, step {step} of {self.steps}: the training loss became "
                               f"{values[first]} (learning rate {lr:.3g} at that step)")


def check_finite_weights(model: nn.Module, epoch: int) -> None:
    """Raise TrainingDiverged if a weight or a batch-norm statistic is nan or inf: a step whose loss was
    still finite can leave them so, and such weights must never replace the last good checkpoint."""
    tensors = [(name, value) for name, value in (*model.named_parameters(), *model.named_buffers())
               if value.is_floating_point()]
    if not tensors:
        return
    finite = torch.stack([value.detach().isfinite().all() for _, value in tensors])
    if bool(finite.all()):
        return
    name = tensors[int((~finite).nonzero()[0])][0]
    raise TrainingDiverged(f"epoch {epoch}: the weights became nan or inf (first in {name}) although the "
                           f"loss was still finite")


class Callback(Protocol):
    """Any of these methods may be left out; `fit` calls the ones a callback has."""

    def on_train_begin(self, state: FitState) -> None: ...
    def on_epoch_begin(self, state: FitState, epoch: int, num_images: int) -> None: ...
    def on_batch_end(self, state: FitState, images: int, loss_sum: Tensor, headline_sum: Tensor) -> None: ...
    def on_epoch_end(self, state: FitState, row: dict[str, Any]) -> None: ...
    def on_train_end(self, state: FitState) -> None: ...


def _call(callbacks: Iterable[object], method: str, *args: Any) -> None:
    for callback in callbacks:
        hook = getattr(callback, method, None)
        if hook is not None:
            hook(*args)


def seed_everything(seed: int) -> None:
    """Fix every random number generator an epoch uses (dropout, augmentation, workers)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class _EpochSums:
    """The loss, its parts and the headline summed over an epoch's batches, on the device: reading a
    number back waits for the device, so nothing is read until a callback or the epoch's end asks."""

    def __init__(self, device: torch.device):
        self.device = device
        self.images = 0
        self.loss = torch.zeros((), device=device)
        self.headline: Tensor | None = None
        self.parts: dict[str, Tensor] = {}

    def add(self, loss: Tensor, parts: dict[str, Tensor], headline: Tensor | None, count: int) -> None:
        self.images += count
        self.loss += loss.detach() * count
        for name, value in parts.items():
            self.parts[name] = self.parts.get(name, torch.zeros((), device=self.device)) + value.detach() * count
        if headline is not None:
            self.headline = headline if self.headline is None else self.headline + headline

    def totals(self) -> tuple[float, float | None, dict[str, float], int]:
        """(loss sum, headline sum or None, part sums, images), each summed over every process."""
        names = list(self.parts)
        values = [self.loss.double(), torch.tensor(float(self.images), device=self.device, dtype=torch.float64)]
        values += [self.parts[name].double() for name in names]
        if self.headline is not None:
            values.append(self.headline.double())
        summed = sum_across_processes(torch.stack(values)).tolist()
        headline = summed[-1] if self.headline is not None else None
        return summed[0], headline, dict(zip(names, summed[2:2 + len(names)])), int(summed[1])


def train_one_epoch(model: nn.Module, task: Task, normalizer: nn.Module, batches: Batches, epoch: int,
                    optimizer: torch.optim.Optimizer, scheduler: Any, state: FitState,
                    callbacks: list[object], performance: Performance | None = None) -> dict[str, float]:
    """One pass over the training batches; the caller has put the model in training mode. Returns the
    epoch's mean loss, its parts (`loss_<part>`), its headline where the task has a per-image one, and
    the number of images."""
    device = batches.device
    performance = performance or Performance(device)
    sums = _EpochSums(device)
    no_headline = torch.zeros((), device=device)  # what callbacks see for a task without a per-image headline
    threads = BatchThreads(performance.batch_threads) if performance.batch_threads > 1 else None
    models = part_models(model, performance.batch_threads) if threads else [model]
    watch = _DivergenceWatch(epoch, len(batches))
    with threads or contextlib.nullcontext():
        for step, (inputs, targets) in enumerate(batches.epoch(epoch), start=1):
            lr = optimizer.param_groups[0]["lr"]
            if threads is None:
                outputs, loss, parts = task.forward_loss(                  # forward pass and loss
                    model, performance.prepare_inputs(normalizer(inputs)), targets, performance.autocast)
                optimizer.zero_grad(set_to_none=True)
                performance.backward_and_step(loss, optimizer)         # backpropagation, then the gradient step
            else:
                loss, parts, outputs = _step_in_parts(threads, models, task, normalizer, performance, inputs,
                                                      targets)
                optimizer.step()
            scheduler.step()
            sums.add(loss, parts, task.headline_sum(outputs.detach(), targets), len(targets))
            watch.after_step(step, loss, lr, sums.loss)
            _call(callbacks, "on_batch_end", state, sums.images, sums.loss,
                  sums.headline if sums.headline is not None else no_headline)
    watch.check(sums.loss)
    # With several processes, the epoch's numbers are those of all of them together.
    loss_total, headline_total, part_totals, image_total = sums.totals()
    result = {"loss": loss_total / max(image_total, 1), "images": image_total}
    result.update({f"loss_{name}": value / max(image_total, 1) for name, value in part_totals.items()})
    if headline_total is not None:
        result[task.headline_name] = task.headline(headline_total, image_total)
    return result


def _step_in_parts(threads: BatchThreads, models: list[nn.Module], task: Task, normalizer: nn.Module,
                   performance: Performance, inputs: Tensor, targets: Tensor
                   ) -> tuple[Tensor, dict[str, Tensor], Tensor]:
    """The forward and backward pass of one batch as parts on `threads` (batch_threads.py); leaves
    each weight's .grad the batch's gradient and returns (batch loss, its parts, outputs), as the
    usual step."""
    parameters = [p for p in models[0].parameters() if p.requires_grad]
    whole_share = task.loss_share(targets)
    parts = batch_parts(len(targets), threads.threads)
    # Two parts' gradients can be accumulated by autograd itself, in either order: a + b == b + a
    # exactly. With more, the order of the additions would change the result from run to run, so
    # each part keeps its own and they are added in the parts' order.
    accumulate = len(parts) <= 2
    results: list[tuple[tuple[Tensor | None, ...], Tensor, dict[str, Tensor], Tensor] | None] = [None] * len(parts)

    def compute(index: int, part: slice) -> None:
        part_targets = targets[part]
        outputs, loss, loss_parts = task.forward_loss(
            models[index], performance.prepare_inputs(normalizer(inputs[part])), part_targets, performance.autocast)
        # The batch's loss is a mean over its images: each part's mean counts by its share of them.
        weight = task.loss_share(part_targets) / whole_share
        loss = loss * weight
        if accumulate:
            loss.backward()
            gradients: tuple[Tensor | None, ...] = ()
        else:
            gradients = torch.autograd.grad(loss, parameters, allow_unused=True)
        weighted_parts = {name: value.detach() * weight for name, value in loss_parts.items()}
        results[index] = (gradients, loss.detach(), weighted_parts, outputs.detach())

    for parameter in parameters:
        parameter.grad = None
    threads.run([functools.partial(compute, index, part) for index, part in enumerate(parts)])
    done = [result for result in results if result is not None]
    if not accumulate:
        add_gradients(parameters, [gradients for gradients, _, _, _ in done])
    part_sums = {name: torch.stack([loss_parts[name] for _, _, loss_parts, _ in done]).sum()
                 for name in done[0][2]} if done else {}
    return (torch.stack([loss for _, loss, _, _ in done]).sum(), part_sums,
            torch.cat([outputs for _, _, _, outputs in done]))


@torch.no_grad()
def validate(model: nn.Module, task: Task, normalizer: nn.Module, batches: Batches,
             performance: Performance | None = None) -> dict[str, float]:
    """The validation images' mean loss (and its parts) and the task's headline, streamed batch by
    batch and summed over the processes of a distributed run."""
    performance = performance or Performance(batches.device)
    model.eval()
    meter = task.meter(full=False)
    device = batches.device
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    share_sum = torch.zeros((), device=device, dtype=torch.float64)
    part_sums: dict[str, Tensor] = {}
    for inputs, targets in batches.epoch(0):
        outputs, loss, parts = task.forward_loss(model, performance.prepare_inputs(normalizer(inputs)), targets,
                                                 performance.autocast)
        outputs = outputs.float()
        share = task.loss_share(targets).double()
        loss_sum += loss.double() * share
        share_sum += share
        for name, value in parts.items():
            part_sums[name] = part_sums.get(name, torch.zeros((), device=device, dtype=torch.float64)) + \
                value.double() * share
        meter.update(outputs, targets)
    names = list(part_sums)
    totals = sum_across_processes(torch.stack([loss_sum, share_sum, *[part_sums[n] for n in names]])).tolist()
    shares = totals[1]
    result = {"loss": totals[0] / shares if shares else math.nan}
    result.update({f"loss_{name}": value / shares if shares else math.nan for name, value in zip(names, totals[2:])})
    result[task.headline_name] = meter.compute().get(task.headline_name, math.nan)
    return result


def _epoch_row(task: Task, epoch: int, train: dict[str, float], val: dict[str, float]) -> dict[str, Any]:
    """An epoch's line of metrics.csv: the losses and the headline, for training and validation; the
    loss's parts (a detector's box and class losses) after them; a headline that is no per-image mean
    (mAP) only for validation."""
    headline = task.headline_name
    row: dict[str, Any] = {"epoch": epoch, "train_loss": train["loss"]}
    if headline in train:
        row[f"train_{headline}"] = train[headline]
    row["val_loss"] = val.get("loss", math.nan)
    row[f"val_{headline}"] = val.get(headline, math.nan)
    for name in (key for key in train if key.startswith("loss_")):
        row[f"train_{name}"] = train[name]
        row[f"val_{name}"] = val.get(name, math.nan)
    return row


def fit(*, model: nn.Module, task: Task, normalizer: nn.Module, train_batches: Batches,
        val_batches: Batches | None, optimizer: torch.optim.Optimizer, scheduler: Any, state: FitState,
        seed: int, callbacks: list[object], performance: Performance | None = None,
        eval_model: nn.Module | None = None) -> FitState:
    """Train from `state.epoch + 1` to `state.epochs`, or until a callback sets `state.stop_reason`.

    `model` is what the loop calls to train (possibly compiled or wrapped for DDP); `eval_model`
    (default: `model`) is what scores the validation set.
    """
    eval_model = eval_model or model
    process_rank = context_from_environment().rank
    _call(callbacks, "on_train_begin", state)
    for epoch in range(state.epoch + 1, state.epochs + 1):
        # Each process of a distributed run augments and drops out differently, reproducibly.
        seed_everything(epoch_seed(seed, epoch) + process_rank)
        model.train()  # before the callbacks, so one may keep some layers in eval mode (frozen batch norm)
        _call(callbacks, "on_epoch_begin", state, epoch, train_batches.num_images)
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]  # the rate the epoch starts with
        train = train_one_epoch(model, task, normalizer, train_batches, epoch, optimizer, scheduler,
                                state, callbacks, performance)
        train_seconds = time.perf_counter() - started
        check_finite_weights(eval_model, epoch)  # before anything scores or saves them
        val = validate(eval_model, task, normalizer, val_batches, performance) if val_batches is not None else {}
        row = _epoch_row(task, epoch, train, val)
        row.update({"lr": lr, "seconds": time.perf_counter() - started,
                    "images_per_s": train["images"] / max(train_seconds, 1e-9)})
        state.record(row)
        _call(callbacks, "on_epoch_end", state, row)
        if state.stop_reason:
            break
    _call(callbacks, "on_train_end", state)
    return state
