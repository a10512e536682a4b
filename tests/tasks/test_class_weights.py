"""--class-weights: each image's loss weighted by its class, for imbalanced data (X-rays, defects)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F

import cnnlab
from cnnlab.config import TrainConfig, parse_class_weights, with_recipe
from cnnlab.errors import ConfigError
from cnnlab.tasks import task_from_json
from cnnlab.tasks.classification import Classification, weights_for_classes
from tests.helpers import run_cli


def test_balanced_weights_make_every_class_count_alike():
    weights = weights_for_classes("balanced", {"NORMAL": 90, "PNEUMONIA": 10})
    assert weights == pytest.approx([100 / (2 * 90), 100 / (2 * 10)])  # scikit-learn's "balanced"
    assert 90 * weights[0] == pytest.approx(10 * weights[1])
    # a class without images is never a target: its weight is 1 and the others divide among 2 classes
    assert weights_for_classes("balanced", {"a": 30, "b": 0, "c": 10}) == pytest.approx([40 / 60, 1.0, 40 / 20])
    assert weights_for_classes("none", {"a": 3, "b": 1}) is None


def test_named_weights_set_some_classes_and_leave_the_rest_at_1():
    assert weights_for_classes("dogs=2.5", {"cats": 5, "dogs": 5, "birds": 5}) == [1.0, 2.5, 1.0]
    with pytest.raises(ConfigError, match=r"there is no class 'dog'; the classes are cats, dogs"):
        weights_for_classes("dog=2", {"cats": 5, "dogs": 5})
    assert parse_class_weights(" NORMAL = 3 , PNEUMONIA=1") == {"NORMAL": 3.0, "PNEUMONIA": 1.0}


@pytest.mark.parametrize("spec", ["cats:2", "=2", "cats=-1", "cats=much", "cats=inf", "cats=0"])
def test_malformed_weights_are_refused_before_training(spec):
    with pytest.raises(ConfigError, match="--class-weights"):
        TrainConfig(data="digits", class_weights=spec).validate()


def test_classification_only_settings_are_refused_for_regression_but_a_recipe_leaves_them_out():
    for field, value in (("class_weights", "balanced"), ("label_smoothing", 0.1)):
        with pytest.raises(ConfigError, match=f"--{field.replace('_', '-')} .* --task regression"):
            TrainConfig(data="x.csv", task="regression", **{field: value}).validate()
    from_recipe = with_recipe(TrainConfig(data="x.csv", task="regression", recipe="fast"), explicit={"task"})
    assert from_recipe.label_smoothing == 0.0 and from_recipe.validate()


def test_the_loss_is_pytorchs_weighted_cross_entropy_and_survives_the_sidecar():
    weights = torch.tensor([0.5, 2.0, 1.0])
    torch.manual_seed(0)
    outputs, targets = torch.randn(16, 3), torch.randint(0, 3, (16,))
    # Without label smoothing: exactly PyTorch's weighted cross-entropy.
    plain = Classification(["a", "b", "c"], class_weights=[0.5, 2.0, 1.0])
    torch.testing.assert_close(plain.loss(outputs, targets), F.cross_entropy(outputs, targets, weight=weights))
    # With it, each image's smoothed loss is weighted by its own class only (PyTorch's `weight=` would
    # also weigh the smoothing term of every image by every class's weight).
    task = Classification(["a", "b", "c"], label_smoothing=0.1, class_weights=[0.5, 2.0, 1.0], weighting="a=0.5,b=2")
    per_image = F.cross_entropy(outputs, targets, reduction="none", label_smoothing=0.1)
    expected = (per_image * weights[targets]).sum() / weights[targets].sum()
    torch.testing.assert_close(task.loss(outputs, targets), expected)
    assert not torch.allclose(expected, F.cross_entropy(outputs, targets, weight=weights, label_smoothing=0.1))
    assert not torch.allclose(task.loss(outputs, targets), F.cross_entropy(outputs, targets, label_smoothing=0.1))
    again = task_from_json(json.loads(json.dumps(task.to_json())))
    assert again.class_weights == [0.5, 2.0, 1.0]
    torch.testing.assert_close(again.loss(outputs, targets), expected)
    assert "weighted by its class: a 0.5, b 2, c 1" in task.describe_loss()
    unweighted = task_from_json({"name": "classification", "class_names": ["a", "b"]})  # a sidecar from before
    assert unweighted.class_weights is None and "weighted" not in unweighted.describe_loss()


@pytest.fixture(scope="module")
def imbalanced_digits(tmp_path_factory):
    """scikit-learn's real digits 3 and 8: 129 training images of 3 against 8 of 8; 40 of each to test."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("imbalanced")
    digits = load_digits()
    pixels = np.rint(digits.images * 255 / 16).astype(np.uint8)
    rng = np.random.default_rng(0)
    for digit, kept in ((3, None), (8, 8)):
        chosen = rng.permutation(np.flatnonzero(digits.target == digit))
        train = chosen[40:] if kept is None else chosen[40:40 + kept]
        for split, indices in (("test", chosen[:40]), ("train", train)):
            (root / split / str(digit)).mkdir(parents=True, exist_ok=True)
            for index in indices:
                Image.fromarray(pixels[index]).save(root / split / str(digit) / f"{index:04d}.png")
    return root


