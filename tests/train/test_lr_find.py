"""The learning-rate range test: a sensible suggestion on real data, a plot, and no side effects on training."""

from __future__ import annotations

import csv
import math

import pytest
import torch
import yaml
from PIL import Image

from cnnlab.config import TrainConfig
from cnnlab.train.lr_find import suggest_lr
from tests.conftest import requires_fashion_mnist
from tests.helpers import run_cli

TIMING_COLUMNS = {"seconds", "images_per_s"}


def _rows(path) -> list[dict[str, str]]:
    with path.open() as handle:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(handle)]


def test_the_suggestion_is_a_tenth_of_the_lowest_smoothed_loss():
    lrs = [10 ** (-6 + i / 4) for i in range(25)]  # 1e-6 .. 1
    losses = [2.3 - 1.8 / (1 + math.exp(-(math.log10(lr) + 3) * 3)) + (0.2 if lr > 0.03 else 0) * lr * 40
              for lr in lrs]
    suggestion, lowest = suggest_lr(lrs, losses)
    assert lowest == lrs[min(range(len(losses)), key=losses.__getitem__)]
    assert suggestion == pytest.approx(lowest / 10)
    assert suggest_lr([1e-3, 1e-2], [1.0, 2.0]) == (1e-3, 1e-3)  # never below the first rate tried


def test_lr_accepts_auto_from_flags_and_config_files():
    assert TrainConfig.from_dict({"data": "d", "lr": "auto"}).validate().lr == "auto"
    assert TrainConfig.from_dict({"data": "d", "lr": "0.01"}).lr == 0.01
    assert TrainConfig.from_dict({"data": "d", "lr": 0.02}).lr == 0.02


@requires_fashion_mnist
@pytest.mark.slow
def test_lr_find_on_fashion_mnist_suggests_a_rate_that_trains(tmp_path):
    output = tmp_path / "sweep"
    found = run_cli("lr-find", "--data", "fashion-mnist", "--model", "guide-cnn", "--limit", 3000,
                    "--output", output)
    assert found.exit_code == 0, found.stderr
    suggestion = float(found.stdout.split("suggested learning rate:")[1].split()[0])
    assert 1e-4 <= suggestion <= 1e-1, suggestion
    assert f"plot: {output / 'lr_find.png'}" in found.stdout
    with Image.open(output / "lr_find.png") as picture:
        assert picture.size[0] >= 700 and picture.size[1] >= 400
    rows = list(csv.DictReader((output / "lr_find.csv").open()))
    assert 50 <= len(rows) <= 200 and float(rows[0]["lr"]) == pytest.approx(1e-7)
    assert "exceeded 4× its minimum" in found.stderr or "the loss became" in found.stderr

    # one epoch at the suggested rate trains without diverging (`--lr auto` does the same, see below)
    runs = tmp_path / "runs"
    trained = run_cli("train", "--data", "fashion-mnist", "--model", "guide-cnn", "--limit", 3000, "--lr", suggestion,
                      "--epochs", 1, "--name", "suggested", "--runs-dir", runs)
    assert trained.exit_code == 0, trained.stderr
    row = _rows(runs / "suggested" / "metrics.csv")[0]
    assert math.isfinite(float(row["train_loss"])) and float(row["train_loss"]) < 0.75 * math.log(10)
    assert float(row["val_loss"]) < float(row["train_loss"]) * 1.5 and float(row["val_accuracy"]) > 0.7


def test_lr_auto_starts_training_from_the_same_weights_as_an_explicit_lr(digits_split_folder, tmp_path):
    runs = tmp_path / "runs"
    common = ["--data", digits_split_folder, "--image-size", 18, "--epochs", 2, "--batch-size", 64,
              "--runs-dir", runs, "--quiet"]
    auto = run_cli("train", *common, "--lr", "auto", "--name", "auto")
    assert auto.exit_code == 0, auto.stderr
    lr = yaml.safe_load((runs / "auto" / "config.yaml").read_text())["lr"]  # the rate used, not "auto"
    assert isinstance(lr, float) and 1e-4 <= lr <= 1e-1
    assert (runs / "auto" / "lr_find.png").is_file() and (runs / "auto" / "lr_find.csv").is_file()
    explicit = run_cli("train", *common, "--lr", repr(lr), "--name", "explicit")
    assert explicit.exit_code == 0, explicit.stderr
    # the sweep trained a copy: same initial weights, same batches, so the same run, row for row
    assert _rows(runs / "auto" / "metrics.csv") == _rows(runs / "explicit" / "metrics.csv")
    from safetensors.torch import load_file

    a, b = (load_file(runs / name / "weights" / "last.safetensors") for name in ("auto", "explicit"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("args, message", [
    (("--steps", 3), "--steps must be at least 10"),
    (("--start-lr", 1, "--end-lr", 0.1), "--start-lr must be positive and below --end-lr"),
    (("--fine-tune", 1), "--fine-tune keeps pretrained layers fixed"),
])
def test_lr_find_refuses_bad_arguments_with_one_line(args, message, tmp_path):
    outcome = run_cli("lr-find", "--data", "digits", *args, cwd=tmp_path)
    assert outcome.exit_code == 2 and message in outcome.stderr and "Traceback" not in outcome.stderr


def test_lr_find_takes_a_recipe_like_train(tmp_path):
    """`--recipe fast` sweeps the recipe's model, batch size and optimiser, as `train --recipe fast` trains."""
    outcome = run_cli("lr-find", "--data", "digits", "--recipe", "fast", "--steps", 12, "--runs-dir", tmp_path / "runs",
                      cwd=tmp_path)
    assert outcome.exit_code == 0, outcome.stderr
    rows = list(csv.DictReader((tmp_path / "runs" / "lr-find-fast-cnn-v2-digits" / "lr_find.csv").open()))
    assert len(rows) == 12
