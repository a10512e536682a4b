"""torchvision families train end to end on a small real subset (colour conversion included)."""

from __future__ import annotations

import csv
import json

import pytest

from tests.conftest import requires_fashion_mnist
from tests.helpers import run_cli


@requires_fashion_mnist
@pytest.mark.slow
@pytest.mark.parametrize("model", ["resnet18", "efficientnet_b0"])
def test_zoo_model_trains_evaluates_and_predicts(model, tmp_path):
    runs = tmp_path / "runs"
    outcome = run_cli("train", "--data", "fashion-mnist", "--model", model, "--limit", 1200, "--image-size", 32,
                      "--channels", 3, "--epochs", 3, "--batch-size", 32, "--name", model, "--runs-dir", runs)
    assert outcome.exit_code == 0, outcome.stderr
    rows = list(csv.DictReader((runs / model / "metrics.csv").open()))
    assert len(rows) == 3
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    sidecar = json.loads((runs / model / "weights" / "best.json").read_text())
    assert sidecar["architecture"]["name"] == model
    assert sidecar["input"]["channels"] == 3 and sidecar["input"]["height"] == 32

    evaluated = run_cli("evaluate", runs / model, "--limit", 500, "--json")
    assert evaluated.exit_code == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["accuracy"] > 0.4  # chance is 0.1; 1,080 training images, 3 epochs
