"""Regression: standardised training targets, metrics in the data's units, checked against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as sk

from cnnlab.data.source import Source
from cnnlab.tasks.regression import Regression


def _task(targets: np.ndarray) -> Regression:
    source = Source("t", [str(i) for i in range(len(targets))], targets.astype(np.float32),
                    target_names=["angle", "size"], paths=[f"{i}.png" for i in range(len(targets))])
    return Regression.for_training(source)


def test_standardisation_round_trip():
    targets = np.array([[10.0, 1.0], [20.0, 3.0], [30.0, 5.0]])
    task = _task(targets)
    assert task.mean.tolist() == pytest.approx([20.0, 3.0])
    assert task.std.tolist() == pytest.approx([10.0, 2.0])
    standardised = (torch.tensor(targets, dtype=torch.float32) - task.mean) / task.std
    np.testing.assert_allclose(task.decode(standardised).numpy(), targets, rtol=1e-6)
    assert float(task.loss(standardised, torch.tensor(targets, dtype=torch.float32))) == pytest.approx(0.0, abs=1e-10)


def test_metrics_match_scikit_learn():
    rng = np.random.default_rng(0)
    true = rng.normal(size=(200, 2)) * [30.0, 2.0] + [5.0, 1.0]
    predicted = true + rng.normal(size=(200, 2)) * [5.0, 0.5]
    task = _task(true)
    outputs = (torch.tensor(predicted, dtype=torch.float32) - task.mean) / task.std
    metrics = task.evaluate(outputs, torch.tensor(true, dtype=torch.float32))
    for column, name in enumerate(["angle", "size"]):
        scores = metrics["per_target"][name]
        assert scores["mae"] == pytest.approx(sk.mean_absolute_error(true[:, column], predicted[:, column]), rel=1e-5)
        assert scores["rmse"] == pytest.approx(np.sqrt(sk.mean_squared_error(true[:, column], predicted[:, column])),
                                               rel=1e-5)
        assert scores["r2"] == pytest.approx(sk.r2_score(true[:, column], predicted[:, column]), rel=1e-4)
    assert metrics["mae"] == pytest.approx(sk.mean_absolute_error(true, predicted), rel=1e-5)
    assert metrics["r2"] == pytest.approx(sk.r2_score(true, predicted), rel=1e-4)


def test_predictions_are_in_data_units():
    task = Regression(["angle"], [10.0], [2.0])
    assert task.predictions(torch.tensor([[1.5]]))[0]["values"]["angle"] == pytest.approx(13.0)


def test_the_loss_is_described_on_its_own_scale():
    task = _task(np.array([[10.0, 1.0], [20.0, 3.0], [30.0, 5.0]]))
    line = task.describe_loss()
    assert "standardised" in line and "angle: mean 20, std 10" in line and "size: mean 3, std 2" in line
    # what the line promises: always predicting the mean scores 1.0 (per target, with the sample std)
    targets = torch.tensor([[10.0, 1.0], [20.0, 3.0], [30.0, 5.0]])
    assert float(task.loss(torch.zeros(3, 2), targets)) == pytest.approx(2 / 3)  # n-1 std: (n-1)/n
