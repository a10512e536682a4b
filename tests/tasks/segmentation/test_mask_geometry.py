"""Masks go where their pixels go: fitted to the model's input as the image is (`--fit`), moved by
augmentation with it (flips pixel-exact), by nearest neighbour, so a mask only ever holds class
indices and void; and a predicted mask is mapped back to the file's own pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.data.augment import BatchAugmentation, BatchRandomAffine, BatchRandomHorizontalFlip
from cnnlab.data.images import fit_image
from cnnlab.tasks.segmentation.targets import fit_mask, move_masks
from cnnlab.tasks.segmentation.task import Segmentation, unfit_mask

LEVEL = 60  # an image whose pixels are class × LEVEL shows its own mask


def _blocks(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Classes 0-3 in 4×4 blocks: every block has an interior where bilinear sampling sees one class."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 4, (height // 4 + 1, width // 4 + 1))
    return np.kron(coarse, np.ones((4, 4), np.int64))[:height, :width].astype(np.uint8)


def _interior(mask: np.ndarray) -> np.ndarray:
    """Pixels whose 3×3 neighbourhood holds one class."""
    padded = np.pad(mask.astype(np.int64), 1, mode="edge")
    windows = np.stack([padded[dy:dy + mask.shape[0], dx:dx + mask.shape[1]] for dy in range(3) for dx in range(3)])
    return (windows == mask[None]).all(0)


def test_a_flip_mirrors_image_and_mask_pixel_exactly():
    torch.manual_seed(0)
    masks = torch.from_numpy(np.stack([_blocks(20, 28, seed) for seed in range(8)])).long()
    images = (masks * LEVEL).float().unsqueeze(1)
    augmentation = BatchAugmentation([BatchRandomHorizontalFlip()], Segmentation(["a", "b", "c", "d"]).move_targets)
    moved_images, moved_masks = augmentation.apply(images, masks)
    flipped = (moved_images[:, 0] != images[:, 0]).flatten(1).any(1)
    assert 0 < int(flipped.sum()) < 8  # some mirrored, some not
    for index in range(8):
        expected = masks[index].flip(-1) if flipped[index] else masks[index]
        assert torch.equal(moved_masks[index], expected)
        assert torch.equal(moved_images[index, 0], (expected * LEVEL).float())


def test_an_affine_moves_the_mask_with_the_pixels_by_nearest_neighbour():
    torch.manual_seed(1)
    masks = torch.from_numpy(np.stack([_blocks(32, 32, seed) for seed in range(6)])).long()
    images = (masks * LEVEL).float().unsqueeze(1)
    augmentation = BatchAugmentation([BatchRandomAffine(translate=0.15, scale=(0.8, 1.25))],
                                     Segmentation(["a", "b", "c", "d"]).move_targets)
    moved_images, moved_masks = augmentation.apply(images, masks)
    values = set(torch.unique(moved_masks).tolist())
    assert values <= {0, 1, 2, 3, 255} and 255 in values  # class indices only; shifted-in borders are void
    for image, mask in zip(moved_images[:, 0].numpy(), moved_masks.numpy()):
        inside = (mask != 255) & _interior(mask)
        inside[[0, -1], :] = inside[:, [0, -1]] = False  # at the edge, bilinear also reads the zeros outside
        agree = np.abs(image[inside] - mask[inside] * LEVEL) < 1.0
        assert agree.mean() > 0.97  # where one class surrounds a pixel, the image shows that class there
        outside = mask == 255
        assert (image[outside] < LEVEL * 3).all() or not outside.any()  # sampled from outside: zeros nearby


def test_move_masks_keeps_void_and_maps_pixel_centres():
    masks = torch.tensor([[[0, 1, 255, 3]]])
    shift = torch.tensor([[[1.0, 0, 0.5], [0, 1, 0]]])  # the output reads one pixel to the right
    assert move_masks(masks, shift, (1, 4)).tolist() == [[[1, 255, 3, 255]]]


@pytest.mark.parametrize("fit", ["squash", "crop", "pad"])
def test_a_mask_is_fitted_as_its_image_is(fit):
    mask = _blocks(30, 45)
    image = Image.fromarray(mask * LEVEL)
    fitted_image = np.asarray(fit_image(image, (24, 24), fit)).astype(np.int64)
    fitted = fit_mask(mask, (24, 24), fit)
    assert fitted.shape == (24, 24) and set(np.unique(fitted)) <= {0, 1, 2, 3, 255}
    labelled = fitted != 255
    inside = labelled & _interior(fitted)
    assert (np.abs(fitted_image[inside] - fitted[inside].astype(np.int64) * LEVEL) <= 2).mean() > 0.95
    if fit == "pad":  # the black borders are void, the image inside them labelled
        assert (~labelled).sum() == (24 - 16) * 24 and (fitted_image[~labelled] == 0).all()
    else:
        assert labelled.all()


@pytest.mark.parametrize("fit", ["squash", "pad"])
def test_a_predicted_mask_goes_back_to_the_files_pixels(fit):
    mask = _blocks(30, 45)
    back = unfit_mask(fit_mask(mask, (24, 24), fit), (45, 30), fit)
    assert back.shape == mask.shape
    assert (back == mask)[_interior(mask)].mean() > 0.9  # blocks survive the round trip at 24 px


def test_what_crop_cut_off_comes_back_void():
    mask = _blocks(30, 60)
    back = unfit_mask(fit_mask(mask, (30, 30), "crop"), (60, 30), "crop")
    assert (back[:, :15] == 255).all() and (back[:, 45:] == 255).all()
    assert np.array_equal(back[:, 15:45], mask[:, 15:45])
