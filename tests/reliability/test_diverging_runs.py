"""Diverging runs: a loss that becomes nan or inf stops the run at once, names where, keeps the last
good checkpoint, and every JSON file stays JSON (issue 20, item 8)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from tests.helpers import run_cli

# guide-cnn on 300 of scikit-learn's 8×8 digits, enlarged to its smallest input: a second an epoch.
SMALL = ["--data", "digits", "--image-size", 18, "--limit", 300, "--batch-size", 16]


def strict_json(path: Path):
    """The file parsed as JSON proper: NaN and Infinity, which Python writes by default, are refused."""
    def refuse(constant: str):
        raise ValueError(f"{path} holds {constant}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_a_rate_that_blows_up_at_once_stops_in_the_first_steps_and_exits_non_zero(tmp_path):
    """Hazard: `--optimizer sgd --lr 1e6` trained 3 epochs of `train loss nan`, exited 0 and printed
    `best epoch 0 (validation loss inf)`."""
    runs = tmp_path / "runs"
    outcome = run_cli("train", *SMALL, "--optimizer", "sgd", "--lr", "1e6", "--epochs", 3, "--name", "boom",
                      "--runs-dir", runs)
    assert outcome.exit_code == 2, outcome.stderr
    said = re.search(r"error: training diverged: epoch 1, step (\d+) of 17: the training loss became (nan|inf)",
                     outcome.stderr)
    assert said, outcome.stderr
    assert int(said.group(1)) <= 8  # found within the first check, not at the end of the run
    assert "no epoch had finished" in outcome.stderr and "a lower --lr than 1e+06" in outcome.stderr
    assert "Traceback" not in outcome.stderr and "epoch 2/3" not in outcome.stderr
    assert not list((runs / "boom" / "weights").iterdir())  # no checkpoint of nan weights
    sessions = strict_json(runs / "boom" / "run.json")["sessions"]
    assert sessions[-1]["outcome"].startswith("diverged: epoch 1, step ")


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_a_learning_rate_of_inf_or_nan_is_refused(value, tmp_path):
    """Hazard: `--lr inf` passed validation (inf > 0) and trained nan weights."""
    outcome = run_cli("train", *SMALL, "--lr", value, "--runs-dir", tmp_path)
    assert outcome.exit_code == 2
    assert f"--lr must be a finite number such as 0.003, or auto (got {float(value)})" in outcome.stderr
    assert not any(tmp_path.iterdir())


def test_other_numeric_settings_refuse_inf_and_nan_too(tmp_path):
    """Hazard: any float setting took inf or nan (a weight decay of nan turns every weight into nan)."""
    outcome = run_cli("train", *SMALL, "--weight-decay", "nan", "--runs-dir", tmp_path)
    assert outcome.exit_code == 2 and "--weight-decay must be a finite number (got nan)" in outcome.stderr


def test_divergence_after_good_epochs_keeps_their_checkpoints(tmp_path):
    """Hazard: nan weights replaced last.safetensors (and best, had the loss compared as lower), so the
    good epochs before the divergence were lost. Here stage 2 of --fine-tune trains the backbone at
    0.05 × 1e8: epoch 1 (the head alone) is sound, epoch 2 diverges in its first steps."""
    from safetensors.torch import load_file

    runs = tmp_path / "runs"
    assert run_cli("train", *SMALL, "--epochs", 1, "--name", "pre", "--runs-dir", runs, "--quiet").exit_code == 0
    outcome = run_cli("train", *SMALL, "--init-from", runs / "pre", "--fine-tune", 1, "--epochs", 3,
                      "--optimizer", "sgd", "--lr", 0.05, "--backbone-lr-factor", "1e8", "--name", "tuned", "--runs-dir", runs)
    assert outcome.exit_code == 2, outcome.stderr
    assert re.search(r"training diverged: epoch 2, step [1-8] of 17: ", outcome.stderr), outcome.stderr
    weights = runs / "tuned" / "weights"
    assert f"{weights} keeps epoch 1, the last with finite weights (best: epoch 1)" in outcome.stderr
    for name in ("last", "best"):
        assert strict_json(weights / f"{name}.json")["epoch"] == 1
        tensors = load_file(weights / f"{name}.safetensors")
        assert all(bool(t.isfinite().all()) for t in tensors.values())
    # --resume would start from the saved epoch 1; its state holds finite numbers too
    state = load_file(weights / "train-state.safetensors")
    assert all(bool(t.isfinite().all()) for t in state.values() if t.is_floating_point())
    assert [row["epoch"] for row in _csv_rows(runs / "tuned")] == ["1"]


def test_a_run_without_validation_images_writes_json_without_nan(tmp_path):
    """Hazard: a run with no validation images has a validation loss of nan, which last.json, best.json
    and the training state held as a bare NaN: not JSON."""
    runs = tmp_path / "runs"
    outcome = run_cli("train", "--data", "digits", "--image-size", 18, "--limit", 40, "--val-fraction", "0.01",
                      "--epochs", 2, "--name", "noval", "--runs-dir", runs)
    assert outcome.exit_code == 0, outcome.stderr
    assert "validation: 0 images" in outcome.stderr
    for name in ("last.json", "best.json"):
        metrics = strict_json(runs / "noval" / "weights" / name)["metrics"]
        assert metrics["val_loss"] is None and math.isfinite(metrics["train_loss"])
    strict_json(runs / "noval" / "run.json")
    from cnnlab.checkpoint import load_training_state

    progress = load_training_state(runs / "noval" / "weights" / "train-state.safetensors").progress
    assert progress["history"][-1]["val_loss"] is None  # stored as null ...
    resumed = run_cli("train", "--resume", runs / "noval", "--epochs", 3)  # ... and read back as nan
    assert resumed.exit_code == 0, resumed.stderr
    assert [row["val_loss"] for row in _csv_rows(runs / "noval")] == ["nan", "nan", "nan"]


def _csv_rows(run: Path) -> list[dict[str, str]]:
    import csv

    with (run / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))
