"""Regression on real images with a real numeric target: how far was each Fashion-MNIST photo rotated?"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import requires_fashion_mnist
from tests.helpers import run_cli


def _write_rotated(folder: Path, split: str, count: int, seed: int) -> Path:
    """`count` Fashion-MNIST images rotated by a known random angle in [-45°, 45°], with a CSV."""
    from cnnlab.data.named import open_named

    source = open_named("fashion-mnist", split=split)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(source), size=count, replace=False)
    angles = rng.uniform(-45.0, 45.0, size=count)
    folder.mkdir(parents=True)
    lines = ["path,angle"]
    for index, angle in zip(chosen, angles):
        name = f"{split}-{index:05d}.png"
        Image.fromarray(source.pixels[index]).rotate(angle, resample=Image.Resampling.BILINEAR).save(folder / name)
        lines.append(f"{name},{angle:.4f}")
    csv_path = folder / "angles.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    return csv_path


@requires_fashion_mnist
@pytest.mark.slow
def test_predicting_the_rotation_angle_beats_the_mean_by_far(tmp_path):
    train_csv = _write_rotated(tmp_path / "train", "train", 4000, seed=0)
    test_csv = _write_rotated(tmp_path / "test", "test", 600, seed=1)
    runs = tmp_path / "runs"
    outcome = run_cli("train", "--data", train_csv, "--task", "regression", "--model", "guide-cnn", "--epochs", 12,
                      "--batch-size", 32, "--name", "angle", "--runs-dir", runs)
    assert outcome.exit_code == 0, outcome.stderr
    assert "mae" in (runs / "angle" / "metrics.csv").read_text().splitlines()[0]
    assert "task: regression (1 value)" in outcome.stderr
    assert "loss: mean squared error of the targets standardised" in outcome.stderr

    evaluated = run_cli("evaluate", runs / "angle", "--data", test_csv, "--json")
    assert evaluated.exit_code == 0, evaluated.stderr
    metrics = json.loads(evaluated.stdout)
    # Predicting the mean angle has RMSE = the angles' standard deviation, about 26°.
    assert metrics["baseline_rmse"] == pytest.approx(90 / 12**0.5, rel=0.1)
    assert metrics["rmse"] < 0.4 * metrics["baseline_rmse"], metrics
    assert metrics["r2"] > 0.8
    rows = list(csv.DictReader((runs / "angle" / "eval-angles-test" / "predictions.csv").open()))
    assert len(rows) == 600 and set(rows[0]) == {"file", "true_angle", "predicted_angle"}
    assert (runs / "angle" / "eval-angles-test" / "predicted_vs_true.png").stat().st_size > 10_000

    predicted = run_cli("predict", runs / "angle", tmp_path / "test" / rows[0]["file"].split("/")[-1])
    assert predicted.exit_code == 0 and "angle =" in predicted.stdout
