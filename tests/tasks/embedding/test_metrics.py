"""Verification and identification metrics against brute-force NumPy: every threshold tried in a loop."""

from __future__ import annotations

import numpy as np
import pytest

from cnnlab.tasks.embedding.metrics import (equal_error_rate, identification_ranks, roc_curve, tar_at_far,
                                            ten_fold_accuracy, verification_metrics)


def _pairs(seed: int, count: int = 250, ties: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    same = rng.random(count) < 0.4
    scores = rng.normal(0.6 * same, 0.35)
    return (np.round(scores, 2) if ties else scores), same  # rounding makes ties, as cosines of near-copies do


def _brute_roc(scores, same):
    """(far, tar, threshold) for every threshold: +inf, then each distinct score, falling."""
    points = []
    for threshold in [np.inf, *sorted(set(scores.tolist()), reverse=True)]:
        accepted = [score >= threshold for score in scores]
        tar = sum(a for a, s in zip(accepted, same) if s) / sum(same)
        far = sum(a for a, s in zip(accepted, same) if not s) / sum(not s for s in same)
        points.append((far, tar, threshold))
    return points


def _brute_tar_at(points, far):
    for (far0, tar0, t0), (far1, tar1, t1) in zip(points, points[1:]):
        if far0 <= far < far1:
            if np.isinf(t0):
                t0 = np.nextafter(t1 if far0 == far1 else points[1][2], np.inf)
            step = (far - far0) / (far1 - far0)
            return tar0 + step * (tar1 - tar0), t0 + step * (t1 - t0)
    return points[-1][1], points[-1][2]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_tar_at_far_and_eer_equal_brute_force(seed):
    scores, same = _pairs(seed)
    points = _brute_roc(scores, same)
    roc = roc_curve(scores, same)
    np.testing.assert_allclose(roc.far, [p[0] for p in points])
    np.testing.assert_allclose(roc.tar, [p[1] for p in points])
    np.testing.assert_allclose(roc.thresholds[1:], [p[2] for p in points[1:]])
    for far in (1e-2, 1e-3, 0.05, 0.3):
        expected_tar, expected_threshold = _brute_tar_at(points, far)
        tar, threshold = tar_at_far(roc, far)
        assert tar == pytest.approx(expected_tar, abs=1e-12)
        assert threshold == pytest.approx(expected_threshold, abs=1e-9)
    # EER: the FAR where FAR = 1 − TAR along the polyline, found by bisection on it
    eer, threshold = equal_error_rate(roc)
    low, high = 0.0, 1.0
    for _ in range(60):
        middle = (low + high) / 2
        tar, _ = _brute_tar_at(points, middle)
        low, high = (middle, high) if middle < 1 - tar else (low, middle)
    assert eer == pytest.approx(low, abs=1e-6)
    accepted = scores >= threshold
    assert accepted[~same].mean() == pytest.approx(eer, abs=0.02)  # the interpolated threshold sits in between


def test_the_threshold_at_a_far_accepts_that_share_of_impostors():
    scores, same = _pairs(3, count=20000, ties=False)
    metrics = verification_metrics(scores, same)
    for key, far in (("1e-2", 1e-2), ("1e-3", 1e-3)):
        accepted = scores[~same] >= metrics[f"threshold_at_far_{key}"]
        assert abs(accepted.mean() - far) <= 1.5 / (~same).sum()  # within one impostor of the rate asked for
        assert (scores[same] >= metrics[f"threshold_at_far_{key}"]).mean() == pytest.approx(
            metrics[f"tar_at_far_{key}"], abs=2 / same.sum())


@pytest.mark.parametrize("seed", [0, 4])
def test_ten_fold_accuracy_equals_brute_force(seed):
    scores, same = _pairs(seed, count=230)
    folds = np.array_split(np.arange(len(scores)), 10)
    expected = []
    for held_out in folds:
        rest = np.setdiff1d(np.arange(len(scores)), held_out)
        distinct = sorted(set(scores[rest].tolist()))
        candidates = [distinct[0] - 1.0] + [(a + b) / 2 for a, b in zip(distinct, distinct[1:])] + [distinct[-1] + 1.0]
        best, best_right = None, -1
        for candidate in candidates:  # ascending: the lowest of the most accurate wins
            right = int(((scores[rest] >= candidate) == same[rest]).sum())
            if right > best_right:
                best, best_right = candidate, right
        expected.append(np.mean([(scores[i] >= best) == same[i] for i in held_out]))
    result = ten_fold_accuracy(scores, same)
    np.testing.assert_allclose(result["folds"], expected)
    assert result["mean"] == pytest.approx(np.mean(expected))


def test_rank_k_identification_equals_brute_force():
    rng = np.random.default_rng(5)
    gallery_identities = np.array([0, 1, 1, 2, 3, 4, 5, 6, 6, 7])
    probe_identities = rng.integers(0, 8, size=50)
    similarity = np.round(rng.normal(size=(50, 10)), 1)
    expected = {1: 0, 5: 0}
    for probe in range(50):
        best = {}
        for column, identity in enumerate(gallery_identities):
            best[identity] = max(best.get(identity, -np.inf), similarity[probe, column])
        rank = 1 + sum(score > best[probe_identities[probe]] for score in best.values())
        for k in expected:
            expected[k] += rank <= k
    ranks = identification_ranks(similarity, probe_identities, gallery_identities)
    assert ranks == {"rank_1": expected[1] / 50, "rank_5": expected[5] / 50}
