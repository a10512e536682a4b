"""The headline claim: the guide's CNN, 3 epochs on Fashion-MNIST, default settings, ≥ 90% on the test split."""

from __future__ import annotations

import json

import pytest

from tests.conftest import requires_fashion_mnist
from tests.helpers import run_cli


@requires_fashion_mnist
@pytest.mark.slow
def test_guide_cnn_three_epochs_reaches_90_percent(tmp_path):
    trained = run_cli("train", "--data", "fashion-mnist", "--model", "guide-cnn", "--epochs", 3, "--name", "demo",
                      "--runs-dir", tmp_path / "runs")
    assert trained.exit_code == 0, trained.stderr
    evaluated = run_cli("evaluate", tmp_path / "runs" / "demo", "--json")
    assert evaluated.exit_code == 0, evaluated.stderr
    metrics = json.loads(evaluated.stdout)
    assert metrics["images"] == 10_000
    assert metrics["accuracy"] >= 0.90, metrics["accuracy"]
    assert metrics["per_class"]["Trouser"]["recall"] > 0.95  # the easy class
    assert metrics["per_class"]["Shirt"]["recall"] < metrics["per_class"]["Trouser"]["recall"]  # the hard one


@requires_fashion_mnist
@pytest.mark.slow
def test_fast_recipe_learns_more_per_epoch_than_the_guides_network(tmp_path):
    """Same images, same 2 epochs, same batch size: --recipe fast (fast-cnn-v2, one-cycle AdamW, flips)
    against guide-cnn with cnnlab's defaults. Measured: 87.8–88.2% against 80.8–81.0% (seeds 0–2; with
    fast-cnn, the recipe's model before fast-cnn-v2: 88.3–88.4%)."""
    accuracy = {}
    contenders = {"fast": ["--recipe", "fast"], "guide": ["--model", "guide-cnn", "--batch-size", 128]}
    for name, flags in contenders.items():
        trained = run_cli("train", "--data", "fashion-mnist", *flags, "--epochs", 2, "--limit", 12000,
                          "--name", name, "--runs-dir", tmp_path / "runs", "--quiet")
        assert trained.exit_code == 0, trained.stderr
        evaluated = run_cli("evaluate", tmp_path / "runs" / name, "--json")
        assert evaluated.exit_code == 0, evaluated.stderr
        accuracy[name] = json.loads(evaluated.stdout)["accuracy"]
    assert accuracy["fast"] >= 0.865, accuracy
    assert accuracy["fast"] - accuracy["guide"] >= 0.04, accuracy
