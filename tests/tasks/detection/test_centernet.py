"""The head's tensor: encoded targets decode back to the boxes, the loss is finite and teaches, flips undo."""

from __future__ import annotations

import math

import pytest
import torch

from cnnlab.tasks.detection.boxes import horizontal_flip_theta, move_boxes, pad_boxes
from cnnlab.tasks.detection.centernet import (BOX_LOSS_WEIGHT, box_score, boxes_from_channels,
                                              channels_from_boxes, decode, detection_loss, encode, unflip)

STRIDE, CLASSES, SIZE = 4, 3, (96, 96)
OUT = (SIZE[0] // STRIDE, SIZE[1] // STRIDE)


def ideal_outputs(targets: torch.Tensor, num_classes: int = CLASSES, out_size=OUT) -> torch.Tensor:
    """What a perfect head would output: the heatmap's logits, and box channels that decode to
    each cell's encoded box (zeros where a cell has none)."""
    encoded = encode(targets, num_classes, out_size, STRIDE)
    heat = encoded.heatmap.clamp(1e-4, 1 - 1e-4)
    box_channels = channels_from_boxes(encoded.boxes, STRIDE) * (encoded.box_weights > 0)[:, None]
    return torch.cat([torch.log(heat / (1 - heat)), box_channels], 1)


SCENES = [
    # (class, x1, y1, x2, y2): sizes from 5 px to the whole image, at the borders, touching
    [(0, 10, 10, 30, 30), (0, 30, 10, 50, 30),          # same class, touching side by side
     (1, 30, 30, 50, 50), (2, 0, 70, 20, 96)],           # touching diagonally; at the bottom-left corner
    [(2, 0, 0, 96, 96), (1, 40, 40, 45, 46), (1, 60, 2, 94, 20)],  # whole image; tiny; wide, top-right
    [(0, 1.5, 3.25, 17.75, 60.5)],                       # fractional coordinates
    [],                                                   # an empty image
]


def scene_targets(scenes=SCENES) -> torch.Tensor:
    items = [([row[1:] for row in scene] or torch.zeros(0, 4), [row[0] for row in scene], [0] * len(scene))
             for scene in scenes]
    return pad_boxes(items, max_objects=5)


def test_ideal_outputs_decode_to_the_original_boxes():
    targets = scene_targets()
    decoded = decode(ideal_outputs(targets), CLASSES, STRIDE, conf=0.5)
    for scene, (boxes, scores, labels) in zip(SCENES, decoded):
        found = sorted(zip(labels.tolist(), boxes.tolist()))
        wanted = sorted((row[0], list(row[1:])) for row in scene)
        assert [label for label, _ in found] == [label for label, _ in wanted]
        for (_, box), (_, want) in zip(found, wanted):
            assert box == pytest.approx(want, abs=0.01)
        assert (scores > 0.99).all()


def test_encoding_puts_one_exact_peak_per_object_and_a_gaussian_around_it():
    targets = scene_targets([[(1, 8, 8, 40, 24)]])
    encoded = encode(targets, CLASSES, OUT, STRIDE)
    # centre (24, 16) px is cell column 6, row 4
    assert encoded.positive.nonzero().tolist() == [[0, 1, 4, 6]]
    heat = encoded.heatmap[0, 1]
    assert heat[4, 6] == 1.0 and heat.sum() > 1.0 and encoded.heatmap[0, [0, 2]].abs().sum() == 0
    # σ = 0.54/6 · (32, 16)/4 cells = (0.72, 0.36): one cell right is exp(−1/(2·0.72²))
    assert heat[4, 7].item() == pytest.approx(math.exp(-1 / (2 * 0.72**2)), rel=1e-5)
    assert heat[5, 6].item() == pytest.approx(math.exp(-1 / (2 * 0.36**2)), rel=1e-5)
    # boxes regressed from the centre area (β·(8, 4) cells / 2 = ±2.16, ±1.08: 5 × 3 cells)
    assert (encoded.box_weights[0] > 0).sum() == 15
    assert encoded.box_weights.sum().item() == pytest.approx(math.log1p(32 * 16), rel=1e-5)


def test_crowd_and_difficult_boxes_are_ignored_regions_not_positives():
    items = [([[10, 10, 50, 50], [60, 60, 90, 90]], [0, 2], [1, 2])]  # crowd, difficult
    targets = pad_boxes(items)
    encoded = encode(targets, CLASSES, OUT, STRIDE)
    assert encoded.num_objects == 0 and not encoded.positive.any() and encoded.box_weights.sum() == 0
    assert encoded.ignore[0, 0, 3, 3] and encoded.ignore[0, 2, 18, 18] and not encoded.ignore[0, 1].any()
    # firing inside the crowd box costs nothing; outside it, it does
    outputs = torch.full((1, CLASSES + 4, *OUT), -6.0)
    base, _ = detection_loss(outputs, targets, CLASSES, STRIDE)
    outputs[0, 0, 5, 5] = 4.0
    assert detection_loss(outputs, targets, CLASSES, STRIDE)[0] == pytest.approx(base.item())
    outputs[0, 1, 5, 5] = 4.0
    assert detection_loss(outputs, targets, CLASSES, STRIDE)[0] > base + 1


@pytest.mark.parametrize("targets", [
    pytest.param(torch.full((4, 3, 6), -1.0), id="padding-only"),
    pytest.param(torch.zeros(4, 0, 6), id="no-rows"),
    pytest.param(torch.tensor([[[0.0, 95.5, 95.5, 96, 96, 0], [1, 0, 0, 0.5, 0.5, 0]]]), id="half-pixel-corners"),
    pytest.param(torch.tensor([[[0.0, 20, 20, 20, 40, 0], [2, -10, -10, 106, 106, 0]]]), id="zero-width-and-beyond"),
])
def test_the_loss_is_finite_and_has_gradients_for_awkward_targets(targets):
    outputs = torch.randn(len(targets), CLASSES + 4, *OUT, requires_grad=True)
    total, parts = detection_loss(outputs, targets, CLASSES, STRIDE)
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(outputs.grad).all()
    assert total.item() == pytest.approx(parts["class"].item() + parts["box"].item(), rel=1e-5)


def test_an_all_background_batch_costs_what_its_false_alarms_cost():
    outputs = torch.full((2, CLASSES + 4, *OUT), -math.log(99.0))  # the head's initial 1% everywhere
    total, parts = detection_loss(outputs, torch.full((2, 1, 6), -1.0), CLASSES, STRIDE)
    # every cell: −p² log(1 − p) with p = 0.01, over 2·3·24·24 cells, divided by max(0 objects, 1)
    assert total.item() == pytest.approx(2 * 3 * 24 * 24 * 1e-4 * -math.log(0.99), rel=1e-4)
    assert parts["box"] == 0


def test_the_loss_is_computed_in_float32_under_bfloat16_autocast():
    targets = scene_targets()
    outputs = ideal_outputs(targets).bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, parts = detection_loss(outputs, targets, CLASSES, STRIDE)
    assert total.dtype == torch.float32 and torch.isfinite(total)
    reference, _ = detection_loss(outputs.detach().float(), targets, CLASSES, STRIDE)
    assert total.item() == pytest.approx(reference.item(), rel=1e-5)


def test_perfect_outputs_cost_least_and_the_box_loss_is_zero_for_them():
    targets = scene_targets()
    perfect = ideal_outputs(targets)
    _, parts = detection_loss(perfect, targets, CLASSES, STRIDE)
    assert parts["box"].item() == pytest.approx(0.0, abs=1e-4)
    shifted = perfect.clone()
    shifted[:, CLASSES] += 0.3  # every left side 35% further out
    assert detection_loss(shifted, targets, CLASSES, STRIDE)[1]["box"] > 0.05 * BOX_LOSS_WEIGHT


def test_a_few_optimisation_steps_on_the_outputs_lower_the_loss_and_find_the_boxes():
    targets = scene_targets()
    outputs = torch.zeros(len(targets), CLASSES + 4, *OUT)
    outputs[:, :CLASSES] = -math.log(99.0)
    outputs.requires_grad_()
    optimiser = torch.optim.Adam([outputs], lr=0.1)
    losses = []
    for _ in range(150):
        total, _ = detection_loss(outputs, targets, CLASSES, STRIDE)
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
        losses.append(total.item())
    assert losses[-1] < 0.1 * losses[0]
    for scene, (boxes, _, labels) in zip(SCENES, decode(outputs, CLASSES, STRIDE, conf=0.3)):
        assert sorted(labels.tolist()) == sorted(row[0] for row in scene)
        for box, label in zip(boxes.tolist(), labels.tolist()):
            best = max(_iou(box, row[1:]) for row in scene if row[0] == label)
            assert best > 0.8


def _iou(a, b) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_decode_applies_the_threshold_nms_and_the_cap():
    outputs = torch.full((2, 2 + 4, 8, 8), -9.0)
    outputs[:, 2:] = math.log(2.0)  # every cell sees the box 8 px around its centre
    outputs[0, 0, 2, 2], outputs[0, 0, 2, 4] = 2.0, 1.0    # two peaks of one class 8 px apart: IoU 1/3
    outputs[0, 1, 2, 4] = 0.5                              # another class at the same place: kept
    outputs[0, 0, 6, 6] = -2.0                             # below conf 0.25
    outputs[1, 1, 5, 5] = 1.0
    decoded = decode(outputs, 2, 4)
    assert [labels.tolist() for _, _, labels in decoded] == [[0, 0, 1], [1]]
    assert decode(outputs, 2, 4, iou=0.3)[0][2].tolist() == [0, 1]     # IoU 1/3 > 0.3: suppressed
    assert decode(outputs, 2, 4, max_detections=1)[0][2].tolist() == [0]
    assert decoded[0][0][0].tolist() == [2.0, 2.0, 18.0, 18.0]         # centre (10, 10) ± 8
    assert decoded[0][1].tolist() == pytest.approx([torch.sigmoid(torch.tensor(v)).item() for v in (2, 1, .5)])


# Centres off the cells' borders: a centre exactly on one (x = 20 = 5 cells) goes to the cell on its
# right in both the image and its mirror, so it is one cell off after unflipping.
OFF_BORDER_SCENES = [
    [(0, 11, 10, 31, 30), (0, 31, 10, 53, 30), (1, 30, 30, 51, 50), (2, 0, 70, 19, 96)],
    [(2, 0, 0, 94, 96), (1, 41, 40, 46, 46), (1, 61, 2, 94, 20)],
    [],
]


def test_unflip_maps_a_mirrored_images_outputs_back_onto_the_original():
    targets = scene_targets(OFF_BORDER_SCENES)
    flipped = move_boxes(targets, horizontal_flip_theta(len(targets)), SIZE)
    original, mirrored = ideal_outputs(targets), ideal_outputs(flipped)
    restored = unflip(mirrored)
    torch.testing.assert_close(restored[:, :CLASSES], original[:, :CLASSES])
    cells = encode(targets, CLASSES, OUT, STRIDE).box_weights > 0
    torch.testing.assert_close(restored[:, CLASSES:].permute(0, 2, 3, 1)[cells],
                               original[:, CLASSES:].permute(0, 2, 3, 1)[cells], atol=1e-5, rtol=1e-5)
    for (boxes, _, labels), (want_boxes, _, want_labels) in zip(decode(restored, CLASSES, STRIDE),
                                                                decode(original, CLASSES, STRIDE)):
        assert labels.tolist() == want_labels.tolist()
        torch.testing.assert_close(boxes, want_boxes, atol=1e-3, rtol=0)
    assert [len(labels) for _, _, labels in decode(restored, CLASSES, STRIDE)] == [4, 3, 0]


def test_box_channels_round_trip_through_boxes():
    channels = torch.randn(2, 4, 5, 6)
    torch.testing.assert_close(channels_from_boxes(boxes_from_channels(channels, 8), 8), channels,
                               atol=1e-5, rtol=1e-5)


def test_box_score_is_the_logit_of_the_cell_that_predicted_the_box_and_has_a_gradient():
    torch.manual_seed(0)  # the noise must be the same on every run
    targets = scene_targets()[:1]
    outputs = (ideal_outputs(targets) + 0.01 * torch.randn(1, CLASSES + 4, *OUT)).requires_grad_()
    boxes, _, labels = decode(outputs, CLASSES, STRIDE, conf=0.5)[0]
    score = box_score(outputs, boxes[2], int(labels[2]), STRIDE)
    score.backward()
    (image, channel, row, column), = outputs.grad.nonzero().tolist()
    assert channel == labels[2] and outputs.grad.sum() == 1.0
    assert score.item() == outputs[0, channel, row, column].item()
    # that cell is the one that decodes to the box
    cell_box = boxes_from_channels(outputs[:, CLASSES:].detach(), STRIDE)[0, :, row, column]
    assert cell_box.tolist() == pytest.approx(boxes[2].tolist(), abs=1e-4)
