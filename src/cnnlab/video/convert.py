"""Decoded frames → the arrays a run needs, converted by libswscale on the decoding thread.

Two things a frame may be turned into:

* the model's input (C×H×W uint8 at the model's size and channels), made straight from the decoded
  (YUV) frame by libswscale when the run squashes images to its size and the frame is at least as
  large: one pass that converts to grey or RGB and shrinks, bilinear with anti-aliasing as Pillow's,
  where the still-image path converts the whole frame to RGB, hands it to Pillow, converts to grey
  and resizes. Otherwise (`--fit crop`/`pad`, or a frame smaller than the input) it is fitted from
  the RGB picture by the still-image path itself (`cnnlab.data.images`), exactly as a PNG would be;
* the picture (H×W×3 uint8 RGB) that outputs draw on: only made when an output needs it (an annotated
  video, a window), or for the still-image path.

Each `FrameConverter` keeps its own `VideoReformatter`s: PyAV's `frame.to_ndarray(format=...)` builds
a new libswscale context for every frame, which cost 0.2 ms of CPU a 160×160 frame (more than decoding
it: 0.06 ms); a kept one is reused while the frames' size and format stay the same. A converter
belongs to one thread (the decoding one).

How close the model's input from libswscale is to the still-image path's, measured on the first 40
frames of three videos shrunk to 28×28 (mean / largest absolute difference, 0–255 levels): grey, the
generated 160×160 clip 0.06 / 20, vtest.avi (768×576) 1.4 / 15, Megamind.avi (720×528) 1.1 / 7, most of
it libswscale's grey (the luma, Y) against Pillow's (a weighted sum of the decoded R, G, B); RGB 0.05 /
20, 1.3 / 17, 0.9 / 7. tests/video/test_fitting.py holds the bands and the top-1 agreement.
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnlab.video.decode import Frame

# libswscale's flags for the model's input: bilinear, its filter widened when shrinking (as Pillow's);
# accurate rounding and full chroma resolution in and out, which bring RGB within a level or two of
# Pillow's resize of the full RGB frame (without them: 2.5 mean, 39 largest on Megamind.avi).
_MODEL_INPUT_SCALING = ("BILINEAR", "ACCURATE_RND", "FULL_CHR_H_INT", "FULL_CHR_H_INP")
# libswscale's own threads for one model input: PyAV asks for automatic (one per core), which hands
# each frame's few output lines to other threads (whose cores the model needs) and waits for them.
# One thread gives the same pixels for a quarter to a half of the CPU, 28×28 grey, ms a frame: a
# 160×160 frame 0.018–0.021 against 0.042–0.081, 768×576 0.072 against 0.117 (docs/video.md, "Speed").
_MODEL_INPUT_SWS_THREADS = 1
# ... and for the RGB picture (drawn on, or fitted by the still-image path): the same pixels for less
# CPU at every size measured, and no slower on the clock, ms a frame (CPU, load 4): 160×160 0.013
# against 0.037, 768×576 0.156 against 0.198, 720×528 0.127 against 0.174, 1280×720 0.314 against
# 0.324 (docs/video.md, "Speed").
_PICTURE_SWS_THREADS = 1


def _libswscale_threads(count: int) -> dict[str, int]:
    """`reformat`'s keyword for libswscale's threads: PyAV 17 made reformatting multithreaded by
    default and added it (PyAV's issue #2200: slower than one thread); before, libswscale ran on the
    calling thread and `reformat` had no such argument."""
    import av

    return {"threads": count} if int(av.__version__.split(".")[0]) >= 17 else {}


@dataclass(frozen=True)
class Fitting:
    """The model's input: `channels` (1 grey, 3 RGB) at `height`×`width`, images fitted by `fit`
    (`cnnlab.data.images.FITS`)."""

    channels: int
    height: int
    width: int
    fit: str = "squash"

    @classmethod
    def of(cls, spec: Any) -> "Fitting":
        """The fitting of a model's `InputSpec` (`trained.input`)."""
        return cls(spec.channels, spec.height, spec.width, getattr(spec, "fit", "squash"))

    def by_libswscale(self, width: int, height: int) -> bool:
        """Whether a `width`×`height` frame is fitted by libswscale (squashed and shrunk, or kept)."""
        return self.fit == "squash" and self.width <= width and self.height <= height

    def from_picture(self, picture: np.ndarray) -> np.ndarray:
        """The still-image path: an RGB picture (H, W, 3) → (C, H, W) uint8, as `cnnlab predict`
        fits a PNG."""
        from PIL import Image

        from cnnlab.data.images import image_to_array

        return image_to_array(Image.fromarray(picture), channels=self.channels,
                              size=(self.height, self.width), fit=self.fit)


class FrameConverter:
    """PyAV frames → `Frame`s carrying the model's input (given a `fitting`) and, with `pictures`,
    the RGB picture."""

    def __init__(self, fitting: Fitting | None = None, *, pictures: bool = True):
        from av.video.reformatter import Interpolation, VideoReformatter

        self.fitting, self.pictures = fitting, pictures
        self._for_pictures = VideoReformatter()
        self._for_model = VideoReformatter()
        self._scaling = functools.reduce(operator.or_,
                                         (getattr(Interpolation, flag) for flag in _MODEL_INPUT_SCALING))
        self._model_threads = _libswscale_threads(_MODEL_INPUT_SWS_THREADS)
        self._picture_threads = _libswscale_threads(_PICTURE_SWS_THREADS)

    def __call__(self, decoded: Any, index: int, time: float) -> Frame:
        width, height = decoded.width, decoded.height
        fitting = self.fitting
        picture = None
        if self.pictures or (fitting is not None and not fitting.by_libswscale(width, height)):
            # as frame.to_ndarray(format="rgb24") makes it, pixel for pixel, without a new context
            picture = self._for_pictures.reformat(decoded, format="rgb24", **self._picture_threads)
            picture = picture.to_ndarray()
        model_input = None
        if fitting is not None:
            model_input = (self._model_input(decoded, fitting) if fitting.by_libswscale(width, height)
                           else fitting.from_picture(picture))
        return Frame(index, time, picture if self.pictures else None, model_input, size=(width, height))

    def _model_input(self, decoded: Any, fitting: Fitting) -> np.ndarray:
        form = "gray" if fitting.channels == 1 else "rgb24"
        fitted = self._for_model.reformat(decoded, fitting.width, fitting.height, form,
                                          interpolation=self._scaling, **self._model_threads)
        pixels = fitted.to_ndarray()
        if fitting.channels == 1:
            return np.ascontiguousarray(pixels[None])  # (1, H, W)
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))
