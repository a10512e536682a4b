"""Will a run fit in memory? Estimated before any image is resized or any weight allocated.

`--image-size 100000` used to get the process killed by the kernel's out-of-memory killer (23 GB
in, with the machine thrashing first). The run's needs are estimated from arithmetic on its sizes
and compared with what the machine has free; a run that cannot fit is refused with the figures
and what to change:

    images       the training and validation images at the run's size, one byte a pixel per
                 channel (in memory), or a few batches decoded ahead (streamed)
    statistics   the sample of images the normalisation's mean and std are computed from, in float64
    model        weights, their gradients and the optimiser's state (Adam: two more copies, SGD: one)
    activations  what one batch's forward pass keeps for the backward pass

Activations are measured, not guessed: the model is built on PyTorch's meta device (shapes, no
memory) at the run's size to count its weights, and run for real on one small image to count the
numbers each layer outputs per input pixel, which grows with the image's area. Both are cheap (0.01–0.2 s
and 0.1–0.6 s on 2 cores); the second only happens when a generous bound does not already show that
the run fits. The estimate
errs low (it leaves out the backward pass's temporaries and the allocator's slack), so a run it
refuses cannot have fitted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cnnlab.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from cnnlab.config import TrainConfig
    from cnnlab.data.prepare import Geometry
    from cnnlab.models.build import Architecture

# cnnlab.data.prepare holds images in memory below this (cache auto); a copy, so this module
# stays importable without numpy and PIL
MEMORY_BUDGET_BYTES = 2 * 1024**3
STATISTICS_SAMPLE = (10_000, 1_000)  # images the mean and std are computed from: in memory, streamed
STATISTICS_BYTES_PER_VALUE = 1 + 8 + 8  # a uint8 copy of the sample, then two float64 ones
BATCHES_AHEAD = 3  # streamed: the batch being trained on and two decoded ahead
# Per pixel of the input, no network listed by `cnnlab models` outputs more than ~650 numbers in its
# layers (resnet50: 642, vgg16: 618); a bound three times that decides without running the model.
GENEROUS_ACTIVATIONS_PER_PIXEL = 2_000
CALIBRATION_SIDES = (32, 64, 128)  # the small image the model runs on to count its activations


@dataclass(frozen=True)
class MemoryNeed:
    """Bytes a run needs at least, by what needs them."""

    images: int
    images_in_memory: bool
    statistics: int
    model: int
    activations: int

    @property
    def training(self) -> int:
        """Weights, optimiser state and one batch's activations: what every step needs at once."""
        return self.model + self.activations

    @property
    def peak(self) -> int:
        """The statistics are computed, and freed, before the model is built."""
        return self.images + max(self.statistics, self.training)


@dataclass(frozen=True)
class RunShape:
    """What the estimate needs to know about a run, once its data's geometry is known."""

    geometry: "Geometry"
    train_images: int
    val_images: int
    pixels_in_source: bool  # decoded arrays (named datasets, IDX): always converted in memory
    num_outputs: int
    statistics_from_data: bool  # False when pretrained weights bring their own mean and std


def format_bytes(count: float) -> str:
    """1536 → '1.5 KiB'; the binary units `free -h` uses."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if count < 1024 or unit == "PiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


# --- what the machine has ---------------------------------------------------------------------

def available_memory() -> tuple[int, str] | None:
    """(bytes a new allocation can still get, where that figure comes from), or None if unknown.

    The kernel's own estimate (MemAvailable: free memory plus caches it can drop), lowered to what
    a container's memory limit (cgroup) leaves, which is where the out-of-memory killer acts."""
    figures = [figure for figure in (_meminfo_available(), _cgroup_headroom()) if figure is not None]
    if not figures:
        try:
            pages = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
        return pages, "free physical memory"
    return min(figures)


