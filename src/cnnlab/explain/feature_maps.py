"""Feature maps: what each stage of a network makes of one image.

Which layers are shown — the stage rule. Showing every conv and pooling module would mean
hundreds of pictures for a ResNet-50, so a network is read at the level where it is a list of
stages:

1. Start at the model and step down while a module has exactly one child that holds
   convolutions (guide-cnn → `features`; EfficientNet, MobileNet, VGG, AlexNet → `features`;
   ResNet and YAML networks stay at the top).
2. The stages are that module's children, in order, that are a convolution, a pooling layer
   (max/average; global and adaptive pools lead into the head and are left out), or a block that
   contains convolutions (ResNet's `layer1`…`layer4`, EfficientNet's `features.3`, ...).
3. Normalisation, activation and dropout layers right after a bare convolution or a pooling
   layer are folded into its stage: the map shown is the one the next stage receives (guide-cnn's
   `conv1` after `relu1`; fast-cnn's `pool1` after `bn1` and `relu1`, since it pools first).

This gives guide-cnn conv1, pool1, conv2, pool2, conv3; ResNet conv1 (+bn1, relu), maxpool and
layer1…layer4; EfficientNet and MobileNet their 9 and 13 `features.N` blocks; VGG-16 its 13 convs
and 5 pools; and a YAML network its conv and pooling layers.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import Tensor, nn

from cnnlab.pictures import ColourScale, map_grid, save

_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.LPPool2d)
_FOLDABLE = (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU,
             nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Mish, nn.Dropout,
             nn.Dropout2d)


@dataclass(frozen=True)
class Stage:
    path: str  # dotted module path of the stage ("features.conv2", "layer3")
    label: str  # how pictures name it ("conv2", "layer3", "features.3")
    output_path: str  # the module whose output is shown: the stage, or the last layer folded into it
    folded: tuple[str, ...] = ()  # short names of the layers folded in ("relu2",)


def _holds_conv(module: nn.Module) -> bool:
    return any(isinstance(child, nn.Conv2d) for child in module.modules())


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def find_stages(model: nn.Module) -> list[Stage]:
    """The stages whose outputs `explain` shows, by the rule in the module docstring."""
    container, prefix = model, ""
    while True:
        holders = [(name, child) for name, child in container.named_children() if _holds_conv(child)]
        if len(holders) == 1 and not isinstance(holders[0][1], nn.Conv2d):
            name, container = holders[0]
            prefix = _join(prefix, name)
            continue
        break
    stages: list[Stage] = []
    can_fold = False  # only a bare convolution or pool takes the norm/activation layers after it
    for name, child in container.named_children():
        path = _join(prefix, name)
        if isinstance(child, _POOLS) or _holds_conv(child):
            stages.append(Stage(path, _label(name, path, child), path))
            can_fold = isinstance(child, (nn.Conv2d, *_POOLS))
        elif can_fold and isinstance(child, _FOLDABLE):
            last = stages[-1]
            stages[-1] = Stage(last.path, last.label, path, (*last.folded, _label(name, path, child)))
        else:
            can_fold = False
    return stages


def _label(name: str, path: str, module: nn.Module) -> str:
    """'conv2' as it is; a bare number says where it is and what it is: 'features.3 (3× MBConv)'."""
    if not name.isdigit():
        return name
    kind = type(module).__name__
    if isinstance(module, nn.Sequential) and type(module) is nn.Sequential and len(module):
        kind = f"{len(module)}× {type(module[0]).__name__}"
    return f"{path} ({kind})"


@contextmanager
def capture_outputs(model: nn.Module, paths: list[str]) -> Iterator[dict[str, Tensor]]:
    """While active, each forward pass records the (first) output of the modules at `paths`."""
    from cnnlab.models.parts import get_module

    captured: dict[str, Tensor] = {}
    handles = []
    for path in dict.fromkeys(paths):
        def hook(module, inputs, output, path=path):
            if path not in captured and isinstance(output, Tensor):
                captured[path] = output.detach().clone()  # later in-place layers must not change it
        handles.append(get_module(model, path).register_forward_hook(hook))
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def feature_maps(model: nn.Module, images: Tensor,
                 stages: list[Stage] | None = None) -> list[tuple[Stage, Tensor]]:
    """Each stage's output for the normalised images (B, C, H, W): [(stage, (B, C', H', W'))].

    Stages whose output is not a stack of maps (a 2-D tensor) are left out."""
    stages = find_stages(model) if stages is None else stages
    with capture_outputs(model, [stage.output_path for stage in stages]) as captured:
        model(images)
    return [(stage, captured[stage.output_path]) for stage in stages
            if stage.output_path in captured and captured[stage.output_path].dim() == 4]


def shape_text(maps: Tensor | np.ndarray) -> str:
    """(C, H, W) → '64×11×11'."""
    return "×".join(str(side) for side in maps.shape)


def grid_title(stage: Stage, shape: tuple[int, ...], max_maps: int, image_name: str = "") -> str:
    """'conv2 · 64×11×11' and, below, what was folded in and how many maps are shown.

    >>> grid_title(Stage("features.conv2", "conv2", "features.relu2", ("relu2",)), (64, 11, 11), 32)
    'conv2 · 64×11×11\\nafter relu2; showing the first 32 of 64 channels'
    """
    title = f"{stage.label} · {'×'.join(map(str, shape))}"
    notes = []
    if stage.folded:
        notes.append(f"after {', '.join(stage.folded)}")
    if shape[0] > max_maps:
        notes.append(f"showing the first {max_maps} of {shape[0]} channels")
    if image_name:
        notes.append(image_name)
    return title + ("\n" + "; ".join(notes) if notes else "")


def plot_feature_maps(maps: Tensor, stage: Stage, path: Path, *, max_maps: int = 32,
                      image_name: str = "") -> Path:
    """One stage's maps (C, H, W) for one image as a grid on one colour scale (first `max_maps`)."""
    values = maps.detach().float().cpu().numpy()
    shown = values[:max_maps]
    title = grid_title(stage, tuple(values.shape), max_maps, image_name)
    scale = ColourScale.for_values(shown, "activation", robust=True)
    cell = 1.25 if shown.shape[-1] >= 8 else 1.0
    figure = map_grid(shown, title, scale, labels=[f"ch {index}" for index in range(len(shown))], cell=cell)
    return save(figure, path)
