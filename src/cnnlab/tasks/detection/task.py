"""Object detection: a box and a class for every object in the image.

Data comes as COCO JSON, YOLO folders or Pascal VOC (`formats`), or as the generated
`fashion-mnist-boxes`; boxes are fitted with their images to the model's input and moved with the
pixels by augmentation (`boxes`). The network is one dense tensor (`centernet`: class heatmaps and
box distances at one stride) over any registry backbone, or the from-scratch `cnnlab-det`
(`models/detectors.py`); its loss has a class part and a box part, both logged. Scoring is COCO's
mAP, computed as pycocotools does (`metrics`). Predictions are one row per box in the file's own
pixels, with the dataset's original category ids.

Models that decode themselves (torchvision's Faster R-CNN, RetinaNet, FCOS, SSDlite:
`models/torchvision_detectors.py`) output boxes rather than maps and compute their own loss from the
targets; `outputs = "boxes"` (set by `build_model`, saved with the model) sends the task's
decoding, loss and test-time flip through `decoded` instead of `centernet`.

Two thresholds decide what counts as a detection when the model is used: `conf` (a box's score,
default 0.25) and `iou` (how much two boxes of one class may overlap before the weaker is dropped,
default 0.6); `--conf` and `--iou` change them for evaluate, predict and explain. mAP is computed
over every box down to a score of 0.001, as COCO evaluation does, whatever `conf` is.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from torch import Tensor

from cnnlab.errors import CnnlabError, ConfigError, DataError
from cnnlab.tasks.base import ExplainTarget, ReportContext, Task
from cnnlab.tasks.detection import boxes as box_ops
from cnnlab.tasks.detection import centernet, decoded

if TYPE_CHECKING:
    from torch import nn

    from cnnlab.config import TrainConfig
    from cnnlab.data.source import Source
    from cnnlab.models.build import Architecture

EVALUATION_CONF = 0.001  # COCO evaluation keeps every box down to this score (the PR curve's tail)
MATCH_IOU = 0.5  # what "found" means in predictions.csv and the report's best and worst images
HEATMAPS, BOXES = "heatmaps", "boxes"  # what the model outputs: the dense head's maps, or decoded boxes


class Detection(Task):
    name = "detection"
    description = "a box and a class for every object in the image: heatmaps of object centres + box sizes"
    data_formats = ("COCO JSON (annotations/instances_*.json + images), YOLO (data.yaml, or images/ + labels/), "
                    "Pascal VOC (JPEGImages/ + Annotations/ + ImageSets/Main/)")
    headline_name = "map"
    headline_higher_is_better = True
    loss_name = "focal (centres) + GIoU (boxes)"
    moves_with_image = True
    counted = "objects"
    # What `cnnlab train --task detection` starts from (flags still win), measured on fashion-mnist-boxes
    # on 2 CPU cores (docs/speed.md): batches of 64 let each core train half a batch on its own thread
    # (batch_threads.py), 3× the images a second of batches of 32 on a busy machine; mirrored items
    # are still items (flips move the boxes with the pixels); Adam at 0.006 rather than 0.003: test mAP
    # 0.505 against 0.486; 12 epochs of 2,000 canvases: ~6 minutes on a busy 2-core machine.
    defaults = {"model": "cnnlab-det", "batch_size": 64, "epochs": 12, "lr": 0.006, "augment": "flip"}

    def __init__(self, class_names: list[str], *, category_ids: Sequence[int] | None = None, stride: int = 4,
                 conf: float = 0.25, iou: float = 0.6, max_detections: int = 100, fit: str = "squash",
                 outputs: str = HEATMAPS, image_size: Sequence[int] | None = None):
        self.class_names = list(class_names)
        self.fit = fit  # how images are fitted to the model's input: boxes are mapped back to the files with it
        self.category_ids = list(category_ids) if category_ids else list(range(len(class_names)))
        self.stride = stride  # set by build_model from the network
        self.conf, self.iou, self.max_detections = conf, iou, max_detections
        self.outputs = outputs  # set by build_model from the network
        self.image_size = tuple(image_size) if image_size else None  # (H, W) of the model's input

    # --- data -------------------------------------------------------------------------------

    @classmethod
    def open_data(cls, spec: str | Path, *, split: str = "train", data_dir: str | Path | None = None) -> "Source":
        from cnnlab.data.generated import is_generated, materialise, refuse_for_task
        from cnnlab.data.source import Source
        from cnnlab.data.sources import not_found
        from cnnlab.tasks.detection.formats import read_detection_dataset
        from cnnlab.tasks.detection.targets import BoxTargets

        text = str(spec)
        path = Path(text).expanduser()
        if not path.exists() and is_generated(text):
            refuse_for_task(text, cls.name)
            path = materialise(text, data_dir)
        elif not path.exists():
            raise not_found(text)
        dataset = read_detection_dataset(path, split=split)
        if not dataset.image_paths:
            raise DataError(f"--data {text} ({split} split): no images with readable annotations")
        _say_what_was_fixed(dataset)
        targets = BoxTargets(dataset.annotations, category_ids=dataset.category_ids, report=dataset.report)
        return Source(dataset.description, [str(p) for p in dataset.image_paths], targets,
                      class_names=list(dataset.class_names), paths=list(dataset.image_paths))

    @classmethod
    def data_splits(cls, spec: str | Path) -> tuple[str, ...]:
        from cnnlab.data.sources import named_splits
        from cnnlab.tasks.detection.formats import available_splits

        path = Path(spec).expanduser()
        if not path.exists():
            return named_splits(spec)
        try:
            return tuple(available_splits(path))
        except (DataError, OSError):
            return ()

    @classmethod
    def for_training(cls, source: "Source", config: "TrainConfig | None" = None) -> "Detection":
        if source.class_names is None or not hasattr(source.targets, "category_ids"):
            raise ConfigError(f"{source.description} has no boxes; detection needs COCO, YOLO or VOC annotations "
                              "(or --data fashion-mnist-boxes)")
        return cls(source.class_names, category_ids=source.targets.category_ids,
                   fit=config.fit if config is not None else "squash")

    def move_targets(self, targets: Tensor, theta: Tensor, size: tuple[int, int]) -> Tensor:
        return box_ops.move_boxes(targets, theta, size)

    # --- model ------------------------------------------------------------------------------

    def build_model(self, architecture: "Architecture", *, in_channels: int,
                    image_size: tuple[int, int]) -> "nn.Module":
        from cnnlab.models.detectors import detector_on_backbone
        from cnnlab.models.registry import MODELS

        classes = len(self.class_names)
        entry = MODELS.get(architecture.name) if architecture.name in MODELS else None
        if entry is not None and entry.metadata.get("task") == "detection":
            model = entry.builder(in_channels=in_channels, num_outputs=classes, image_size=image_size)
        else:
            model = detector_on_backbone(architecture, in_channels=in_channels, num_classes=classes,
                                         image_size=image_size)
        self.outputs = BOXES if getattr(model, "decodes_itself", False) else HEATMAPS
        self.stride = int(getattr(model, "stride", self.stride))
        self.image_size = tuple(image_size)
        return model

    def describe_outputs(self) -> str:
        if self.outputs == BOXES:
            return (f"{len(self.class_names)} classes: boxes decoded by the model itself, up to "
                    f"{self.max_detections} per image")
        return f"{len(self.class_names)} class heatmaps + 4 box channels at stride {self.stride}"

    @property
    def output_names(self) -> list[str]:
        return self.class_names

    # --- training ---------------------------------------------------------------------------

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return self.loss_parts(outputs, targets)[0]

    def loss_parts(self, outputs: Tensor, targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if self.outputs == BOXES:
            raise CnnlabError("a detector that decodes its own boxes computes its loss from the targets: "
                              "use Detection.forward_loss(model, inputs, targets, autocast)")
        return centernet.detection_loss(outputs, targets, len(self.class_names), self.stride)

    def forward_loss(self, model: "nn.Module", inputs: Tensor, targets: Tensor, autocast: Any
                     ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        if self.outputs == BOXES:
            return decoded.forward_loss(model, inputs, targets, autocast)
        return super().forward_loss(model, inputs, targets, autocast)

    def describe_loss(self) -> str:
        if self.outputs == BOXES:
            return ("loss: the torchvision detector's own loss, the sum of its parts (metrics.csv logs each); "
                    "validation scores COCO's mAP@[.5:.95] (map)")
        return ("loss: focal loss of the object-centre heatmaps (class) + 5 × GIoU of the boxes (box), "
                "per object; metrics.csv logs both parts. Validation scores COCO's mAP@[.5:.95] (map)")

    def meter(self, *, full: bool = True) -> "DetectionScores":
        return DetectionScores(self)

    def decode(self, outputs: Tensor, conf: float | None = None) -> list[tuple[Tensor, Tensor, Tensor]]:
        """Per image (boxes (k, 4) in model-input pixels, scores, labels) above `conf` (default: the task's)."""
        if self.outputs == BOXES:
            return decoded.decode(outputs, conf=self.conf if conf is None else conf, iou=self.iou,
                                  max_detections=self.max_detections)
        return centernet.decode(outputs, len(self.class_names), self.stride, conf=self.conf if conf is None else conf,
                                iou=self.iou, max_detections=self.max_detections)

    # --- using the model --------------------------------------------------------------------

    def configure(self, *, conf: float | None = None, iou: float | None = None, **others: Any) -> None:
        """`--conf` and `--iou` for evaluate, predict and explain."""
        super().configure(**others)
        for flag, value in (("conf", conf), ("iou", iou)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise ConfigError(f"--{flag} must be between 0 and 1 (got {value})")
        self.conf = self.conf if conf is None else conf
        self.iou = self.iou if iou is None else iou

    def check_top_k(self, top_k: int) -> None:
        if top_k != 1:
            raise ConfigError(f"--top-k {top_k}: a detector lists every object it finds above --conf "
                              f"({self.conf:g}); lower --conf to see more")

    def combine_views(self, outputs: list[Tensor]) -> Tensor:
        if self.outputs == BOXES:  # both views' boxes; decoding's NMS keeps the better of each pair
            return torch.cat([outputs[0], decoded.unflip(outputs[1], self._input_size(outputs[0])[1])], 1)
        # The mirror image's heatmaps are mirrored back and its left and right distances swapped first.
        return (outputs[0] + centernet.unflip(outputs[1])) / 2

    # --- video --------------------------------------------------------------------------------

    finds_boxes = True

    def check_smoothing(self, frames: int) -> None:
        raise ConfigError(f"--smooth {frames}: a detector's boxes move from frame to frame, and averaging its "
                          "heatmaps over frames would smear them; cnnlab track follows each object instead")

    def tracked_boxes(self, prediction: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, list[str]]:
        objects = prediction["objects"]
        boxes = np.array([o["box"] for o in objects], np.float64).reshape(-1, 4)
        return boxes, np.array([o["score"] for o in objects], np.float64), [o["label"] for o in objects]

    def predictions(self, outputs: Tensor, *, top_k: int = 1,
                    origins: Sequence[tuple[int, int]] | None = None) -> list[dict[str, Any]]:
        """Per image {"objects": [{"label", "category_id", "score", "box": [x1, y1, x2, y2]}, ...]}, best
        first, boxes in the file's own pixels when `origins` are given (else in the model's input)."""
        rows = []
        size = self._input_size(outputs)
        for index, (found_boxes, scores, labels) in enumerate(self.decode(outputs)):
            found = found_boxes.cpu().numpy().astype(np.float64)
            if origins is not None:
                found = _to_origin(found, tuple(origins[index]), size, self.fit)
            rows.append({"objects": [
                {"label": self.class_names[label], "category_id": self.category_ids[label], "score": float(score),
                 "box": [round(float(v), 2) for v in box]}
                for box, score, label in zip(found, scores.tolist(), labels.tolist())]})
        return rows

    def _input_size(self, outputs: Tensor) -> tuple[int, int]:
        """(H, W) of the model's input: from the heatmaps' size, or as recorded for decoded boxes."""
        if self.outputs == BOXES:
            assert self.image_size is not None, "build_model records the input size"
            return self.image_size
        return outputs.shape[-2] * self.stride, outputs.shape[-1] * self.stride

    def table_line(self, prediction: dict[str, Any], top_k: int = 1) -> str:
        objects = prediction["objects"]
        if not objects:
            return f"no object above --conf {self.conf:g}"
        shown = ", ".join(f"{o['label']} {o['score']:.0%}" for o in objects[:6])
        return f"{len(objects)} object{'s' if len(objects) != 1 else ''}: {shown}" + (", …" if len(objects) > 6 else "")

    def caption(self, prediction: dict[str, Any]) -> str:
        return self.table_line(prediction)

    def csv_columns(self, predictions: Sequence[dict[str, Any]]) -> list[str]:
        return ["label", "category_id", "score", "x1", "y1", "x2", "y2"]

    def csv_lines(self, prediction: dict[str, Any], columns: list[str]) -> list[list[str]]:
        lines = [[o["label"], str(o["category_id"]), f"{o['score']:.6f}", *(f"{v:.2f}" for v in o["box"])]
                 for o in prediction["objects"]]
        return lines or [[""] * len(columns)]  # the file is listed, with no object

    def prediction_table(self, outputs: Tensor, targets: Tensor,
                         origins: Sequence[tuple[int, int]] | None = None) -> tuple[list[str], list[list[list[str]]]]:
        """Per image, a line per predicted box (above --conf) and a line per true box: "found" says
        whether a true box of the same class was matched at IoU ≥ 0.5 (for a prediction: it is right;
        for a true box: it was found)."""
        header = ["kind", "label", "score", "x1", "y1", "x2", "y2", "found"]
        size = self._input_size(outputs)
        table = []
        for index, ((found, scores, labels), (truth, truth_labels, flags)) in enumerate(
                zip(self.decode(outputs), box_ops.unpad(targets))):
            right, seen = _match(found.cpu(), labels.cpu(), truth.cpu(), truth_labels.cpu(), flags.cpu())
            found_boxes, truth_boxes = found.cpu().numpy(), truth.cpu().numpy()
            if origins is not None:
                found_boxes = _to_origin(found_boxes, tuple(origins[index]), size, self.fit)
                truth_boxes = _to_origin(truth_boxes, tuple(origins[index]), size, self.fit)
            lines = [["predicted", self.class_names[label], f"{score:.4f}", *_corners(box), str(int(ok))]
                     for box, score, label, ok in zip(found_boxes, scores.tolist(), labels.tolist(), right)]
            lines += [["true", self.class_names[label], "", *_corners(box), str(int(ok))]
                      for box, label, ok in zip(truth_boxes, truth_labels.tolist(), seen)]
            table.append(lines or [["", "", "", "", "", "", "", ""]])
        return header, table

    def draw(self, pixels: Any, prediction: dict[str, Any], truth: Any = None) -> Any:
        """The image with its predicted boxes (and the true ones, thin, when given), upscaled to be read."""
        from cnnlab.tasks.detection.draw import draw_boxes

        objects = prediction["objects"]
        found = np.array([o["box"] for o in objects], np.float32).reshape(-1, 4)
        labels = [self.class_names.index(o["label"]) for o in objects]
        return draw_boxes(pixels, found, labels, self.class_names, scores=[o["score"] for o in objects],
                          true_boxes=truth)

    def sample_picture(self, pixels: Any, source: "Source", index: int) -> Any:
        """A training image with its true boxes drawn (at the model's input size)."""
        from cnnlab.tasks.detection.draw import draw_boxes

        fitted = source.targets[np.array([index])].dense([_own_size(source, index, pixels)], _geometry(pixels, self.fit))[0]
        kept = fitted[fitted[:, 0] >= 0]
        return _as_array(draw_boxes(pixels, kept[:, 1:5].numpy(), kept[:, 0].long().tolist(), self.class_names))

    def target_caption(self, source: "Source", index: int) -> str:
        count = len(source.targets.annotations[index])
        return f"{count} object{'s' if count != 1 else ''}"

    # --- explaining -------------------------------------------------------------------------

    def explain_target(self, outputs: Tensor, choice: str | None = None) -> ExplainTarget:
        """The box to explain: the best one (default), `--class NAME` (that class's best box), or
        `--class N` (the N-th box, 1 for the best). Without any box, the strongest heatmap cell."""
        if self.outputs == BOXES:
            return self._explain_decoded(outputs, choice)
        found, scores, labels = self.decode(outputs[:1])[0]
        if not len(found):
            classes = len(self.class_names)
            return ExplainTarget("the strongest object-centre score (no box above --conf)",
                                 lambda scores_: scores_[0, :classes].amax())
        index = self._chosen_box(choice, labels.tolist())
        box, label = found[index].detach(), int(labels[index])
        stride = self.stride
        return ExplainTarget(f"{self.class_names[label]} {float(scores[index]):.0%} (box {index + 1})",
                             lambda scores_: centernet.box_score(scores_, box.to(scores_.device), label, stride),
                             box=tuple(float(v) for v in box.tolist()))

    def _explain_decoded(self, outputs: Tensor, choice: str | None) -> ExplainTarget:
        """A box of a model that decodes itself: its score, found again in the outputs Grad-CAM's own
        pass gives (the same class, the best overlap), so the gradient flows through that box's
        class score back to the backbone."""
        found, scores, labels = self.decode(outputs[:1])[0]
        below = ""
        if not len(found):  # the best box below --conf, as the heatmaps' strongest cell is explained
            found, scores, labels = self.decode(outputs[:1], conf=0.0)[0]
            below = f", below --conf {self.conf:g}"
        if not len(found):
            raise ConfigError("the detector found no box at all in this image, so Grad-CAM has no score to explain")
        index = self._chosen_box(choice, labels.tolist())
        box, label = found[index].detach(), int(labels[index])

        def score(rows: Tensor) -> Tensor:
            from torchvision.ops import box_iou

            mine = rows[0, :, 5] == label
            if not bool(mine.any()):
                raise ConfigError(f"Grad-CAM: the {self.class_names[label]} box was not found again in the "
                                  f"model's outputs; use --model cnnlab-det, whose maps Grad-CAM explains directly")
            overlaps = box_iou(box.view(1, 4).to(rows.device), rows[0, :, :4].detach().float())[0]
            return rows[0, int(overlaps.masked_fill(~mine, -1.0).argmax()), 4]

        return ExplainTarget(f"{self.class_names[label]} {float(scores[index]):.0%} (box {index + 1}{below})", score,
                             box=tuple(float(v) for v in box.tolist()))

    def _chosen_box(self, choice: str | None, labels: list[int]) -> int:
        if choice is None:
            return 0
        if choice.isdigit() and 1 <= int(choice) <= len(labels):
            return int(choice) - 1
        folded = [name.lower() for name in self.class_names]
        if choice.lower() in folded and folded.index(choice.lower()) in labels:
            return labels.index(folded.index(choice.lower()))
        raise ConfigError(f"--class {choice}: the detector found {len(labels)} box(es) in this image "
                          f"({', '.join(self.class_names[label] for label in labels)}); pass a box number from 1 "
                          f"to {len(labels)} or one of those classes")

    # --- evaluation and report --------------------------------------------------------------

    def plots(self, metrics: dict[str, Any], meter: "DetectionScores", folder: Path) -> list[Path]:
        from cnnlab.tasks.detection.plots import plot_detection_confusion_matrix, plot_precision_recall

        matrix = metrics["confusion_matrix"]
        return [plot_precision_recall(metrics, folder / "precision_recall.png"),
                plot_detection_confusion_matrix(matrix["counts"], matrix["labels"],
                                                folder / "detection_confusion_matrix.png")]

    def summary_line(self, metrics: dict[str, Any]) -> str:
        images = metrics.get("images", 0)
        return (f"mAP@[.5:.95] {_score(metrics.get('map'))}, mAP@.5 {_score(metrics.get('map50'))} on "
                f"{images:,} image{'s' if images != 1 else ''} ({metrics.get('objects', 0):,} objects)")

    def metric_lines(self, metrics: dict[str, Any]) -> list[str]:
        per_class = metrics.get("per_class") or {}
        if not per_class or len(per_class) > 30:
            return []
        rows = [["class", "AP", "AP50", "objects", "detections"]]
        rows += [[name, _score(values.get("ap")), _score(values.get("ap50")), f"{values.get('gt', 0):,}",
                  f"{values.get('detections', 0):,}"] for name, values in per_class.items()]
        widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
        return ["  ".join(cell.ljust(width) if column == 0 else cell.rjust(width)
                          for column, (cell, width) in enumerate(zip(row, widths))).rstrip() for row in rows]

    def report_sections(self, context: ReportContext) -> list[Any]:
        from cnnlab.tasks.detection.report import detection_sections

        return detection_sections(self, context)

    def example_rows(self, rows: list[dict[str, str]]) -> list[dict[str, str]]:
        return [row for row in rows if row.get("kind") == "predicted" and row.get("found") == "1"]

    # --- saved with the model ---------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "class_names": self.class_names, "category_ids": self.category_ids,
                "stride": self.stride, "conf": self.conf, "iou": self.iou, "max_detections": self.max_detections,
                "fit": self.fit, "outputs": self.outputs,
                "image_size": list(self.image_size) if self.image_size else None}

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> "Detection":
        return cls(values["class_names"], category_ids=values.get("category_ids"), stride=int(values.get("stride", 4)),
                   conf=float(values.get("conf", 0.25)), iou=float(values.get("iou", 0.6)),
                   max_detections=int(values.get("max_detections", 100)), fit=str(values.get("fit", "squash")),
                   outputs=str(values.get("outputs", HEATMAPS)), image_size=values.get("image_size"))


class DetectionScores:
    """The task's meter: decodes each batch (every box down to a score of 0.001, as COCO evaluation
    keeps) and hands boxes, not outputs, to `DetectionMeter`; `compute` merges every process's."""

    def __init__(self, task: Detection):
        from cnnlab.tasks.detection.metrics import DetectionMeter

        self.task = task
        self.meter = DetectionMeter(task.class_names)

    def update(self, outputs: Tensor, targets: Tensor) -> None:
        predictions = [{"boxes": b.cpu().numpy(), "scores": s.cpu().numpy(), "labels": l.cpu().numpy()}
                       for b, s, l in self.task.decode(outputs, conf=EVALUATION_CONF)]
        truth = [{"boxes": b.cpu().numpy(), "labels": l.cpu().numpy(), "flags": f.cpu().numpy()}
                 for b, l, f in box_ops.unpad(targets)]
        self.meter.update(predictions, truth)

    def compute(self) -> dict[str, Any]:
        from cnnlab.processes import gather_across_processes
        from cnnlab.tasks.detection.metrics import DetectionMeter

        states = gather_across_processes(self.meter.state())
        if len(states) > 1:
            merged = DetectionMeter.from_state(states[0])
            for state in states[1:]:
                merged.merge(state)
            self.meter = merged
        return self.meter.compute()


def _say_what_was_fixed(dataset: Any) -> None:
    """Warn when reading skipped, dropped or changed something (data.json records the report either way)."""
    import logging

    if dataset.report.changes():
        logging.getLogger(__name__).warning("%s: %s", dataset.description, dataset.report.summary())


def _to_origin(found: np.ndarray, origin: tuple[int, int], size: tuple[int, int], fit: str) -> np.ndarray:
    """Boxes in the model's input → the same boxes in the file's own pixels (the inverse of fitting)."""
    scale_x, scale_y, offset_x, offset_y = box_ops.fit_geometry(origin, size, fit)
    found = np.asarray(found, np.float64).reshape(-1, 4)
    back = (found - [offset_x, offset_y, offset_x, offset_y]) / [scale_x, scale_y, scale_x, scale_y]
    width, height = origin
    back[:, 0::2] = back[:, 0::2].clip(0, width)
    back[:, 1::2] = back[:, 1::2].clip(0, height)
    return back


def _match(found: Tensor, labels: Tensor, truth: Tensor, truth_labels: Tensor, flags: Tensor
           ) -> tuple[list[bool], list[bool]]:
    """Greedy, best score first: each predicted box takes the unmatched true box of its class with the
    highest IoU ≥ 0.5. (right per prediction, found per true box)."""
    from torchvision.ops import box_iou

    right, seen = [False] * len(found), [False] * len(truth)
    if not len(found) or not len(truth):
        return right, seen
    overlaps = box_iou(found.float(), truth.float())
    overlaps[labels[:, None] != truth_labels[None, :]] = 0.0
    for index in range(len(found)):  # decode gives them best first
        candidates = overlaps[index].clone()
        candidates[torch.tensor(seen, dtype=torch.bool)] = 0.0
        best = int(candidates.argmax())
        if candidates[best] >= MATCH_IOU:
            right[index], seen[best] = True, True
    return right, seen


def _corners(box: Any) -> list[str]:
    return [f"{float(v):.2f}" for v in box]


def _score(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _own_size(source: "Source", index: int, pixels: np.ndarray) -> tuple[int, int]:
    """Image `index`'s own (width, height), which its boxes are in."""
    from cnnlab.tasks.detection.formats_base import upright_size

    if source.paths is None:
        return source.pixels.shape[2], source.pixels.shape[1]
    width, height, _ = upright_size(Path(source.paths[index]))
    return width, height


def _geometry(pixels: np.ndarray, fit: str) -> Any:
    from cnnlab.data.prepare import Geometry

    return Geometry(pixels.shape[0], pixels.shape[1], pixels.shape[2], fit)


def _as_array(picture: Any) -> np.ndarray:
    """A PIL image as uint8 (C, H, W)."""
    array = np.asarray(picture)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
