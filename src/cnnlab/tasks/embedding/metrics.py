"""Verification and identification metrics, as face recognition reports them (NumPy only, no torch).

A pair of images is scored by the cosine similarity of their embeddings; it is *accepted* ("same
identity") when the score is at least a threshold. Over genuine pairs (same identity) and impostor
pairs (different identities):

    TAR  true accept rate: the share of genuine pairs accepted
    FAR  false accept rate: the share of impostor pairs accepted
    ROC  TAR against FAR as the threshold falls from above every score to below every score
    EER  the equal error rate: where FAR equals the false reject rate 1 − TAR

`tar_at_far` reads the ROC as a polyline (linear between its corners, as scikit-learn's `roc_curve`
points are usually plotted) and interpolates both the TAR and the threshold at the FAR asked for, so
a FAR between two corners gets a threshold between theirs rather than the nearest corner's.

The 10-fold protocol (LFW's): the pairs are cut into 10 folds in their order; for each fold the
threshold that is most accurate on the other 9 is measured on it; the mean and spread over the 10.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Roc:
    """The ROC's corners, threshold falling: point 0 accepts nothing (threshold above every score),
    point k accepts every pair scoring at least `thresholds[k]`."""

    far: np.ndarray
    tar: np.ndarray
    thresholds: np.ndarray


def roc_curve(scores: np.ndarray, same: np.ndarray) -> Roc:
    """The ROC of pair `scores` (higher = more alike) against `same` (True for a genuine pair)."""
    scores, same = np.asarray(scores, dtype=np.float64), np.asarray(same, dtype=bool)
    _check_pairs(scores, same)
    order = np.argsort(-scores, kind="stable")
    ranked, genuine = scores[order], same[order]
    accepted_genuine = np.cumsum(genuine)
    accepted_impostor = np.cumsum(~genuine)
    # One corner per distinct score: the last pair of each run of equal scores.
    last = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True])
    top = np.nextafter(ranked[0], np.inf)  # accepts nothing
    return Roc(far=np.r_[0.0, accepted_impostor[last] / (~same).sum()],
               tar=np.r_[0.0, accepted_genuine[last] / same.sum()],
               thresholds=np.r_[top, ranked[last]])


def _check_pairs(scores: np.ndarray, same: np.ndarray) -> None:
    if scores.shape != same.shape or scores.ndim != 1:
        raise ValueError(f"scores and same must be 1-D of one length (got {scores.shape} and {same.shape})")
    if not same.any() or same.all():
        raise ValueError("verification needs genuine and impostor pairs (same identity and different ones)")


def tar_at_far(roc: Roc, far: float) -> tuple[float, float]:
    """(TAR, threshold) at the false accept rate `far`, both interpolated along the ROC's segment
    that `far` falls on (the last corner at or below it and the next one)."""
    below = int(np.searchsorted(roc.far, far, side="right")) - 1
    if below >= len(roc.far) - 1:
        return float(roc.tar[-1]), float(roc.thresholds[-1])
    step = (far - roc.far[below]) / (roc.far[below + 1] - roc.far[below])
    tar = roc.tar[below] + step * (roc.tar[below + 1] - roc.tar[below])
    threshold = roc.thresholds[below] + step * (roc.thresholds[below + 1] - roc.thresholds[below])
    return float(tar), float(threshold)


def equal_error_rate(roc: Roc) -> tuple[float, float]:
    """(EER, its threshold): where FAR = 1 − TAR, interpolated on the segment that crosses it."""
    gap = roc.far - (1.0 - roc.tar)  # −1 at the first corner, +1 at the last; rises along the curve
    after = int(np.argmax(gap >= 0))
    if after == 0:
        return float(roc.far[0]), float(roc.thresholds[0])
    before = after - 1
    step = -gap[before] / (gap[after] - gap[before])
    eer = roc.far[before] + step * (roc.far[after] - roc.far[before])
    threshold = roc.thresholds[before] + step * (roc.thresholds[after] - roc.thresholds[before])
    return float(eer), float(threshold)


def best_accuracy_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The threshold that classifies the most pairs right (accept when score ≥ it): among the midpoints
    between consecutive distinct scores and the two ends, the lowest of the most accurate."""
    distinct = np.unique(scores)
    candidates = np.r_[distinct[0] - 1.0, (distinct[1:] + distinct[:-1]) / 2, distinct[-1] + 1.0]
    # Accepted = scores ≥ candidate; right = genuine accepted + impostors rejected.
    genuine_sorted = np.sort(scores[same])
    impostor_sorted = np.sort(scores[~same])
    genuine_accepted = len(genuine_sorted) - np.searchsorted(genuine_sorted, candidates, side="left")
    impostor_rejected = np.searchsorted(impostor_sorted, candidates, side="left")
    right = genuine_accepted + impostor_rejected
    return float(candidates[int(np.argmax(right))])


