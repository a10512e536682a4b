"""ROC and precision-recall curves, ROC AUC and average precision: agreement with scikit-learn,
the model's own operating points, and what `evaluate` and `report` write with them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

import cnnlab
from cnnlab.tasks.class_metrics import confusion_matrix, operating_points
from cnnlab.tasks.classification import Classification
from cnnlab.tasks.ranking import ranking_curve, ranking_metrics


def test_roc_auc_and_average_precision_agree_with_scikit_learn_including_ties():
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(300):
        count = int(rng.integers(2, 80))
        positive = rng.random(count) < rng.random()
        scores = np.round(rng.random(count), int(rng.integers(1, 3)))  # 10 or 100 levels: many ties
        curve = ranking_curve(scores, positive)
        if positive.all() or not positive.any():
            assert curve.roc_auc() is None and curve.average_precision() is None
            continue
        assert curve.roc_auc() == pytest.approx(roc_auc_score(positive, scores), abs=1e-12)
        assert curve.average_precision() == pytest.approx(average_precision_score(positive, scores), abs=1e-12)
        false_rate, true_rate, _ = roc_curve(positive, scores, drop_intermediate=False)
        ours = curve.roc()
        np.testing.assert_allclose(ours[0], false_rate)
        np.testing.assert_allclose(ours[1], true_rate)
        precision, recall, _ = precision_recall_curve(positive, scores)
        ours_recall, ours_precision = curve.precision_recall()
        kept = len(ours_recall)  # ours stops at the first threshold that finds every positive
        np.testing.assert_allclose(ours_recall, recall[::-1][1:kept + 1])
        np.testing.assert_allclose(ours_precision, precision[::-1][1:kept + 1])
        assert ours_recall[-1] == 1.0
        checked += 1
    assert checked > 200


def test_a_perfect_a_reversed_and_a_useless_ranking():
    truth = np.array([0, 0, 1, 1], dtype=bool)
    assert ranking_curve(np.array([0.1, 0.2, 0.8, 0.9]), truth).roc_auc() == 1.0
    assert ranking_curve(np.array([0.9, 0.8, 0.2, 0.1]), truth).roc_auc() == 0.0
    assert ranking_curve(np.full(4, 0.5), truth).roc_auc() == 0.5  # all tied: one threshold, the diagonal


def test_classes_missing_from_the_evaluation_have_no_auc_and_are_left_out_of_the_mean():
    curves = {"a": ranking_curve(np.array([0.9, 0.1, 0.2]), np.array([1, 0, 0], bool)),
              "b": ranking_curve(np.array([0.1, 0.9, 0.8]), np.array([0, 1, 1], bool)),
              "c": ranking_curve(np.array([0.0, 0.0, 0.0]), np.array([0, 0, 0], bool))}
    metrics = ranking_metrics(curves)
    assert metrics["roc_auc"]["per_class"] == {"a": 1.0, "b": 1.0, "c": None}
    assert metrics["roc_auc"]["macro"] == 1.0


def test_classification_metrics_carry_one_vs_rest_auc_and_the_operating_points_match_recall():
    torch.manual_seed(0)
    targets = torch.randint(0, 3, (300,))
    outputs = torch.randn(300, 3) + 2.0 * torch.nn.functional.one_hot(targets, 3)  # informative, not perfect
    task = Classification(["cat", "dog", "fox"])
    metrics = task.evaluate(outputs, targets)
    probabilities = torch.softmax(outputs, 1).numpy()
    for index, name in enumerate(["cat", "dog", "fox"]):
        expected = roc_auc_score(targets.numpy() == index, probabilities[:, index])
        assert metrics["roc_auc"]["per_class"][name] == pytest.approx(expected, abs=1e-12)
    assert metrics["roc_auc"]["macro"] == pytest.approx(
        roc_auc_score(targets.numpy(), probabilities, multi_class="ovr", average="macro"), abs=1e-12)
    matrix = confusion_matrix(targets, outputs.argmax(1), 3).tolist()
    for name, (false_rate, true_rate, precision) in operating_points(matrix, task.class_names).items():
        assert true_rate == pytest.approx(metrics["per_class"][name]["recall"])
        assert precision == pytest.approx(metrics["per_class"][name]["precision"])
        index = task.class_names.index(name)
        predicted_here, truly_here = outputs.argmax(1) == index, targets == index
        assert false_rate == pytest.approx(float((predicted_here & ~truly_here).sum() / (~truly_here).sum()))


def test_evaluate_writes_the_curves_and_the_report_shows_them(digits_split_folder, tmp_path):
    result = cnnlab.train(data=str(digits_split_folder), model="fast-cnn-v2", image_size="16", epochs=2,
                          runs_dir=str(tmp_path), quiet=True, device="cpu")
    evaluation = cnnlab.evaluate(result.run_dir, quiet=True, device="cpu")
    saved = json.loads((evaluation.output_dir / "metrics.json").read_text())
    assert 0.9 < saved["roc_auc"]["macro"] <= 1.0 and set(saved["roc_auc"]["per_class"]) == set("0123456789")
    assert 0.8 < saved["average_precision"]["macro"] <= 1.0
    assert f"ROC AUC {saved['roc_auc']['macro']:.4f} on 359 images" in evaluation.summary
    from PIL import Image

    with Image.open(evaluation.output_dir / "roc_curves.png") as picture:
        assert picture.width > 2 * picture.height * 0.9  # two panels side by side

    from cnnlab.report.report import report

    html = report(result.run_dir, device="cpu", quiet=True).read_text()
    assert "<th>ROC AUC</th>" in html and "ROC and precision-recall curves" in html


def test_an_evaluation_of_one_class_has_no_auc_and_no_curves(digits_split_folder, tmp_path):
    result = cnnlab.train(data=str(digits_split_folder), model="fast-cnn-v2", image_size="16", epochs=1,
                          runs_dir=str(tmp_path), quiet=True, device="cpu")
    only_sevens = tmp_path / "sevens"
    (only_sevens / "7").mkdir(parents=True)
    for path in sorted((digits_split_folder / "test" / "7").glob("*.png"))[:10]:
        (only_sevens / "7" / path.name).write_bytes(path.read_bytes())
    evaluation = cnnlab.evaluate(result.run_dir, data=str(only_sevens), quiet=True, device="cpu")
    assert evaluation.metrics["roc_auc"]["macro"] is None and "ROC AUC" not in evaluation.summary
    assert not (evaluation.output_dir / "roc_curves.png").exists()


def test_the_cli_prints_each_class_then_the_summary(digits_split_folder, tmp_path):
    from tests.helpers import run_cli

    result = cnnlab.train(data=str(digits_split_folder), model="fast-cnn-v2", image_size="16", epochs=1,
                          runs_dir=str(tmp_path), quiet=True, device="cpu")
    lines = run_cli("evaluate", result.run_dir, "--device", "cpu").stdout.splitlines()
    assert lines[0].split() == ["class", "precision", "recall", "F1", "ROC", "AUC", "images"]
    assert [line.split()[0] for line in lines[1:11]] == list("0123456789")
    metrics = json.loads(run_cli("evaluate", result.run_dir, "--json", "--device", "cpu").stdout)
    seven = lines[8].split()
    assert seven == ["7", f"{metrics['per_class']['7']['precision']:.3f}", f"{metrics['per_class']['7']['recall']:.3f}",
                     f"{metrics['per_class']['7']['f1']:.3f}", f"{metrics['roc_auc']['per_class']['7']:.3f}",
                     str(metrics['per_class']['7']['support'])]
    assert lines[-1].startswith("accuracy ") and len(lines) == 12
