"""Seeded, stratified selections: a validation split and a `--limit` subset.

Stratified means each class keeps its share: hold out 10% of a dataset with 6,000 images per
class and every class gives 600. Both functions are deterministic for a given seed, so a
resumed or repeated run sees exactly the same images.
"""

from __future__ import annotations

import numpy as np


def _per_class_counts(class_sizes: np.ndarray, fraction: float) -> np.ndarray:
    """How many of each class to take so the total is round(fraction * N) (largest remainders)."""
    exact = class_sizes * fraction
    counts = np.floor(exact).astype(np.int64)
    shortfall = int(round(fraction * class_sizes.sum())) - int(counts.sum())
    if shortfall > 0:
        order = np.argsort(-(exact - counts), kind="stable")
        counts[order[:shortfall]] += 1
    return np.minimum(counts, class_sizes)


def stratified_indices(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (taken, rest), taking `fraction` of every class.

    >>> taken, rest = stratified_indices(np.array([0] * 8 + [1] * 2), 0.5, seed=0)
    >>> sorted(np.bincount(np.array([0] * 8 + [1] * 2)[taken]))
    [1, 4]
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    classes, inverse = np.unique(labels, return_inverse=True)
    counts = _per_class_counts(np.bincount(inverse, minlength=len(classes)), fraction)
    taken = []
    for class_index, count in enumerate(counts):
        members = np.flatnonzero(inverse == class_index)
        taken.append(rng.permutation(members)[:count])
    taken_indices = np.sort(np.concatenate(taken)) if taken else np.array([], dtype=np.int64)
    rest = np.setdiff1d(np.arange(len(labels)), taken_indices, assume_unique=True)
    return taken_indices, rest


def random_indices(count: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split range(count) into (taken, rest) at random: for regression targets, which have no classes."""
    order = np.random.default_rng(seed).permutation(count)
    cut = int(round(fraction * count))
    return np.sort(order[:cut]), np.sort(order[cut:])


def split_indices(targets: np.ndarray, fraction: float, seed: int, *, stratify: bool) -> tuple[np.ndarray, np.ndarray]:
    if stratify:
        return stratified_indices(targets, fraction, seed)
    return random_indices(len(targets), fraction, seed)