def _meminfo_available() -> tuple[int, str] | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_headroom() -> tuple[int, str] | None:
    """The memory limit of this process's cgroup less what it uses (v2, then v1); None if unlimited."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit, usage = Path(limit_file).read_text().strip(), int(Path(usage_file).read_text())
        except (OSError, ValueError):
            continue
        if limit == "max" or int(limit) >= 1 << 60:  # v1 writes "no limit" as a huge number
            return None
        return max(int(limit) - usage, 0), f"the memory limit of this container ({limit_file})"
    return None


def _device_free(device: "torch.device") -> tuple[int, str] | None:
    import torch

    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return free, f"free memory on {torch.cuda.get_device_name(device)}"


# --- what the run needs -----------------------------------------------------------------------

def estimate(config: "TrainConfig", shape: RunShape, architecture: "Architecture", batch_size: int,
             room: int | None = None) -> MemoryNeed:
    """The run's needs; `room` (bytes available) lets a clearly small activation count skip the model run."""
    geometry = shape.geometry
    pixels = geometry.channels * geometry.height * geometry.width
    count = shape.train_images + shape.val_images
    in_memory = shape.pixels_in_source or config.cache == "memory" or (
        config.cache == "auto" and count * pixels <= MEMORY_BUDGET_BYTES)
    images = count * pixels if in_memory else BATCHES_AHEAD * batch_size * pixels
    statistics = 0
    if shape.statistics_from_data:
        sample = min(shape.train_images, STATISTICS_SAMPLE[0] if in_memory else STATISTICS_SAMPLE[1])
        statistics = sample * pixels * STATISTICS_BYTES_PER_VALUE
    weights = count_weights(architecture, shape)
    copies = 2 + {"adam": 2, "adamw": 2}.get(config.optimizer, 1 if config.momentum else 0)  # + weights, grads
    model = weights * 4 * copies
    inputs = batch_size * pixels * 4  # the batch as float32, normalised
    generous = inputs + batch_size * geometry.height * geometry.width * GENEROUS_ACTIVATIONS_PER_PIXEL * 4
    if room is not None and images + max(statistics, model + generous) <= room:
        activations = generous  # fits even so: no need to run the model
    else:
        per_pixel = activations_per_pixel(architecture, shape)
        activations = inputs + round(per_pixel * geometry.height * geometry.width * batch_size * 4)
    return MemoryNeed(images, in_memory, statistics, model, activations)


def count_weights(architecture: "Architecture", shape: RunShape) -> int:
    """The model's number of weights at the run's size, built on the meta device (no memory, no time)."""
    import torch

    from cnnlab.models.build import build_model

    with torch.device("meta"):
        model = build_model(architecture, in_channels=shape.geometry.channels, num_outputs=shape.num_outputs,
                            image_size=shape.geometry.size)
    return sum(parameter.numel() for parameter in model.parameters())


def activations_per_pixel(architecture: "Architecture", shape: RunShape) -> float:
    """Numbers the model's layers output for one image, per pixel of that image: run on a small one.

    A convolutional network's activations grow with the image's area, so a count at 32×32 scales to
    any size; the weights are zeros (only the shapes matter). 0 when no small size runs."""
    import torch

    from cnnlab.models.build import build_model

    for side in CALIBRATION_SIDES:
        try:
            with torch.device("meta"):
                model = build_model(architecture, in_channels=shape.geometry.channels,
                                    num_outputs=shape.num_outputs, image_size=(side, side))
            total = _output_numbers(_uninitialised(model).eval(), torch.zeros(1, shape.geometry.channels, side, side))
        except (ConfigError, RuntimeError, ValueError):
            continue  # too small for this network: try a larger one
        return total / (side * side)
    return 0.0


def _uninitialised(model: "nn.Module") -> "nn.Module":
    """`model`'s meta tensors replaced by zeros on the CPU (only the shapes matter; memory left
    uninitialised can hold denormal numbers, which made the pass 4× slower). Not `Module.to_empty`:
    on meta tensors it goes through PyTorch's Python reference implementations, whose first use
    imports for seconds."""
    import torch
    from torch import nn

    for module in model.modules():
        for name, parameter in module._parameters.items():
            if parameter is not None:
                module._parameters[name] = nn.Parameter(torch.zeros(tuple(parameter.shape), dtype=parameter.dtype),
                                                        requires_grad=False)
        for name, buffer in module._buffers.items():
            if buffer is not None:
                module._buffers[name] = torch.zeros(tuple(buffer.shape), dtype=buffer.dtype)
    return model