def test_balanced_weights_find_the_rare_class_that_plain_training_misses(imbalanced_digits, tmp_path):
    """3 epochs on 129 against 8 images: unweighted, the network mostly answers '3'; balanced, it
    finds the 8s (measured for seeds 0-4: recall of 8 0.0/0.0/0.75/0.4/0.0 against 1.0 for all)."""
    recall = {}
    for weights in ("none", "balanced"):
        found = []
        for seed in (0, 1, 2):
            result = cnnlab.train(data=str(imbalanced_digits / "train"), model="fast-cnn-v2", image_size="16",
                                  epochs=3, class_weights=weights, seed=seed, runs_dir=str(tmp_path),
                                  name=f"{weights}-{seed}", quiet=True, device="cpu")
            metrics = cnnlab.evaluate(result.run_dir, data=str(imbalanced_digits / "test"), quiet=True).metrics
            found.append(metrics["per_class"]["8"]["recall"])
        recall[weights] = float(np.mean(found))
    assert recall["balanced"] >= 0.9 and recall["none"] <= 0.5, recall


def test_the_cli_notes_imbalance_and_records_the_weights(imbalanced_digits, tmp_path):
    plain = run_cli("train", "--data", imbalanced_digits / "train", "--model", "fast-cnn-v2", "--image-size", "16",
                    "--epochs", "1", "--runs-dir", tmp_path, "--name", "plain")
    assert plain.exit_code == 0, plain.stderr
    assert "the classes are imbalanced: 3 has 129 training images, 8 7" in plain.stderr  # 1 of the 8 validates
    assert "--class-weights balanced" in plain.stderr

    weighted = run_cli("train", "--data", imbalanced_digits / "train", "--model", "fast-cnn-v2", "--image-size", "16",
                       "--epochs", "1", "--runs-dir", tmp_path, "--name", "weighted", "--class-weights", "balanced")
    assert weighted.exit_code == 0, weighted.stderr
    assert "the classes are imbalanced" not in weighted.stderr
    assert "(balanced: inversely to their numbers of training images): 3 0.527, 8 9.71" in weighted.stderr
    assert "class_weights: balanced" in (tmp_path / "weighted" / "config.yaml").read_text()
    sidecar = json.loads((tmp_path / "weighted" / "weights" / "best.json").read_text())
    assert sidecar["task"]["class_weights"] == pytest.approx([136 / (2 * 129), 136 / (2 * 7)])

    wrong = run_cli("train", "--data", imbalanced_digits / "train", "--class-weights", "nine=2", "--epochs", "1",
                    "--runs-dir", tmp_path, "--model", "fast-cnn-v2", "--image-size", "16")
    assert wrong.exit_code != 0 and "there is no class 'nine'; the classes are 3, 8" in wrong.stderr


def test_the_report_says_the_classes_are_imbalanced_and_how_the_run_dealt_with_it(imbalanced_digits, tmp_path):
    from cnnlab.report.report import report

    notes = {}
    for weights in ("none", "balanced"):
        result = cnnlab.train(data=str(imbalanced_digits / "train"), model="fast-cnn-v2", image_size="16",
                              epochs=1, class_weights=weights, runs_dir=str(tmp_path), name=weights, quiet=True,
                              device="cpu")
        html = report(result.run_dir, data=str(imbalanced_digits / "test"), device="cpu", quiet=True).read_text()
        assert "The classes are imbalanced: 3 has 129 training images, 8 7." in html
        notes[weights] = html
    assert "trained without class weights, so scores over all images favour the large classes" in notes["none"]
    assert "trained with --class-weights balanced" in notes["balanced"]
