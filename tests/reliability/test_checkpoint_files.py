"""Checkpoints and the files of a run folder: modes, leftovers of a killed writer, corrupt
metadata and broken config files, each named rather than a traceback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import cnnlab
from cnnlab.errors import CnnlabError
from tests.helpers import run_cli


@pytest.fixture(scope="module")
def tiny_run(digits_split_folder, tmp_path_factory) -> Path:
    """A real run: guide-cnn, 1 epoch on 100 of the digits at 18×18."""
    runs = tmp_path_factory.mktemp("runs")
    outcome = run_cli("train", "--data", digits_split_folder, "--image-size", 18, "--epochs", 1, "--limit", 100,
                      "--name", "tiny", "--runs-dir", runs)
    assert outcome.exit_code == 0, outcome.stderr
    return runs / "tiny"


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_run, tmp_path / "runs" / "tiny"))


@pytest.fixture
def umask_027():
    previous = os.umask(0o027)
    try:
        yield 0o640
    finally:
        os.umask(previous)


# --- modes ----------------------------------------------------------------------------------------


def test_checkpoints_get_the_same_mode_as_their_sidecars_the_users_umask(tiny_run, tmp_path, umask_027):
    """Hazard: checkpoints ended up mode 0600 (the temporary file's) while their JSON sidecars were
    0644: a shared group could read the description of a model but not the model."""
    from cnnlab.checkpoint import load_model_checkpoint, save_model_checkpoint

    tensors, info = load_model_checkpoint(tiny_run / "weights" / "best.safetensors")
    save_model_checkpoint(tmp_path / "model.safetensors", tensors, info)
    for name in ("model.safetensors", "model.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == umask_027, name


def test_every_file_of_a_run_gets_the_users_umask(digits_split_folder, tmp_path, umask_027):
    """Hazard: the same, for everything training writes (train-state, config, metrics, curves)."""
    outcome = run_cli("train", "--data", digits_split_folder, "--image-size", 18, "--epochs", 1, "--limit", 100,
                      "--name", "modes", "--runs-dir", tmp_path / "runs")
    assert outcome.exit_code == 0, outcome.stderr
    files = [path for path in (tmp_path / "runs" / "modes").rglob("*") if path.is_file()]
    assert len(files) >= 9
    modes = {path.relative_to(tmp_path).as_posix(): oct(path.stat().st_mode & 0o777) for path in files}
    assert set(modes.values()) == {oct(umask_027)}, modes


# --- leftovers of a writer killed mid-write --------------------------------------------------------

_WRITER = """
import sys, time
from pathlib import Path
from cnnlab.io import atomic_path
with atomic_path(Path(sys.argv[1])) as temp:
    temp.write_bytes(b"half a checkpoint")
    print("writing", flush=True)
    time.sleep(120)
"""


def _kill_a_writer_mid_write(target: Path) -> None:
    """Start a real process writing `target` through cnnlab's atomic writer and SIGKILL it mid-write."""
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    writer.send_signal(signal.SIGKILL)
    writer.wait()


def test_a_writer_killed_mid_write_leaves_no_file_and_its_leftovers_are_cleared_on_resume(run_copy):
    """Hazard: a SIGKILL mid-write left `.*.tmp` and `.tmpXXXX` files in weights/ that nothing ever
    removed; a user's files that merely look alike must stay."""
    weights = run_copy / "weights"
    before = {path.name: path.read_bytes() for path in weights.iterdir()}
    _kill_a_writer_mid_write(weights / "best.safetensors")
    _kill_a_writer_mid_write(run_copy / "config.yaml")
    leftovers = sorted(p.name for p in weights.iterdir() if p.name not in before)
    assert leftovers, "the killed writer left nothing to clear: the test proves nothing"
    assert {name: (weights / name).read_bytes() for name in before} == before  # the checkpoints intact
    users = [weights / ".best.safetensors.notes.tmp", weights / ".tmp-mine", run_copy / ".cnnlab-tmp-mine"]
    for path in users:
        path.write_text("the user's")
    outcome = run_cli("train", "--resume", run_copy, "--epochs", 2)
    assert outcome.exit_code == 0, outcome.stderr
    assert not [p for p in weights.iterdir() if p.name in leftovers]
    assert not [p for p in run_copy.iterdir() if p.name.startswith(".cnnlab-tmp-") and p.is_dir()]
    for path in users:
        assert path.read_text() == "the user's", path


def test_a_live_writers_temporary_folder_is_not_touched(tmp_path):
    """Hazard (the other way round): clearing leftovers must not pull a file from under a writer that
    is still running (another process saving into the same folder)."""
    from cnnlab.io import remove_stale_temporary_files

    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path / "x.json")], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
        assert remove_stale_temporary_files(tmp_path) == []
        assert len(list(tmp_path.iterdir())) == 1
    finally:
        writer.kill()
        writer.wait()
    assert len(remove_stale_temporary_files(tmp_path)) == 1 and not list(tmp_path.iterdir())


# --- corrupt checkpoint metadata --------------------------------------------------------------------


def _rewrite_metadata(source: Path, target: Path, metadata: dict[str, str] | None) -> Path:
    from safetensors.torch import load_file, save_file

    save_file(load_file(str(source)), str(target), metadata=metadata)
    return target


def _good_metadata(run: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(run / "weights" / "best.safetensors"), framework="pt") as handle:
        return json.loads(handle.metadata()["cnnlab"])


