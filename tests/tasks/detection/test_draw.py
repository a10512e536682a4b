"""Boxes drawn on images: where the lines and captions land, in which colours."""

from __future__ import annotations

import numpy as np
import torch

from cnnlab.tasks.detection.draw import PALETTE, draw_boxes


def grey(height: int, width: int, channels: int = 1, value: int = 128) -> np.ndarray:
    return np.full((channels, height, width), value, np.uint8)


def test_a_small_image_is_enlarged_by_a_whole_factor_and_its_boxes_with_it():
    picture = draw_boxes(grey(40, 64), torch.tensor([[8.0, 16, 24, 32]]), torch.tensor([2]), ["a", "b", "c"])
    assert picture.size == (448, 280) and picture.mode == "RGB"  # ×7: the short side 40 → 280 ≥ 256
    pixels = np.asarray(picture)
    # the box's left side, at x = 8·7 = 56, half-way down, in class 2's colour; inside it still grey
    assert tuple(pixels[170, 56]) == PALETTE[2]
    assert tuple(pixels[170, 100]) == (128, 128, 128)


def test_a_large_image_keeps_its_size_and_pixels_away_from_the_boxes():
    image = np.random.default_rng(0).integers(0, 256, (3, 300, 400), dtype=np.uint8)
    picture = np.asarray(draw_boxes(image, [[200, 150, 390, 290]], [0], ["cat"]))
    assert picture.shape == (300, 400, 3)
    assert (picture[:140, :190] == image.transpose(1, 2, 0)[:140, :190]).all()


def test_captions_sit_on_a_band_of_the_box_colour_above_the_box_and_name_the_score():
    def band_width(**options) -> int:
        picture = np.asarray(draw_boxes(grey(64, 64), [[16, 32, 48, 60]], [1], ["shoe", "bag"], **options))
        above = picture[96:126]  # the rows just above the box's top side (×4 → y = 128)
        return int((above == PALETTE[1]).all(axis=2).any(axis=0).sum())

    with_score, without = band_width(scores=[0.87]), band_width()
    assert 15 < without < with_score - 15  # "bag 0.87" is longer than "bag"
    picture = np.asarray(draw_boxes(grey(64, 64), [[16, 32, 48, 60]], [1], ["shoe", "bag"], scores=[0.87]))
    caption = picture[100:128, 64:192]
    assert (caption == 255).all(axis=2).any()  # white text on the band


def test_a_box_at_the_top_edge_has_its_caption_inside_it():
    picture = np.asarray(draw_boxes(grey(64, 64), [[0, 0, 40, 40]], [0], ["x"], scores=[0.5]))
    assert (picture[4:20, 4:40] == PALETTE[0]).all(axis=2).sum() > 50


def test_true_boxes_are_dashed_in_white_and_black():
    picture = np.asarray(draw_boxes(grey(64, 64), np.zeros((0, 4)), np.zeros(0, int), ["x"],
                                    true_boxes=[[8, 8, 56, 56]]))
    top_side = picture[32, 40:220]  # y = 8·4
    white = (top_side == 255).all(axis=1).sum()
    black = (top_side == 0).all(axis=1).sum()
    assert white > 40 and black > 40 and white + black == len(top_side)
    # and nothing else was drawn: no palette colours anywhere
    assert not any((picture == colour).all(axis=2).any() for colour in PALETTE)


def test_labels_without_a_name_are_shown_as_numbers_and_colours_can_be_chosen():
    picture = np.asarray(draw_boxes(grey(64, 64, 3), [[10, 30, 50, 60]], [7], ["only one"],
                                    colours=[(250, 0, 250)]))
    assert tuple(picture[180, 40]) == (250, 0, 250)  # left side x = 10·4, y 45·4
