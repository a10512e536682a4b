"""Running an assembled run (trainer.py assembles it): the loop with cnnlab's callbacks and the
user's, checkpoints, run.json, and what each way of ending (finished, stopped early, diverged,
interrupted, failed) says and leaves behind."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from cnnlab.checkpoint import (ModelInfo, match_parameter_layouts, save_model_checkpoint, save_training_state,
                               scheduler_state)
from cnnlab.console import Console
from cnnlab.config import TrainConfig
from cnnlab.data.loader import Batches
from cnnlab.data.pipeline import TrainingData
from cnnlab.performance import Performance, resolve_performance
from cnnlab.runs import WEIGHTS
from cnnlab.strict_json import finite_or_none
from cnnlab.tasks import Task
from cnnlab.train import callbacks as cb
from cnnlab.train import distributed
from cnnlab.train.distributed import DistributedContext
from cnnlab.train.loop import FitState, TrainingDiverged, fit
from cnnlab.train.run_record import RunRecord
from cnnlab.train.stages import FineTuneStages, StagePlan, apply_stage


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict[str, Any]]
    best_epoch: int
    stop_reason: str | None
    arithmetic: str = ""  # how the steps ran: "bf16, channels-last, each batch in 2 parts on 2 threads"

    @property
    def best_checkpoint(self) -> Path:
        return self.run_dir / WEIGHTS / "best.safetensors"

    @property
    def last_checkpoint(self) -> Path:
        return self.run_dir / WEIGHTS / "last.safetensors"


@dataclass
class RunSetup:
    """The objects one run trains with."""

    config: TrainConfig
    run_dir: Path
    data: TrainingData
    task: Task
    info: ModelInfo
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train_batches: Batches
    val_batches: Batches | None
    device: torch.device
    stages: StagePlan | None = None
    context: DistributedContext = DistributedContext()
    batch_threads: int = 1  # the threads each batch is split across (batch_threads.py)


def fit_run(setup: RunSetup, state: FitState, console: Console, user_callbacks: list[object],
         loss_scaler: dict[str, Any] | None = None) -> TrainResult:
    """Train from `state` on; `loss_scaler` is a resumed run's float16 loss-scaler state."""
    task = setup.task
    performance = resolve_performance(setup.device, precision=setup.config.precision,
                                      channels_last=setup.config.channels_last, compile=setup.config.compile)
    performance.restore_loss_scaler(loss_scaler)
    if setup.stages is not None:  # the stage of the epoch to come: the head alone, or the whole network
        apply_stage(setup.model, setup.stages, setup.stages.stage(state.epoch + 1))
    console.info(f"model: {setup.info.architecture.label} ({_parameter_count(setup)}) on {setup.device}; "
                 f"task: {task.name} ({task.describe_outputs()})")
    console.info(task.describe_loss())
    callbacks, checkpointer = _callbacks(setup, state, console, performance, user_callbacks)
    normalizer = setup.info.input.normalizer().to(setup.device)
    performance.batch_threads = setup.batch_threads
    processes = f"; {setup.context.world_size} processes (DDP)" if setup.context.enabled else ""
    console.info(f"arithmetic: {performance.describe()}{processes}")
    model = performance.prepare_model(setup.model)
    match_parameter_layouts(setup.optimizer)  # a resumed optimizer's moments, as its weights now are
    record = None
    if setup.context.is_main:  # run.json: what every auto became, on which machine and software
        record = RunRecord(setup.run_dir, performance=performance, device=setup.device,
                           processes=setup.context.world_size, first_epoch=state.epoch + 1)
    try:
        fit(model=performance.compiled(distributed.wrap(model, setup.context, setup.device)), eval_model=model,
            task=task, normalizer=normalizer, train_batches=setup.train_batches, val_batches=setup.val_batches,
            optimizer=setup.optimizer, scheduler=setup.scheduler, state=state, seed=setup.config.seed,
            callbacks=callbacks, performance=performance)
    except KeyboardInterrupt:
        _close_quietly(record, state, "interrupted")
        if checkpointer is not None:
            console.warn(_interrupted(setup.run_dir, checkpointer.saved_epoch, state.epochs))
        raise
    except TrainingDiverged as error:
        _close_quietly(record, state, f"diverged: {error.where}")
        raise TrainingDiverged(_diverged(error.where, setup, state)) from None
    except Exception as error:
        _close_quietly(record, state, f"failed: {type(error).__name__}: {error}")
        raise
    if state.stop_reason:  # every stop says why: early stopping, or a callback of the user's
        console.info(f"stopped after epoch {state.epoch} of {state.epochs}: {state.stop_reason}")
    if record is not None:
        record.finish(state.history, f"stopped early: {state.stop_reason}" if state.stop_reason else "completed")
    skipped = setup.train_batches.skipped
    if skipped:
        console.warn(f"{skipped} image(s) failed to decode during training and were skipped")
    # The run folder was named when training started; `cnnlab train` prints it again on stdout.
    console.info(f"best epoch {state.best_epoch} (validation loss {state.best_val_loss:.4f})")
    return TrainResult(setup.run_dir, state.history, state.best_epoch, state.stop_reason, performance.describe())


