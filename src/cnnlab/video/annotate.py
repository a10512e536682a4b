"""What the annotated video and the --show window show: each frame with its prediction drawn on it,
at the frame's own size (the outputs of `cnnlab predict` and `cnnlab track` for video)."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from cnnlab.video.decode import Frame


def picture_of(task: Any, frame: Frame, row: dict[str, Any]) -> Any:
    """The frame with its prediction drawn as the task draws one (boxes), else captioned (a label)."""
    picture = task.draw(frame.image.transpose(2, 0, 1), row)
    return picture if picture is not None else captioned_frame(frame.image, task.caption(row))


def captioned_frame(image: np.ndarray, text: str) -> Any:
    """The frame (H, W, 3) at its own size, `text` in white on a black band across its top. Not the
    still pictures' caption (a copy enlarged to 256 pixels over a white band): a 160×160 video then
    became 320×338, four times the pixels to encode, and its font was loaded again for every frame."""
    from PIL import Image, ImageDraw

    picture = Image.fromarray(image)  # a copy: the frame itself is not drawn on
    font = label_font(max(10, round(min(picture.size) / 14)))
    draw = ImageDraw.Draw(picture)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(1, (bottom - top) // 4)
    draw.rectangle((0, 0, picture.width, bottom - top + 2 * pad), fill=(0, 0, 0))
    draw.text((pad - left, pad - top), text, fill=(255, 255, 255), font=font)
    return picture


@functools.lru_cache(maxsize=8)
def label_font(size: int) -> Any:
    """Pillow's own font at `size` pixels, loaded once per size (loading it took longer than drawing)."""
    from PIL import ImageFont

    return ImageFont.load_default(size=size)
