"""Tasks: what a network predicts and how it is scored (the interface: `cnnlab.tasks.base.Task`).

The one list of tasks is `TASKS` below. Its entries name their class by import path, so that
listing the tasks (the --task flag's choices, `cnnlab --help`) imports no torch; the class is
imported when a task is used. Adding a task is one line here plus its module (see
docs/architecture.md, "Adding a task").
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from cnnlab.errors import ConfigError
from cnnlab.registry import Registry

if TYPE_CHECKING:
    from cnnlab.data.source import Source
    from cnnlab.tasks.base import Task

TASKS: Registry[str] = Registry("task")
TASKS.add("classification", "cnnlab.tasks.classification:Classification",
          description="one label per image: softmax over the classes, cross-entropy")
TASKS.add("regression", "cnnlab.tasks.regression:Regression",
          description="one or more numbers per image: mean squared error")
TASKS.add("detection", "cnnlab.tasks.detection.task:Detection",
          description="a box and a class for every object in the image: heatmaps of object centres + box sizes")
TASKS.add("segmentation", "cnnlab.tasks.segmentation.task:Segmentation",
          description="a class for every pixel (U-Net): cross-entropy and/or Dice, scored by mIoU")
TASKS.add("instance-segmentation", "cnnlab.tasks.instances.task:InstanceSegmentation",
          description="a class, a box and a mask for every object (Mask R-CNN), scored by COCO's mask mAP")
TASKS.add("embedding", "cnnlab.tasks.embedding.task:Embedding",
          description="a unit vector per image, near for one identity: verification, identification, search")


def task_names() -> tuple[str, ...]:
    """The registered tasks' names, without importing any of them."""
    return tuple(TASKS.names())


def task_class(name: object) -> "type[Task]":
    """The class of the task called `name` (a ConfigError lists the known ones)."""
    if not isinstance(name, str) or name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; known: {', '.join(task_names())}")
    module_name, _, class_name = TASKS.get(name).builder.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def task_from_json(values: dict[str, Any]) -> "Task":
    """Rebuild the task stored in a checkpoint sidecar."""
    if not isinstance(values, dict):
        raise ConfigError(f"a checkpoint's task must be a mapping with a name (got {type(values).__name__})")
    return task_class(values.get("name")).from_json(values)


def task_for_training(name: str, source: "Source", config: Any) -> "Task":
    """The task `name` fitted to the training Source `source`, with the run's configuration."""
    return task_class(name).for_training(source, config)


def open_data(spec: Any, *, task: str = "classification", split: str = "train", data_dir: Any = None) -> "Source":
    """`--data` opened as the task `task` reads it (see each task's `open_data`)."""
    return task_class(task).open_data(spec, split=split, data_dir=data_dir)


def __getattr__(name: str) -> Any:
    if name == "Task":  # imported on use: cnnlab.tasks.base imports torch
        from cnnlab.tasks.base import Task

        return Task
    raise AttributeError(name)


__all__ = ["TASKS", "Task", "open_data", "task_class", "task_names", "task_for_training", "task_from_json"]
