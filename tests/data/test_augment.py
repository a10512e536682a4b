"""Batch augmentation: fresh parameters per image, identity at zero strength, reproducible by seed."""

from __future__ import annotations

import pytest
import torch

from cnnlab.data.augment import (BatchColorJitter, BatchRandomAffine, BatchRandomHorizontalFlip,
                                 BatchRandomResizedCrop, build_augmentation)
from cnnlab.errors import ConfigError


@pytest.fixture
def photos() -> torch.Tensor:
    from skimage.data import astronaut, chelsea, coffee
    from torchvision.transforms.v2 import functional as F

    images = [torch.from_numpy(p).permute(2, 0, 1) for p in (astronaut(), chelsea(), coffee())]
    return torch.stack([F.resize(i, [64, 64], antialias=True) for i in images]).float()


def test_zero_strength_affine_and_full_crop_are_the_identity(photos):
    # grid_sample interpolates in float32: identity up to ~1e-3 on a 0–255 scale
    torch.testing.assert_close(BatchRandomAffine(translate=0.0, scale=(1.0, 1.0))(photos), photos, atol=1e-3, rtol=0)
    torch.testing.assert_close(BatchRandomResizedCrop(scale=(1.0, 1.0), ratio=(1.0, 1.0))(photos), photos,
                               atol=1e-3, rtol=0)
    torch.testing.assert_close(BatchColorJitter(0.0, 0.0, 0.0)(photos), photos)


def test_each_image_gets_its_own_parameters():
    torch.manual_seed(0)
    same = torch.zeros(16, 1, 16, 16)
    same[:, :, 6:10, 6:10] = 255.0  # sixteen copies of one square
    shifted = BatchRandomAffine(translate=0.2, scale=(1.0, 1.0))(same)
    centres = [(image[0] > 127).nonzero().float().mean(0) for image in shifted]
    assert len({tuple(c.round().tolist()) for c in centres}) > 4


def test_flip_mirrors_exactly_the_chosen_images(photos):
    torch.manual_seed(1)
    flip = BatchRandomHorizontalFlip(p=0.5)
    params = flip.make_params([photos])
    flipped = flip.transform(photos, params)
    for image, out, chosen in zip(photos, flipped, params["flip"]):
        assert torch.equal(out, image.flip(-1) if chosen else image)


def test_crop_zooms_in_never_out(photos):
    torch.manual_seed(2)
    crop = BatchRandomResizedCrop(scale=(0.25, 0.25), ratio=(1.0, 1.0))
    theta = crop.make_params([photos])["theta"]
    assert torch.allclose(theta[:, 0, 0], torch.full((3,), 0.5)) and torch.allclose(theta[:, 1, 1], torch.full((3,), 0.5))
    assert (theta[:, :, 2].abs() <= 0.5 + 1e-6).all()  # the crop stays inside the image


def test_colour_jitter_stays_in_range_and_keeps_gray_gray():
    torch.manual_seed(3)
    gray = torch.full((8, 3, 4, 4), 100.0)
    out = BatchColorJitter(0.5, 0.5, 0.9)(gray)
    assert out.min() >= 0 and out.max() <= 255
    assert torch.allclose(out[:, 0], out[:, 1]) and torch.allclose(out[:, 1], out[:, 2])  # saturation of gray is 0


@pytest.mark.parametrize("preset", ["light", "standard"])
def test_presets_keep_shape_and_are_reproducible(preset, photos):
    augment = build_augmentation(preset)
    torch.manual_seed(4)
    first = augment(photos)
    torch.manual_seed(4)
    assert first.shape == photos.shape and torch.equal(first, augment(photos))
    assert not torch.equal(first, photos)


def test_none_and_unknown_presets():
    assert build_augmentation("none") is None
    with pytest.raises(ConfigError, match="--augment must be one of none, flip, light, standard"):
        build_augmentation("heavy")
