"""What classification and regression share: the network ends in one vector per image.

The model is any registry network with its last layer sized to `num_outputs`; targets are one row
per image (a label or values) and never move when augmentation moves the pixels; every image gets
one CSV line; Grad-CAM explains one output (a class's logit, or one predicted value).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import Tensor

from cnnlab.errors import ConfigError
from cnnlab.tasks.base import ExplainTarget, Task

if TYPE_CHECKING:
    from torch import nn

    from cnnlab.models.build import Architecture


class VectorTask(Task):
    per_image_headline = True
    @property
    @abstractmethod
    def num_outputs(self) -> int: ...

    def build_model(self, architecture: "Architecture", *, in_channels: int,
                    image_size: tuple[int, int]) -> "nn.Module":
        from cnnlab.models.build import YAML_ARCHITECTURE, build_model
        from cnnlab.models.registry import model_entry

        made_for = None if architecture.name == YAML_ARCHITECTURE else model_entry(architecture.name).metadata.get("task")
        if made_for is not None and made_for != self.name:  # a detector's outputs are boxes, not one vector
            raise ConfigError(f"--model {architecture.name} is made for --task {made_for}, not {self.name}; "
                              f"pass --task {made_for}, or a model listed by `cnnlab models` without a task")
        return build_model(architecture, in_channels=in_channels, num_outputs=self.num_outputs,
                           image_size=image_size)

    def describe_outputs(self) -> str:
        return f"{self.num_outputs} output{'' if self.num_outputs == 1 else 's'}"

    def csv_lines(self, prediction: dict[str, Any], columns: list[str]) -> list[list[str]]:
        return [self.csv_cells(prediction, columns)]

    @abstractmethod
    def csv_cells(self, prediction: dict[str, Any], columns: list[str]) -> list[str]:
        """The one CSV line of an image's prediction."""

    def answer(self, outputs: Tensor) -> int:
        """The output Grad-CAM explains by default for one image's outputs (1, num_outputs)."""
        return int(outputs[0].argmax())

    def explain_target(self, outputs: Tensor, choice: str | None = None) -> ExplainTarget:
        index = self.answer(outputs) if choice is None else self.output_index(choice)
        names = self.output_names
        label = names[index] if index < len(names) else f"output {index}"
        return ExplainTarget(label, lambda scores: scores[0, index])

    def output_index(self, choice: str) -> int:
        """--class as a name (exact, then ignoring case) or an output index."""
        names = self.output_names
        kinds = "classes" if self.output_kind == "class" else "targets"
        if choice in names:
            return names.index(choice)
        folded = [name.lower() for name in names]
        if choice.lower() in folded:
            return folded.index(choice.lower())
        if choice.isdigit() and int(choice) < len(names):
            return int(choice)
        raise ConfigError(f"--class {choice}: not one of the model's {kinds}: {', '.join(names)} "
                          f"(or an index from 0 to {len(names) - 1})")

    output_kind = "class"  # what an output is called in messages: "class" or "target"


class SumMeter:
    """Running sums on the device (no waiting for it), summed across processes in `compute`."""

    def __init__(self, names: Sequence[str]):
        self.names = list(names)
        self._sums: Tensor | None = None

    def add(self, *values: Tensor) -> None:
        stacked = torch.stack([value.detach().double() for value in values])
        self._sums = stacked if self._sums is None else self._sums + stacked

    def totals(self) -> dict[str, float]:
        from cnnlab.processes import sum_across_processes

        if self._sums is None:
            sums = torch.zeros(len(self.names), dtype=torch.float64)
        else:
            sums = self._sums
        return dict(zip(self.names, sum_across_processes(sums).tolist()))
