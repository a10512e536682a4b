"""The PNG pictures the service answers with: an image as the model sees it, and Grad-CAM's overlay."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

MIN_SIDE = 224  # pictures are enlarged by a whole factor to at least this, pixels kept square


def png_bytes(pixels: np.ndarray) -> bytes:
    """uint8 (C, H, W) or (H, W, 3) as PNG bytes."""
    from PIL import Image

    if pixels.ndim == 3 and pixels.shape[0] in (1, 3):
        pixels = pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG")
    return buffer.getvalue()


def enlarged(pixels: np.ndarray) -> np.ndarray:
    """(C, H, W) repeated by a whole factor on both sides until the short side is at least MIN_SIDE:
    a 28×28 input stays readable, each of its pixels a square block."""
    factor = max(1, -(-MIN_SIDE // min(pixels.shape[-2:])))
    return pixels.repeat(factor, axis=-2).repeat(factor, axis=-1)


def as_model_sees_it(pixels: np.ndarray) -> bytes:
    """The model's input (its size, grey or colour), enlarged, as PNG."""
    return png_bytes(enlarged(pixels))


def grad_cam_overlay(pixels: np.ndarray, heatmap: np.ndarray) -> bytes:
    """The input in grey with Grad-CAM's heatmap (0–1, the input's H×W) over it in the "turbo"
    colours `cnnlab explain` uses, half transparent, enlarged, as PNG."""
    from matplotlib import colormaps

    grey = pixels[0] if pixels.shape[0] == 1 else np.rint(pixels.transpose(1, 2, 0) @ [0.299, 0.587, 0.114])
    colours = colormaps["turbo"](np.clip(heatmap, 0, 1))[..., :3] * 255.0
    blended = 0.5 * grey[..., None] + 0.5 * colours
    picture = np.clip(np.rint(blended), 0, 255).astype(np.uint8).transpose(2, 0, 1)
    return png_bytes(enlarged(picture))


def explain_picture(trained: Any, pixels: np.ndarray, choice: str | None) -> tuple[bytes, str]:
    """Grad-CAM for one image (uint8 C×H×W at the model's input) of the answer the task gives, or of
    `choice` (a class name or index): the overlay as PNG, and what it explains."""
    import torch

    from cnnlab.explain.gradcam import grad_cam

    images = torch.from_numpy(pixels)[None]
    explained = trained.task.explain_target(trained.outputs(images), choice)
    cam = grad_cam(trained.model, trained.normalizer()(images.to(trained.device)), explained.score)
    return grad_cam_overlay(pixels, cam.heatmap), explained.label
