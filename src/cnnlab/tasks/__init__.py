"""Tasks: what a network predicts and how it is scored (see `cnnlab.tasks.base.Task`)."""

from __future__ import annotations

from typing import Any

from cnnlab.errors import ConfigError
from cnnlab.tasks.base import Task

TASK_NAMES = ("classification", "regression")


def _task_class(name: object) -> type[Task]:
    from cnnlab.tasks.classification import Classification
    from cnnlab.tasks.regression import Regression

    classes: dict[str, type[Task]] = {"classification": Classification, "regression": Regression}
    if name not in classes:
        raise ConfigError(f"unknown task {name!r}; known: {', '.join(classes)}")
    return classes[name]  # type: ignore[index]


def task_from_json(values: dict[str, Any]) -> Task:
    """Rebuild the task stored in a checkpoint sidecar."""
    return _task_class(values.get("name")).from_json(values)


def task_for_training(name: str, source: Any, *, label_smoothing: float = 0.0, class_weights: str = "none") -> Task:
    """The task for training on `source` (a Source: class names, or targets to standardise)."""
    return _task_class(name).for_training(source, label_smoothing=label_smoothing, class_weights=class_weights)


__all__ = ["Task", "TASK_NAMES", "task_from_json", "task_for_training"]
