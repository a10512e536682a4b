"""What training says when it costs a user: enlarged images, a long learning-rate sweep, library
warnings (issue 20, items 13 and 17)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import run_cli


@pytest.fixture(scope="module")
def pretrained_at_32(tmp_path_factory) -> Path:
    """guide-cnn trained on the 8×8 digits enlarged to 32×32: weights whose input is 16× the data's."""
    runs = tmp_path_factory.mktemp("runs")
    outcome = run_cli("train", "--data", "digits", "--image-size", 32, "--limit", 200, "--epochs", 1,
                      "--name", "pre", "--runs-dir", runs, "--quiet")
    assert outcome.exit_code == 0, outcome.stderr
    return runs / "pre"


def test_weights_that_enlarge_the_images_say_so_with_the_cost(pretrained_at_32, tmp_path):
    """Hazard: pretrained weights silently brought their own input size, so 28-pixel images were
    enlarged 8× a side to ImageNet's 224 (lr-find on resnet18 then took 12 min 49 s)."""
    outcome = run_cli("train", "--data", "digits", "--init-from", pretrained_at_32, "--limit", 100, "--epochs", 1,
                      "--lr", 0.003, "--runs-dir", tmp_path)
    assert outcome.exit_code == 0, outcome.stderr
    assert (f"warning: --init-from {pretrained_at_32}: the weights were trained on 32×32 images, so yours (8×8) "
            f"are enlarged to that: 16× the pixels, and about 16× the computation a step would take at their own "
            f"size. Pass --image-size 18 (guide-cnn's smallest) to train at (near) their own size"
            ) in outcome.stderr.replace("\n", " ")
    asked = run_cli("train", "--data", "digits", "--init-from", pretrained_at_32, "--image-size", 32,
                    "--limit", 100, "--epochs", 1, "--lr", 0.003, "--runs-dir", tmp_path)
    assert asked.exit_code == 0 and "enlarged" not in asked.stderr  # the size was chosen: nothing to say


def test_a_learning_rate_sweep_shows_its_progress_where_no_bar_can(pretrained_at_32, tmp_path):
    """Hazard: lr-find showed nothing while it ran (its bar only in a terminal): minutes of silence.
    Captured (not a terminal), it prints a line at each quarter, with images/s and the time left."""
    outcome = run_cli("lr-find", "--data", "digits", "--init-from", pretrained_at_32, "--limit", 200,
                      "--steps", 20, "--output", tmp_path / "sweep")
    assert outcome.exit_code == 0, outcome.stderr
    assert "are enlarged to that: 16× the pixels" in outcome.stderr  # lr-find prepares runs as train does
    lines = re.findall(r"learning-rate sweep: step (\d+)/20, lr [\d.e+-]+, loss [\d.]+, [\d,]+ img/s"
                       r"(, at most \d+ (s|min) left)?", outcome.stderr)
    assert lines and lines[0][0] == "5", outcome.stderr
    assert all(left for step, left, _ in lines if step != "20")


def test_a_library_warning_is_one_line_naming_the_library(tmp_path):
    """Hazard: raw UserWarnings from torch reached the user with a file path and a source line. Here
    PyTorch's DataLoader warns that 2 workers exceed the 1 core the command may use."""
    from PIL import Image

    for name in ("a", "b"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for index in range(3):
            Image.new("L", (8, 8), 60 * index).save(tmp_path / "data" / name / f"{index}.png")
    command = ["train", "--data", "data", "--image-size", 18, "--cache", "none", "--workers", 2, "--epochs", 1,
               "--quiet", "--runs-dir", "runs"]
    outcome = subprocess.run([sys.executable, "-m", "cnnlab", *map(str, command)], cwd=tmp_path, capture_output=True,
                             text=True, timeout=300,
                             preexec_fn=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}))
    assert outcome.returncode == 0, outcome.stderr
    warned = [line for line in outcome.stderr.splitlines() if "DataLoader will create 2 worker processes" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: ") and warned[0].endswith("(torch)"), outcome.stderr
    assert "UserWarning" not in outcome.stderr and "check_worker_number_rationality" not in outcome.stderr
