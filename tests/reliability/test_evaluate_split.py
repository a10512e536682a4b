"""`evaluate --split` on data without split folders, and images the run trained on: never scored
silently as if they were new."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

import cnnlab
from cnnlab.data.sources import open_class_folders
from cnnlab.data.split import split_indices
from tests.helpers import run_cli
from tests.reliability.images import two_digit_classes


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory) -> tuple[Path, Path]:
    """fast-cnn trained for 1 epoch on a plain folder of class folders (80 images, no split folders)."""
    data = two_digit_classes(tmp_path_factory.mktemp("data") / "photos")
    runs = tmp_path_factory.mktemp("runs")
    outcome = run_cli("train", "--data", data, "--epochs", 1, "--model", "fast-cnn", "--name", "plain",
                      "--runs-dir", runs)
    assert outcome.exit_code == 0, outcome.stderr
    return runs / "plain", data


def _held_out(data: Path) -> set[str]:
    """What training held out, worked out independently: 10% of the folder, stratified, seed 0."""
    source = open_class_folders(data)
    taken, _ = split_indices(source.targets, 0.1, 0, stratify=True)
    return {str(source.paths[i]) for i in taken}


def _scored(folder: Path) -> set[str]:
    return {row["file"] for row in csv.DictReader((folder / "predictions.csv").open())}


def test_split_test_of_the_runs_own_plain_folder_scores_exactly_the_held_out_images(plain_run):
    """Hazard: `evaluate RUN --data photos/ --split test` on the plain folder the run trained on ignored
    --split and scored all its images, 90% of which the run had trained on, without a word."""
    run, data = plain_run
    outcome = run_cli("evaluate", run, "--data", data, "--split", "test", "--json")
    assert outcome.exit_code == 0, outcome.stderr
    metrics = json.loads(outcome.stdout)
    assert metrics["images"] == 8 and metrics["split"] == "val"
    assert f"{data} has no test split, so this scores the 8 validation images the run held out" in outcome.stderr
    assert _scored(run / "eval-photos-val") == _held_out(data)
    assert metrics["overlaps_training"] == {"images": 0, "of": 8}


def test_an_unknown_split_is_an_error_naming_the_valid_ones(plain_run):
    """Hazard: any --split was accepted with --data (even --split banana), scored everything into
    eval-photos-banana/, and the report then called the score "split banana"."""
    run, data = plain_run
    for data_given in (("--data", data), ()):
        outcome = run_cli("evaluate", run, *data_given, "--split", "banana")
        assert outcome.exit_code == 2
        assert "'banana'" in outcome.stderr and "--split train" in outcome.stderr and "--split val" in outcome.stderr
        assert not list(run.glob("eval-*banana*"))


def test_other_data_without_splits_is_scored_whole_and_a_split_of_it_is_refused(plain_run, tmp_path):
    """Hazard (the other way round): a plain folder the run never saw is what `--data` is for: scored
    whole as its test split; --split val or train of it cannot mean anything and is refused."""
    run, _ = plain_run
    other = two_digit_classes(tmp_path / "new-photos", per_class=6)
    evaluation = cnnlab.evaluate(run, str(other), quiet=True)
    assert evaluation.metrics["images"] == 12 and evaluation.metrics["overlaps_training"] == {"images": 0, "of": 12}
    for split in ("val", "train", "banana"):
        outcome = run_cli("evaluate", run, "--data", other, "--split", split)
        assert outcome.exit_code == 2
        assert f"--split {split}: {other} is not divided into splits" in outcome.stderr


def _mixed_folder(root: Path, data: Path, trained_on: int = 5) -> Path:
    """New images plus links to `trained_on` files the run trained on, as class folders."""
    new = two_digit_classes(root / "fresh", per_class=3)
    held_out = _held_out(data)
    training_files = sorted(p for p in open_class_folders(data).paths if str(p) not in held_out)
    mixed = root / "mixed"
    for klass in ("0", "1"):
        (mixed / klass).mkdir(parents=True)
        for path in (new / klass).iterdir():
            os.link(path, mixed / klass / f"new-{path.name}")
    for path in training_files[:trained_on]:  # the same files, reached through links: resolved, they match
        (mixed / path.parent.name / f"seen-{path.name}").symlink_to(path)
    return mixed


def test_scoring_images_the_run_trained_on_is_flagged_in_the_cli_metrics_and_report(plain_run, tmp_path):
    """Hazard: `evaluate` scored images the run had trained on as if they were new, with no warning,
    in the terminal, in metrics.json or in the report."""
    run, data = plain_run
    mixed = _mixed_folder(tmp_path, data)
    outcome = run_cli("evaluate", run, "--data", mixed)
    assert outcome.exit_code == 0, outcome.stderr
    assert "warning: 5 of the 11 images scored are images the run trained on" in outcome.stderr
    metrics = json.loads((run / "eval-mixed-test" / "metrics.json").read_text())
    assert metrics["overlaps_training"] == {"images": 5, "of": 11}
    report = tmp_path / "report.html"
    outcome = run_cli("report", run, "--data", mixed, "-o", report, "--mistakes", 1, "--samples", 1)
    assert outcome.exit_code == 0, outcome.stderr
    assert "Warning: 5 of the 11 images scored are images the model trained on" in report.read_text()


def test_split_train_is_flagged_as_the_training_images(plain_run):
    """Hazard: the same when asked for: `--split train` scores the images the run trained on, and the
    output says so (a note, since it was asked for; metrics.json counts them all)."""
    run, data = plain_run
    outcome = run_cli("evaluate", run, "--data", data, "--split", "train")
    assert outcome.exit_code == 0, outcome.stderr
    assert "note: these are the 72 images the run trained on" in outcome.stderr
    metrics = json.loads((run / "eval-photos-train" / "metrics.json").read_text())
    assert metrics["overlaps_training"] == {"images": 72, "of": 72}
