"""Grad-CAM: where in the image the evidence for a class was found (Selvaraju et al. 2017).

For a target layer with feature maps A (K maps of h×w) and the class score y (the logit, before
softmax):

    weight_k = mean over positions of ∂y/∂A_k        how much map k raises the score
    cam      = ReLU(Σ_k weight_k · A_k)               positive evidence only
    heatmap  = cam upsampled to the image, divided by its maximum (1 = strongest evidence)

The target layer is by default the last convolution stage with maps of at least 7×7 (see
`default_target_layer`), after its activation as in the paper: the last stage for 224-px images,
an earlier, finer one where small images shrink the last maps to 3×3 or a single pixel, where
Grad-CAM can say little or nothing about where. `--layer` takes any
module name. For regression the "class score" is one predicted value: the heatmap shows what
pushed that value up.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from cnnlab.errors import ConfigError
from cnnlab.pictures import show_image
from cnnlab.models.parts import get_module
from cnnlab.plotting import new_figure, save_figure

HEATMAP_CMAP = "turbo"


@dataclass(frozen=True)
class GradCam:
    heatmap: np.ndarray  # (H, W) at the input size, 0–1
    coarse: np.ndarray  # (h, w) ReLU(Σ weight·A) at the layer's own resolution, unnormalised
    layer: str
    target: int  # output index explained (-1: a task's own score function)
    score: float  # that output's raw value (logit)

    @property
    def has_evidence(self) -> bool:
        """Whether any position raised the score. ReLU(Σ weight·A) can be zero everywhere: the maps
        that are active in this image all lower the class's score at this layer."""
        return bool(self.coarse.max() > 0)

    @property
    def peak(self) -> tuple[int, int]:
        """(x, y) of the heatmap's maximum in input pixels; meaningless (0, 0) without `has_evidence`."""
        row, column = np.unravel_index(int(np.argmax(self.heatmap)), self.heatmap.shape)
        return int(column), int(row)

    def describe(self, target_label: str) -> str:
        """One line for the terminal: where the evidence peaks, or that there is none."""
        if not self.has_evidence:
            return (f"Grad-CAM for {target_label} at {self.layer}: no positive evidence at this layer "
                    f"(--layer picks another)")
        x, y = self.peak
        return f"Grad-CAM for {target_label} at {self.layer} peaks at x={x}, y={y}"


MIN_SIDE = 7  # the side of ResNet's and EfficientNet's last maps at ImageNet's 224 px


def default_target_layer(model: nn.Module, images: Tensor) -> str:
    """The output of the last stage holding a convolution whose maps are at least 7×7.

    Grad-CAM's heatmap is only as fine as the layer's maps: at 224 px this is the last stage, as
    the paper uses it; small images (a 28-px guide-cnn's last maps are 3×3, a 32-px ResNet's 1×1)
    move it to an earlier, finer stage. Stages are `feature_maps.find_stages`: a convolution's stage
    ends after its activation (the rectified maps, as in the paper), a block's is the block's output
    (ResNet's layer4, EfficientNet's features.8). Without any stage that large: the last stage with
    maps larger than 1×1, else the last convolution. A model's own output layer (a segmenter's 1×1
    `head`, its `classifier_path`) is never the default: its maps are the class scores themselves, so
    their gradient is a constant and the heatmap would only repeat the prediction.
    """
    from cnnlab.explain.feature_maps import feature_maps, find_stages
    from cnnlab.models.parts import last_conv_layer

    declared = getattr(model, "gradcam_layer_path", None)  # a model whose parts pass dicts (a torchvision detector)
    if declared:
        return declared
    output_layer = getattr(model, "classifier_path", None)
    stages = [stage for stage in find_stages(model)
              if stage.path != output_layer
              and any(isinstance(module, nn.Conv2d) for module in get_module(model, stage.path).modules())]
    sides = [(stage, min(maps.shape[2:])) for stage, maps in feature_maps(model, images, stages)]
    for smallest in (MIN_SIDE, 2):
        large = [stage for stage, side in sides if side >= smallest]
        if large:
            return large[-1].output_path
    return last_conv_layer(model)[0]


def check_layer(model: nn.Module, layer: str) -> nn.Module:
    """The module named by --layer; an unknown name lists close matches among the convolutions and blocks."""
    names = [name for name, _ in model.named_modules() if name]
    if layer not in names:
        close = difflib.get_close_matches(layer, names, n=4, cutoff=0.5)
        convs = [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"--layer {layer}: the model has no layer of that name.{hint} Its convolutions are "
                          f"{_shorten(convs)}")
    return get_module(model, layer)


def _shorten(names: list[str], limit: int = 12) -> str:
    return ", ".join(names) if len(names) <= limit else ", ".join(names[:6] + ["..."] + names[-5:])


