"""Scoring a run on the data it was trained on: `--split val` is the validation images the run held
out, chosen again exactly as training chose them; data with no test split (a plain folder of class
folders) falls back to them, with a warning; `--split train` is the images it trained on; a folder
changed since training is refused."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

import cnnlab
from cnnlab.data.sources import open_class_folders
from cnnlab.data.split import split_indices
from tests.helpers import run_cli

FAST_RUN = {"model": "guide-cnn", "image_size": "18", "epochs": 4, "batch_size": 64, "quiet": True}


@pytest.fixture(scope="module")
def folder_run(digits_folder, tmp_path_factory):
    """guide-cnn trained on a plain folder of class folders (no test split), from a private copy."""
    root = tmp_path_factory.mktemp("own-data")
    data = Path(shutil.copytree(digits_folder, root / "digits"))
    result = cnnlab.train(data=str(data), runs_dir=str(root / "runs"), name="folder", **FAST_RUN)
    return result, data


def _held_out_files(data: Path) -> set[str]:
    """The files training held out: 10% of the folder, stratified, seed 0 (cnnlab's defaults)."""
    source = open_class_folders(data)
    taken, _ = split_indices(source.targets, 0.1, 0, stratify=True)
    return {str(source.paths[i]) for i in taken}


def _best_val_accuracy(run_dir: Path) -> float:
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    best = min(rows, key=lambda row: float(row["val_loss"]))
    return float(best["val_accuracy"])


def test_a_folder_without_a_test_split_is_scored_on_its_held_out_images_with_a_warning(folder_run):
    result, data = folder_run
    outcome = run_cli("evaluate", result.run_dir, "--json")
    assert outcome.exit_code == 0, outcome.stderr
    assert f"{data} has no test split, so this scores the 180 validation images the run held out" in outcome.stderr
    assert "leans optimistic" in outcome.stderr
    metrics = json.loads(outcome.stdout)
    assert metrics["split"] == "val" and metrics["images"] == 180
    assert metrics["data"].endswith("validation images: 10% of --data held out (stratified, seed 0)")
    folder = result.run_dir / "eval-digits-val"
    files = {row["file"] for row in csv.DictReader((folder / "predictions.csv").open())}
    assert files == _held_out_files(data)  # exactly the images training never learned from
    # The same images the run validated on: the score is the one its best epoch logged (±1 image).
    assert abs(metrics["accuracy"] - _best_val_accuracy(result.run_dir)) <= 1 / 180 + 1e-9


def test_split_val_names_the_held_out_images_without_a_warning(folder_run):
    result, data = folder_run
    evaluation = cnnlab.evaluate(result.run_dir, split="val", quiet=True)
    assert evaluation.metrics["images"] == 180 and evaluation.output_dir.name == "eval-digits-val"
    outcome = run_cli("evaluate", result.run_dir, "--split", "val")
    assert outcome.exit_code == 0 and "warning" not in outcome.stderr


def test_split_train_of_a_plain_folder_is_the_images_the_run_trained_on(folder_run):
    result, data = folder_run
    outcome = run_cli("evaluate", result.run_dir, "--split", "train", "--json")
    assert outcome.exit_code == 0, outcome.stderr
    assert "warning" not in outcome.stderr
    metrics = json.loads(outcome.stdout)
    assert metrics["split"] == "train" and metrics["images"] == 1797 - 180
    assert metrics["data"].endswith(f"training images: --data {data} less the validation images, "
                                    "10% of --data held out (stratified, seed 0)")
    files = {row["file"] for row in csv.DictReader((result.run_dir / "eval-digits-train" / "predictions.csv").open())}
    everything = {str(path) for path in open_class_folders(data).paths}
    assert files == everything - _held_out_files(data)
    # 4 epochs on the 8×8 digits at 18 px: the images it learned from score above the held-out ones
    val = cnnlab.evaluate(result.run_dir, split="val", quiet=True).metrics["accuracy"]
    assert metrics["accuracy"] >= val - 0.02, (metrics["accuracy"], val)


def test_a_split_that_is_neither_says_what_there_is(folder_run):
    result, _ = folder_run
    with pytest.raises(cnnlab.errors.DataError, match=r"which has no 'holdout' split; pass --data with the images "
                       r"to evaluate on, --split train for the images the run trained on, or --split val"):
        cnnlab.evaluate(result.run_dir, split="holdout", quiet=True)


def test_files_training_skipped_as_unreadable_are_left_out_of_both_parts(digits_copy, tmp_path):
    good = next((digits_copy / "5").iterdir()).read_bytes()
    for digit in "0123456789":  # one broken file per class: some land in training, some in validation
        (digits_copy / digit / f"zz-broken-{digit}.png").write_bytes(good[: len(good) // 2])
    result = cnnlab.train(data=str(digits_copy), runs_dir=str(tmp_path / "runs"), name="skipped",
                          **{**FAST_RUN, "epochs": 1})
    recorded = json.loads((result.run_dir / "data.json").read_text())
    skipped = {part: len(files) for part, files in recorded["skipped_files"].items()}
    assert sum(skipped.values()) == 10 and set(skipped) == {"train", "val"}
    for part in ("train", "val"):
        evaluation = cnnlab.evaluate(result.run_dir, split=part, quiet=True)
        assert evaluation.metrics["images"] == recorded[part]["images"]


def test_a_folder_changed_since_training_is_refused_not_silently_resplit(digits_copy, tmp_path):
    result = cnnlab.train(data=str(digits_copy), runs_dir=str(tmp_path / "runs"), name="changed",
                          **{**FAST_RUN, "epochs": 1})
    for index, path in enumerate(sorted((digits_copy / "3").glob("*.png"))[:40]):
        shutil.copy(path, path.with_name(f"extra-{index}.png"))  # 40 more 3s: the 10% split moves
    outcome = run_cli("evaluate", result.run_dir)
    assert outcome.exit_code != 0
    assert f"{digits_copy} has changed since the run was trained: its validation images were 180" in outcome.stderr
    assert "the same split of it now gives 184" in outcome.stderr


def test_split_val_of_a_named_dataset_is_the_part_of_its_train_split_held_out(tmp_path):
    result = cnnlab.train(data="digits", runs_dir=str(tmp_path), name="named", **FAST_RUN)
    recorded = json.loads((result.run_dir / "data.json").read_text())["val"]
    evaluation = cnnlab.evaluate(result.run_dir, split="val", quiet=True)
    assert evaluation.metrics["images"] == recorded["images"] == 144  # 10% of the 1,438 training digits
    assert abs(evaluation.metrics["accuracy"] - _best_val_accuracy(result.run_dir)) <= 1 / 144 + 1e-9
    test = cnnlab.evaluate(result.run_dir, quiet=True)  # the named test split is still the default
    assert test.metrics["split"] == "test" and test.metrics["images"] == 359


def test_the_report_of_a_folder_run_evaluates_on_the_held_out_images_and_says_so(folder_run, tmp_path):
    result, _ = folder_run
    run_copy = Path(shutil.copytree(result.run_dir, tmp_path / "run"))
    outcome = run_cli("report", run_copy, "--samples", 2, "--mistakes", 2, "--max-maps", 4)
    assert outcome.exit_code == 0, outcome.stderr
    page = (run_copy / "report.html").read_text()
    assert "split val (eval-digits-val/)" in page
    assert "These are validation images: they chose the best epoch" in page


def test_the_report_leaves_a_training_images_score_out_unless_asked(folder_run, tmp_path):
    result, _ = folder_run
    run_copy = Path(shutil.copytree(result.run_dir, tmp_path / "run"))
    assert run_cli("evaluate", run_copy, "--split", "val").exit_code == 0
    assert run_cli("evaluate", run_copy, "--split", "train").exit_code == 0  # the newest evaluation now
    small = ("--samples", 2, "--mistakes", 2, "--max-maps", 4)
    assert run_cli("report", run_copy, *small).exit_code == 0
    page = (run_copy / "report.html").read_text()
    assert "split val (eval-digits-val/)" in page and "eval-digits-train" not in page
    asked = run_cli("report", run_copy, "--split", "train", *small)
    assert asked.exit_code == 0, asked.stderr
    page = (run_copy / "report.html").read_text()
    assert "split train (eval-digits-train/)" in page
    assert "These are the images the model trained on" in page


def test_a_relative_data_path_evaluated_from_elsewhere_says_where_to_run_it(digits_folder, tmp_path, monkeypatch):
    shutil.copytree(digits_folder, tmp_path / "digits")
    monkeypatch.chdir(tmp_path)
    result = cnnlab.train(data="digits/", runs_dir="runs", name="relative", **{**FAST_RUN, "epochs": 1})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    outcome = run_cli("evaluate", result.run_dir.resolve(), cwd=elsewhere)
    assert outcome.exit_code != 0
    assert f"the run was trained on digits/, which is not there from {elsewhere}; run this from the folder you " \
           "trained in, or pass --data" in outcome.stderr
    assert run_cli("evaluate", result.run_dir.resolve(), "--split", "val", cwd=tmp_path).exit_code == 0


def test_a_split_a_named_dataset_lacks_lists_the_ones_it_has(tmp_path):
    result = cnnlab.train(data="digits", runs_dir=str(tmp_path), name="named", **{**FAST_RUN, "epochs": 1})
    with pytest.raises(cnnlab.errors.DataError, match=r"digits has no 'holdout' split: its splits are train, "
                       r"test, and --split val is the validation images the run held out"):
        cnnlab.evaluate(result.run_dir, split="holdout", quiet=True)
