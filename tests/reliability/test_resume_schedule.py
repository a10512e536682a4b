"""Resuming with more epochs: the learning-rate schedule is rebuilt for the new length (issue 20, item 10).

The documented rule (README, `--resume`): from the step the run reached, the rates are those of a
straight run started with the new --epochs.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.helpers import run_cli

COMMON = ["--data", "digits", "--image-size", 18, "--limit", 300, "--batch-size", 64, "--seed", 4, "--quiet"]


def _rates(run: Path) -> list[float]:
    with (run / "metrics.csv").open() as handle:
        return [float(row["lr"]) for row in csv.DictReader(handle)]


@pytest.mark.parametrize("schedule", ["onecycle", "cosine"])
def test_resume_with_more_epochs_follows_the_schedule_of_the_new_length(schedule, tmp_path):
    """Hazard: `--resume --epochs N+k` ran its first steps at the old schedule's final rate (3e-07
    where a straight run had 0.00235): the optimiser's saved rate was restored after the scheduler."""
    runs = tmp_path / "runs"
    flags = [*COMMON, "--schedule", schedule, "--runs-dir", runs]
    assert run_cli("train", *flags, "--epochs", 4, "--name", "straight").exit_code == 0
    assert run_cli("train", *flags, "--epochs", 2, "--name", "extended").exit_code == 0
    resumed = run_cli("train", "--resume", runs / "extended", "--epochs", 4)
    assert resumed.exit_code == 0, resumed.stderr

    straight, extended = _rates(runs / "straight"), _rates(runs / "extended")
    assert extended[2] > 0.1 * max(straight)  # not the near-zero end of the old 2-epoch schedule
    assert extended[2:] == pytest.approx(straight[2:], rel=1e-5)


def test_resume_to_the_same_epochs_stays_bit_exact(tmp_path):
    """The rate set on resume must not disturb an ordinary one: stopped after epoch 2 of 3 and resumed,
    the run ends with the same rates and the same weights as a straight one."""
    import torch
    from safetensors.torch import load_file

    import cnnlab

    class StopAtTwo:
        def on_epoch_end(self, state, row):
            if row["epoch"] == 2:
                state.stop_reason = "a pause"

    settings = {"data": "digits", "image_size": "18", "limit": 300, "batch_size": 64, "seed": 4, "epochs": 3,
                "runs_dir": str(tmp_path), "quiet": True}
    straight = cnnlab.train(**settings, name="straight")
    paused = cnnlab.train(**settings, name="paused", callbacks=[StopAtTwo()])
    cnnlab.train(resume=paused.run_dir)
    assert _rates(paused.run_dir) == _rates(straight.run_dir)
    after, expected = load_file(paused.last_checkpoint), load_file(straight.last_checkpoint)
    assert all(torch.equal(after[name], expected[name]) for name in expected)
