"""The `cnnlab` command: instant help, one flag per config field, clear errors instead of tracebacks."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from cnnlab.config import TrainConfig
from tests.helpers import run_cli, run_process


def test_help_does_not_import_torch():
    # What makes `cnnlab --help` instant: the command modules import no heavy library at load time.
    code = ("import sys; from cnnlab.cli import cli; "
            "heavy = [m for m in ('torch', 'torchvision', 'numpy', 'matplotlib', 'PIL') if m in sys.modules]; "
            "print(','.join(heavy))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_help_lists_the_commands():
    outcome = run_cli("--help")
    assert outcome.exit_code == 0
    for command in ("train", "evaluate", "predict", "models", "summary", "datasets"):
        assert f"  {command}" in outcome.stdout


def test_every_config_field_is_a_train_flag():
    outcome = run_cli("train", "--help")
    assert outcome.exit_code == 0
    for field in dataclasses.fields(TrainConfig):
        assert "--" + field.name.replace("_", "-") in outcome.stdout, field.name
    assert "[default: guide-cnn; cnnlab-det for --task detection]" in " ".join(outcome.stdout.split())


def test_models_lists_the_registry():
    from cnnlab.models.registry import list_models

    outcome = run_cli("models")
    names = [line.split()[0] for line in outcome.stdout.splitlines() if line and not line.startswith("or ")]
    assert names == [entry.name for entry in list_models()]


def test_summary_of_the_guide_cnn():
    outcome = run_cli("summary", "guide-cnn", "--input", "1,28,28")
    assert outcome.exit_code == 0
    assert "93,322" in outcome.stdout and "64×11×11" in outcome.stdout


@pytest.mark.parametrize("args, message", [
    (("summary", "guide-cnn", "--input", "28,28"), "--input must be C,H,W"),
    (("summary", "guide-cnn", "--input", "1,8,8"), "--image-size"),
    (("summary", "resnet-18"), "Did you mean resnet18"),
    (("train", "--data", "no/such/folder"), "--data no/such/folder"),
    (("train", "--data", "digits", "--image-size", "big"), "--image-size must be N or H,W"),
    (("train", "--data", "digits", "--channels", "2"), "--channels must be 1 or 3"),
    (("train", "--data", "digits", "--model", "guide-cnn", "--limit", "100"), "--image-size"),
    (("train", "--data", "digits", "--split", "validation"), "splits are train, test"),
    (("evaluate", "runs/none"), "not a run folder"),
    (("predict", "runs/none", "x.png"), "not a run folder"),
])
def test_bad_input_gets_one_clear_line(args, message, tmp_path):
    outcome = run_cli(*args, cwd=tmp_path)
    assert outcome.exit_code == 2, outcome.stderr
    assert message in outcome.stderr
    assert "Traceback" not in outcome.stderr


def test_python_m_cnnlab_and_version():
    result = run_process("--version")
    assert result.returncode == 0 and "cnnlab" in result.stdout


def test_datasets_lists_named_datasets():
    outcome = run_cli("datasets")
    for name in ("fashion-mnist", "mnist", "cifar10", "digits"):
        assert name in outcome.stdout


def test_api_functions_are_callable_whatever_was_imported_first():
    import cnnlab
    import cnnlab.evaluate.plots  # noqa: F401  (binds the package names `cnnlab.train`/`cnnlab.evaluate`)
    import cnnlab.train.loop  # noqa: F401

    assert callable(cnnlab.train) and callable(cnnlab.evaluate)
    assert callable(cnnlab.predict) and callable(cnnlab.load)
