"""evaluate, predict and explain share one set of inference options, and pass them all on."""

from __future__ import annotations

import json

import pytest

from tests.helpers import run_cli

SHARED = ("--device", "--runs-dir", "--precision", "--tta", "--threshold", "--conf", "--iou", "--max-image-pixels")
COMMANDS = ("evaluate", "predict", "explain")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_inference_command_lists_the_same_options(command):
    outcome = run_cli(command, "--help")
    assert outcome.exit_code == 0, outcome.stderr
    assert all(option in outcome.stdout for option in SHARED), outcome.stdout


def _arguments(command: str, run, image, out) -> list[object]:
    # Written outside the shared run folder: the report tests pick up the evaluations they find there.
    return {"evaluate": [run, "--limit", 50, "--output-dir", out], "predict": [run, image],
            "explain": [run, image, "-o", out]}[command]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_detectors_threshold_given_to_a_classifier_is_refused_by_name(command, guide_run, fashion_pngs, tmp_path):
    outcome = run_cli(command, *_arguments(command, guide_run, fashion_pngs[0], tmp_path / "out"),
                      "--conf", 0.5, "--iou", 0.3)
    assert outcome.exit_code != 0
    assert "--conf, --iou: not an option of a classification model" in outcome.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_precision_tta_and_threshold_reach_the_model(command, guide_run, fashion_pngs, tmp_path):
    # A threshold near 0 for T-shirt/top makes (nearly) every answer T-shirt/top: proof that the option
    # reached the model. The image is an ankle boot.
    outcome = run_cli(command, *_arguments(command, guide_run, fashion_pngs[0], tmp_path / "out"), "--precision", "fp32",
                      "--tta", "flip", "--threshold", "T-shirt/top=1e-12", *(["--json"] if command == "evaluate" else []))
    assert outcome.exit_code == 0, outcome.stderr
    if command == "predict":
        assert outcome.stdout.split()[1] == "T-shirt/top"
    elif command == "explain":
        assert "predicted T-shirt/top" in outcome.stdout
    else:
        metrics = json.loads(outcome.stdout)
        assert metrics["tta"] == "flip" and metrics["images"] == 50
        assert metrics["accuracy"] < 0.3  # about the T-shirts' share of the 50 images


def test_cnnlab_tasks_lists_every_registered_task_with_its_metric_and_default_model():
    from cnnlab.tasks import task_names

    outcome = run_cli("tasks")
    assert outcome.exit_code == 0, outcome.stderr
    assert [line for line in outcome.stdout.splitlines() if not line.startswith(" ")] == list(task_names())
    assert "metric: map; default model: cnnlab-det" in outcome.stdout
    assert "named datasets: fashion-mnist-boxes" in outcome.stdout
    assert "COCO JSON" in outcome.stdout and "YOLO" in outcome.stdout and "Pascal VOC" in outcome.stdout


def test_models_and_datasets_show_what_belongs_to_detection():
    models = run_cli("models").stdout
    assert any(line.startswith("cnnlab-det") and "[detection]" in line for line in models.splitlines())
    assert "fashion-mnist-boxes" in run_cli("datasets").stdout
