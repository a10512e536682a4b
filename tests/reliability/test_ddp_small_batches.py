"""Distributed runs and their last batch; a run that dies before its first checkpoint (issue 20, item 15)."""

from __future__ import annotations

import json

import pytest

import cnnlab
from tests.helpers import run_cli, run_process


def test_two_processes_never_get_a_last_batch_of_one_image_under_batch_norm(tmp_path):
    """Hazards: `--limit 500 --nproc 2` crashed with `ValueError: Expected more than 1 value per channel`:
    the guard against a last batch of one image looked at the whole training set, not at each process's
    share. Here 66 training images in batches of 32: each process holds 33, in steps of 16, so its last
    step would be a single image through fast-cnn's batch norm. And every `--nproc` run began with
    torchrun's banner about OMP_NUM_THREADS, which the user never set and cannot act on."""
    runs = tmp_path / "runs"
    outcome = run_process("train", "--data", "digits", "--model", "fast-cnn", "--limit", 73, "--batch-size", 32,
                          "--epochs", 1, "--nproc", 2, "--name", "ddp", "--runs-dir", runs, "--quiet")
    assert outcome.returncode == 0, outcome.stderr
    assert "Expected more than 1 value per channel" not in outcome.stderr
    assert json.loads((runs / "ddp" / "data.json").read_text())["train"]["images"] == 66
    assert json.loads((runs / "ddp" / "weights" / "last.json").read_text())["epoch"] == 1
    assert "OMP_NUM_THREADS" not in outcome.stderr and "*****" not in outcome.stderr, outcome.stderr


def test_a_last_batch_split_across_batch_threads_never_leaves_a_part_of_one_image(tmp_path):
    """Hazard: the same crash on one process: 194 training images in batches of 64 end with a batch of 2,
    which two batch threads split into 1 + 1 images (what `--recipe fast` does on a 2-core CPU)."""
    outcome = run_cli("train", "--data", "digits", "--model", "fast-cnn", "--limit", 216, "--batch-size", 64,
                      "--batch-threads", 2, "--epochs", 1, "--name", "parts", "--runs-dir", tmp_path, "--quiet")
    assert outcome.exit_code == 0, outcome.stderr
    assert json.loads((tmp_path / "parts" / "data.json").read_text())["train"]["images"] == 194


class _FailAtFirstEpoch:
    def on_epoch_begin(self, state, epoch, num_images):
        raise RuntimeError("the machine went away")


def test_a_run_that_died_before_its_first_checkpoint_can_be_resumed_or_rerun(tmp_path):
    """Hazard: the folder a run left when it died before its first checkpoint was refused by a rerun
    (with advice to --resume), and --resume said "train-state.safetensors does not exist"."""
    runs = tmp_path / "runs"
    settings = {"data": "digits", "model": "fast-cnn", "limit": 200, "epochs": 2, "name": "died",
                "runs_dir": str(runs), "quiet": True}
    with pytest.raises(RuntimeError, match="the machine went away"):
        cnnlab.train(**settings, callbacks=[_FailAtFirstEpoch()])
    assert (runs / "died" / "config.yaml").is_file() and not (runs / "died" / "weights" / "last.json").exists()

    refused = run_cli("train", "--data", "digits", "--model", "fast-cnn", "--limit", 200, "--epochs", 2,
                      "--name", "died", "--runs-dir", runs)
    assert refused.exit_code == 2 and f"--resume {runs / 'died'}" in refused.stderr  # the advice ...
    resumed = run_cli("train", "--resume", runs / "died")  # ... works
    assert resumed.exit_code == 0, resumed.stderr
    assert "saved no epoch before it stopped; training it again from epoch 1" in resumed.stderr
    assert json.loads((runs / "died" / "weights" / "last.json").read_text())["epoch"] == 2
    sessions = json.loads((runs / "died" / "run.json").read_text())["sessions"]
    assert [s["outcome"] for s in sessions] == ["failed: RuntimeError: the machine went away", "completed"]

    again = run_cli("train", "--data", "digits", "--model", "fast-cnn", "--limit", 200, "--epochs", 1,
                    "--name", "died", "--exist-ok", "--runs-dir", runs, "--quiet")
    assert again.exit_code == 0, again.stderr
