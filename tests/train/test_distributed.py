"""Two real CPU processes under torchrun (gloo): one run folder, the same accuracy band, resumable."""

from __future__ import annotations

import csv
import json

import pytest

from tests.helpers import run_cli, run_process


def _rows(run):
    return list(csv.DictReader((run / "metrics.csv").open()))


@pytest.mark.slow
def test_two_processes_train_like_one(digits_split_folder, tmp_path):
    runs = tmp_path / "runs"
    common = ["--data", digits_split_folder, "--image-size", 24, "--epochs", 4, "--batch-size", 32, "--seed", 2,
              "--runs-dir", runs]
    single = run_process("train", *common, "--name", "one")
    assert single.returncode == 0, single.stderr
    double = run_process("train", *common, "--name", "two", "--nproc", 2)
    assert double.returncode == 0, double.stderr
    assert "2 processes (DDP)" in double.stderr
    assert double.stdout.count("run folder:") == 1  # rank 0 alone answers
    assert sorted(p.name for p in runs.iterdir()) == ["one", "two"]  # one folder for the two processes
    assert len(_rows(runs / "two")) == 4
    # Training images per epoch are the whole training set, summed over both processes.
    assert json.loads((runs / "two" / "data.json").read_text())["train"]["images"] == 1294

    accuracy = {}
    for name in ("one", "two"):
        outcome = run_cli("evaluate", runs / name, "--json")
        assert outcome.exit_code == 0, outcome.stderr
        accuracy[name] = json.loads(outcome.stdout)["accuracy"]
    assert accuracy["one"] > 0.9 and accuracy["two"] > 0.9
    assert abs(accuracy["one"] - accuracy["two"]) < 0.04, accuracy

    resumed = run_process("train", "--resume", runs / "two", "--epochs", 5, "--nproc", 2)
    assert resumed.returncode == 0, resumed.stderr
    rows = _rows(runs / "two")
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4", "5"]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    # run.json: rank 0 alone writes it, a session for the run and one for the resume, both on 2 processes
    sessions = json.loads((runs / "two" / "run.json").read_text())["sessions"]
    assert [(s["epochs"]["first"], s["epochs"]["last"], s["outcome"]) for s in sessions] == [
        (1, 4, "completed"), (5, 5, "completed")]
    assert all(s["machine"]["processes"] == 2 and s["arithmetic"]["batch_threads"] == 1 for s in sessions)


def test_batch_must_split_evenly_across_processes(digits_split_folder, tmp_path):
    result = run_process("train", "--data", digits_split_folder, "--image-size", 24, "--batch-size", 33,
                         "--nproc", 2, "--runs-dir", tmp_path)
    assert result.returncode != 0
    assert "--batch-size 33 must be divisible by the 2 processes" in result.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_an_embedding_run_trains_its_margin_layer_and_views_across_two_processes(digits_split_folder, tmp_path):
    """The margin layer's weights and the two-view term under DistributedDataParallel: an epoch on two
    processes saves `margin.weight`; resumed on two processes, the optimiser moves those weights and
    the loss falls."""
    from safetensors.torch import load_file

    runs = tmp_path / "runs"
    flags = ["--data", digits_split_folder, "--task", "embedding", "--embedding-dim", 16, "--image-size", 24,
             "--batch-size", 32, "--schedule", "constant", "--runs-dir", runs]
    trained = run_process("train", *flags, "--epochs", 1, "--name", "e", "--nproc", 2)
    assert trained.returncode == 0, trained.stderr
    assert "2 processes (DDP)" in trained.stderr
    first = load_file(runs / "e" / "weights" / "last.safetensors")["margin.weight"]
    assert first.shape == (10, 16)
    resumed = run_process("train", "--resume", runs / "e", "--epochs", 2, "--nproc", 2)
    assert resumed.returncode == 0, resumed.stderr
    rows = _rows(runs / "e")
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"]), rows
    assert 0.0 <= float(rows[-1]["val_tar_at_far_1e-2"]) <= 1.0
    moved = load_file(runs / "e" / "weights" / "last.safetensors")["margin.weight"]
    assert not (moved == first).all()  # the optimiser reached the margin layer on both ranks
