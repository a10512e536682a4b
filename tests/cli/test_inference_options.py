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


def _arguments(command: str, run, image) -> list[object]:
    return {"evaluate": [run, "--limit", 50], "predict": [run, image],
            "explain": [run, image, "-o", run / "explain-options"]}[command]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_detectors_threshold_given_to_a_classifier_is_refused_by_name(command, guide_run, fashion_pngs):
    outcome = run_cli(command, *_arguments(command, guide_run, fashion_pngs[0]), "--conf", 0.5, "--iou", 0.3)
    assert outcome.exit_code != 0
    assert "--conf, --iou: not an option of a classification model" in outcome.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_precision_tta_and_threshold_reach_the_model(command, guide_run, fashion_pngs):
    # A threshold near 0 for T-shirt/top makes (nearly) every answer T-shirt/top: proof that the option
    # reached the model. The image is an ankle boot.
    outcome = run_cli(command, *_arguments(command, guide_run, fashion_pngs[0]), "--precision", "fp32",
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