def ten_fold_accuracy(scores: np.ndarray, same: np.ndarray, folds: int = 10) -> dict[str, Any]:
    """LFW's protocol: per fold (the pairs in order, cut into `folds` nearly equal parts), the accuracy
    at the threshold most accurate on the other folds."""
    scores, same = np.asarray(scores, dtype=np.float64), np.asarray(same, dtype=bool)
    parts = np.array_split(np.arange(len(scores)), folds)
    accuracies, thresholds = [], []
    for held_out in parts:
        rest = np.ones(len(scores), dtype=bool)
        rest[held_out] = False
        threshold = best_accuracy_threshold(scores[rest], same[rest])
        accuracies.append(float(((scores[held_out] >= threshold) == same[held_out]).mean()))
        thresholds.append(threshold)
    return {"mean": float(np.mean(accuracies)), "std": float(np.std(accuracies)), "folds": accuracies,
            "thresholds": thresholds}


def at_threshold(scores: np.ndarray, same: np.ndarray, threshold: float) -> dict[str, float]:
    """TAR, FAR and accuracy of the decision `score ≥ threshold`."""
    scores, same = np.asarray(scores, dtype=np.float64), np.asarray(same, dtype=bool)
    accepted = scores >= threshold
    return {"threshold": float(threshold), "tar": float(accepted[same].mean()),
            "far": float(accepted[~same].mean()), "accuracy": float((accepted == same).mean())}


FARS = (1e-2, 1e-3)  # the operating points reported everywhere


def far_key(far: float) -> str:
    """"1e-2" for 0.01: the name of an operating point in metrics.json."""
    mantissa, exponent = f"{far:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def verification_metrics(scores: np.ndarray, same: np.ndarray, *, fars: tuple[float, ...] = FARS,
                         threshold: float | None = None) -> dict[str, Any]:
    """TAR and the interpolated threshold at each FAR, the EER, ROC AUC and 10-fold accuracy of these
    pairs; with `threshold` (the model's own), what it decides on them."""
    roc = roc_curve(scores, same)
    metrics: dict[str, Any] = {"pairs": int(len(scores)), "genuine_pairs": int(np.sum(same)),
                               "impostor_pairs": int(len(scores) - np.sum(same))}
    for far in fars:
        tar, at = tar_at_far(roc, far)
        metrics[f"tar_at_far_{far_key(far)}"] = tar
        metrics[f"threshold_at_far_{far_key(far)}"] = at
    metrics["eer"], metrics["eer_threshold"] = equal_error_rate(roc)
    metrics["roc_auc"] = float(np.trapezoid(roc.tar, roc.far))
    metrics["ten_fold_accuracy"] = ten_fold_accuracy(scores, same)
    if threshold is not None:
        metrics["at_model_threshold"] = at_threshold(scores, same, threshold)
    return metrics


def identification_ranks(similarity: np.ndarray, probe_identities: np.ndarray, gallery_identities: np.ndarray,
                         ranks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Rank-k identification rates: the share of probes whose identity is among the k gallery identities
    most similar to them (an identity scores its best gallery vector). `similarity`: probes × gallery."""
    identities = np.unique(gallery_identities)
    # (probes, identities): each identity's best score
    best = np.stack([similarity[:, gallery_identities == identity].max(axis=1) for identity in identities], axis=1)
    true_score = best[np.arange(len(best)), np.searchsorted(identities, probe_identities)]
    # the rank of the true identity: 1 + identities strictly better (ties count in the probe's favour)
    rank = 1 + (best > true_score[:, None]).sum(axis=1)
    return {f"rank_{k}": float((rank <= k).mean()) for k in ranks}
