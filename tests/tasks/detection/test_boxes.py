"""Box geometry: boxes follow their pixels through cnnlab's fits and its augmentation's affine."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from cnnlab.data.images import fit_image
from cnnlab.data.prepare import Geometry, _fit_tensor
from cnnlab.tasks.detection.boxes import (fit_boxes, fit_geometry, horizontal_flip_theta, move_boxes,
                                          pad_boxes, unpad)


def _edge(profile: np.ndarray, rising: bool) -> float:
    """Where a 0..255 profile crosses half height, by linear interpolation between pixel centres
    (pixel i's centre is at i + 0.5); the image border when the profile is bright there."""
    values = profile if rising else profile[::-1]
    first = int(np.argmax(values >= 127.5))
    if first == 0:
        position = 0.0
    else:
        before, after = float(values[first - 1]), float(values[first])
        position = first - 0.5 + (127.5 - before) / (after - before)
    return position if rising else len(profile) - position


def measured_box(pixels: np.ndarray) -> np.ndarray:
    """The extent (x1, y1, x2, y2) of the one bright rectangle in a 2-D image, to a fraction of a pixel."""
    columns, rows = pixels.max(axis=0), pixels.max(axis=1)
    return np.array([_edge(columns, True), _edge(rows, True), _edge(columns, False), _edge(rows, False)])


def rectangle_image(width: int, height: int, box: tuple[int, int, int, int]) -> np.ndarray:
    pixels = np.zeros((height, width), np.uint8)
    x1, y1, x2, y2 = box
    pixels[y1:y2, x1:x2] = 255
    return pixels


# --- move_boxes: by hand ------------------------------------------------------------------------------


def test_a_horizontal_flip_mirrors_x_about_the_image_width_and_keeps_padding_rows():
    targets = torch.tensor([[[3.0, 10, 20, 30, 40, 0], [1, 0, 0, 64, 8, 2], [-1, 5, 5, 9, 9, 0]]])
    moved = move_boxes(targets, horizontal_flip_theta(1), (48, 64))
    # x → 64 − x, and x1/x2 trade places; y, class and flag stay.
    expected = [[[3.0, 34, 20, 54, 40, 0], [1, 0, 0, 64, 8, 2], [-1, 0, 0, 0, 0, 0]]]
    torch.testing.assert_close(moved, torch.tensor(expected), atol=1e-5, rtol=0)


def test_a_zoom_with_a_shift_moves_a_box_as_worked_out_by_hand():
    # theta samples input x_n = 0.5·x_out_n + 0.25 (H = W = 64): the output shows the input's
    # region x 24..56 enlarged ×2. Input x 24 → output 0; 40 → 32. In y (shift −0.125): input
    # y_n = 0.5·y_out_n − 0.125, so 28 (y_n −0.125) → output y_n 0 → 32; 36 (0.125) → 0.5 → 48.
    theta = torch.tensor([[[0.5, 0.0, 0.25], [0.0, 0.5, -0.125]]])
    moved = move_boxes(torch.tensor([[[7.0, 24, 28, 40, 36, 0]]]), theta, (64, 64))
    assert moved[0, 0].tolist() == pytest.approx([7.0, 0, 32, 32, 48, 0])


def test_a_zoom_out_drops_boxes_that_become_too_small_and_keeps_flags():
    targets = torch.tensor([[[0.0, 40, 10, 60, 30, 0],
                             [2.0, 30, 40, 33, 60, 0],    # 3 px wide, 1.5 px after the zoom: dropped
                             [3.0, 30, 40, 50, 60, 1]]])  # a crowd box: moved, flag kept
    # x_in_n = 2·x_out_n + 1 is x_out = x_in / 2 in pixels (zoom ×0.5 towards the left edge);
    # y_in_n = 2·y_out_n is y_out = y_in / 2 + 16 (towards the middle). H = W = 64.
    theta = torch.tensor([[[2.0, 0.0, 1.0], [0.0, 2.0, 0.0]]])
    moved = move_boxes(targets, theta, (64, 64))
    expected = [[0.0, 20, 21, 30, 31, 0], [-1, 0, 0, 0, 0, 0], [3.0, 15, 36, 25, 46, 1]]
    torch.testing.assert_close(moved[0], torch.tensor(expected), atol=1e-5, rtol=0)
    assert move_boxes(targets, theta, (64, 64), min_size=1.0)[0, 1].tolist() == pytest.approx(
        [2.0, 15, 36, 16.5, 46, 0])


def test_visibility_decides_what_a_shift_out_of_the_image_keeps():
    targets = torch.tensor([[[0.0, 10, 10, 30, 30, 0], [1.0, 40, 10, 60, 30, 0]]])
    theta = torch.tensor([[[1.0, 0.0, -0.75], [0.0, 1.0, 0.0]]])  # content moves right by 24 px
    moved = move_boxes(targets, theta, (64, 64))
    assert moved[0, 0].tolist() == pytest.approx([0.0, 34, 10, 54, 30, 0])
    # 64..84: nothing left inside → dropped; and at 70% out (min_visible 0.3) the rule still keeps it
    assert moved[0, 1, 0] == -1
    kept = move_boxes(torch.tensor([[[1.0, 26, 10, 46, 30, 0]]]), theta, (64, 64))  # → 50..70, 70% in
    assert kept[0, 0].tolist() == pytest.approx([1.0, 50, 10, 64, 30, 0])
    dropped = move_boxes(torch.tensor([[[1.0, 36, 10, 56, 30, 0]]]), theta, (64, 64))  # → 60..80, 20% in
    assert dropped[0, 0, 0] == -1


# --- move_boxes: against the pixels grid_sample moves ---------------------------------------------


def _rotation(degrees: float, scale: float = 1.0) -> list[list[float]]:
    cos, sin = math.cos(math.radians(degrees)) * scale, math.sin(math.radians(degrees)) * scale
    return [[cos, -sin, 0.05], [sin, cos, -0.1]]


@pytest.mark.parametrize("theta, tolerance", [
    pytest.param([[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], 0.5, id="flip"),
    pytest.param([[0.8, 0.0, 0.1], [0.0, 0.8, -0.2]], 0.5, id="zoom-in-and-shift"),
    pytest.param([[1.25, 0.0, -0.15], [0.0, 1.25, 0.1]], 0.5, id="zoom-out-and-shift"),
    pytest.param([[-0.9, 0.0, 0.05], [0.0, 1.1, 0.0]], 0.5, id="flip-with-unequal-zooms"),
    pytest.param([[0.6, 0.0, 0.0], [0.0, 0.9, 0.0]], 0.5, id="resized-crop"),
    # Not used by the presets, handled all the same. A rotated rectangle's extent is the box
    # around its corners, but a corner is a point: its blurred tip stays under half height, so
    # the measured extent falls short by up to a pixel.
    pytest.param(_rotation(90.0), 0.5, id="rotate-90"),
    pytest.param(_rotation(25.0, 0.9), 1.0, id="rotate-25"),
])
def test_a_moved_box_matches_the_rectangle_grid_sample_moves(theta, tolerance):
    height, width, box = 60, 80, (22, 15, 50, 41)
    image = torch.from_numpy(rectangle_image(width, height, box)).float()[None, None]
    theta_tensor = torch.tensor([theta])
    grid = F.affine_grid(theta_tensor, [1, 1, height, width], align_corners=False)
    moved_pixels = F.grid_sample(image, grid, mode="bilinear", align_corners=False)[0, 0].numpy()
    targets = torch.tensor([[[0.0, *box, 0]]])
    moved_box = move_boxes(targets, theta_tensor, (height, width))[0, 0, 1:5].numpy()
    assert np.abs(measured_box(moved_pixels) - moved_box).max() <= tolerance


def test_move_boxes_runs_a_whole_batch_with_per_image_thetas():
    targets = torch.tensor([[[0.0, 10, 20, 30, 40, 0]], [[1.0, 10, 20, 30, 40, 0]]])
    theta = torch.cat([horizontal_flip_theta(1), torch.tensor([[[1.0, 0, 0], [0, 1, 0]]])])
    moved = move_boxes(targets, theta, (64, 64))
    assert moved[:, 0, 1].tolist() == [34.0, 10.0]


# --- fit_boxes: against both pixel paths ---------------------------------------------------------

FIT_CASES = [  # (origin width, height), box in it, model size (H, W)
    ((120, 80), (30, 10, 90, 70), (48, 48)),    # wide, shrunk
    ((50, 90), (5, 20, 45, 60), (64, 64)),      # tall, enlarged
    ((37, 23), (4, 3, 30, 20), (32, 48)),       # odd sizes, non-square output
    ((200, 60), (10, 5, 190, 55), (40, 40)),    # very wide: crop cuts the box
    ((64, 64), (8, 8, 40, 40), (64, 64)),       # already the right size
]


def _pillow_fitted(origin, box, size, fit) -> np.ndarray:
    pixels = rectangle_image(*origin, box)
    return np.asarray(fit_image(Image.fromarray(pixels, mode="L"), size, fit), dtype=np.float64)


def _torchvision_fitted(origin, box, size, fit) -> np.ndarray:
    pixels = torch.from_numpy(rectangle_image(*origin, box))[None, None]
    geometry = Geometry(channels=1, height=size[0], width=size[1], fit=fit)
    return _fit_tensor(pixels, geometry)[0, 0].numpy().astype(np.float64)


@pytest.mark.parametrize("fit", ["squash", "crop", "pad"])
@pytest.mark.parametrize("origin, box, size", FIT_CASES)
def test_a_fitted_box_matches_the_rectangle_the_file_path_fits(origin, box, size, fit):
    fitted = fit_boxes(np.array([box], np.float32), origin, size, fit, resampler="pillow")[0]
    # measured worst: 0.13 px (the resampling's blur of a 1-px-wide ramp); allowed 0.25
    assert np.abs(measured_box(_pillow_fitted(origin, box, size, fit)) - fitted).max() <= 0.25


@pytest.mark.parametrize("fit", ["squash", "crop", "pad"])
@pytest.mark.parametrize("origin, box, size", FIT_CASES)
def test_a_fitted_box_matches_the_rectangle_the_in_memory_path_fits(origin, box, size, fit):
    fitted = fit_boxes(np.array([box], np.float32), origin, size, fit, resampler="torchvision")[0]
    assert np.abs(measured_box(_torchvision_fitted(origin, box, size, fit)) - fitted).max() <= 0.25


def test_the_two_crop_paths_differ_by_under_a_pixel_and_the_others_agree():
    for origin, _, size in FIT_CASES:
        for fit in ("squash", "pad"):
            assert fit_geometry(origin, size, fit) == fit_geometry(origin, size, fit, resampler="torchvision")
    # (37, 23) → 32×48: Pillow scales by 48/37 = 1.297 and crops 1.85 px off the top, torchvision
    # resizes to 30×48 (rows 1.304) and crops 1 whole row less... each a fraction of a pixel apart.
    box = np.array([[4, 3, 30, 20]], np.float32)
    pillow = fit_boxes(box, (37, 23), (32, 48), "crop")
    torchvision = fit_boxes(box, (37, 23), (32, 48), "crop", resampler="torchvision")
    assert 0 < np.abs(pillow - torchvision).max() < 1.0


def test_fit_boxes_clips_what_crop_cuts_off():
    # 200×60 → 40×40 by crop keeps x 70..130 of the original (60 wide, scale 2/3)
    fitted = fit_boxes(np.array([[0, 0, 50, 60], [60, 0, 140, 60]], np.float32), (200, 60), (40, 40), "crop")
    np.testing.assert_allclose(fitted, [[0, 0, 0, 40], [0, 0, 40, 40]], atol=1e-5)


# --- padding ------------------------------------------------------------------------------------


def test_pad_and_unpad_round_trip_with_empty_images():
    items = [(np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.float32), np.array([4, 0]), np.array([0, 2])),
             (np.zeros((0, 4), np.float32), np.zeros(0, int), np.zeros(0, int)),
             (np.array([[0, 0, 9, 9]], np.float32), np.array([1]), np.array([1]))]
    targets = pad_boxes(items, max_objects=3)
    assert targets.shape == (3, 3, 6) and targets.dtype == torch.float32
    assert targets[1, :, 0].tolist() == [-1, -1, -1] and targets[2, 1:, 0].tolist() == [-1, -1]
    for (boxes, labels, flags), (want_boxes, want_labels, want_flags) in zip(unpad(targets), items):
        assert boxes.tolist() == want_boxes.tolist()
        assert labels.tolist() == want_labels.tolist() and flags.tolist() == want_flags.tolist()
    assert pad_boxes(items).shape == (3, 2, 6)  # M defaults to the most boxes an image has


def test_pad_boxes_refuses_to_cut_objects():
    with pytest.raises(ValueError, match="image 0 has 2 boxes, more than max_objects=1"):
        pad_boxes([(np.zeros((2, 4)), [0, 1], [0, 0])], max_objects=1)
