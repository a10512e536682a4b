"""The task interface: what the network predicts, how it is scored, and how results are shown.

Training, evaluation and prediction only talk to a `Task`, never `if task == ...`. A task says:
  * how many outputs the network's head needs (`num_outputs`);
  * the loss to minimise (`loss`) and the one number to watch while training (`headline`);
  * the full metrics for an evaluation (`evaluate`) and the plots that go with them (`plots`);
  * how raw outputs become human-readable predictions (`predictions`);
  * what must be stored with the model to do all that later (`to_json` / `from_json`).
Detection and segmentation plug in here later, with their own data formats and heads.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor


class Task(ABC):
    name: ClassVar[str]
    headline_name: ClassVar[str]  # e.g. "accuracy": shown in the progress bar and metrics.csv
    headline_higher_is_better: ClassVar[bool]
    loss_name: ClassVar[str]  # a few words for a plot's axis: "cross-entropy"

    @property
    @abstractmethod
    def num_outputs(self) -> int: ...

    @abstractmethod
    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Mean loss over the batch (differentiable)."""

    def loss_share(self, targets: Tensor) -> Tensor:
        """How much these images weigh in the mean that `loss` takes over a batch: their number
        (a task that weighs images differently says so). A batch trained in parts adds the parts'
        losses in these proportions."""
        return torch.tensor(float(len(targets)), device=targets.device)

    @abstractmethod
    def describe_loss(self) -> str:
        """What the "loss" in the training log is, in a line (printed when training starts)."""

    @abstractmethod
    def headline_sum(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Sum over the batch of the headline metric's per-image value, left on the device."""

    def combine_views(self, outputs: list[Tensor]) -> Tensor:
        """One output from the outputs for several views of the same images (test-time augmentation)."""
        return torch.stack(outputs).mean(dim=0)

    def headline(self, total: float, count: int) -> float:
        return total / max(count, 1)

    @abstractmethod
    def evaluate(self, outputs: Tensor, targets: Tensor) -> dict[str, Any]:
        """All metrics for the outputs (N, num_outputs) of a whole dataset; JSON-serialisable."""

    @abstractmethod
    def plots(self, metrics: dict[str, Any], outputs: Tensor, targets: Tensor, folder: Path) -> list[Path]:
        """Write the pictures for an evaluation into `folder`; return their paths."""

    @abstractmethod
    def predictions(self, outputs: Tensor, top_k: int = 1) -> list[dict[str, Any]]:
        """One dict per image: the readable prediction (label and confidence, or values)."""

    @abstractmethod
    def prediction_table(self, outputs: Tensor, targets: Tensor) -> tuple[list[str], list[list[str]]]:
        """(header, rows) comparing each image's prediction with its true target, for predictions.csv."""

    @classmethod
    @abstractmethod
    def for_training(cls, source: Any, *, label_smoothing: float = 0.0, class_weights: str = "none") -> "Task":
        """The task fitted to a training Source (its classes, or its target statistics)."""

    @abstractmethod
    def to_json(self) -> dict[str, Any]: ...

    @classmethod
    @abstractmethod
    def from_json(cls, values: dict[str, Any]) -> "Task": ...

    def summary_line(self, metrics: dict[str, Any]) -> str:
        return f"{self.headline_name} {metrics.get(self.headline_name, float('nan')):.4f}"
