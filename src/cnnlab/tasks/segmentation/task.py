"""Semantic segmentation: a class for every pixel.

Data comes as images/ + masks/ folders, a CSV of image,mask, or COCO polygons/RLE (`formats`), with
masks as class indices, palette PNGs or RGB colours (`masks`), or as the generated
`fashion-mnist-masks`; masks are fitted with their images by nearest neighbour and moved with the
pixels by augmentation (`targets`). The network maps (N, C, H, W) images to (N, classes, H, W) logits
at the input's resolution: a registered segmenter (`unet`, models/segmenters.py) or any registry
backbone as a U-Net encoder. The loss is cross-entropy, Dice or both (`--loss`), void pixels (255)
ignored; scores come from a streaming pixel confusion matrix (`metrics`): mIoU (the headline), IoU and
Dice per class, pixel accuracy and the boundary F-score. Predictions are masks in the file's own
pixels, with each class's area.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from torch import Tensor

from cnnlab.errors import ConfigError, DataError
from cnnlab.tasks.base import ExplainTarget, ReportContext, Task
from cnnlab.tasks.segmentation.losses import LOSSES, class_weight_tensor, segmentation_loss
from cnnlab.tasks.segmentation.masks import VOID

if TYPE_CHECKING:
    from torch import nn

    from cnnlab.config import TrainConfig
    from cnnlab.data.source import Source
    from cnnlab.models.build import Architecture
    from cnnlab.tasks.segmentation.metrics import SegmentationMeter


class Segmentation(Task):
    name = "segmentation"
    description = "a class for every pixel (U-Net): cross-entropy and/or Dice, scored by mIoU"
    data_formats = ("images/ + masks/ (same names; train/val/test sub-folders optional), a CSV of image,mask, "
                    "COCO JSON with polygons or RLE; masks as mode L/P class indices or RGB with classes.yaml")
    headline_name = "miou"
    headline_higher_is_better = True
    loss_name = "pixel loss"
    moves_with_image = True
    counted = "pixels"
    settings = frozenset({"loss", "class_weights"})
    # What `cnnlab train --task segmentation` starts from (flags still win; docs/segmentation.md): the
    # CPU-sized U-Net; batches of 16 (short runs need steps: unet-small, 3 epochs of 320 48-px canvases,
    # reached a validation mIoU of 0.149 in batches of 16 at 0.01, 0.015 in batches of 32 at 0.003); a
    # rate between the two for the larger U-Net (0.01 made its first epoch's validation loss jump);
    # cross-entropy + Dice for the background's weight; mirrored canvases are canvases.
    defaults = {"model": "unet", "batch_size": 16, "epochs": 6, "lr": 0.006, "augment": "flip", "loss": "ce+dice"}

    def __init__(self, class_names: list[str], *, loss: str = "ce+dice", class_weights: list[float] | None = None,
                 weighting: str = "none", fit: str = "squash",
                 colours: Sequence[Sequence[int]] | None = None):
        from cnnlab.tasks.segmentation.draw import default_colours

        if loss not in LOSSES:
            raise ConfigError(f"--loss must be one of {', '.join(LOSSES)} (got {loss!r})")
        self.class_names = list(class_names)
        self.loss_kind = loss
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        self.weighting = weighting if class_weights is not None else "none"
        self.fit = fit
        chosen = [tuple(int(v) for v in c) for c in colours] if colours else []
        self.colours = (chosen + default_colours(len(class_names))[len(chosen):])[:len(class_names)]
        self._weights_on: dict[torch.device, Tensor | None] = {}

    # --- data -------------------------------------------------------------------------------

    @classmethod
    def open_data(cls, spec: str | Path, *, split: str = "train", data_dir: str | Path | None = None) -> "Source":
        import logging

        from cnnlab.data.generated import is_generated, materialise, refuse_for_task
        from cnnlab.data.source import Source
        from cnnlab.data.sources import not_found
        from cnnlab.tasks.segmentation.formats import read_segmentation_dataset
        from cnnlab.tasks.segmentation.targets import MaskTargets

        text = str(spec)
        path = Path(text).expanduser()
        if not path.exists() and is_generated(text):
            refuse_for_task(text, cls.name)
            path = materialise(text, data_dir)
        elif not path.exists():
            raise not_found(text)
        dataset = read_segmentation_dataset(path, split=split)
        if not dataset.image_paths:
            raise DataError(f"--data {text} ({split} split): no images with masks")
        for note in dataset.notes:
            logging.getLogger(__name__).warning("note: %s: %s", dataset.description, note)
        targets = MaskTargets(dataset.masks, dataset.reading, dataset.image_paths)
        return Source(dataset.description, [str(p) for p in dataset.image_paths], targets,
                      class_names=list(dataset.reading.class_names), paths=list(dataset.image_paths))

    @classmethod
    def data_splits(cls, spec: str | Path) -> tuple[str, ...]:
        from cnnlab.data.sources import named_splits
        from cnnlab.tasks.segmentation.formats import available_splits

        path = Path(spec).expanduser()
        return available_splits(path) if path.exists() else named_splits(spec)

    @classmethod
    def for_training(cls, source: "Source", config: "TrainConfig | None" = None) -> "Segmentation":
        from cnnlab.tasks.classification import weights_for_classes

        reading = getattr(source.targets, "reading", None)
        if source.class_names is None or reading is None:
            raise ConfigError(f"{source.description} has no masks; segmentation needs images/ + masks/, a CSV of "
                              "image,mask or COCO segmentations (or --data fashion-mnist-masks)")
        if config is None:
            return cls(source.class_names, colours=reading.palette)
        weights = weights_for_classes(config.class_weights, source.class_counts())
        return cls(source.class_names, loss=config.loss, class_weights=weights, weighting=config.class_weights,
                   fit=config.fit, colours=reading.palette)

    def move_targets(self, targets: Tensor, theta: Tensor, size: tuple[int, int]) -> Tensor:
        from cnnlab.tasks.segmentation.targets import move_masks

        return move_masks(targets, theta, size)

    # --- model ------------------------------------------------------------------------------

    def build_model(self, architecture: "Architecture", *, in_channels: int,
                    image_size: tuple[int, int]) -> "nn.Module":
        from cnnlab.models.registry import MODELS
        from cnnlab.models.segmenters import segmenter_on_backbone

        classes = len(self.class_names)
        entry = MODELS.get(architecture.name) if architecture.name in MODELS else None
        if entry is not None and entry.metadata.get("task") == "segmentation":
            return entry.builder(in_channels=in_channels, num_outputs=classes, image_size=image_size)
        return segmenter_on_backbone(architecture, in_channels=in_channels, num_classes=classes, image_size=image_size)

    def describe_outputs(self) -> str:
        return f"{len(self.class_names)} class scores per pixel"

    @property
    def output_names(self) -> list[str]:
        return self.class_names

    # --- training ---------------------------------------------------------------------------

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return self.loss_parts(outputs, targets)[0]

    def loss_parts(self, outputs: Tensor, targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return segmentation_loss(outputs.float(), targets, self.loss_kind, self._weights(outputs.device))

    def _weights(self, device: torch.device) -> Tensor | None:
        if device not in self._weights_on:
            self._weights_on[device] = class_weight_tensor(self.class_weights, device)
        return self._weights_on[device]

    def describe_loss(self) -> str:
        what = {"ce": "cross-entropy per pixel", "dice": "1 − soft Dice per class, averaged over the classes",
                "ce+dice": "cross-entropy per pixel + (1 − soft Dice per class); metrics.csv logs both parts"}
        weighted = f", classes weighted ({self.weighting})" if self.class_weights is not None else ""
        return f"loss: {what[self.loss_kind]}{weighted}; void pixels (255) ignored. Validation scores mIoU (miou)"

    def meter(self, *, full: bool = True) -> "SegmentationMeter":
        from cnnlab.tasks.segmentation.metrics import SegmentationMeter

        return SegmentationMeter(self.class_names, full=full)

    # --- using the model --------------------------------------------------------------------

    def check_top_k(self, top_k: int) -> None:
        if top_k != 1:
            raise ConfigError(f"--top-k {top_k}: a segmentation gives one class per pixel")

    def combine_views(self, outputs: list[Tensor]) -> Tensor:
        return (outputs[0] + outputs[1].flip(-1)) / 2  # the mirror image's scores, mirrored back

    def predictions(self, outputs: Tensor, *, top_k: int = 1,
                    origins: Sequence[tuple[int, int]] | None = None) -> list[dict[str, Any]]:
        """Per image {"size": [width, height], "mask": encoded mask (`rle.encode_mask`), "classes":
        {name: pixels}}, in the file's own pixels when `origins` are given (else the model's input)."""
        from cnnlab.tasks.segmentation.rle import encode_mask

        predicted = outputs.argmax(dim=1).to(torch.uint8).cpu().numpy()
        rows = []
        for index, mask in enumerate(predicted):
            if origins is not None:
                mask = unfit_mask(mask, tuple(origins[index]), self.fit)
            counts = np.bincount(mask.reshape(-1), minlength=len(self.class_names))
            rows.append({"size": [int(mask.shape[1]), int(mask.shape[0])], "mask": encode_mask(mask),
                         "classes": {name: int(counts[c]) for c, name in enumerate(self.class_names)}})
        return rows

    def mask_of(self, prediction: dict[str, Any]) -> np.ndarray:
        from cnnlab.tasks.segmentation.rle import decode_mask

        return decode_mask(prediction["mask"])

    def table_line(self, prediction: dict[str, Any], top_k: int = 1) -> str:
        width, height = prediction["size"]
        total = max(width * height, 1)
        shares = sorted(((count, name) for name, count in prediction["classes"].items() if count), reverse=True)
        shown = ", ".join(f"{name} {count / total:.1%}" for count, name in shares[:5])
        return f"{width}×{height}: {shown}" + (", …" if len(shares) > 5 else "")

    def caption(self, prediction: dict[str, Any]) -> str:
        return self.table_line(prediction)

    def csv_columns(self, predictions: Sequence[dict[str, Any]]) -> list[str]:
        return ["class", "pixels", "fraction"]

    def csv_lines(self, prediction: dict[str, Any], columns: list[str]) -> list[list[str]]:
        """The area of each class the mask holds: one line per class (in pixels and as a share of the image)."""
        width, height = prediction["size"]
        total = max(width * height, 1)
        lines = [[name, str(count), f"{count / total:.6f}"] for name, count in prediction["classes"].items() if count]
        return lines or [["", "0", "0"]]

    def prediction_table(self, outputs: Tensor, targets: Tensor,
                         origins: Sequence[tuple[int, int]] | None = None) -> tuple[list[str], list[list[list[str]]]]:
        """Per image one line: its mean IoU, pixel accuracy and wrong pixels, and its true and predicted
        masks (encoded, at the model's input) for the report's pictures."""
        from cnnlab.tasks.segmentation.metrics import image_scores
        from cnnlab.tasks.segmentation.rle import encode_mask

        header = ["mean_iou", "pixel_accuracy", "wrong_pixels", "true_mask", "predicted_mask"]
        predicted = outputs.argmax(dim=1).to(torch.uint8).numpy()
        truth = targets.to(torch.uint8).numpy()
        table = []
        for found, mask in zip(predicted, truth):
            mean_iou, accuracy, wrong = image_scores(found, mask, len(self.class_names))
            table.append([[_number(mean_iou), _number(accuracy), str(wrong), encode_mask(mask), encode_mask(found)]])
        return header, table

    def draw(self, pixels: Any, prediction: dict[str, Any], truth: Any = None) -> Any:
        """The image with its predicted classes painted over it, enlarged to be seen."""
        from cnnlab.tasks.segmentation.draw import enlarged, overlay

        mask = self.mask_of(prediction)
        if mask.shape != tuple(pixels.shape[1:]):
            mask = unfit_mask(mask, (pixels.shape[2], pixels.shape[1]), "squash")
        return enlarged(overlay(pixels, mask, self.colours))

    def prediction_files(self, prediction: dict[str, Any]) -> dict[str, Any]:
        """The predicted mask as a palette PNG of class indices (`NAME.mask.png` beside the drawing)."""
        from cnnlab.tasks.segmentation.draw import mask_picture

        return {".mask": mask_picture(self.mask_of(prediction), self.colours)}

    def sample_picture(self, pixels: Any, source: "Source", index: int) -> Any:
        """A training image with its true mask painted over it (at the model's input size)."""
        from cnnlab.data.prepare import Geometry
        from cnnlab.tasks.segmentation.draw import overlay

        targets = source.targets[np.array([index])]
        mask = targets.indices(0)
        geometry = Geometry(pixels.shape[0], pixels.shape[1], pixels.shape[2], self.fit)
        fitted = targets.dense([(mask.shape[1], mask.shape[0])], geometry)[0].numpy().astype(np.uint8)
        return overlay(pixels, fitted, self.colours).transpose(2, 0, 1)

    def target_caption(self, source: "Source", index: int) -> str:
        mask = source.targets.indices(index)
        present = [self.class_names[c] for c in np.unique(mask) if c != VOID and 0 < c < len(self.class_names)]
        return ", ".join(present[:3]) + (", …" if len(present) > 3 else "") if present else "background only"

    # --- explaining -------------------------------------------------------------------------

    def explain_target(self, outputs: Tensor, choice: str | None = None) -> ExplainTarget:
        """Seg-Grad-CAM: the summed score of one class over the pixels the model gives it. The class is
        `--class` (a name or an index), else the one (not background) the model painted most."""
        predicted = outputs[:1].argmax(dim=1)[0]
        counts = torch.bincount(predicted.reshape(-1), minlength=len(self.class_names))
        chosen = self._chosen_class(choice, counts)
        region = (predicted == chosen).detach()
        pixels = int(region.sum())
        if not pixels:  # the class is nowhere: explain its score over the whole image
            region = torch.ones_like(region)
        label = f"{self.class_names[chosen]} ({pixels:,} pixels)"
        return ExplainTarget(label, lambda scores: (scores[0, chosen] * region.to(scores.dtype)).sum())

    def _chosen_class(self, choice: str | None, counts: Tensor) -> int:
        if choice is None:
            foreground = counts.clone()
            foreground[0] = 0
            return int(foreground.argmax()) if foreground.sum() > 0 else 0
        if choice.isdigit() and int(choice) < len(self.class_names):
            return int(choice)
        folded = [name.lower() for name in self.class_names]
        if choice.lower() in folded:
            return folded.index(choice.lower())
        raise ConfigError(f"--class {choice}: not a class of this model; pass a name ({', '.join(self.class_names)}) "
                          f"or an index from 0 to {len(self.class_names) - 1}")

    # --- evaluation and report --------------------------------------------------------------

    def plots(self, metrics: dict[str, Any], meter: "SegmentationMeter", folder: Path) -> list[Path]:
        from cnnlab.evaluate.plots import plot_confusion_matrix
        from cnnlab.tasks.segmentation.plots import plot_iou_per_class

        matrix = metrics["confusion_matrix"]
        return [plot_iou_per_class(metrics, folder / "iou_per_class.png"),
                plot_confusion_matrix(matrix["counts"], matrix["labels"], folder / "confusion_matrix.png",
                                      title="Pixel confusion matrix")]

    def summary_line(self, metrics: dict[str, Any]) -> str:
        images = metrics.get("images", 0)
        return (f"mIoU {_number(metrics.get('miou'))}, mean Dice {_number(metrics.get('mean_dice'))}, pixel accuracy "
                f"{_number(metrics.get('pixel_accuracy'))} on {images:,} image{'s' if images != 1 else ''}")

    def metric_lines(self, metrics: dict[str, Any]) -> list[str]:
        per_class = metrics.get("per_class") or {}
        if not per_class or len(per_class) > 30:
            return []
        rows = [["class", "IoU", "Dice", "boundary F", "pixels"]]
        rows += [[name, _number(v.get("iou")), _number(v.get("dice")), _number(v.get("boundary_f")),
                  f"{v.get('pixels', 0):,}"] for name, v in per_class.items()]
        widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
        return ["  ".join(cell.ljust(width) if column == 0 else cell.rjust(width)
                          for column, (cell, width) in enumerate(zip(row, widths))).rstrip() for row in rows]

    def report_sections(self, context: ReportContext) -> list[Any]:
        from cnnlab.tasks.segmentation.report import segmentation_sections

        return segmentation_sections(self, context)

    def example_rows(self, rows: list[dict[str, str]]) -> list[dict[str, str]]:
        return sorted(rows, key=lambda row: -float(row.get("mean_iou") or 0))

    # --- saved with the model ---------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "class_names": self.class_names, "loss": self.loss_kind,
                "class_weights": self.class_weights, "weighting": self.weighting, "fit": self.fit,
                "colours": [list(c) for c in self.colours]}

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> "Segmentation":
        return cls(values["class_names"], loss=str(values.get("loss", "ce+dice")),
                   class_weights=values.get("class_weights"), weighting=str(values.get("weighting", "none")),
                   fit=str(values.get("fit", "squash")), colours=values.get("colours"))


def unfit_mask(mask: np.ndarray, origin: tuple[int, int], fit: str) -> np.ndarray:
    """A mask at the model's input -> the same mask in the file's own (width, height) pixels: the
    inverse of fitting the image (`targets.fit_mask`), by nearest neighbour; pixels the model never saw
    (cut off by --fit crop) are void."""
    height, width = mask.shape
    own_width, own_height = origin
    if (own_width, own_height) == (width, height):
        return mask
    scale_x, scale_y, offset_x, offset_y = _fit_transform(origin, (height, width), fit)
    columns = np.floor((np.arange(own_width) + 0.5) * scale_x + offset_x).astype(np.int64)
    rows = np.floor((np.arange(own_height) + 0.5) * scale_y + offset_y).astype(np.int64)
    inside = (rows[:, None] >= 0) & (rows[:, None] < height) & (columns[None, :] >= 0) & (columns[None, :] < width)
    picked = mask[rows.clip(0, height - 1)[:, None], columns.clip(0, width - 1)[None, :]]
    return np.where(inside, picked, VOID).astype(np.uint8)


def _fit_transform(origin: tuple[int, int], size: tuple[int, int], fit: str) -> tuple[float, float, float, float]:
    """(scale_x, scale_y, offset_x, offset_y): a point x of the file lands at x·scale + offset in the model's
    input, as `cnnlab.data.images.fit_image` fits it (Pillow's ImageOps.fit for crop)."""
    width, height = origin
    out_height, out_width = size
    if fit == "squash":
        return out_width / width, out_height / height, 0.0, 0.0
    if fit == "pad":
        scale = min(out_width / width, out_height / height)
        inner_w = max(1, min(out_width, round(width * scale)))
        inner_h = max(1, min(out_height, round(height * scale)))
        return inner_w / width, inner_h / height, float((out_width - inner_w) // 2), float((out_height - inner_h) // 2)
    # crop: the centred box of the output's aspect ratio, scaled to the output
    if width / height > out_width / out_height:
        crop_w, crop_h = height * out_width / out_height, float(height)
    else:
        crop_w, crop_h = float(width), width * out_height / out_width
    left, top = (width - crop_w) / 2, (height - crop_h) / 2
    return out_width / crop_w, out_height / crop_h, -left * out_width / crop_w, -top * out_height / crop_h


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"
