"""`explain()`: what a trained model sees in each of your images.

For every image, into `RUN/explain/<image-stem>/`:

    filters.png                 the first convolution's learned filters
    feature-maps/NN-<stage>.png  each stage's maps for this image (see `feature_maps` for the rule)
    gradcam.png                 where the evidence for the predicted class (or --class) lies

    >>> explanations = explain("runs/demo", ["shoe.png"])             # doctest: +SKIP
    >>> explanations[0].prediction, explanations[0].files["gradcam"]   # doctest: +SKIP
    ('Sneaker 97.1%', PosixPath('runs/demo/explain/shoe/gradcam.png'))
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from cnnlab.errors import ConfigError
from cnnlab.explain.feature_maps import feature_maps, find_stages, plot_feature_maps
from cnnlab.explain.filters import first_conv_weights, plot_filters
from cnnlab.explain.gradcam import GradCam, grad_cam, plot_grad_cam
from cnnlab.trained import TrainedModel, load, refuse_exported


@dataclass
class Explanation:
    name: str  # the image's file name (or dataset name)
    folder: Path
    prediction: str  # "Sneaker 97.1%" or "angle = 12.3"
    target_label: str  # what Grad-CAM explains
    cam: GradCam
    files: dict[str, Path] = field(default_factory=dict)
    feature_map_files: list[Path] = field(default_factory=list)
    heading: str = ""  # the Grad-CAM picture's title


def describe_prediction(trained: TrainedModel, outputs: torch.Tensor) -> str:
    """The model's answer for one image's outputs (1, ...), in a few words: "Sneaker 97.1%"."""
    return trained.task.caption(trained.task.predictions(outputs[:1])[0])


def prepare_image(trained: TrainedModel, path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """An image file as uint8 (C, H, W) at the model's input size and channels."""
    from cnnlab.data.images import DEFAULT_MAX_IMAGE_PIXELS, load_image_array

    return load_image_array(path, channels=trained.input.channels, size=trained.input.size,
                            fit=trained.input.fit, max_pixels=max_pixels or DEFAULT_MAX_IMAGE_PIXELS)


def explain_pixels(trained: TrainedModel, pixels: np.ndarray, folder: Path, *, name: str,
                   target: str | None = None, layer: str | None = None, max_maps: int = 32,
                   maps: bool = True, filters: bool = True, compact: bool = False) -> Explanation:
    """Filters, feature maps and Grad-CAM for one image already at the model's geometry. `compact`:
    a smaller Grad-CAM picture without a title, for a card that says what the image is."""
    # The prediction is the one `predict` and `evaluate` make (with the run's test-time augmentation
    # and precision), so a report's card and its picture quote the same confidence. Grad-CAM then
    # explains that class in the image as given.
    outputs = trained.outputs(torch.from_numpy(pixels)[None])
    prediction = describe_prediction(trained, outputs)
    answer = trained.task.explain_target(outputs)
    explained = answer if target is None else trained.task.explain_target(outputs, target)
    images = trained.normalizer()(torch.from_numpy(pixels)[None].to(trained.device))
    cam = grad_cam(trained.model, images, explained.score, layer)
    target_label = explained.label
    what = "predicted" if target is None or explained.label == answer.label else "asked for"
    heading = "" if compact else f"{name}: predicted {prediction}; Grad-CAM for {target_label} ({what})"
    explanation = Explanation(name, folder, prediction, target_label, cam, heading=heading)
    explanation.files["gradcam"] = plot_grad_cam(pixels, cam, folder / "gradcam.png", heading=heading,
                                                 target_label=target_label, compact=compact)
    if filters:
        layer_path, weights = first_conv_weights(trained.model, trained.info.architecture.name)
        explanation.files["filters"] = plot_filters(weights, folder / "filters.png", layer=layer_path)
    if maps:
        stages = find_stages(trained.model)
        for number, (stage, values) in enumerate(feature_maps(trained.model, images, stages), start=1):
            path = folder / "feature-maps" / f"{number:02d}-{_slug(stage.path)}.png"
            explanation.feature_map_files.append(plot_feature_maps(values[0], stage, path, max_maps=max_maps,
                                                                   image_name=name))
    return explanation


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "image"


def _folders(root: Path, images: Sequence[str | Path]) -> list[Path]:
    """One folder per image, named after it; a second `a.png` (from another folder) gets `a-2`."""
    taken: set[str] = set()
    folders = []
    for image in images:
        stem, name, number = _slug(Path(image).stem), _slug(Path(image).stem), 2
        while name in taken:
            name, number = f"{stem}-{number}", number + 1
        taken.add(name)
        folders.append(root / name)
    return folders


def explain(run: str | Path, images: Sequence[str | Path], *, target: str | None = None,
            layer: str | None = None, max_maps: int = 32, output_dir: str | Path | None = None,
            device: str = "auto", runs_dir: str | Path = "runs", max_image_pixels: int | None = None,
            precision: str = "auto", tta: str | None = None, threshold: str | None = None,
            conf: float | None = None, iou: float | None = None) -> list[Explanation]:
    """Filters, feature maps and Grad-CAM for each image, written under RUN/explain/ (or `output_dir`).
    The prediction explained is the one `predict` makes with the same `precision`, `tta`,
    `threshold`, `conf` and `iou`; `max_image_pixels`: the pixel budget of the image files."""
    from cnnlab.data.images import check_max_image_pixels

    if max_maps < 1:
        raise ConfigError(f"--max-maps {max_maps}: show at least 1 map per stage")
    if max_image_pixels is not None:
        check_max_image_pixels(max_image_pixels)
    refuse_exported(run, "explain")
    trained = load(run, device=device, runs_dir=runs_dir, precision=precision, tta=tta, conf=conf, iou=iou)
    trained.set_threshold(threshold)
    root = Path(output_dir) if output_dir else trained.run_dir / "explain"
    explanations = []
    for image, folder in zip(images, _folders(root, images)):
        pixels = prepare_image(trained, image, max_image_pixels)
        explanations.append(explain_pixels(trained, pixels, folder, name=Path(image).name,
                                           target=target, layer=layer, max_maps=max_maps))
    return explanations