def _saver(setup: RunSetup, performance: Performance):
    def save(path: Path, kind: str, state: FitState) -> None:
        row = finite_or_none(state.history[-1])  # a run without validation images has no val_loss: null
        # The task as validation left it: a task may learn from it (an embedding's threshold).
        info = replace(setup.info, epoch=state.epoch, metrics=row, task=setup.task.to_json())
        if kind == "model":
            save_model_checkpoint(path, setup.model.state_dict(), info)
        else:
            save_training_state(path, model_state=setup.model.state_dict(),
                                optimizer_state=setup.optimizer.state_dict(),
                                scheduler_state=scheduler_state(setup.scheduler), progress=state.to_json(),
                                info=info, loss_scaler=performance.loss_scaler_state())
    return save


def _parameter_count(setup: RunSetup) -> str:
    """The model's size for the "model:" line; a staged run's stages say how many of them train."""
    if setup.stages is not None:
        return f"{sum(p.numel() for p in setup.model.parameters()):,} parameters"
    return f"{sum(p.numel() for p in setup.model.parameters() if p.requires_grad):,} trainable parameters"


def _callbacks(setup: RunSetup, state: FitState, console: Console, performance: Performance,
               user_callbacks: list[object]) -> tuple[list[object], cb.Checkpointer | None]:
    """cnnlab's callbacks in the order they must run, then the user's; and the checkpointer (main
    process only), which knows the last epoch saved when training is interrupted."""
    task = setup.task
    callbacks: list[object] = []
    if setup.stages is not None:
        callbacks.append(FineTuneStages(setup.model, setup.stages, console.info))  # first: it says the stage
    if setup.context.is_main:
        callbacks += [
            cb.ProgressBar(task.headline_name, enabled=not console.quiet, running_headline=task.per_image_headline),
            cb.MetricsCsv(setup.run_dir / "metrics.csv"),
            cb.TrainingCurves(setup.run_dir / "training_curves.png", task.headline_name, task.loss_name),
        ]
    if setup.config.patience:
        # Every process decides alike: the metrics it sees are summed over all of them.
        callbacks.append(cb.EarlyStopping(setup.config.patience))
    checkpointer = None
    if setup.context.is_main:
        checkpointer = cb.Checkpointer(setup.run_dir / WEIGHTS, _saver(setup, performance), saved_epoch=state.epoch)
        callbacks.append(checkpointer)
    return callbacks + user_callbacks, checkpointer  # the user's last: they see the epoch logged and saved


def _close_quietly(record: RunRecord | None, state: FitState, outcome: str) -> None:
    """Note how the session ended without hiding why: a run.json that cannot be written now must
    not replace the error (or Ctrl-C) the user needs to see."""
    if record is not None:
        with contextlib.suppress(OSError):
            record.finish(state.history, outcome)


def _diverged(where: str, setup: RunSetup, state: FitState) -> str:
    """The whole message for a run whose loss or weights became nan or inf: where, what was kept, what to do."""
    config = setup.config
    if state.epoch:
        kept = (f"{setup.run_dir / WEIGHTS} keeps epoch {state.epoch}, the last with finite weights "
                f"(best: epoch {state.best_epoch})")
    else:
        kept = f"no epoch had finished, so {setup.run_dir} holds no weights"
    default = " (the default for this optimiser)" if config.lr is None else ""
    return (f"{where}. Nothing was saved from that epoch: {kept}. A learning rate too high is the usual cause: "
            f"train again with a lower --lr than {config.resolved_lr():g}{default}, e.g. the one "
            f"`cnnlab lr-find` suggests (or --lr auto)")


def _interrupted(run_dir: Path, kept: int, epochs: int) -> str:
    """What Ctrl-C left behind: the training state is saved at the end of each epoch, so `kept`
    epochs are safe and the one under way is lost."""
    if kept == 0:
        return f"interrupted before epoch 1 was saved: {run_dir} holds no weights yet; start the run again"
    return (f"interrupted: {run_dir} keeps its {kept} finished epoch{'s' if kept > 1 else ''} of {epochs} "
            f"(weights/last.safetensors; the best of them in weights/best.safetensors); continue with: "
            f"cnnlab train --resume {run_dir}")
