"""Checkpoints: safetensors for the numbers, JSON for everything else. Nothing is ever unpickled.

A model checkpoint is `NAME.safetensors` plus a `NAME.json` sidecar that says how to rebuild and
use the model: architecture, task (class names or target scaling), input size, channels and
normalisation, the training config and the epoch's metrics. The same JSON is also embedded in the
safetensors header, so the weights file alone is enough and the pair can never disagree; the
separate sidecar is there for people and tools to read.

The training state (`train-state.safetensors`: model, optimizer and schedule, epoch, history) is
what `--resume` needs; it stays out of the model files users copy around. Every file is written to
a temporary name and renamed into place, so a crash mid-write never leaves a broken checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from cnnlab.data.normalize import InputSpec
from cnnlab.errors import CnnlabError
from cnnlab.io import atomic_path, write_text_atomic
from cnnlab.models.build import Architecture

FORMAT = "cnnlab.checkpoint/1"
_METADATA_KEY = "cnnlab"
_REQUIRED = object()


@dataclass
class ModelInfo:
    """Everything besides the weights needed to use a trained model (the JSON sidecar)."""

    architecture: Architecture
    task: dict[str, Any]
    input: InputSpec
    epoch: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        from cnnlab import __version__

        return {
            "format": FORMAT,
            "cnnlab_version": __version__,
            "architecture": self.architecture.to_json(),
            "task": self.task,
            "input": self.input.to_json(),
            "epoch": self.epoch,
            "metrics": self.metrics,
            "config": self.config,
        }

    @classmethod
    def from_json(cls, values: dict[str, Any], *, origin: str) -> "ModelInfo":
        """The sidecar's values read back; a CnnlabError names `origin` and the field at fault."""
        if not isinstance(values, dict):
            raise CnnlabError(f"{origin}: its cnnlab metadata is not a JSON object (found {type(values).__name__})")
        if values.get("format") != FORMAT:
            raise CnnlabError(f"{origin}: not a cnnlab checkpoint (format {values.get('format')!r}, "
                              f"expected {FORMAT!r})")
        task = _metadata_field(values, "task", origin, _readable_task)
        return cls(
            architecture=_metadata_field(values, "architecture", origin, Architecture.from_json),
            task=task,
            input=_metadata_field(values, "input", origin, InputSpec.from_json),
            epoch=_metadata_field(values, "epoch", origin, int, default=0),
            metrics=_metadata_field(values, "metrics", origin, dict, default={}),
            config=_metadata_field(values, "config", origin, dict, default={}),
        )

    @property
    def class_names(self) -> list[str] | None:
        """The classes the stored task tells apart (None for a task without classes)."""
        from cnnlab.tasks import task_from_json

        return task_from_json(self.task).class_names

    @property
    def output_names(self) -> list[str]:
        """A name per thing the stored task tells apart: its classes, or its regression targets."""
        from cnnlab.tasks import task_from_json

        return task_from_json(self.task).output_names


def _readable_task(values: dict[str, Any]) -> dict[str, Any]:
    from cnnlab.tasks import task_from_json

    task_from_json(values)  # raises if the task cannot be rebuilt from it
    return values


def _metadata_field(values: dict[str, Any], name: str, origin: str, parse: Callable[[Any], Any], *,
                    default: Any = _REQUIRED) -> Any:
    """`parse(values[name])`, or a CnnlabError that names the file and the field (missing, or not
    what cnnlab wrote: a damaged or hand-edited checkpoint)."""
    if name not in values:
        if default is not _REQUIRED:
            return default
        raise CnnlabError(f"{origin}: its cnnlab metadata has no {name!r} field; the checkpoint is damaged or "
                          "was not written by cnnlab: use another one (or train again)")
    try:
        return parse(values[name])
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
        detail = f"no {error.args[0]!r} in it" if isinstance(error, KeyError) else str(error)
        raise CnnlabError(f"{origin}: the {name!r} field of its cnnlab metadata cannot be read ({detail}); "
                          "the checkpoint is damaged or was not written by cnnlab") from None


