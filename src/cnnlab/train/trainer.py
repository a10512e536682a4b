"""`train()`: everything a run needs, assembled once, then handed to the loop.

    config → data (split, resized, in memory) → task → normalisation → model → optimiser and
    schedule → callbacks (progress, metrics.csv, curves, checkpoints, early stopping) → fit
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from cnnlab.config import TrainConfig, coerce_fields, load_config_file, save_config
from cnnlab.console import Console
from cnnlab.data.augment import build_augmentation
from cnnlab.data.loader import Batches
from cnnlab.data.normalize import InputSpec
from cnnlab.data.pipeline import TrainingData, prepare_training_data
from cnnlab.data.prepare import channel_statistics
from cnnlab.device import resolve_device
from cnnlab.errors import ConfigError
from cnnlab.io import write_text_atomic
from cnnlab.models.build import build_model, resolve_architecture
from cnnlab.runs import TRAIN_STATE, WEIGHTS, create_run_dir, default_run_name, find_run
from cnnlab.tasks import Task, task_for_training, task_from_json
from cnnlab.train import callbacks as cb
from cnnlab.train.checkpoint import (ModelInfo, load_training_state, restore_training_state,
                                     save_model_checkpoint, save_training_state, scheduler_state)
from cnnlab.train.loop import FitState, fit, seed_everything
from cnnlab.train.optim import build_optimizer, build_scheduler

# Flags that may change when a run is resumed; anything else would make it a different run.
RESUMABLE_OVERRIDES = frozenset({"epochs", "patience", "device", "workers"})


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict[str, Any]]
    best_epoch: int
    stop_reason: str | None

    @property
    def best_checkpoint(self) -> Path:
        return self.run_dir / WEIGHTS / "best.safetensors"

    @property
    def last_checkpoint(self) -> Path:
        return self.run_dir / WEIGHTS / "last.safetensors"


@dataclass
class _Setup:
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


def train(config: TrainConfig | str | Path | None = None, *, resume: str | Path | None = None,
          quiet: bool = False, **fields: Any) -> TrainResult:
    """Train a CNN; the keyword arguments are `TrainConfig` fields (the `cnnlab train` flags).

    >>> result = cnnlab.train(data="fashion-mnist", model="guide-cnn", epochs=3)  # doctest: +SKIP
    >>> result.run_dir
    PosixPath('runs/guide-cnn-fashion-mnist')

    `config` may be a TrainConfig or a YAML file with the same keys; `fields` override it.
    `resume` continues the run folder where it stopped (fields may change epochs/patience/device/workers).
    """
    console = Console(quiet=quiet)
    if resume is not None:
        return _resume(resume, fields, console)
    config = _merge_config(config, fields).validate()
    device = resolve_device(config.device)
    data = prepare_training_data(config, console)
    task = task_for_training(config.task, data.train.source, label_smoothing=config.label_smoothing)
    architecture = resolve_architecture(config.model)
    mean, std = channel_statistics(data.train, seed=config.seed)
    input_spec = InputSpec(data.geometry.channels, data.geometry.height, data.geometry.width, tuple(mean), tuple(std))
    run_dir = create_run_dir(config.runs_dir, config.name, default_run_name(architecture.label, config.data),
                             exist_ok=config.exist_ok)
    config = _resolved(config, run_dir, data)
    save_config(config, run_dir / "config.yaml")
    write_text_atomic(run_dir / "data.json", json.dumps(data.summary(), indent=2) + "\n")
    seed_everything(config.seed)  # weight initialisation depends on the seed alone
    info = ModelInfo(architecture, task.to_json(), input_spec, config=config.to_dict())
    setup = _assemble(config, run_dir, data, task, info, device)
    console.info(f"run folder: {run_dir}")
    return _fit(setup, FitState(epochs=config.epochs), console)


def _merge_config(config: TrainConfig | str | Path | None, fields: dict[str, Any]) -> TrainConfig:
    if isinstance(config, (str, Path)):
        config = TrainConfig.from_dict(load_config_file(config), origin=str(config))
    base = config or TrainConfig()
    return replace(base, **coerce_fields(TrainConfig, fields, origin="train()"))


def _resolved(config: TrainConfig, run_dir: Path, data: TrainingData) -> TrainConfig:
    """The config with every default made explicit, as saved into the run folder."""
    geometry = data.geometry
    return replace(config, name=run_dir.name, runs_dir=str(run_dir.parent), lr=config.resolved_lr(),
                   image_size=f"{geometry.height},{geometry.width}", channels=geometry.channels,
                   exist_ok=False)


def _assemble(config: TrainConfig, run_dir: Path, data: TrainingData, task: Task, info: ModelInfo,
              device: torch.device) -> _Setup:
    geometry = data.geometry
    model = build_model(info.architecture, in_channels=geometry.channels, num_outputs=task.num_outputs,
                        image_size=geometry.size).to(device)
    augmentation = build_augmentation(config.augment, size=geometry.size, channels=geometry.channels)
    train_batches = Batches(data.train, batch_size=config.batch_size, device=device, shuffle=True,
                            seed=config.seed, augment=augmentation, workers=config.workers,
                            drop_last=len(data.train) % config.batch_size == 1)  # a batch of 1 breaks batch norm
    val_batches = None
    if data.val is not None:
        val_batches = Batches(data.val, batch_size=max(config.batch_size, 256), device=device, shuffle=False,
                              workers=config.workers)
    optimizer = build_optimizer(model, config.optimizer, lr=config.resolved_lr(), momentum=config.momentum,
                                weight_decay=config.weight_decay)
    scheduler = build_scheduler(optimizer, config.schedule, total_steps=config.epochs * len(train_batches))
    return _Setup(config, run_dir, data, task, info, model, optimizer, scheduler, train_batches, val_batches,
                  device)


def _saver(setup: _Setup):
    def save(path: Path, kind: str, state: FitState) -> None:
        row = state.history[-1]
        info = replace(setup.info, epoch=state.epoch, metrics=row)
        if kind == "model":
            save_model_checkpoint(path, setup.model.state_dict(), info)
        else:
            save_training_state(path, model_state=setup.model.state_dict(),
                                optimizer_state=setup.optimizer.state_dict(),
                                scheduler_state=scheduler_state(setup.scheduler), progress=state.to_json(),
                                info=info)
    return save


def _fit(setup: _Setup, state: FitState, console: Console) -> TrainResult:
    task = setup.task
    trainable = sum(p.numel() for p in setup.model.parameters() if p.requires_grad)
    console.info(f"model: {setup.info.architecture.label} ({trainable:,} trainable parameters) on {setup.device}; "
                 f"task: {task.name} ({task.num_outputs} outputs)")
    callbacks: list[object] = [
        cb.ProgressBar(task.headline_name, enabled=not console.quiet),
        cb.MetricsCsv(setup.run_dir / "metrics.csv"),
        cb.TrainingCurves(setup.run_dir / "training_curves.png", task.headline_name),
    ]
    if setup.config.patience:
        callbacks.append(cb.EarlyStopping(setup.config.patience, console.info))
    callbacks.append(cb.Checkpointer(setup.run_dir / WEIGHTS, _saver(setup)))
    normalizer = setup.info.input.normalizer().to(setup.device)
    fit(model=setup.model, task=task, normalizer=normalizer, train_batches=setup.train_batches,
        val_batches=setup.val_batches, optimizer=setup.optimizer, scheduler=setup.scheduler, state=state,
        seed=setup.config.seed, callbacks=callbacks)
    skipped = setup.train_batches.skipped
    if skipped:
        console.warn(f"{skipped} image(s) failed to decode during training and were skipped")
    console.info(f"best epoch {state.best_epoch} (validation loss {state.best_val_loss:.4f}); "
                 f"run folder: {setup.run_dir}")
    return TrainResult(setup.run_dir, state.history, state.best_epoch, state.stop_reason)


def _resume(run: str | Path, fields: dict[str, Any], console: Console) -> TrainResult:
    run_dir = find_run(run, fields.get("runs_dir", "runs"))
    saved = TrainConfig.from_dict(load_config_file(run_dir / "config.yaml"), origin=str(run_dir / "config.yaml"))
    overrides = coerce_fields(TrainConfig, fields, origin="--resume")
    changed = {k for k, v in overrides.items() if getattr(saved, k) != v and k not in ("runs_dir", "name")}
    if changed - RESUMABLE_OVERRIDES:
        raise ConfigError(f"--resume {run}: cannot change {', '.join(sorted(changed - RESUMABLE_OVERRIDES))} "
                          f"of an existing run (only {', '.join(sorted(RESUMABLE_OVERRIDES))}); start a new run")
    config = replace(saved, **{k: overrides[k] for k in changed}).validate()
    state_path = run_dir / WEIGHTS / TRAIN_STATE
    training_state = load_training_state(state_path)
    progress = FitState.from_json(training_state.progress)
    if progress.epoch >= config.epochs:
        raise ConfigError(f"--resume {run}: the run already completed {progress.epoch} of {config.epochs} epochs; "
                          f"pass a larger --epochs to train further")
    if progress.stop_reason:
        console.info(f"note: the run had stopped ({progress.stop_reason}); continuing anyway")
        progress.stop_reason = None
    progress.epochs = config.epochs
    save_config(config, run_dir / "config.yaml")
    data = prepare_training_data(config, console)
    info = replace(training_state.info, config=config.to_dict())
    setup = _assemble(config, run_dir, data, task_from_json(info.task), info, resolve_device(config.device))
    restore_training_state(training_state, setup.model, setup.optimizer, setup.scheduler)
    # metrics.csv may hold a row written after the state was saved; the state's history is the truth.
    cb.write_metrics_csv(run_dir / "metrics.csv", progress.history)
    console.info(f"resuming {run_dir} after epoch {progress.epoch} of {config.epochs}")
    return _fit(setup, progress, console)

