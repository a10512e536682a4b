"""Scaling and normalising pixels on the device, in one place.

The guide's preparation: values 0–255 are scaled to 0–1, then each channel is shifted and scaled
by the training data's mean and standard deviation so that inputs are centred near zero — which
keeps early gradients well-behaved. The mean/std are recorded in every checkpoint's sidecar, so
evaluation, prediction and deployment prepare images exactly as training did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from cnnlab.data.prepare import Geometry


@dataclass(frozen=True)
class InputSpec:
    """What a model expects: C×H×W images normalised with `mean` and `std` (per channel, 0–1 scale)."""

    channels: int
    height: int
    width: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    fit: str = "squash"  # how an image of another shape is fitted to H×W (`cnnlab.data.images.FITS`)

    @property
    def size(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    def to_json(self) -> dict:
        return {"channels": self.channels, "height": self.height, "width": self.width,
                "mean": list(self.mean), "std": list(self.std), "fit": self.fit}

    @classmethod
    def from_json(cls, values: dict) -> "InputSpec":
        # Runs saved before `fit` existed were all squashed.
        return cls(int(values["channels"]), int(values["height"]), int(values["width"]),
                   tuple(float(v) for v in values["mean"]), tuple(float(v) for v in values["std"]),
                   str(values.get("fit", "squash")))

    @property
    def geometry(self) -> "Geometry":
        """The shape files are decoded to for this model, and how they are fitted to it."""
        from cnnlab.data.prepare import Geometry

        return Geometry(self.channels, self.height, self.width, self.fit)

    def normalizer(self) -> "Normalizer":
        return Normalizer(self.mean, self.std)


class Normalizer(nn.Module):
    """uint8 (B, C, H, W) -> float32 ((x / 255) - mean) / std."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        # Folded into one multiply-add: x * scale + shift, with scale = 1/(255·std), shift = -mean/std.
        std_tensor = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        mean_tensor = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std_tensor), persistent=False)
        self.register_buffer("shift", -mean_tensor / std_tensor, persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        return torch.addcmul(self.shift, images.float(), self.scale)