def _cpu_tensors(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {key: value.detach().to("cpu").contiguous() for key, value in state.items()}


def _write_safetensors(path: Path, tensors: dict[str, Tensor], metadata: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as temp:
        save_file(tensors, str(temp), metadata={_METADATA_KEY: json.dumps(metadata)})


def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    if not path.is_file():
        raise CnnlabError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CnnlabError(f"{path}: not a readable safetensors file ({error})") from None
    if _METADATA_KEY not in header:
        raise CnnlabError(f"{path}: a safetensors file without cnnlab metadata (was it written by cnnlab?)")
    try:
        metadata = json.loads(header[_METADATA_KEY])
    except ValueError as error:
        raise CnnlabError(f"{path}: its cnnlab metadata is not valid JSON ({error}); the checkpoint is damaged: "
                          "use another one (or train again)") from None
    if not isinstance(metadata, dict):
        raise CnnlabError(f"{path}: its cnnlab metadata is not a JSON object (found {type(metadata).__name__}); "
                          "the checkpoint is damaged or was not written by cnnlab")
    return tensors, metadata


def has_cnnlab_metadata(path: Path) -> bool:
    """Whether a safetensors file was written by cnnlab (other safetensors files hold bare weights)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return _METADATA_KEY in (handle.metadata() or {})
    except (SafetensorError, OSError, ValueError) as error:
        raise CnnlabError(f"{path}: not a readable safetensors file ({error})") from None


def save_model_checkpoint(path: Path, state_dict: dict[str, Tensor], info: ModelInfo) -> None:
    """Write `path` (.safetensors) and its `.json` sidecar."""
    sidecar = info.to_json()
    _write_safetensors(path, _cpu_tensors(state_dict), sidecar)
    write_text_atomic(path.with_suffix(".json"), json.dumps(sidecar, indent=2) + "\n")


def load_model_checkpoint(path: Path) -> tuple[dict[str, Tensor], ModelInfo]:
    tensors, sidecar = _read_safetensors(Path(path))
    return tensors, ModelInfo.from_json(sidecar, origin=str(path))


# --- training state: model + optimizer + schedule + progress, for --resume -------------------

def _split_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Optimizer state_dict -> (tensors keyed 'optimizer/<param>/<name>', everything else as JSON)."""
    tensors: dict[str, Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for param_id, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer/{param_id}/{name}"] = value
            else:
                plain.setdefault(str(param_id), {})[name] = value
    return tensors, {"state": plain, "param_groups": state["param_groups"]}


def _join_optimizer_state(tensors: dict[str, Tensor], plain: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(k): dict(v) for k, v in plain["state"].items()}
    for key, value in tensors.items():
        if key.startswith("optimizer/"):
            _, param_id, name = key.split("/", 2)
            state.setdefault(int(param_id), {})[name] = value
    return {"state": state, "param_groups": plain["param_groups"]}


def save_training_state(path: Path, *, model_state: dict[str, Tensor], optimizer_state: dict[str, Any],
                        scheduler_state: dict[str, Any], progress: dict[str, Any], info: ModelInfo,
                        loss_scaler: dict[str, Any] | None = None) -> None:
    """`loss_scaler`: the float16 GradScaler's state (its scale and growth tracker: plain numbers), if any."""
    optimizer_tensors, optimizer_plain = _split_optimizer_state(optimizer_state)
    tensors = {f"model/{k}": v for k, v in _cpu_tensors(model_state).items()}
    tensors.update(_cpu_tensors(optimizer_tensors))
    metadata = {"model": info.to_json(), "optimizer": optimizer_plain, "scheduler": scheduler_state,
                "progress": progress}
    if loss_scaler:
        metadata["loss_scaler"] = loss_scaler
    _write_safetensors(path, tensors, metadata)


@dataclass
class TrainingState:
    model_state: dict[str, Tensor]
    optimizer_state: dict[str, Any]
    scheduler_state: dict[str, Any]
    progress: dict[str, Any]
    info: ModelInfo
    loss_scaler: dict[str, Any] | None = None
    origin: str = ""  # the file it was read from, for error messages


def load_training_state(path: Path) -> TrainingState:
    tensors, metadata = _read_safetensors(Path(path))
    model_state = {k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")}
    origin = str(path)
    return TrainingState(
        model_state=model_state,
        optimizer_state=_metadata_field(metadata, "optimizer", origin,
                                        lambda plain: _join_optimizer_state(tensors, plain)),
        scheduler_state=_metadata_field(metadata, "scheduler", origin, dict),
        progress=_metadata_field(metadata, "progress", origin, dict),
        info=_metadata_field(metadata, "model", origin, lambda values: ModelInfo.from_json(values, origin=origin)),
        loss_scaler=metadata.get("loss_scaler"),
        origin=origin,
    )


def restore_training_state(state: TrainingState, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                           scheduler: Any) -> None:
    """Put a saved state back into freshly built objects. The scheduler must already exist: creating
    a LambdaLR resets the optimizer's learning rate, so the optimizer's saved state goes in after it."""
    try:
        model.load_state_dict(state.model_state)
    except RuntimeError as error:  # e.g. a run saved by a cnnlab whose model of that name differed
        raise CnnlabError(f"{state.origin or 'training state'}: the saved weights do not fit the "
                          f"architecture {state.info.architecture.label!r} builds now ({error})") from None
    optimizer.load_state_dict(state.optimizer_state)
    scheduler.load_state_dict({**scheduler.state_dict(), **state.scheduler_state})


def match_parameter_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give each per-parameter state tensor (Adam's moments…) its parameter's memory layout; call it
    once the model has its final layout.

    Saved tensors come back contiguous while a channels-last model's convolution weights are not.
    The fused Adam kernels walk a parameter and its moments as flat arrays, element i with element i,
    so a moment in another layout would be applied to the wrong weights."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            values = optimizer.state.get(param, {})
            for name, value in values.items():
                same_shape = isinstance(value, Tensor) and value.shape == param.shape
                if same_shape and value.stride() != param.stride():
                    values[name] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def scheduler_state(scheduler: Any) -> dict[str, Any]:
    """A LambdaLR's state without its lambdas (stored as None anyway): the step count is what matters."""
    return {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
