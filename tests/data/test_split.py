"""Seeded, stratified selections."""

from __future__ import annotations

import numpy as np

from cnnlab.data.split import random_indices, stratified_indices


def test_stratified_split_keeps_each_class_share():
    labels = np.repeat(np.arange(3), [600, 300, 100])
    taken, rest = stratified_indices(labels, 0.1, seed=0)
    assert np.bincount(labels[taken]).tolist() == [60, 30, 10]
    assert len(np.intersect1d(taken, rest)) == 0 and len(taken) + len(rest) == 1000


def test_total_matches_the_fraction_with_uneven_classes():
    labels = np.repeat(np.arange(3), [7, 7, 7])
    taken, _ = stratified_indices(labels, 0.5, seed=1)
    assert len(taken) == 10 or len(taken) == 11  # round(10.5) with banker's rounding is 10
    assert set(np.bincount(labels[taken]).tolist()) <= {3, 4}


def test_same_seed_same_split_other_seed_other_split():
    labels = np.repeat(np.arange(10), 50)
    first, _ = stratified_indices(labels, 0.2, seed=7)
    again, _ = stratified_indices(labels, 0.2, seed=7)
    other, _ = stratified_indices(labels, 0.2, seed=8)
    assert first.tolist() == again.tolist()
    assert first.tolist() != other.tolist()


def test_random_split_for_regression():
    taken, rest = random_indices(100, 0.25, seed=0)
    assert len(taken) == 25 and len(rest) == 75
    assert sorted(np.concatenate([taken, rest]).tolist()) == list(range(100))
