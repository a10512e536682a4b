"""Options that several commands share, defined once so that they read the same everywhere."""

from __future__ import annotations

import functools
from typing import Any, Callable

import click

# cnnlab.data.images.DEFAULT_MAX_IMAGE_PIXELS, written out: importing that module would load NumPy,
# and `cnnlab --help` must stay instant (tests/reliability/test_hostile_images.py checks they agree).
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485


def max_image_pixels_option(function: Callable) -> Callable:
    """--max-image-pixels: the pixel budget of every image file the command opens."""
    return click.option("--max-image-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_IMAGE_PIXELS,
                        show_default=True,
                        help="skip (naming them) image files of more pixels than this: decompression bombs, or "
                             "images too large to decode safely")(function)


PRECISIONS = ["auto", "fp32", "bf16", "fp16"]
INFERENCE_OPTIONS = ("device", "runs_dir", "precision", "tta", "threshold", "conf", "iou", "max_image_pixels")


def inference_options(function: Callable) -> Callable:
    """The options of every command that runs a trained model (evaluate, predict, explain): where it
    runs, in what arithmetic, with which test-time augmentation and thresholds, on which files. The
    command receives them as one dict, `inference`, to pass on to the API function as keywords."""
    options = [
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps"),
        click.option("--runs-dir", default="runs", show_default=True, help="where run names are looked up"),
        click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
                     help="arithmetic: auto = bfloat16 where the CPU/GPU has it natively, else fp32"),
        click.option("--tta", type=click.Choice(["none", "flip"]),
                     help="test-time augmentation [default: what the model was trained with]"),
        click.option("--threshold", metavar="CLASS=P",
                     help="classifiers: answer CLASS whenever its probability is at least P (0-1), else the most "
                          "probable other class: a lower P finds more of CLASS for more false alarms (see "
                          "roc_curves.png from evaluate)"),
        click.option("--conf", type=click.FloatRange(0, 1),
                     help="detectors: keep boxes scoring at least this [default: the model's, 0.25]; mAP always "
                          "scores every box down to 0.001"),
        click.option("--iou", type=click.FloatRange(0, 1),
                     help="detectors: non-maximum suppression drops a box overlapping a better one of its class "
                          "by more than this IoU [default: the model's, 0.6]"),
        max_image_pixels_option,
    ]

    @functools.wraps(function)
    def command(**values: Any) -> Any:
        inference = {name: values.pop(name) for name in INFERENCE_OPTIONS}
        return function(inference=inference, **values)

    for option in reversed(options):
        command = option(command)
    return command