def grad_cam(model: nn.Module, image: Tensor, target: int | Callable[[Tensor], Tensor] | None = None,
             layer: str | None = None) -> GradCam:
    """Grad-CAM for one normalised image (1, C, H, W) and the score `target`: an output index (default:
    the top-scoring output), or a function from the model's outputs to the scalar to explain (a task's
    `ExplainTarget.score`: a detected box's class score, a segment's summed class scores)."""
    layer = layer or default_target_layer(model, image)
    module = check_layer(model, layer)
    captured: dict[str, Tensor] = {}

    def keep_output(_module, _inputs, output):
        captured["maps"] = output
        # Later layers get a copy, so an in-place ReLU after this layer cannot change `maps`.
        return output.clone() if isinstance(output, Tensor) else output

    handle = module.register_forward_hook(keep_output)
    try:
        with torch.enable_grad():
            outputs = model(image.detach().requires_grad_(True))  # a graph even if the weights are frozen
            maps = captured.get("maps")
            if not isinstance(maps, Tensor) or maps.dim() != 4:
                shape = "nothing" if maps is None else f"a {tuple(maps.shape[1:])} tensor"
                raise ConfigError(f"--layer {layer}: Grad-CAM needs a layer that outputs feature maps "
                                  f"(C×H×W), but it outputs {shape}; choose a convolution or a block")
            if callable(target):
                score, target = target(outputs), -1
            else:
                target = int(outputs[0].argmax()) if target is None else target
                score = outputs[0, target]
            gradients = torch.autograd.grad(score, maps)[0]
    finally:
        handle.remove()
    weights = gradients[0].mean(dim=(1, 2))  # (K,): one weight per map
    cam = F.relu((weights[:, None, None] * maps[0]).sum(dim=0)).detach()
    heatmap = F.interpolate(cam[None, None], size=image.shape[-2:], mode="bilinear",
                            align_corners=False)[0, 0]
    top = float(heatmap.max())
    heatmap = heatmap / top if top > 0 else heatmap
    return GradCam(heatmap.clamp(0, 1).cpu().numpy(), cam.cpu().numpy(), layer, target, float(score.detach()))


def plot_grad_cam(pixels: np.ndarray, cam: GradCam, path: Path, *, heading: str, target_label: str,
                  compact: bool = False) -> Path:
    """Image | Grad-CAM at the layer's own resolution | overlay, with a colour bar from 0 to 1.

    `compact` leaves out the middle panel (for the report's cards)."""
    figure = new_figure(5.2, 2.9) if compact else new_figure(10.5, 3.9)
    if heading:
        figure.suptitle(heading, fontsize=9 if compact else 10)
    if compact:
        image_axes, overlay_axes = figure.subplots(1, 2)
    else:
        image_axes, coarse_axes, overlay_axes = figure.subplots(1, 3)
    show_image(image_axes, pixels, f"input {pixels.shape[0]}×{pixels.shape[1]}×{pixels.shape[2]}")
    height, width = cam.coarse.shape
    show_image(overlay_axes, _grey(pixels), f"evidence for {target_label}" +
               (f"\n(Grad-CAM at {cam.layer}, {height}×{width})" if compact else ""))
    heat = overlay_axes.imshow(cam.heatmap, cmap=HEATMAP_CMAP, vmin=0, vmax=1, alpha=0.5,
                               interpolation="bilinear")
    if not cam.has_evidence:  # no peak to mark
        overlay_axes.text(0.5, 0.5, "no positive evidence\nat this layer", transform=overlay_axes.transAxes,
                          ha="center", va="center", fontsize=9, color="white",
                          bbox={"facecolor": "black", "alpha": 0.6})
    else:
        x, y = cam.peak
        overlay_axes.plot([x], [y], marker="+", color="white", markersize=12, markeredgewidth=2)
        if height * width == 1:
            overlay_axes.text(0.5, 0.06, "1×1 maps: no spatial detail (try --layer)",
                              transform=overlay_axes.transAxes, ha="center", fontsize=8, color="white",
                              bbox={"facecolor": "black", "alpha": 0.6})
    bar_axes = [overlay_axes]
    if not compact:
        coarse = cam.coarse / cam.coarse.max() if cam.coarse.max() > 0 else cam.coarse
        heat = coarse_axes.imshow(coarse, cmap=HEATMAP_CMAP, vmin=0, vmax=1, interpolation="nearest")
        coarse_axes.set_title(f"Grad-CAM at {cam.layer}\n({height}×{width}, its own resolution)", fontsize=9)
        coarse_axes.set_xticks([])
        coarse_axes.set_yticks([])
        bar_axes.insert(0, coarse_axes)
    else:  # the colour bar needs the colours at full strength, not the half-transparent overlay
        import matplotlib
        from matplotlib.cm import ScalarMappable

        heat = ScalarMappable(matplotlib.colors.Normalize(0, 1), HEATMAP_CMAP)
    figure.colorbar(heat, ax=bar_axes, shrink=0.85, label="relevance (1 = strongest, + = peak)")
    return save_figure(figure, Path(path))


def _grey(pixels: np.ndarray) -> np.ndarray:
    """The image in grey, so the heatmap's colours are the only colours in the overlay."""
    if pixels.shape[0] == 1:
        return pixels
    grey = np.rint(pixels.astype(np.float64).T @ np.array([0.299, 0.587, 0.114])).T
    return grey[None].astype(np.uint8)