BROKEN_METADATA = {
    "not JSON": ('{"format": "cnnlab.checkpoint/1", "architecture": ', "not valid JSON"),
    "a JSON list": ("[1, 2, 3]", "not a JSON object"),
    "no architecture": (lambda good: {k: v for k, v in good.items() if k != "architecture"}, "'architecture'"),
    "no input": (lambda good: {k: v for k, v in good.items() if k != "input"}, "'input'"),
    "architecture of the wrong type": (lambda good: {**good, "architecture": 7}, "architecture"),
    "input without its mean": (lambda good: {**good, "input": {k: v for k, v in good["input"].items()
                                                               if k != "mean"}}, "mean"),
}


@pytest.mark.parametrize("case", BROKEN_METADATA)
def test_corrupt_checkpoint_metadata_is_named_by_predict_evaluate_explain_and_load(case, tiny_run, tmp_path,
                                                                                    digits_split_folder):
    """Hazard: a safetensors checkpoint whose cnnlab metadata was not JSON, or lacked a field, gave a raw
    JSONDecodeError/KeyError traceback from predict (and evaluate, explain, load)."""
    broken, expected = BROKEN_METADATA[case]
    text = broken if isinstance(broken, str) else json.dumps(broken(_good_metadata(tiny_run)))
    checkpoint = _rewrite_metadata(tiny_run / "weights" / "best.safetensors", tmp_path / "broken.safetensors",
                                   {"cnnlab": text})
    image = next((digits_split_folder / "test" / "3").iterdir())
    with pytest.raises(CnnlabError) as raised:
        cnnlab.load(checkpoint)
    assert str(checkpoint) in str(raised.value) and expected in str(raised.value)
    for command in (("predict", checkpoint, image), ("evaluate", checkpoint, "--data", digits_split_folder),
                    ("explain", checkpoint, image, "-o", tmp_path / "explained")):
        outcome = run_cli(*command)
        assert outcome.exit_code == 2, (command, outcome.stderr)
        assert str(checkpoint) in outcome.stderr and expected in outcome.stderr, (command, outcome.stderr)


def test_a_checkpoint_without_cnnlab_metadata_is_named(tiny_run, tmp_path, digits_split_folder):
    """Hazard: a safetensors file of bare weights (no cnnlab metadata) given to predict."""
    checkpoint = _rewrite_metadata(tiny_run / "weights" / "best.safetensors", tmp_path / "bare.safetensors", None)
    outcome = run_cli("predict", checkpoint, next((digits_split_folder / "test" / "3").iterdir()))
    assert outcome.exit_code == 2 and f"{checkpoint}: a safetensors file without cnnlab metadata" in outcome.stderr


@pytest.mark.parametrize("part", ["optimizer", "progress", "model"])
def test_a_training_state_missing_a_part_is_named_on_resume(run_copy, part):
    """Hazard: a train-state.safetensors whose metadata lacks a part gave a KeyError on --resume."""
    from safetensors import safe_open

    state = run_copy / "weights" / "train-state.safetensors"
    with safe_open(str(state), framework="pt") as handle:
        metadata = json.loads(handle.metadata()["cnnlab"])
    del metadata[part]
    _rewrite_metadata(state, state, {"cnnlab": json.dumps(metadata)})
    outcome = run_cli("train", "--resume", run_copy, "--epochs", 2)
    assert outcome.exit_code == 2, outcome.stderr
    assert str(state) in outcome.stderr and part in outcome.stderr


# --- broken config.yaml and data.json ---------------------------------------------------------------

BROKEN_CONFIGS = {
    "not YAML": ("data: [unclosed\nmodel: guide-cnn\n", "not valid YAML"),
    "not a mapping": ("- just\n- a list\n", "must hold a mapping"),
    "an unknown field": (None, "unknown field 'epochz'"),
    "a field of the wrong type": (None, "field 'epochs' must be int"),
}


@pytest.mark.parametrize("case", BROKEN_CONFIGS)
def test_a_broken_config_yaml_is_named_by_report_and_resume(case, run_copy):
    """Hazard: a config.yaml that is not YAML, not a mapping, or has unknown fields or wrong types gave
    a traceback from `cnnlab report` (resume must name it as well)."""
    config = run_copy / "config.yaml"
    text, expected = BROKEN_CONFIGS[case]
    if case == "an unknown field":
        text = config.read_text() + "epochz: 3\n"
    elif case == "a field of the wrong type":
        text = config.read_text().replace("epochs: 1", "epochs: many")
    config.write_text(text)
    for command in (("report", run_copy), ("train", "--resume", run_copy, "--epochs", 2)):
        outcome = run_cli(*command)
        assert outcome.exit_code == 2, (command, outcome.stderr)
        assert str(config) in outcome.stderr and expected in outcome.stderr, (command, outcome.stderr)


def test_a_broken_data_json_is_named_by_evaluate_and_report(run_copy):
    """Hazard: a data.json cut short (a full disk, an editor) gave a raw JSONDecodeError from
    evaluate (which checks the held-out images against it) and report."""
    data_json = run_copy / "data.json"
    data_json.write_text(data_json.read_text()[:40])
    for command in (("evaluate", run_copy, "--split", "val"), ("report", run_copy)):
        outcome = run_cli(*command)
        assert outcome.exit_code == 2, (command, outcome.stderr)
        assert f"{data_json}: not valid JSON" in outcome.stderr, (command, outcome.stderr)
