"""`train()`: everything a run needs, assembled once (`_assemble_and_fit`), then handed to the loop.

    device → pretrained weights (if any) → data (split, resized, in memory; memory checked first)
    → task → normalisation → model (+ the pretrained layers that fit) → run folder and config.yaml
    → learning rate (`--lr auto`: the range test) → optimiser and schedule (per stage with
    --freeze / --fine-tune) → callbacks (progress, metrics.csv, curves, checkpoints, early stopping,
    stages) → fit (session.py: the loop, checkpoints, and how the run ends)

A resume takes the same steps; its architecture, task, normalisation and weights come from the
saved run instead (`_Resumption`), and its optimiser, schedule and progress are put back.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import torch

from cnnlab.config import TrainConfig, coerce_fields, load_config_file, save_config, with_recipe
from cnnlab.console import Console
from cnnlab.data.loader import Batches
from cnnlab.data.normalize import InputSpec
from cnnlab.data.pipeline import TrainingData, prepare_training_data
from cnnlab.data.prepare import channel_statistics
from cnnlab.data.sources import check_recorded_data, recorded_data
from cnnlab.device import resolve_device
from cnnlab.errors import ConfigError
from cnnlab.io import write_text_atomic
from cnnlab.models.build import Architecture, resolve_architecture
from cnnlab.models.transfer import TransferReport
from cnnlab.models.weights import PretrainedWeights
from cnnlab.runs import TRAIN_STATE, WEIGHTS, clear_stale_writes, create_run_dir, default_run_name, find_run
from cnnlab.strict_json import to_json_text
from cnnlab.tasks import Task, task_for_training, task_from_json
from cnnlab.train import callbacks as cb
from cnnlab.checkpoint import ModelInfo, TrainingState, load_training_state, restore_training_state
from cnnlab.train.loop import Callback, FitState, seed_everything
from cnnlab.train.memory import RunShape, check_memory
from cnnlab.train.optim import build_optimizer, build_scheduler, follow_schedule
from cnnlab.train.pretrained import (few_shot_config, head_layers, load_pretrained, load_transfer_report,
                                     note_pretrained_input, pretrained_normalisation, recorded_weights,
                                     save_transfer_report, transfer_pretrained, with_weights_defaults)
from cnnlab.train.stages import StagePlan, parameter_groups, staged_schedule
from cnnlab.train import distributed
from cnnlab.train.distributed import DistributedContext
from cnnlab.train.batch_threads import choose_batch_threads
from cnnlab.train.session import RunSetup, TrainResult, fit_run

# Flags that may change when a run is resumed; anything else would make it a different run.
RESUMABLE_OVERRIDES = frozenset({"epochs", "patience", "device", "workers"})


def train(config: TrainConfig | str | Path | None = None, *, resume: str | Path | None = None,
          quiet: bool = False, callbacks: Sequence[object] = (), **fields: Any) -> TrainResult:
    """Train a CNN; the keyword arguments are `TrainConfig` fields (the `cnnlab train` flags).

    >>> result = cnnlab.train(data="fashion-mnist", model="guide-cnn", epochs=3)  # doctest: +SKIP
    >>> result.run_dir
    PosixPath('runs/guide-cnn-fashion-mnist')

    `config` may be a TrainConfig or a YAML file with the same keys; `fields` override it.
    `resume` continues the run folder where it stopped (fields may change epochs/patience/device/workers).

    `callbacks` are your own objects with any of the methods of `cnnlab.train.loop.Callback`:
    `on_train_begin(state)`, `on_epoch_begin(state, epoch, num_images)`,
    `on_batch_end(state, images, loss_sum, headline_sum)`, `on_epoch_end(state, row)` (row: the
    epoch's metrics.csv line) and `on_train_end(state)`. They run after cnnlab's own (progress,
    metrics.csv, checkpoints), in the order given, in every process of a distributed run; one that
    sets `state.stop_reason` ends training after that epoch, its checkpoint saved. Time spent in
    `on_epoch_begin` is not counted in the epoch's images/s.
    """
    callbacks = check_callbacks(callbacks)
    context = distributed.context_from_environment()
    # Under torchrun, only rank 0 speaks and writes; the other processes just train.
    console = Console(quiet=quiet, mute=not context.is_main)
    try:
        if resume is not None:
            result = _resume(resume, fields, console, context, callbacks)
        else:
            result = _start(merge_config(config, fields).validate(), console, context, callbacks)
    except BaseException:
        if context.enabled:  # the others may be mid-epoch: leave without waiting for them
            distributed.stop(wait_for_others=False)
        raise
    if context.enabled:
        distributed.stop()
    return result


def check_callbacks(callbacks: Sequence[object]) -> list[object]:
    """The user's callbacks as a list, each an object with at least one hook method."""
    if not isinstance(callbacks, (list, tuple)):
        raise ConfigError(f"callbacks: expected a list of callback objects, got {type(callbacks).__name__}; "
                          f"write callbacks=[{type(callbacks).__name__}(...)]")
    hooks = [name for name in vars(Callback) if name.startswith("on_")]
    for index, callback in enumerate(callbacks):
        name = callback.__name__ if isinstance(callback, type) else type(callback).__name__
        if isinstance(callback, type):
            raise ConfigError(f"callbacks[{index}]: {name} is a class; pass an instance, {name}(...)")
        if not any(callable(getattr(callback, hook, None)) for hook in hooks):
            raise ConfigError(f"callbacks[{index}]: a {name} has none of the hook methods "
                              f"{', '.join(hooks)} (see cnnlab.train.loop.Callback)")
    return list(callbacks)


def merge_config(config: TrainConfig | str | Path | None, fields: dict[str, Any]) -> TrainConfig:
    """A config file or object, overridden by `fields`, with its recipe filling what nobody set."""
    overrides = coerce_fields(TrainConfig, fields, origin="train()")
    explicit = set(overrides)
    if isinstance(config, (str, Path)):
        values = load_config_file(config)
        explicit |= set(coerce_fields(TrainConfig, values, origin=str(config)))
        config = TrainConfig.from_dict(values, origin=str(config))
    elif config is not None:
        defaults = TrainConfig()
        explicit |= {f for f in TrainConfig.__dataclass_fields__ if getattr(config, f) != getattr(defaults, f)}
    return with_recipe(replace(config or TrainConfig(), **overrides), explicit)


def _start(config: TrainConfig, console: Console, context: DistributedContext,
           callbacks: list[object], run_dir: Path | None = None) -> TrainResult:
    """A new run, in a new folder or (`run_dir`) in the folder of a run that saved no epoch."""
    return _assemble_andfit_run(_FreshStart(config, run_dir), console, context, callbacks)


def _resume(run: str | Path, fields: dict[str, Any], console: Console, context: DistributedContext,
            callbacks: list[object]) -> TrainResult:
    """The run in folder `run`, continued after its last saved epoch."""
    run_dir = find_run(run, fields.get("runs_dir", "runs"))
    clear_stale_writes(run_dir)  # temporary files of a session killed mid-write
    config = _resumed_config(run, run_dir, fields)
    state_path = run_dir / WEIGHTS / TRAIN_STATE
    if not state_path.exists():
        # The run ended (a crash, a kill, nan) before its first epoch was saved: nothing to continue
        # from, so it starts again, in its own folder, from its recorded configuration.
        console.info(f"note: {run_dir} saved no epoch before it stopped; training it again from epoch 1")
        return _start(config, console, context, callbacks, run_dir=run_dir)
    saved = load_training_state(state_path)
    progress = _progress_to_continue(run, saved, config, console)
    return _assemble_andfit_run(_Resumption(config, run_dir, saved, progress), console, context, callbacks)


def _resumed_config(run: str | Path, run_dir: Path, fields: dict[str, Any]) -> TrainConfig:
    """The run's saved config with the flags a resume may change (RESUMABLE_OVERRIDES); changing any
    other would make it a different run."""
    saved = TrainConfig.from_dict(load_config_file(run_dir / "config.yaml"), origin=str(run_dir / "config.yaml"))
    overrides = coerce_fields(TrainConfig, fields, origin="--resume")
    changed = {k for k, v in overrides.items() if getattr(saved, k) != v and k not in ("runs_dir", "name")}
    if changed - RESUMABLE_OVERRIDES:
        raise ConfigError(f"--resume {run}: cannot change {', '.join(sorted(changed - RESUMABLE_OVERRIDES))} "
                          f"of an existing run (only {', '.join(sorted(RESUMABLE_OVERRIDES))}); start a new run")
    config = replace(saved, **{k: overrides[k] for k in changed}).validate()
    check_recorded_data(config.data, then=f"resume from the folder you trained in (cd there, then --resume {run})")
    return config


def _progress_to_continue(run: str | Path, saved: TrainingState, config: TrainConfig,
                          console: Console) -> FitState:
    """The saved progress, to go on to `config.epochs` (even past an early stop)."""
    progress = FitState.from_json(saved.progress)
    if progress.epoch >= config.epochs:
        raise ConfigError(f"--resume {run}: the run already completed {progress.epoch} of {config.epochs} epochs; "
                          f"pass a larger --epochs to train further")
    if progress.stop_reason:
        console.info(f"note: the run had stopped ({progress.stop_reason}); continuing anyway")
        progress.stop_reason = None
    progress.epochs = config.epochs
    return progress


def _assemble_andfit_run(origin: _FreshStart | _Resumption, console: Console, context: DistributedContext,
                      callbacks: list[object]) -> TrainResult:
    """Put one run together, then train it. A fresh start and a resume take the same steps; where
    each part comes from (`origin`) is all that differs."""
    start = origin.prepare(console, context)  # device, data, task, normalisation (+ pretrained weights)
    # The model before the run folder: a network that does not fit the data (a YAML layer list, a
    # too-small image) or a --batch-threads it cannot take must fail before a folder exists.
    model, report = origin.model(start, console)
    parts = _batch_threads(start.config, model, start.device, context)
    run_dir = origin.folder(start, context)
    config = origin.record(start, run_dir, report, context)
    plan = _stage_plan(config, model, start.architecture, report)
    train_batches, val_batches = training_batches(config, start.data, start.device, start.task, context, parts=parts)
    if config.lr == "auto":  # only a fresh start: a resumed run's config holds the rate it found
        config = _range_tested(config, start, model, plan, train_batches, run_dir, console, context)
    model = model.to(start.device)
    optimizer, scheduler = _optimiser_and_schedule(config, model, plan, steps_per_epoch=len(train_batches))
    setup = RunSetup(config, run_dir, start.data, start.task, origin.info(start, config), model, optimizer,
                   scheduler, train_batches, val_batches, start.device, plan, context, batch_threads=parts)
    state, loss_scaler = origin.begin(setup, console)
    return fit_run(setup, state, console, callbacks, loss_scaler=loss_scaler)


@dataclass
class RunStart:
    """What a run (or the learning-rate finder) starts from: its device, data, task and normalisation."""

    config: TrainConfig  # the image size defaults to the pretrained weights' own
    device: torch.device  # this process's device
    architecture: Architecture
    pretrained: PretrainedWeights | None
    data: TrainingData
    task: Task
    input_spec: InputSpec

    def initial_model(self, console: Console) -> tuple[torch.nn.Module, TransferReport | None]:
        """A freshly initialised model (seeded) holding every pretrained layer that fits."""
        geometry = self.data.geometry
        seed_everything(self.config.seed)  # weight initialisation depends on the seed alone
        model = self.task.build_model(self.architecture, in_channels=geometry.channels, image_size=geometry.size)
        if self.pretrained is None:
            return model, None
        batches = -(-len(self.data.train) // self.config.batch_size)  # an epoch's, on one process
        report = transfer_pretrained(model, self.architecture, self.task, self.pretrained, self.config,
                                     batches_per_epoch=batches)
        console.info(report.summary())
        self.config, few_shot = few_shot_config(self.config, report, self.task)
        if few_shot:
            console.info(few_shot)
            # the task holds the loss's label smoothing
            self.task = task_for_training(self.config.task, self.data.train.source, self.config)
        # The tensors now live in the model; let the copies go (VGG-16's are half a gigabyte).
        self.pretrained = replace(self.pretrained, state_dict={})
        return model, report

    def stage_plan(self, model: torch.nn.Module, report: TransferReport | None) -> StagePlan | None:
        return _stage_plan(self.config, model, self.architecture, report)


def prepare_run(config: TrainConfig, console: Console,
                context: DistributedContext = DistributedContext()) -> RunStart:
    """Weights, data, task and normalisation for a validated config (joining the process group, if any)."""
    device = _join(config, context)
    architecture = resolve_architecture(config.model)
    pretrained = load_pretrained(config, architecture)
    size_asked = config.image_size is not None
    config = with_weights_defaults(config, pretrained)
    data = _load_data(config, architecture, device, context, console,
                      statistics_from_data=pretrained is None or pretrained.mean is None)
    task = task_for_training(config.task, data.train.source, config)
    input_spec = _input_spec(data, pretrained, config.seed)
    note_pretrained_input(console, input_spec, pretrained, config, data.train.source, architecture,
                          size_asked=size_asked)
    return RunStart(config, device, architecture, pretrained, data, task, input_spec)


@dataclass
class _FreshStart:
    """A new run: its config as given, pretrained weights if it names any, a new run folder (or
    `run_dir`, the folder of a run that saved no epoch), and its first epoch next."""

    config: TrainConfig
    run_dir: Path | None = None

    def prepare(self, console: Console, context: DistributedContext) -> RunStart:
        return prepare_run(self.config, console, context)

    def model(self, start: RunStart, console: Console) -> tuple[torch.nn.Module, TransferReport | None]:
        return start.initial_model(console)

    def folder(self, start: RunStart, context: DistributedContext) -> Path:
        run_dir = self.run_dir
        if context.is_main and run_dir is None:
            run_dir = create_run_dir(start.config.runs_dir, start.config.name,
                                     default_run_name(start.architecture.label, start.config.data),
                                     exist_ok=start.config.exist_ok)
        return distributed.share_from_main(run_dir)  # the folder rank 0 made, known to every process

    def record(self, start: RunStart, run_dir: Path, report: TransferReport | None,
               context: DistributedContext) -> TrainConfig:
        """The config with every default made explicit, saved with what the data and weights were."""
        config = _resolved(start.config, run_dir, start.data, start.pretrained)
        if context.is_main:
            save_config(config, run_dir / "config.yaml")
            write_text_atomic(run_dir / "data.json", to_json_text(start.data.summary()))
            if report is not None:
                save_transfer_report(run_dir, report)  # which layers --freeze trains, should it resume
        return config

    def info(self, start: RunStart, config: TrainConfig) -> ModelInfo:
        return ModelInfo(start.architecture, start.task.to_json(), start.input_spec, config=config.to_dict())

    def begin(self, setup: RunSetup, console: Console) -> tuple[FitState, dict[str, Any] | None]:
        console.info(f"run folder: {setup.run_dir}")
        return FitState(epochs=setup.config.epochs), None


def _resolved(config: TrainConfig, run_dir: Path, data: TrainingData,
              pretrained: PretrainedWeights | None) -> TrainConfig:
    """The config with every default made explicit, as saved into the run folder (`--lr auto` stays
    until the range test has run; the weights are named exactly)."""
    geometry = data.geometry
    lr = config.lr if config.lr == "auto" else config.resolved_lr()
    return replace(recorded_weights(config, pretrained), data=recorded_data(config.data), name=run_dir.name,
                   runs_dir=str(run_dir.parent), lr=lr, image_size=f"{geometry.height},{geometry.width}",
                   channels=geometry.channels, exist_ok=False)


@dataclass
class _Resumption:
    """A run continued from its folder: its saved config (with the flags a resume may change), the
    architecture, task and normalisation it was saved with, then its weights, optimiser, schedule
    and progress put back."""

    config: TrainConfig
    run_dir: Path
    saved: TrainingState
    progress: FitState

    def prepare(self, console: Console, context: DistributedContext) -> RunStart:
        info = self.saved.info
        device = _join(self.config, context)
        # The normalisation was saved with the run, so no statistics are taken from the data.
        data = _load_data(self.config, info.architecture, device, context, console, statistics_from_data=False)
        return RunStart(self.config, device, info.architecture, None, data, task_from_json(info.task), info.input)

    def model(self, start: RunStart, console: Console) -> tuple[torch.nn.Module, TransferReport | None]:
        """The saved run's network, its weights put back in `begin`, once the optimiser exists."""
        spec = start.input_spec
        model = start.task.build_model(start.architecture, in_channels=spec.channels, image_size=spec.size)
        report = load_transfer_report(self.run_dir) if self.config.staged else None
        return model, report

    def folder(self, start: RunStart, context: DistributedContext) -> Path:
        return self.run_dir

    def record(self, start: RunStart, run_dir: Path, report: TransferReport | None,
               context: DistributedContext) -> TrainConfig:
        if context.is_main:
            save_config(self.config, run_dir / "config.yaml")  # the --epochs/--patience/... it goes on with
        return self.config

    def info(self, start: RunStart, config: TrainConfig) -> ModelInfo:
        return replace(self.saved.info, config=config.to_dict())

    def begin(self, setup: RunSetup, console: Console) -> tuple[FitState, dict[str, Any] | None]:
        restore_training_state(self.saved, setup.model, setup.optimizer, setup.scheduler)
        follow_schedule(setup.scheduler)  # the schedule of the --epochs now asked for, from the step reached
        if setup.context.is_main:
            # metrics.csv may hold a row written after the state was saved; the state's history is the truth.
            cb.write_metrics_csv(setup.run_dir / "metrics.csv", self.progress.history)
        console.info(f"resuming {setup.run_dir} after epoch {self.progress.epoch} of {setup.config.epochs}")
        return self.progress, self.saved.loss_scaler


def _join(config: TrainConfig, context: DistributedContext) -> torch.device:
    """This process's device, once it has joined the process group (under torchrun)."""
    _check_distributed(config, context)
    return distributed.start(context, resolve_device(config.device))


def _check_distributed(config: TrainConfig, context: DistributedContext) -> None:
    if not context.enabled:
        return
    distributed.per_process_batch(config.batch_size, context)
    if config.fine_tune:
        raise ConfigError(f"--fine-tune unfreezes the backbone mid-run, which DistributedDataParallel cannot "
                          f"follow; run it on one process, or use --freeze with {context.world_size} processes")


def _load_data(config: TrainConfig, architecture: Architecture, device: torch.device, context: DistributedContext,
               console: Console, *, statistics_from_data: bool) -> TrainingData:
    """The split, resized images in memory, once the memory check has passed on their size."""
    return prepare_training_data(config, console, before_loading=_memory_check(
        config, architecture, device, context, statistics_from_data=statistics_from_data))


def _memory_check(config: TrainConfig, architecture: Architecture, device: torch.device,
                  context: DistributedContext, *, statistics_from_data: bool):
    """The check `prepare_training_data` runs once the images' size is known, before converting any:
    a run that cannot fit in memory is refused with the figures (train/memory.py)."""
    def check(geometry, train, val) -> None:
        outputs = train.class_names or train.target_names or [""]
        shape = RunShape(geometry, len(train), len(val) if val is not None else 0,
                         pixels_in_source=train.pixels is not None, num_outputs=len(outputs),
                         statistics_from_data=statistics_from_data)
        check_memory(config, shape, architecture, distributed.per_process_batch(config.batch_size, context), device,
                     processes=distributed.local_processes(context))
    return check


def _input_spec(data: TrainingData, pretrained: PretrainedWeights | None, seed: int) -> InputSpec:
    """The images' shape and normalisation: the pretrained weights' mean and std, for the filters
    expect inputs scaled as they saw them; otherwise the training images' own."""
    geometry = data.geometry
    mean, std = (pretrained_normalisation(pretrained, geometry.channels)
                 or channel_statistics(data.train, seed=seed))
    return InputSpec(geometry.channels, geometry.height, geometry.width, tuple(mean), tuple(std), geometry.fit)


def _batch_threads(config: TrainConfig, model: torch.nn.Module, device: torch.device,
                   context: DistributedContext) -> int:
    """How many threads train each batch (batch_threads.py); a ConfigError for a number that cannot work."""
    return choose_batch_threads(config.batch_threads, model, device=device, batch_size=config.batch_size,
                                distributed=context.enabled, compiled=config.compile)


def _stage_plan(config: TrainConfig, model: torch.nn.Module, architecture: Architecture,
                report: TransferReport | None) -> StagePlan | None:
    if not config.staged:
        return None
    assert report is not None  # validate() refuses --freeze / --fine-tune without pretrained weights
    return StagePlan(head_layers(model, architecture, report), None if config.freeze else config.fine_tune,
                     config.backbone_lr_factor)


def training_batches(config: TrainConfig, data: TrainingData, device: torch.device, task: Task,
                     context: DistributedContext = DistributedContext(),
                     parts: int = 1) -> tuple[Batches, Batches | None]:
    """(training batches: shuffled, augmented; validation batches or None) for this process's share;
    `parts`: the batch threads each batch is split across (batch_threads.py)."""
    augmentation = _augmentation(config.augment, task)
    batch_size = distributed.per_process_batch(config.batch_size, context)
    shares = {"rank": context.rank, "world_size": context.world_size}
    # Each process takes the same number of images (padded).
    share = -(-len(data.train) // context.world_size)
    train_batches = Batches(data.train, batch_size=batch_size, device=device, shuffle=True,
                            seed=config.seed, augment=augmentation, workers=config.workers,
                            drop_last=_single_image_part(share % batch_size, parts), **shares)
    val_batches = None
    if data.val is not None:
        val_batches = Batches(data.val, batch_size=max(batch_size, 256), device=device, shuffle=False,
                              workers=config.workers, **shares)
    return train_batches, val_batches


def _augmentation(preset: str, task: Task):
    if preset == "none":
        return None  # and torchvision, which costs a second to import, stays unloaded
    from cnnlab.data.augment import build_augmentation

    task.check_augmentation(preset)
    return build_augmentation(preset, task.move_targets if task.moves_with_image else None)


def _single_image_part(last_batch: int, parts: int) -> bool:
    """Whether a last batch of `last_batch` images, split into `parts` on threads, leaves one part a
    single image, which batch norm cannot normalise ("Expected more than 1 value per channel"):
    such a batch is dropped (a last batch of 1, or of 2 or 3 on two threads)."""
    return last_batch > 0 and last_batch // min(parts, last_batch) < 2


def _range_tested(config: TrainConfig, start: RunStart, model: torch.nn.Module, plan: StagePlan | None,
                  batches: Batches, run_dir: Path, console: Console, context: DistributedContext) -> TrainConfig:
    """`--lr auto`: the config with the range test's suggestion, found by the main process and
    shared; saved, so that `-c config.yaml` reproduces the run with the rate actually used."""
    from cnnlab.train.lr_find import sweep_for_training

    found = None
    if context.is_main:
        finding = sweep_for_training(start, model, plan, batches, run_dir, console)
        found = finding if isinstance(finding, float) else finding.suggestion
    config = replace(config, lr=distributed.share_from_main(found))
    if context.is_main:
        save_config(config, run_dir / "config.yaml")
    return config


def _optimiser_and_schedule(config: TrainConfig, model: torch.nn.Module, plan: StagePlan | None, *,
                            steps_per_epoch: int) -> tuple[torch.optim.Optimizer, Any]:
    """The optimiser (the backbone at its own rate under --freeze / --fine-tune) and the schedule of
    its learning rate over the whole run, which a staged run starts afresh at each stage."""
    lr = config.resolved_lr()
    optimizer = build_optimizer(model, config.optimizer, lr=lr, momentum=config.momentum,
                                weight_decay=config.weight_decay, beta2=config.beta2,
                                groups=parameter_groups(model, plan, lr) if plan else None)
    if plan is None:
        scheduler = build_scheduler(optimizer, config.schedule,
                                    total_steps=config.epochs * steps_per_epoch, warmup=config.warmup)
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, staged_schedule(config.schedule, plan, steps_per_epoch, config.epochs,
                                       warmup=config.warmup))
    return optimizer, scheduler
