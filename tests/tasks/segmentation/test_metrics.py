"""Segmentation scores against independent computations: IoU and Dice per class as scikit-learn's
jaccard_score and f1_score on the flattened labelled pixels, pixel accuracy and the boundary F-score by
hand with NumPy; the meter streams batch by batch to the same numbers; the losses ignore void."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, jaccard_score

from cnnlab.tasks.segmentation.losses import dice_loss, segmentation_loss
from cnnlab.tasks.segmentation.metrics import SegmentationMeter, boundary_counts

NAMES = ["background", "a", "b", "c"]


def _batch(seed: int, count: int = 4, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits whose argmax is the truth with some pixels changed, and truth with a void patch."""
    generator = torch.Generator().manual_seed(seed)
    truth = torch.randint(0, 4, (count, size // 4, size // 4), generator=generator)
    truth = truth.repeat_interleave(4, 1).repeat_interleave(4, 2)
    truth[:, :2, :3] = 255
    guess = torch.where(torch.rand(truth.shape, generator=generator) < 0.3,
                        torch.randint(0, 4, truth.shape, generator=generator), truth.clamp(max=3))
    logits = torch.nn.functional.one_hot(guess, 4).permute(0, 3, 1, 2).float() * 3
    return logits + 0.1 * torch.rand(logits.shape, generator=generator), truth


def test_iou_dice_and_accuracy_equal_scikit_learn_on_the_labelled_pixels():
    meter = SegmentationMeter(NAMES)
    batches = [_batch(seed) for seed in range(3)]
    for logits, truth in batches:
        meter.update(logits, truth)
    scores = meter.compute()
    predicted = torch.cat([logits.argmax(1).reshape(-1) for logits, _ in batches]).numpy()
    true = torch.cat([truth.reshape(-1) for _, truth in batches]).numpy()
    labelled = true != 255
    iou = jaccard_score(true[labelled], predicted[labelled], labels=range(4), average=None)
    dice = f1_score(true[labelled], predicted[labelled], labels=range(4), average=None)
    assert [scores["per_class"][name]["iou"] for name in NAMES] == pytest.approx(iou, abs=1e-12)
    assert [scores["per_class"][name]["dice"] for name in NAMES] == pytest.approx(dice, abs=1e-12)
    assert scores["miou"] == pytest.approx(iou.mean(), abs=1e-12)
    assert scores["pixel_accuracy"] == pytest.approx((true[labelled] == predicted[labelled]).mean(), abs=1e-12)
    assert scores["images"] == 12 and scores["pixels"] == labelled.sum()
    assert np.array_equal(np.array(scores["confusion_matrix"]["counts"]),
                          np.bincount(true[labelled] * 4 + predicted[labelled], minlength=16).reshape(4, 4))


def test_a_class_in_neither_mask_has_no_score_and_stays_out_of_the_mean():
    meter = SegmentationMeter(NAMES)
    truth = torch.zeros(1, 8, 8, dtype=torch.long)
    truth[0, 2:6, 2:6] = 1
    meter.update(torch.nn.functional.one_hot(truth, 4).permute(0, 3, 1, 2).float(), truth)
    scores = meter.compute()
    assert scores["per_class"]["b"]["iou"] is None and scores["per_class"]["c"]["dice"] is None
    assert scores["miou"] == 1.0 and scores["mean_boundary_f"] == 1.0


def _boundary_by_hand(mask: np.ndarray, value: int) -> np.ndarray:
    inside = mask == value
    padded = np.pad(inside, 1, mode="edge")
    neighbours = [padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]]
    return inside & ~np.logical_and.reduce(neighbours)


def test_the_boundary_f_score_matches_a_computation_by_hand():
    truth = np.zeros((20, 20), np.int64)
    truth[4:14, 5:15] = 1
    found = np.zeros((20, 20), np.int64)
    found[5:15, 5:17] = 1  # one row lower, two columns wider
    counts = boundary_counts(torch.from_numpy(found)[None], torch.from_numpy(truth)[None], 2, tolerance=1)
    for value in (0, 1):
        true_edge, found_edge = _boundary_by_hand(truth, value), _boundary_by_hand(found, value)

        def near(edge):  # any pixel of `edge` within the 3×3 window
            padded = np.pad(edge, 1)
            return np.logical_or.reduce([padded[dy:dy + 20, dx:dx + 20] for dy in range(3) for dx in range(3)])

        expected = [(found_edge & near(true_edge)).sum(), found_edge.sum(), (true_edge & near(found_edge)).sum(),
                    true_edge.sum()]
        assert counts[value].tolist() == expected
    meter = SegmentationMeter(["background", "square"])
    meter.update(torch.nn.functional.one_hot(torch.from_numpy(found), 2).permute(2, 0, 1)[None].float(),
                 torch.from_numpy(truth)[None])
    square = counts[1].double()
    precision, recall = square[0] / square[1], square[2] / square[3]
    assert meter.compute()["per_class"]["square"]["boundary_f"] == pytest.approx(
        float(2 * precision * recall / (precision + recall)))


def test_the_losses_ignore_void_pixels():
    logits, truth = _batch(5)
    other = logits.clone()
    other[:, :, :2, :3] = torch.randn(4, 4, 2, 3) * 10  # only the void patch changes
    for kind in ("ce", "dice", "ce+dice"):
        first, parts = segmentation_loss(logits, truth, kind)
        second, _ = segmentation_loss(other, truth, kind)
        assert float(first) == pytest.approx(float(second), abs=1e-6), kind
        assert set(parts) == ({"ce", "dice"} if kind == "ce+dice" else set())


def test_the_dice_loss_of_a_perfect_answer_is_near_zero_and_of_a_wrong_one_near_one():
    truth = torch.zeros(2, 8, 8, dtype=torch.long)
    truth[:, 2:6, 2:6] = 1
    perfect = torch.nn.functional.one_hot(truth, 2).permute(0, 3, 1, 2).float() * 50
    assert float(dice_loss(perfect, truth)) < 0.01
    assert float(dice_loss(-perfect, truth)) > 0.95
