"""Instance segmentation: a class, a box and a mask for every object in the image.

It is detection with a mask per object, so the task is the detection task's (`Detection`, with a
model that decodes itself: configure's --conf/--iou, NMS, --top-k, tracking boxes, Grad-CAM of a
box's score, the box confusion matrix) with the masks carried alongside:

    data       COCO polygons/RLE or YOLO-seg polygons (`formats`), or the generated
               `fashion-mnist-instances`; dense targets (N, 2, H, W): instance ids and classes (`targets`)
    model      torchvision's Mask R-CNN (models/torchvision_maskrcnn.py), which outputs rows of
               [box, score, class, mask] and computes its own loss
    scoring    mask mAP as pycocotools' segm, and box mAP (`metrics.InstanceMeter`)
    outputs    per image the objects (id, class, score, box, area, in the file's own pixels) and an
               index mask (0 background, i = object i) as cnnlab's mask code; `predict --draw`
               writes the overlay and NAME.instances.png (the index mask)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from torch import Tensor

from cnnlab.errors import ConfigError, DataError
from cnnlab.tasks.base import ReportContext
from cnnlab.tasks.detection import boxes as box_ops
from cnnlab.tasks.detection import decoded
from cnnlab.tasks.detection.task import BOXES, EVALUATION_CONF, MATCH_IOU, Detection, _own_size, _score, _to_origin

if TYPE_CHECKING:
    from torch import nn

    from cnnlab.config import TrainConfig
    from cnnlab.data.source import Source
    from cnnlab.models.build import Architecture

ROW = 6  # x1, y1, x2, y2, score, class; the mask follows


class InstanceSegmentation(Detection):
    name = "instance-segmentation"
    description = "a class, a box and a mask for every object (Mask R-CNN), scored by COCO's mask mAP"
    data_formats = ("COCO JSON with polygons or RLE (annotations/instances_*.json + images), "
                    "YOLO-seg (data.yaml, or images/ + labels/ with `class x1 y1 x2 y2 ...` polygons)")
    headline_name = "mask_map"
    loss_name = "Mask R-CNN's loss (RPN + box classifier + box + mask)"
    # Measured on fashion-mnist-instances on 2 CPU cores (docs/segmentation.md, "Instance masks").
    defaults = {"model": "maskrcnn_resnet18_fpn_small", "batch_size": 8, "epochs": 4, "lr": 0.001, "augment": "flip"}

    def __init__(self, class_names: list[str], **options: Any):
        options["outputs"] = BOXES
        super().__init__(class_names, **options)

    # --- data -------------------------------------------------------------------------------

    @classmethod
    def open_data(cls, spec: str | Path, *, split: str = "train", data_dir: str | Path | None = None) -> "Source":
        from cnnlab.data.generated import is_generated, materialise, refuse_for_task
        from cnnlab.data.source import Source
        from cnnlab.data.sources import not_found
        from cnnlab.tasks.instances.formats import read_instance_dataset
        from cnnlab.tasks.instances.targets import InstanceTargets

        text = str(spec)
        path = Path(text).expanduser()
        if not path.exists() and is_generated(text):
            refuse_for_task(text, cls.name)
            path = materialise(text, data_dir)
        elif not path.exists():
            raise not_found(text)
        dataset = read_instance_dataset(path, split=split)
        if not dataset.image_paths:
            raise DataError(f"--data {text} ({split} split): no images")
        targets = InstanceTargets(dataset.images, category_ids=dataset.category_ids)
        return Source(dataset.description, [str(p) for p in dataset.image_paths], targets,
                      class_names=list(dataset.class_names), paths=list(dataset.image_paths))

    @classmethod
    def data_splits(cls, spec: str | Path) -> tuple[str, ...]:
        from cnnlab.data.sources import named_splits
        from cnnlab.tasks.instances.formats import available_splits

        path = Path(spec).expanduser()
        if not path.exists():
            return named_splits(spec)
        try:
            return available_splits(path)
        except (DataError, OSError):
            return ()

    @classmethod
    def for_training(cls, source: "Source", config: "TrainConfig | None" = None) -> "InstanceSegmentation":
        from cnnlab.tasks.instances.targets import InstanceTargets

        if not isinstance(source.targets, InstanceTargets):
            raise ConfigError(f"{source.description} has no instance masks; instance segmentation needs COCO "
                              "segmentations or YOLO-seg polygons (or --data fashion-mnist-instances)")
        return cls(source.class_names, category_ids=source.targets.category_ids,
                   fit=config.fit if config is not None else "squash")

    def move_targets(self, targets: Tensor, theta: Tensor, size: tuple[int, int]) -> Tensor:
        from cnnlab.tasks.instances.targets import move_instances

        return move_instances(targets, theta, size)

    # --- model ------------------------------------------------------------------------------

    def build_model(self, architecture: "Architecture", *, in_channels: int,
                    image_size: tuple[int, int]) -> "nn.Module":
        from cnnlab.models.registry import MODELS

        entry = MODELS.get(architecture.name) if architecture.name in MODELS else None
        if entry is None or entry.metadata.get("task") != self.name:
            names = [e.name for e in MODELS if e.metadata.get("task") == self.name]
            raise ConfigError(f"--model {architecture.name}: not an instance-segmentation model; use one of "
                              f"{', '.join(names)} (Mask R-CNN)")
        model = entry.builder(in_channels=in_channels, num_outputs=len(self.class_names), image_size=image_size)
        self.outputs, self.image_size = BOXES, tuple(image_size)
        return model

    def describe_outputs(self) -> str:
        return (f"{len(self.class_names)} classes: boxes and masks decoded by the model itself, up to "
                f"{self.max_detections} objects per image")

    def describe_loss(self) -> str:
        return ("loss: Mask R-CNN's own loss, the sum of its parts (RPN objectness and boxes, box classifier, "
                "box regression, mask; metrics.csv logs each); validation scores COCO's mask mAP@[.5:.95] (mask_map)")

    def forward_loss(self, model: "nn.Module", inputs: Tensor, targets: Tensor, autocast: Any
                     ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        return decoded.forward_loss(model, inputs, targets, autocast)

    def meter(self, *, full: bool = True) -> "InstanceScores":
        return InstanceScores(self)

    def decode_instances(self, outputs: Tensor, conf: float | None = None
                         ) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
        """Per image (boxes (k, 4), scores, labels, masks (k, H, W) bool) above `conf`, after class-wise
        NMS at --iou, best first, in model-input pixels."""
        from torchvision.ops import batched_nms

        height, width = self._input_size(outputs)
        results = []
        for rows in outputs.detach().float():
            rows = rows[(rows[:, 5] >= 0) & (rows[:, 4] >= (self.conf if conf is None else conf))]
            labels = rows[:, 5].long()
            kept = batched_nms(rows[:, :4], rows[:, 4], labels, self.iou)[:self.max_detections]
            masks = rows[kept, ROW:].reshape(-1, height, width) > 0.5
            results.append((rows[kept, :4], rows[kept, 4], labels[kept], masks))
        return results

    # --- using the model --------------------------------------------------------------------

    def combine_views(self, outputs: list[Tensor]) -> Tensor:
        """Both views' objects, the mirrored one's boxes and masks mirrored back; NMS keeps the better."""
        height, width = self._input_size(outputs[0])
        mirrored = decoded.unflip(outputs[1], width)
        count, rows = mirrored.shape[:2]
        mirrored[..., ROW:] = mirrored[..., ROW:].reshape(count, rows, height, width).flip(-1).reshape(count, rows, -1)
        return torch.cat([outputs[0], mirrored], 1)

    def predictions(self, outputs: Tensor, *, top_k: int = 1,
                    origins: Sequence[tuple[int, int]] | None = None) -> list[dict[str, Any]]:
        """Per image {"objects": [{"id", "label", "category_id", "score", "box", "area"}, ...] best first,
        "mask": the index mask (0 background, i = object i; where objects overlap the better one) as
        cnnlab's mask code "HxW:value*run,..."}, in the file's own pixels when `origins` are given."""
        from cnnlab.tasks.segmentation.rle import encode_mask

        size = self._input_size(outputs)
        rows = []
        for index, (found, scores, labels, masks) in enumerate(self.decode_instances(outputs)):
            found_boxes = found.cpu().numpy().astype(np.float64)
            masks = masks.cpu().numpy()
            if origins is not None:
                found_boxes = _to_origin(found_boxes, tuple(origins[index]), size, self.fit)
                masks = masks_to_origin(masks, tuple(origins[index]), size, self.fit)
            index_mask = np.zeros(masks.shape[1:], np.uint8)
            for number in range(len(masks), 0, -1):  # the best object last: it keeps the pixels it shares
                index_mask[masks[number - 1]] = number
            objects = [{"id": number, "label": self.class_names[label], "category_id": self.category_ids[label],
                        "score": float(score), "box": [float(v) for v in box], "area": int(mask.sum())}
                       for number, (box, score, label, mask) in
                       enumerate(zip(found_boxes, scores.tolist(), labels.tolist(), masks), start=1)]
            rows.append({"objects": objects, "mask": encode_mask(index_mask)})
        return rows

    def csv_columns(self, predictions: Sequence[dict[str, Any]]) -> list[str]:
        return ["id", "label", "category_id", "score", "x1", "y1", "x2", "y2", "area"]

    def csv_lines(self, prediction: dict[str, Any], columns: list[str]) -> list[list[str]]:
        lines = [[str(o["id"]), o["label"], str(o["category_id"]), f"{o['score']:.6f}",
                  *(f"{v:.2f}" for v in o["box"]), str(o["area"])] for o in prediction["objects"]]
        return lines or [[""] * len(columns)]

    def prediction_table(self, outputs: Tensor, targets: Tensor,
                         origins: Sequence[tuple[int, int]] | None = None) -> tuple[list[str], list[list[list[str]]]]:
        """Per image a line per predicted object (above --conf) and per true object: "mask_iou" is the best
        mask IoU with the other side (same class), "found" whether they were paired at mask IoU ≥ 0.5."""
        from cnnlab.tasks.instances.targets import unpack

        header = ["kind", "label", "score", "x1", "y1", "x2", "y2", "area", "mask_iou", "found"]
        size = self._input_size(outputs)
        table = []
        for index, ((found, scores, labels, masks), (truth_masks, truth, truth_labels, flags)) in enumerate(
                zip(self.decode_instances(outputs), unpack(targets))):
            normal = flags == 0
            truth_masks, truth, truth_labels = truth_masks[normal], truth[normal], truth_labels[normal]
            overlaps = mask_ious(masks.cpu(), truth_masks.cpu())
            overlaps[labels.cpu()[:, None] != truth_labels.cpu()[None, :]] = 0.0
            right, seen = _greedy(overlaps)
            found_boxes, truth_boxes = found.cpu().numpy(), truth.cpu().numpy()
            if origins is not None:
                found_boxes = _to_origin(found_boxes, tuple(origins[index]), size, self.fit)
                truth_boxes = _to_origin(truth_boxes, tuple(origins[index]), size, self.fit)
            best_found = overlaps.max(dim=1).values.tolist() if overlaps.numel() else [0.0] * len(found)
            best_truth = overlaps.max(dim=0).values.tolist() if overlaps.numel() else [0.0] * len(truth)
            lines = [["predicted", self.class_names[label], f"{score:.4f}", *_corners(box), str(int(mask.sum())),
                      f"{iou:.4f}", str(int(ok))]
                     for box, score, label, mask, iou, ok in zip(found_boxes, scores.tolist(), labels.tolist(),
                                                                 masks.cpu(), best_found, right)]
            lines += [["true", self.class_names[label], "", *_corners(box), str(int(mask.sum())), f"{iou:.4f}",
                       str(int(ok))]
                      for box, label, mask, iou, ok in zip(truth_boxes, truth_labels.tolist(), truth_masks.cpu(),
                                                           best_truth, seen)]
            table.append(lines or [[""] * len(header)])
        return header, table

    def prediction_files(self, prediction: dict[str, Any]) -> dict[str, Any]:
        """The index mask as a PNG (mode L: 0 background, i = object i of the CSV/JSON), beside the drawing."""
        from PIL import Image

        from cnnlab.tasks.segmentation.rle import decode_mask

        return {".instances": Image.fromarray(decode_mask(prediction["mask"]), mode="L")}

    def draw(self, pixels: Any, prediction: dict[str, Any], truth: Any = None) -> Any:
        """The image with each object's mask painted in its own colour, its box and "class score" over it
        (true boxes dashed, when given)."""
        from cnnlab.tasks.detection.draw import draw_boxes
        from cnnlab.tasks.instances.draw import paint_instances
        from cnnlab.tasks.segmentation.rle import decode_mask

        objects = prediction["objects"]
        index_mask = decode_mask(prediction["mask"]) if "mask" in prediction else None
        painted = paint_instances(np.asarray(pixels), index_mask)
        found = np.array([o["box"] for o in objects], np.float32).reshape(-1, 4)
        labels = [self.class_names.index(o["label"]) for o in objects]
        return draw_boxes(painted, found, labels, self.class_names, scores=[o["score"] for o in objects],
                          true_boxes=truth)

    def sample_picture(self, pixels: Any, source: "Source", index: int) -> Any:
        """A training image with its true masks painted (at the model's input size)."""
        from cnnlab.tasks.detection.task import _geometry
        from cnnlab.tasks.instances.draw import paint_instances

        planes = source.targets[np.array([index])].dense([_own_size(source, index, pixels)],
                                                          _geometry(pixels, self.fit))[0]
        return paint_instances(pixels, planes[0].numpy()).transpose(2, 0, 1)

    def target_caption(self, source: "Source", index: int) -> str:
        count = len(source.targets.images[index])
        return f"{count} object{'s' if count != 1 else ''}"

    # --- evaluation and report --------------------------------------------------------------

    def plots(self, metrics: dict[str, Any], meter: "InstanceScores", folder: Path) -> list[Path]:
        from cnnlab.tasks.detection.plots import plot_detection_confusion_matrix, plot_precision_recall

        matrix = metrics["confusion_matrix"]
        return [plot_precision_recall(metrics, folder / "mask_precision_recall.png"),
                plot_detection_confusion_matrix(matrix["counts"], matrix["labels"],
                                                folder / "detection_confusion_matrix.png")]

    def summary_line(self, metrics: dict[str, Any]) -> str:
        images = metrics.get("images", 0)
        return (f"mask mAP@[.5:.95] {_score(metrics.get('mask_map'))}, "
                f"mask mAP@.5 {_score(metrics.get('mask_map50'))}; "
                f"box mAP@[.5:.95] {_score(metrics.get('box_map'))}, box mAP@.5 {_score(metrics.get('box_map50'))} "
                f"on {images:,} image{'s' if images != 1 else ''} ({metrics.get('objects', 0):,} objects)")

    def metric_lines(self, metrics: dict[str, Any]) -> list[str]:
        per_class = metrics.get("per_class") or {}
        if not per_class or len(per_class) > 30:
            return []
        rows = [["class", "mask AP", "mask AP50", "box AP", "box AP50", "objects", "detections"]]
        rows += [[name, _score(v.get("mask_ap")), _score(v.get("mask_ap50")), _score(v.get("box_ap")),
                  _score(v.get("box_ap50")), f"{v.get('gt', 0):,}", f"{v.get('detections', 0):,}"]
                 for name, v in per_class.items()]
        widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
        return ["  ".join(cell.ljust(width) if column == 0 else cell.rjust(width)
                          for column, (cell, width) in enumerate(zip(row, widths))).rstrip() for row in rows]

    def report_sections(self, context: ReportContext) -> list[Any]:
        from cnnlab.tasks.instances.report import instance_sections

        return instance_sections(self, context)

    def check_export(self, format: str) -> None:
        raise ConfigError(f"cnnlab export --format {format}: not supported for instance segmentation yet (Mask "
                          "R-CNN's data-dependent decoding does not trace); use the run folder with cnnlab predict, "
                          "evaluate or serve")

    # --- saved with the model ---------------------------------------------------------------

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> "InstanceSegmentation":
        return cls(values["class_names"], category_ids=values.get("category_ids"),
                   conf=float(values.get("conf", 0.25)), iou=float(values.get("iou", 0.6)),
                   max_detections=int(values.get("max_detections", 100)), fit=str(values.get("fit", "squash")),
                   image_size=values.get("image_size"))


class InstanceScores:
    """The task's meter: decodes each batch (every object down to a score of 0.001) and hands boxes and
    masks to `InstanceMeter`; `compute` merges every process's."""

    def __init__(self, task: InstanceSegmentation):
        from cnnlab.tasks.instances.metrics import InstanceMeter

        self.task = task
        self.meter = InstanceMeter(task.class_names)

    def update(self, outputs: Tensor, targets: Tensor) -> None:
        from cnnlab.tasks.instances.targets import unpack

        decoded = self.task.decode_instances(outputs, EVALUATION_CONF)
        predictions = [{"boxes": b.cpu().numpy(), "scores": s.cpu().numpy(), "labels": l.cpu().numpy(),
                        "masks": m.cpu().numpy()} for b, s, l, m in decoded]
        truth = [{"masks": m.cpu().numpy(), "boxes": b.cpu().numpy(), "labels": l.cpu().numpy(),
                  "flags": f.cpu().numpy()} for m, b, l, f in unpack(targets)]
        self.meter.update(predictions, truth)

    def compute(self) -> dict[str, Any]:
        from cnnlab.processes import gather_across_processes
        from cnnlab.tasks.instances.metrics import InstanceMeter

        states = gather_across_processes(self.meter.state())
        if len(states) > 1:
            merged = InstanceMeter.from_state(states[0])
            for state in states[1:]:
                merged.merge(state)
            self.meter = merged
        return self.meter.compute()


def masks_to_origin(masks: np.ndarray, origin: tuple[int, int], size: tuple[int, int], fit: str) -> np.ndarray:
    """Masks (k, H, W) at the model's input → (k, h, w) in the file's own pixels: each file pixel takes
    the model pixel its centre falls in (the inverse of fitting, as for boxes); outside the model's
    view (a crop's cut-off) is background."""
    scale_x, scale_y, offset_x, offset_y = box_ops.fit_geometry(origin, size, fit)
    width, height = origin
    columns = np.floor((np.arange(width) + 0.5) * scale_x + offset_x).astype(np.int64)
    rows = np.floor((np.arange(height) + 0.5) * scale_y + offset_y).astype(np.int64)
    inside = (rows[:, None] >= 0) & (rows[:, None] < size[0]) & (columns[None] >= 0) & (columns[None] < size[1])
    picked = masks[:, rows.clip(0, size[0] - 1)][:, :, columns.clip(0, size[1] - 1)]
    return picked & inside[None]


def mask_ious(masks: Tensor, truth: Tensor) -> Tensor:
    """(k, t) IoU of two sets of (·, H, W) boolean masks."""
    if not len(masks) or not len(truth):
        return torch.zeros(len(masks), len(truth))
    first, second = masks.flatten(1).float(), truth.flatten(1).float()
    intersection = first @ second.T
    union = first.sum(1)[:, None] + second.sum(1)[None, :] - intersection
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.zeros_like(union))


def _greedy(overlaps: Tensor) -> tuple[list[bool], list[bool]]:
    """Best score first (rows come so), each prediction takes the free true object of highest IoU ≥ 0.5."""
    right, seen = [False] * overlaps.shape[0], [False] * overlaps.shape[1]
    for index in range(overlaps.shape[0]):
        candidates = overlaps[index].clone()
        candidates[torch.tensor(seen, dtype=torch.bool)] = 0.0
        if len(candidates) and candidates.max() >= MATCH_IOU:
            best = int(candidates.argmax())
            right[index], seen[best] = True, True
    return right, seen


def _corners(box: Any) -> list[str]:
    return [f"{float(v):.2f}" for v in box]
