"""SIGKILL mid-run, then --resume: the same metrics.csv rows as a run that was never interrupted."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from tests.helpers import kill_after_first_epoch, run_process

TIMING_COLUMNS = {"seconds", "images_per_s"}  # wall-clock, different on every run by nature


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as handle:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(handle)]


def _train_args(data: Path, runs: Path, name: str) -> list[str]:
    return ["train", "--data", str(data), "--image-size", "20", "--epochs", "4", "--batch-size", "16",
            "--seed", "7", "--augment", "light", "--workers", "1", "--name", name, "--runs-dir", str(runs),
            "--quiet"]



@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(digits_split_folder, tmp_path):
    runs = tmp_path / "runs"
    straight = run_process(*_train_args(digits_split_folder, runs, "straight"))
    assert straight.returncode == 0, straight.stderr

    kill_after_first_epoch(_train_args(digits_split_folder, runs, "killed"), runs / "killed")
    interrupted = _rows(runs / "killed")
    assert 1 <= len(interrupted) < 4, "the kill must land before the run finished"

    resumed = run_process("train", "--resume", runs / "killed")
    assert resumed.returncode == 0, resumed.stderr
    assert _rows(runs / "killed") == _rows(runs / "straight")
    assert len(_rows(runs / "straight")) == 4
    # and the final weights are bit-identical
    from safetensors.torch import load_file

    resumed_weights = load_file(runs / "killed/weights/last.safetensors")
    straight_weights = load_file(runs / "straight/weights/last.safetensors")
    assert resumed_weights.keys() == straight_weights.keys()
    assert all(torch.equal(resumed_weights[k], straight_weights[k]) for k in straight_weights)


def test_resume_can_extend_epochs_but_not_change_the_data(digits_split_folder, tmp_path):
    from tests.helpers import run_cli

    runs = tmp_path / "runs"
    args = ["train", "--data", digits_split_folder, "--image-size", 18, "--epochs", 1, "--limit", 300,
            "--name", "r", "--runs-dir", runs]
    assert run_cli(*args).exit_code == 0
    done = run_cli("train", "--resume", runs / "r")
    assert done.exit_code == 2 and "already completed 1 of 1 epochs" in done.stderr
    changed = run_cli("train", "--resume", runs / "r", "--epochs", 2, "--model", "resnet18")
    assert changed.exit_code == 2 and "cannot change model" in changed.stderr
    more = run_cli("train", "--resume", runs / "r", "--epochs", 2)
    assert more.exit_code == 0, more.stderr
    assert [row["epoch"] for row in _rows(runs / "r")] == ["1", "2"]


def test_resume_from_another_folder_says_where_the_runs_relative_data_is(digits_split_folder, tmp_path):
    import shutil

    import yaml

    from tests.helpers import run_cli

    # A folder called "digits" beside the named dataset "digits": the run must record which it was.
    shutil.copytree(digits_split_folder, tmp_path / "digits")
    args = ["train", "--data", "digits", "--image-size", 18, "--epochs", 1, "--limit", 300, "--name", "r",
            "--runs-dir", "runs"]
    assert run_cli(*args, cwd=tmp_path).exit_code == 0
    run = tmp_path / "runs" / "r"
    assert yaml.safe_load((run / "config.yaml").read_text())["data"] == "./digits"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    outcome = run_cli("train", "--resume", run, "--epochs", 2, cwd=elsewhere)
    assert outcome.exit_code == 2
    assert (f"the run was trained on ./digits, which is not there from {elsewhere}; resume from the folder you "
            f"trained in (cd there, then --resume {run})") in outcome.stderr
    evaluated = run_cli("evaluate", run, cwd=elsewhere)  # not scikit-learn's named digits in its place
    assert evaluated.exit_code != 0 and "the run was trained on ./digits, which is not there" in evaluated.stderr
    assert run_cli("train", "--resume", "runs/r", "--epochs", 2, cwd=tmp_path).exit_code == 0


@pytest.mark.slow
def test_ctrl_c_says_what_the_run_kept_and_how_to_continue(digits_split_folder, tmp_path):
    """SIGINT (Ctrl-C) once epoch 1 is saved: exit status 130, a line naming the epochs kept and the
    --resume command, and that command finishes the run."""
    import re
    import signal
    import subprocess
    import sys
    import time

    runs = tmp_path / "runs"
    run = runs / "stopped"
    args = ["train", "--data", digits_split_folder, "--image-size", 28, "--epochs", 20, "--batch-size", 16,
            "--seed", 3, "--name", "stopped", "--runs-dir", runs]
    # A shell that starts the tests in the background (`make test &`) hands its children SIGINT set to
    # "ignore", and Python then installs no Ctrl-C handler (the run just went on, status 0). A
    # terminal's Ctrl-C reaches a foreground command with Python's own handler: put that back.
    launch = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
              "sys.argv[0] = 'cnnlab'; runpy.run_module('cnnlab', run_name='__main__')")
    process = subprocess.Popen([sys.executable, "-c", launch, *map(str, args)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    state, deadline = run / "weights" / "train-state.safetensors", time.monotonic() + 300
    while not state.exists():
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.02)
    # The file takes its name before the save returns (the folder is synced after the rename): a Ctrl-C
    # in between rightly says epoch 1 was not yet saved. A moment later it has been; the run's other 19
    # epochs take seconds, so the signal still lands mid-run.
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    said = re.search(rf"warning: interrupted: {re.escape(str(run))} keeps its (\d+) finished epochs? of 20 ", stderr)
    assert said, stderr
    kept = int(said.group(1))
    assert 1 <= kept <= len(_rows(run)) < 20
    assert f"continue with: cnnlab train --resume {run}" in stderr
    assert stderr.rstrip().endswith("interrupted") and "Traceback" not in stderr

    resumed = run_process("train", "--resume", run, "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert [int(row["epoch"]) for row in _rows(run)] == list(range(1, 21))
    sessions = json.loads((run / "run.json").read_text())["sessions"]
    assert [s["outcome"] for s in sessions] == ["interrupted", "completed"]
    assert sessions[0]["epochs"]["last"] in (kept, kept + 1)  # + 1: stopped after its row, before its save
    assert sessions[1]["epochs"] == {"first": kept + 1, "last": 20}