def _output_numbers(model: "nn.Module", image: "torch.Tensor") -> int:
    """How many numbers the model's layers output (each leaf module's output) for `image`."""
    import torch

    total = 0

    def count(module, inputs, output) -> None:
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel()

    leaves = [module for module in model.modules() if next(module.children(), None) is None]
    hooks = [module.register_forward_hook(count) for module in leaves]
    try:
        with torch.no_grad():
            model(image)
    finally:
        for hook in hooks:
            hook.remove()
    return total


# --- the check --------------------------------------------------------------------------------

def check_memory(config: "TrainConfig", shape: RunShape, architecture: "Architecture", batch_size: int,
                 device: "torch.device", processes: int = 1) -> MemoryNeed | None:
    """Refuse (ConfigError, with the figures and what to change) a run that cannot fit; else its needs.
    `processes`: how many processes of a distributed run share this machine's memory, each with its own
    copy of the data and the model."""
    host = available_memory()
    if host is None:
        return None
    host = (host[0] // max(processes, 1), host[1] + (f", shared by {processes} processes" if processes > 1 else ""))
    on_gpu = device.type == "cuda"
    gpu = _device_free(device) if on_gpu else None
    room = host[0] if gpu is None else min(host[0], gpu[0])
    need = estimate(config, shape, architecture, batch_size, room=room)
    if on_gpu and gpu is not None:
        # In-memory images go to the GPU too (data/loader.py keeps them there for the epoch).
        device_need = need.training + (need.images if need.images_in_memory else 0)
        if device_need > gpu[0]:
            raise ConfigError(_refusal(config, shape, architecture, batch_size, need, device_need, gpu))
        host_need = need.images + need.statistics
        if host_need > host[0]:
            raise ConfigError(_refusal(config, shape, architecture, batch_size, need, host_need, host))
    elif need.peak > host[0]:
        raise ConfigError(_refusal(config, shape, architecture, batch_size, need, need.peak, host))
    return need


def _refusal(config: "TrainConfig", shape: RunShape, architecture: "Architecture", batch_size: int,
             need: MemoryNeed, total: int, available: tuple[int, str]) -> str:
    geometry = shape.geometry
    size = (f"--image-size {config.image_size}" if config.image_size is not None
            else f"images of {geometry.height}×{geometry.width}")
    where = "in memory" if need.images_in_memory else "decoded ahead, a few batches"
    parts = [f"the {shape.train_images:,} training and {shape.val_images:,} validation images at "
             f"{geometry} take {format_bytes(need.images)} ({where})",
             f"{architecture.label}'s weights, gradients and {config.optimizer} state {format_bytes(need.model)}",
             f"one batch of {batch_size} through it {format_bytes(need.activations)}"]
    if need.statistics > need.training:
        parts.append(f"the sample the normalisation is computed from {format_bytes(need.statistics)}")
    return (f"{size}: training would need at least {format_bytes(total)} of memory, and this machine has "
            f"{format_bytes(available[0])} available ({available[1]}): {'; '.join(parts)}. "
            f"{_advice(config, shape, need)}")


def _advice(config: "TrainConfig", shape: RunShape, need: MemoryNeed) -> str:
    """What would shrink the largest of the needs."""
    largest = max(("images", need.images), ("model", need.model), ("activations", need.activations),
                  ("statistics", need.statistics), key=lambda item: item[1])[0]
    advice = ["a smaller --image-size (memory grows with its square)"]
    if largest == "activations":
        advice.append("a smaller --batch-size")
    if largest == "images" and need.images_in_memory and not shape.pixels_in_source:
        advice.append("--cache none (decode each batch's images when it needs them)")
    if largest == "images" and shape.pixels_in_source:
        advice.append("fewer images (--limit)")
    if largest == "model":
        advice.append("a model whose size does not grow with the image's (guide-cnn's and YAML networks' dense "
                      "layers do; the zoo models' do not)")
    return "Pass " + ", or ".join(advice)
