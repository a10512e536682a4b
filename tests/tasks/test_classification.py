"""Classification metrics agree with scikit-learn's reference implementations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as sk

from cnnlab.tasks.classification import Classification


@pytest.fixture
def scored():
    generator = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 7, (500,), generator=generator)
    outputs = torch.randn(500, 7, generator=generator)
    outputs[torch.arange(500), targets] += 1.5  # better than chance, not perfect
    outputs[:, 6] -= 10.0  # class 6 is never predicted: precision must be 0, not NaN
    task = Classification([f"c{i}" for i in range(7)])
    return task, outputs, targets, task.evaluate(outputs, targets)


def test_accuracy_loss_and_top5(scored):
    task, outputs, targets, metrics = scored
    predicted = outputs.argmax(1).numpy()
    assert metrics["accuracy"] == pytest.approx(sk.accuracy_score(targets, predicted))
    assert metrics["top5_accuracy"] == pytest.approx(sk.top_k_accuracy_score(targets, outputs.numpy(), k=5))
    probabilities = torch.softmax(outputs.double(), 1).numpy()
    assert metrics["loss"] == pytest.approx(sk.log_loss(targets, probabilities, labels=range(7)), rel=1e-5)


def test_confusion_matrix_and_per_class_scores(scored):
    task, outputs, targets, metrics = scored
    predicted = outputs.argmax(1).numpy()
    np.testing.assert_array_equal(metrics["confusion_matrix"]["matrix"],
                                  sk.confusion_matrix(targets, predicted, labels=range(7)))
    precision, recall, f1, support = sk.precision_recall_fscore_support(targets, predicted, labels=range(7),
                                                                        zero_division=0)
    for i in range(7):
        scores = metrics["per_class"][f"c{i}"]
        assert scores["precision"] == pytest.approx(precision[i])
        assert scores["recall"] == pytest.approx(recall[i])
        assert scores["f1"] == pytest.approx(f1[i])
        assert scores["support"] == support[i]
    assert metrics["per_class"]["c6"]["precision"] == 0.0
    for average in ("macro", "weighted"):
        p, r, f, _ = sk.precision_recall_fscore_support(targets, predicted, average=average, zero_division=0)
        assert metrics[f"{average}_avg"]["precision"] == pytest.approx(p)
        assert metrics[f"{average}_avg"]["recall"] == pytest.approx(r)
        assert metrics[f"{average}_avg"]["f1"] == pytest.approx(f)


def test_predictions_are_softmax_top_k():
    task = Classification(["cat", "dog", "fox"])
    rows = task.predictions(torch.tensor([[0.0, 2.0, 1.0]]), top_k=2)
    expected = torch.softmax(torch.tensor([0.0, 2.0, 1.0]), 0)
    assert rows[0]["label"] == "dog"
    assert rows[0]["confidence"] == pytest.approx(float(expected[1]))
    assert [entry["label"] for entry in rows[0]["top_k"]] == ["dog", "fox"]


def test_label_smoothing_changes_the_loss():
    outputs, targets = torch.tensor([[4.0, 0.0]]), torch.tensor([0])
    plain = Classification(["a", "b"]).loss(outputs, targets)
    smooth = Classification(["a", "b"], label_smoothing=0.2).loss(outputs, targets)
    # smoothed target is (0.9, 0.1): loss = -(0.9 log p0 + 0.1 log p1)
    log_p = torch.log_softmax(outputs, 1)[0]
    assert float(smooth) == pytest.approx(float(-(0.9 * log_p[0] + 0.1 * log_p[1])))
    assert float(smooth) > float(plain)


def test_json_round_trip():
    task = Classification(["x", "y"], label_smoothing=0.1)
    again = Classification.from_json(task.to_json())
    assert again.class_names == ["x", "y"] and again.label_smoothing == 0.1


def test_the_loss_is_described():
    assert Classification(["a", "b", "c"]).describe_loss() == "loss: cross-entropy of the softmax over 3 classes"
    smoothed = Classification(["a", "b"], label_smoothing=0.1).describe_loss()
    assert smoothed.endswith("label smoothing 0.1, so it cannot reach 0")
