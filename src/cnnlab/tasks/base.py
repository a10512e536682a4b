"""The task interface: everything that depends on *what* a network predicts, in one object.

A task owns its whole path, so that the training loop, DDP, batch threads, checkpoints, `--resume`,
evaluate, predict, explain and report never ask `if task == ...`:

    data       `open_data`: the on-disk formats it reads, its targets checked (a Source whose
               `targets` is an array or a target container, see `cnnlab.data.targets`)
    batches    targets are held as ONE dense tensor per batch, first dimension = images (labels
               (N,), values (N, T), padded boxes (N, M, 6), masks (N, H, W)), so index-select,
               slicing, `.to()` and DDP shares work unchanged; `move_targets` moves targets that
               are positions in the image along with the pixels when augmentation moves them
    model      `build_model`: the head over a backbone from the model registry
    training   `loss` (and `loss_parts`, logged in metrics.csv), `headline_sum` for the progress bar
    scoring    `meter()`: a streaming accumulator (update per batch, compute once, summed across
               DDP processes), never the whole dataset's raw outputs in memory
    outputs    `predictions` (one JSON-able dict per image), `csv_columns`/`csv_lines` (one CSV
               line per object), `table_line` (the terminal), `prediction_table` (evaluate's
               true-vs-predicted CSV)
    pictures   `plots` for an evaluation, `draw` for one image's prediction, `explain_target` for
               Grad-CAM, `report_sections` for the HTML report

`Task` leaves few methods abstract; `VectorTask` fills in the ones shared by tasks whose network
ends in one vector per image (classification, regression). docs/architecture.md walks through
adding a task, with the toy task in tests/tasks/test_toy_task.py as the example.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Protocol, Sequence

import torch
from torch import Tensor

from cnnlab.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

    from cnnlab.config import TrainConfig
    from cnnlab.data.source import Source
    from cnnlab.models.build import Architecture


class Meter(Protocol):
    """A streaming metric: `update` once per batch (outputs and targets on the device, no waiting
    for the device), `compute` once at the end. `compute` combines the processes of a DDP run
    (every process gets the same numbers) and returns a JSON-serialisable dict holding at least
    "images" and the task's headline metric."""

    def update(self, outputs: Tensor, targets: Tensor) -> None: ...

    def compute(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ExplainTarget:
    """What Grad-CAM explains: a label for the picture and the differentiable score, a function of the
    model's outputs for one image (1, ...) → a scalar. `box` outlines the region explained, if any
    (x1, y1, x2, y2 in model-input pixels)."""

    label: str
    score: Callable[[Tensor], Tensor]
    box: tuple[float, float, float, float] | None = None


@dataclass
class ReportContext:
    """What a task's report sections may use: the run, its evaluation, and ways to fetch images."""

    trained: Any  # cnnlab.trained.TrainedModel
    evaluation: Any  # cnnlab.report.data.Evaluation
    images_by_name: Callable[[Sequence[str]], dict[str, Any]]  # name -> uint8 (C, H, W) at the model's input
    explain: Callable[..., Any]  # explain_pixels(pixels, folder, name=..., ...) for Grad-CAM cards
    work: Path  # a temporary folder for pictures
    count: int = 8  # how many worst cases to show
    layer: str | None = None  # --layer for Grad-CAM
    notes: list[str] = field(default_factory=list)


class Task(ABC):
    name: ClassVar[str]
    description: ClassVar[str]  # one line for `cnnlab tasks` and the --task help
    headline_name: ClassVar[str]  # e.g. "accuracy": the progress bar, metrics.csv, the curves
    headline_higher_is_better: ClassVar[bool]
    loss_name: ClassVar[str]  # a few words for a plot's axis: "cross-entropy"
    # Targets that are positions in the image (boxes, masks) move with the pixels under augmentation.
    moves_with_image: ClassVar[bool] = False
    # Whether the headline is a mean over images (accuracy, MAE: shown while an epoch trains) rather
    # than a score of the whole set (mAP: known after validation).
    per_image_headline: ClassVar[bool] = False
    class_names: list[str] | None = None  # the classes it tells apart, where it has classes
    # What the data's class counts count (Source.class_counts): "images", "objects", "pixels".
    counted: ClassVar[str] = "images"
    # Training settings this task starts from where the user sets none (e.g. a detector's model).
    defaults: ClassVar[dict[str, Any]] = {}
    # The training settings only some tasks read (cnnlab.config.TASK_SETTINGS) that this one does;
    # the others are refused for it by name.
    settings: ClassVar[frozenset[str]] = frozenset()
    data_formats: ClassVar[str] = ""  # the layouts `open_data` reads, for `cnnlab tasks`

    # --- data -------------------------------------------------------------------------------

    @classmethod
    @abstractmethod
    def open_data(cls, spec: str | Path, *, split: str = "train", data_dir: str | Path | None = None) -> "Source":
        """The images and targets `--data` names, at `split`, in the formats this task reads."""

    @classmethod
    def data_splits(cls, spec: str | Path) -> tuple[str, ...]:
        """The splits `--data` has in the layouts this task reads (a named dataset's, IDX files', split
        folders'); () for data that is not divided (a folder of class folders, a CSV, one IDX file)."""
        from cnnlab.data.idx import find_idx_splits
        from cnnlab.data.sources import find_split_folders, named_splits

        splits = named_splits(spec)
        path = Path(spec).expanduser()
        if splits or not path.is_dir():
            return splits
        return tuple(find_idx_splits(path)) or tuple(find_split_folders(path))

    @classmethod
    @abstractmethod
    def for_training(cls, source: "Source", config: "TrainConfig | None" = None) -> "Task":
        """The task fitted to a training Source (its classes, its target statistics), with the run's
        configuration (a task reads its own fields: label smoothing, class weights, thresholds)."""

    def move_targets(self, targets: Tensor, theta: Tensor, size: tuple[int, int]) -> Tensor:
        """Targets of a batch after the pixels were resampled through `theta` (N, 2, 3): output
        normalised coordinates → input ones, as `F.affine_grid(align_corners=False)` uses them.
        Only called when `moves_with_image`."""
        return targets

    def check_augmentation(self, preset: str) -> None:
        """Refuse an augmentation preset this task cannot follow (a ConfigError naming it)."""

    # --- model ------------------------------------------------------------------------------

    @abstractmethod
    def build_model(self, architecture: "Architecture", *, in_channels: int,
                    image_size: tuple[int, int]) -> "nn.Module":
        """The network for this task: its head over the architecture's backbone, randomly initialised."""

    @abstractmethod
    def describe_outputs(self) -> str:
        """What the network outputs, for the log: "10 classes", "1 value"."""

    @property
    def output_names(self) -> list[str]:
        """A name per thing the task tells apart (classes, targets): `--class` and Grad-CAM use them."""
        return []

    # --- training ---------------------------------------------------------------------------

    @abstractmethod
    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Mean loss over the batch (differentiable)."""

    def loss_parts(self, outputs: Tensor, targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """(the loss, its named parts detached) — a detector's box and class losses — for metrics.csv."""
        return self.loss(outputs, targets), {}

    def forward_loss(self, model: "nn.Module", inputs: Tensor, targets: Tensor,
                     autocast: Callable[[], Any]) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """One batch through the model: (outputs, the loss, its named parts), as the training loop and
        validation need them. `autocast` is the run's precision context for the forward pass.

        The default runs `model(inputs)` and scores its outputs with `loss_parts`; a task whose model
        computes its own loss from the targets (torchvision's detectors) runs it its way instead."""
        with autocast():
            outputs = model(inputs)
        loss, parts = self.loss_parts(outputs.float(), targets)
        return outputs, loss, parts

    def loss_share(self, targets: Tensor) -> Tensor:
        """How much these images weigh in the mean that `loss` takes over a batch: their number
        (a task that weighs images differently says so). A batch trained in parts, or scored in
        batches, adds the parts' losses in these proportions."""
        return torch.tensor(float(len(targets)), device=targets.device)

    @abstractmethod
    def describe_loss(self) -> str:
        """What the "loss" in the training log is, in a line (printed when training starts)."""

    def headline_sum(self, outputs: Tensor, targets: Tensor) -> Tensor | None:
        """Sum over the batch of the headline metric's per-image value, left on the device, for the
        progress bar and metrics.csv's train column; None where the headline is not a per-image
        mean (mAP, mIoU): then training shows the loss alone and validation scores the headline."""
        return None

    def headline(self, total: float, count: int) -> float:
        return total / max(count, 1)

    @abstractmethod
    def meter(self, *, full: bool = True) -> Meter:
        """A fresh streaming accumulator. `full=False` is what validation after each epoch needs (the
        headline); `full=True` is a whole evaluation (every metric, and what the plots need)."""

    # --- using the model --------------------------------------------------------------------

    def combine_views(self, outputs: list[Tensor]) -> Tensor:
        """One output from the outputs for an image and its mirror image (test-time augmentation);
        a task whose outputs are positions maps the mirror image's back first."""
        return torch.stack(outputs).mean(dim=0)

    @abstractmethod
    def predictions(self, outputs: Tensor, *, top_k: int = 1,
                    origins: Sequence[tuple[int, int]] | None = None) -> list[dict[str, Any]]:
        """One JSON-able dict per image: its prediction. `origins` are the images' own (width,
        height) before they were fitted to the model, for tasks that answer in pixels."""

    @abstractmethod
    def table_line(self, prediction: dict[str, Any], top_k: int = 1) -> str:
        """One image's prediction for the terminal (after its file name)."""

    def caption(self, prediction: dict[str, Any]) -> str:
        """One image's prediction in a few words, for a picture's title: "Sneaker 97.1%"."""
        return self.table_line(prediction)

    @abstractmethod
    def csv_columns(self, predictions: Sequence[dict[str, Any]]) -> list[str]:
        """The CSV header after "file" for these predictions (`cnnlab predict --output x.csv`)."""

    @abstractmethod
    def csv_lines(self, prediction: dict[str, Any], columns: list[str]) -> list[list[str]]:
        """The CSV lines of one image (without the file): one per image, or one per object."""

    @abstractmethod
    def prediction_table(self, outputs: Tensor, targets: Tensor,
                         origins: Sequence[tuple[int, int]] | None = None) -> tuple[list[str], list[list[list[str]]]]:
        """(header, per image its CSV lines) comparing predictions with the true targets, for
        evaluate's predictions.csv (`origins`: the images' own sizes, as for `predictions`)."""

    def configure(self, **options: Any) -> None:
        """Options for using the model (`--threshold` of a classifier, `--conf`/`--iou` of a detector):
        a task takes those it has; one given that it has not is refused, naming the task."""
        given = sorted(name for name, value in options.items() if value is not None)
        if given:
            flags = ", ".join(f"--{name.replace('_', '-')}" for name in given)
            raise ConfigError(f"{flags}: not an option of a {self.name} model")

    def check_top_k(self, top_k: int) -> None:
        """Refuse a --top-k this task has no use for (a ConfigError)."""

    def draw(self, pixels: Any, prediction: dict[str, Any], truth: Any = None) -> Any:
        """One image with its prediction drawn on it (a PIL image), or None for tasks whose answer is
        not a picture (a label is shown as a caption instead)."""
        return None

    # --- video --------------------------------------------------------------------------------

    # Whether `tracked_boxes` gives the boxes of the objects a prediction found (`cnnlab track`).
    finds_boxes: ClassVar[bool] = False

    def smooth(self, outputs: list[Tensor]) -> Tensor:
        """One output (1, ...) from the outputs of a video's last frames (each (1, ...), oldest first),
        for `--smooth K`: so an answer does not flicker from frame to frame. By default their mean."""
        return torch.stack(outputs).mean(dim=0)

    def check_smoothing(self, frames: int) -> None:
        """Refuse `--smooth` where averaging outputs over frames would be wrong (a ConfigError)."""

    def tracked_boxes(self, prediction: dict[str, Any]) -> tuple[Any, Any, list[str]]:
        """(boxes (k, 4) x1, y1, x2, y2 in the frame's pixels, scores (k,), label names) of the objects one
        prediction found, for tracking them across frames; only tasks with `finds_boxes`."""
        raise ConfigError(f"cnnlab track follows boxes from frame to frame; a {self.name} model finds no boxes "
                          "(use cnnlab predict on the video, with --smooth K to steady its answers)")

    def prediction_files(self, prediction: dict[str, Any]) -> dict[str, Any]:
        """Pictures `predict --draw` writes beside the drawing, by the suffix added to its name (a
        segmentation's mask as class indices: {".mask": PIL image}); {} for most tasks."""
        return {}

    def check_export(self, format: str) -> None:
        """Refuse `cnnlab export --format FORMAT` where this task's model cannot be exported yet (a
        ConfigError saying so); by default every task's can."""

    def output_agreement(self, reference: Tensor, exported: Tensor) -> dict[str, float]:
        """For the check at export time: the shares of images (0-1) on which an exported model's
        outputs give the same answer as the PyTorch model's, by the task's own measures (a
        classifier: top-1), each of which must be 1. The check always compares the raw outputs by
        max |Δ| as well; a task with nothing more to compare returns {} (the default)."""
        return {}

    # --- explaining -------------------------------------------------------------------------

    @abstractmethod
    def explain_target(self, outputs: Tensor, choice: str | None = None) -> ExplainTarget:
        """What Grad-CAM explains for one image's outputs (1, ...): the predicted answer, or `choice`
        (`--class`: a class name or index; a task may take other choices, e.g. a box number)."""

    # --- evaluation and report --------------------------------------------------------------

    @abstractmethod
    def plots(self, metrics: dict[str, Any], meter: Meter, folder: Path) -> list[Path]:
        """Write the pictures for an evaluation into `folder`; return their paths."""

    @abstractmethod
    def summary_line(self, metrics: dict[str, Any]) -> str:
        """An evaluation in one line: "accuracy 91.20%, macro F1 0.9108 on 10,000 images"."""

    def metric_lines(self, metrics: dict[str, Any]) -> list[str]:
        """Extra lines the terminal shows after the summary (a per-class table)."""
        return []

    @abstractmethod
    def report_sections(self, context: ReportContext) -> list[Any]:
        """The report's task sections (cnnlab.report.html.Section): the evaluation, the worst cases."""

    def target_caption(self, source: "Source", index: int) -> str:
        """A caption for image `index` of a Source in the report's sample grid (its targets in words)."""
        return ""

    def sample_picture(self, pixels: Any, source: "Source", index: int) -> Any:
        """Image `index` of a Source (uint8 C×H×W at the model's input) as the report's sample grid shows
        it: with its targets drawn on it where they are positions (boxes)."""
        return pixels

    def training_targets_table(self) -> tuple[list[str], list[list[str]]] | None:
        """(headers, rows) describing the training targets for the report's data section, where a task
        has something to say beyond the class counts (regression: each target's mean and spread)."""
        return None

    def example_rows(self, rows: list[dict[str, str]]) -> list[dict[str, str]]:
        """predictions.csv's rows in the order the report prefers them as its worked example (right
        answers first)."""
        return rows

    def example_target(self, row: dict[str, str]) -> str | None:
        """What Grad-CAM explains for the report's example row (a class name), or None: the answer."""
        return None

    # --- saved with the model ---------------------------------------------------------------

    @abstractmethod
    def to_json(self) -> dict[str, Any]:
        """Everything needed to use the model later (class names, scalings, id maps); "name" included."""

    @classmethod
    @abstractmethod
    def from_json(cls, values: dict[str, Any]) -> "Task": ...
