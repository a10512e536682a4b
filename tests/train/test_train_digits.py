"""End to end on real images: a PNG folder of scikit-learn's digits → train → evaluate → predict."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
import yaml
from PIL import Image

from tests.helpers import run_cli


@pytest.fixture(scope="module")
def trained_digits(digits_split_folder, tmp_path_factory):
    """guide-cnn trained on the digits PNG folder (train split), through the real command."""
    runs = tmp_path_factory.mktemp("runs")
    outcome = run_cli("train", "--data", digits_split_folder, "--model", "guide-cnn", "--image-size", 24,
                      "--epochs", 12, "--batch-size", 32, "--name", "digits", "--runs-dir", runs, "--seed", 1)
    assert outcome.exit_code == 0, outcome.stderr
    return runs / "digits", digits_split_folder, outcome


def test_run_folder_holds_config_metrics_curves_and_checkpoints(trained_digits):
    run, data, outcome = trained_digits
    assert outcome.stdout.strip().splitlines()[-1] == f"run folder: {run}"  # the one line scripts read
    assert f"next: cnnlab evaluate {run} | cnnlab predict {run} IMAGES" in outcome.stderr
    for name in ("config.yaml", "data.json", "metrics.csv", "training_curves.png", "weights/best.safetensors",
                 "weights/best.json", "weights/last.safetensors", "weights/train-state.safetensors"):
        assert (run / name).is_file(), name
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["image_size"] == "24,24" and config["channels"] == 1 and config["lr"] == 0.003
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 13))
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"]) / 3
    sidecar = json.loads((run / "weights/best.json").read_text())
    assert sidecar["task"]["class_names"] == [str(d) for d in range(10)]
    assert sidecar["input"]["channels"] == 1 and sidecar["input"]["height"] == 24
    assert 0.0 < sidecar["input"]["mean"][0] < 0.5
    assert Image.open(run / "training_curves.png").size[0] >= 800


def test_progress_reports_images_per_second_and_eta(trained_digits):
    _, _, outcome = trained_digits
    lines = [line for line in outcome.stderr.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 12
    assert "img/s" in lines[0] and "ETA" in lines[0] and "val loss" in lines[0]


def test_evaluate_on_the_test_split(trained_digits):
    run, data, _ = trained_digits
    outcome = run_cli("evaluate", run, "--json")
    assert outcome.exit_code == 0, outcome.stderr
    metrics = json.loads(outcome.stdout)
    assert metrics["images"] == 359
    assert metrics["accuracy"] >= 0.93
    assert 0.9 <= metrics["macro_avg"]["f1"] <= 1.0
    matrix = metrics["confusion_matrix"]["matrix"]
    assert sum(map(sum, matrix)) == 359
    assert sum(matrix[i][i] for i in range(10)) == round(metrics["accuracy"] * 359)
    folder = run / "eval-digits-test"
    assert Image.open(folder / "confusion_matrix.png").format == "PNG"
    rows = list(csv.DictReader((folder / "predictions.csv").open()))
    assert len(rows) == 359
    assert set(rows[0]) == {"file", "true_label", "predicted_label", "confidence", "correct"}
    assert all(row["file"].endswith(".png") and f"/test/{row['true_label']}/" in row["file"] for row in rows)
    correct = sum(int(row["correct"]) for row in rows)
    assert correct == round(metrics["accuracy"] * 359)


def test_predict_by_file_name_with_unreadable_rows(trained_digits, tmp_path):
    run, data, _ = trained_digits
    files = sorted((data / "test").rglob("*.png"))[::12]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"")
    outcome = run_cli("predict", run, *files, broken, tmp_path / "missing.png", "--top-k", 3,
                      "--output", tmp_path / "out.csv")
    assert outcome.exit_code == 0, outcome.stderr
    rows = list(csv.DictReader((tmp_path / "out.csv").open()))
    assert len(rows) == len(files) + 2
    good = rows[: len(files)]
    right = sum(row["label"] == f.parent.name for row, f in zip(good, files))
    assert right / len(files) >= 0.9
    assert all(float(r["confidence"]) >= float(r["confidence_2"]) >= float(r["confidence_3"]) for r in good)
    assert "empty" in rows[-2]["error"] and "no such file" in rows[-1]["error"]
    assert "ERROR" in outcome.stdout and "2 of" in outcome.stderr


def test_predict_folders_and_globs_to_json(trained_digits, tmp_path):
    run, data, _ = trained_digits
    outcome = run_cli("predict", run, data / "test" / "7", str(data / "test" / "3" / "*.png"), "--output",
                      tmp_path / "p.json")
    assert outcome.exit_code == 0, outcome.stderr
    rows = json.loads((tmp_path / "p.json").read_text())
    sevens = [r for r in rows if "/7/" in r["file"]]
    threes = [r for r in rows if "/3/" in r["file"]]
    assert len(sevens) == len(list((data / "test" / "7").iterdir())) and len(threes) > 30
    assert sum(r["label"] == "7" for r in sevens) / len(sevens) >= 0.9


def test_bad_files_are_reported_and_the_rest_trains(digits_copy, runs_dir):
    (digits_copy / "3" / "zero-bytes.png").write_bytes(b"")
    good = sorted((digits_copy / "5").iterdir())[0].read_bytes()
    (digits_copy / "5" / "truncated.png").write_bytes(good[: len(good) // 2])
    (digits_copy / "7" / "text.jpg").write_text("I am not a JPEG")
    before = {p: p.stat().st_mtime_ns for p in digits_copy.rglob("*")}
    outcome = run_cli("train", "--data", digits_copy, "--image-size", 18, "--epochs", 1, "--name", "bad",
                      "--runs-dir", runs_dir)
    assert outcome.exit_code == 0, outcome.stderr
    assert "skipped 3 unreadable image file(s)" in outcome.stderr
    for name in ("zero-bytes.png", "truncated.png", "text.jpg"):
        assert name in outcome.stderr
    summary = json.loads((runs_dir / "bad" / "data.json").read_text())
    skipped = [entry["path"] for files in summary["skipped_files"].values() for entry in files]
    assert sorted(p.split("/")[-1] for p in skipped) == ["text.jpg", "truncated.png", "zero-bytes.png"]
    assert summary["train"]["images"] + summary["val"]["images"] == 1797
    assert {p: p.stat().st_mtime_ns for p in digits_copy.rglob("*")} == before  # user files untouched


def test_strict_refuses_before_training(digits_copy, runs_dir):
    (digits_copy / "7" / "text.jpg").write_text("I am not a JPEG")
    outcome = run_cli("train", "--data", digits_copy, "--image-size", 18, "--strict", "--name", "strict",
                      "--runs-dir", runs_dir)
    assert outcome.exit_code == 2
    assert "text.jpg" in outcome.stderr and "--strict" in outcome.stderr
    assert "Traceback" not in outcome.stderr
    assert not (runs_dir / "strict").exists()


def test_yaml_model_and_config_file(digits_split_folder, runs_dir, tmp_path):
    from pathlib import Path

    net = Path(__file__).parents[2] / "examples" / "guide-cnn.yaml"
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"data": str(digits_split_folder), "model": str(net), "epochs": 5,
                                      "image-size": 20, "batch_size": 32, "optimizer": "sgd", "lr": 0.05}))
    outcome = run_cli("train", "-c", config, "--epochs", 2, "--name", "yaml", "--runs-dir", runs_dir)
    assert outcome.exit_code == 0, outcome.stderr
    saved = yaml.safe_load((runs_dir / "yaml" / "config.yaml").read_text())
    assert saved["epochs"] == 2 and saved["optimizer"] == "sgd" and saved["lr"] == 0.05  # flag beats file
    sidecar = json.loads((runs_dir / "yaml" / "weights" / "best.json").read_text())
    assert sidecar["architecture"]["name"] == "yaml" and sidecar["architecture"]["layers"][0]["kind"] == "conv"
    # The run is self-contained: moving the YAML file away does not stop evaluation.
    moved = tmp_path / "moved.yaml"
    shutil.copy(net, moved)
    outcome = run_cli("evaluate", runs_dir / "yaml", "--json")
    assert outcome.exit_code == 0 and json.loads(outcome.stdout)["accuracy"] > 0.5


def test_config_file_with_unknown_key_names_it(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("data: digits\nepoch: 3\n")
    outcome = run_cli("train", "-c", config)
    assert outcome.exit_code == 2
    assert "unknown field 'epoch'" in outcome.stderr and "epochs" in outcome.stderr


def test_existing_run_name_is_not_overwritten(digits_split_folder, runs_dir):
    args = ("train", "--data", digits_split_folder, "--image-size", 18, "--epochs", 1, "--limit", 200,
            "--name", "same", "--runs-dir", runs_dir)
    assert run_cli(*args).exit_code == 0
    again = run_cli(*args)
    assert again.exit_code == 2 and "already exists" in again.stderr and "--resume" in again.stderr
    assert run_cli(*args, "--exist-ok").exit_code == 0


def test_a_model_that_does_not_fit_the_data_leaves_no_run_folder(digits_split_folder, runs_dir, tmp_path):
    net = tmp_path / "no-flatten.yaml"
    net.write_text("layers:\n  - conv: {filters: 8, kernel: 3}\n  - dense: {units: classes}\n")
    outcome = run_cli("train", "--data", digits_split_folder, "--model", net, "--image-size", 18, "--epochs", 1,
                      "--name", "misfit", "--runs-dir", runs_dir)
    assert outcome.exit_code != 0
    assert f"{net}: layer 2 (dense): the final dense layer" in outcome.stderr  # the file, not "layers"
    assert not (runs_dir / "misfit").exists()


def test_exist_ok_replaces_an_empty_folder_left_by_a_failed_start(digits_split_folder, runs_dir):
    (runs_dir / "again" / "weights").mkdir(parents=True)  # what a start that failed used to leave
    outcome = run_cli("train", "--data", digits_split_folder, "--image-size", 18, "--epochs", 1, "--limit", 100,
                      "--name", "again", "--runs-dir", runs_dir, "--exist-ok")
    assert outcome.exit_code == 0, outcome.stderr
    assert (runs_dir / "again" / "config.yaml").is_file()
    (runs_dir / "keep").mkdir()
    (runs_dir / "keep" / "notes.txt").write_text("mine")
    refused = run_cli("train", "--data", digits_split_folder, "--image-size", 18, "--epochs", 1, "--limit", 100,
                      "--name", "keep", "--runs-dir", runs_dir, "--exist-ok")
    assert refused.exit_code != 0 and "is not a cnnlab run folder; refusing to replace it" in refused.stderr
    assert (runs_dir / "keep" / "notes.txt").read_text() == "mine"


def test_default_run_names_are_numbered(digits_split_folder, runs_dir):
    args = ("train", "--data", digits_split_folder, "--image-size", 18, "--epochs", 1, "--limit", 100,
            "--runs-dir", runs_dir)
    assert run_cli(*args).exit_code == 0 and run_cli(*args).exit_code == 0
    assert sorted(p.name for p in runs_dir.iterdir()) == ["guide-cnn-digits", "guide-cnn-digits-2"]


def test_early_stopping_with_patience(digits_split_folder, runs_dir):
    import cnnlab

    # A learning rate far too high: validation loss stops improving, and training must stop. (Adam's steps
    # stay bounded, so the loss stays finite; SGD at 3.0 went to nan, which now stops a run as diverged.)
    result = cnnlab.train(data=str(digits_split_folder), image_size="18", epochs=15, limit=400, optimizer="adam",
                          lr=0.1, schedule="constant", patience=2, runs_dir=str(runs_dir), quiet=True)
    assert result.stop_reason is not None and "early stopping" in result.stop_reason
    assert len(result.history) < 15
    assert len(result.history) - result.best_epoch == 2


def test_predict_reading_ahead_gives_the_same_rows_and_restores_threads(trained_digits, tmp_path):
    # 20 files a batch: decoding runs ahead on a thread from the first batch on (with a core of its
    # own where that pays); one batch of everything: no thread. Same rows, broken files in the
    # first batches and later ones included, thread count restored.
    import torch

    import cnnlab

    run, data, _ = trained_digits
    files = sorted((data / "test").rglob("*.png"))[::6]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n")
    paths = [*files[:30], broken, *files[30:44], broken, *files[44:]]
    assert len(paths) > 60
    threads = torch.get_num_threads()
    ahead = cnnlab.predict(run, paths, batch_size=20, top_k=2, device="cpu")
    assert torch.get_num_threads() == threads
    at_once = cnnlab.predict(run, paths, batch_size=len(paths), top_k=2, device="cpu")
    assert ahead == at_once
    assert [i for i, row in enumerate(ahead) if "error" in row] == [30, 45]


def test_predict_says_when_files_were_fitted_to_the_model(trained_digits, tmp_path, caplog):
    import cnnlab

    run, data, _ = trained_digits  # trained at 24×24 grayscale
    digit = sorted((data / "test" / "3").glob("*.png"))[0]  # 8×8
    Image.open(digit).resize((24, 24)).save(tmp_path / "fits.png")
    Image.open(digit).convert("RGB").resize((24, 24)).save(tmp_path / "colour.png")
    with caplog.at_level("WARNING", logger="cnnlab.evaluate.predict"):
        cnnlab.predict(run, [tmp_path / "fits.png"], device="cpu")
    assert caplog.text == ""
    with caplog.at_level("WARNING", logger="cnnlab.evaluate.predict"):
        cnnlab.predict(run, [tmp_path / "fits.png", tmp_path / "colour.png", digit], device="cpu")
    assert f"note: the model takes 24×24 grayscale images; 2 of 3 file(s) were resized or converted to fit " \
           f"(e.g. {tmp_path / 'colour.png'}: 24×24 colour). It answers with one of its own classes" in caplog.text
    outcome = run_cli("predict", run, digit)
    assert outcome.exit_code == 0 and f"(e.g. {digit}: 8×8 grayscale)" in outcome.stderr


@pytest.mark.parametrize("worth_it", [True, False])
def test_predict_gives_the_model_its_threads_back_unless_a_core_for_decoding_pays(trained_digits, monkeypatch,
                                                                                  worth_it):
    """The first batch runs with one intra-op thread fewer and is timed; the decision that
    `_worth_a_core` takes from it holds for every later batch; the count is restored at the end."""
    import torch

    import cnnlab
    import cnnlab.evaluate.predict as predict_module

    run, data, _ = trained_digits
    paths = sorted((data / "test").rglob("*.png"))[:70]
    trained = cnnlab.load(run, device="cpu")
    threads = torch.get_num_threads()
    if threads < 2:
        pytest.skip("needs 2 or more intra-op threads")
    seen, timed = [], []
    answer = predict_module._worth_a_core

    def worth(decode, model, count):
        timed.append((decode, model, count))
        answer(decode, model, count)  # still computes on real timings
        return worth_it

    monkeypatch.setattr(predict_module, "_worth_a_core", worth)
    monkeypatch.setattr(trained, "predict_arrays",
                        lambda images, top_k=1, origins=None, inner=trained.predict_arrays: (
                            seen.append(torch.get_num_threads()), inner(images, top_k=top_k, origins=origins))[1])
    rows = cnnlab.predict(trained, paths, batch_size=20)
    assert len(rows) == 70 and all("label" in row for row in rows)
    assert len(timed) == 1 and timed[0][0] > 0 and timed[0][1] > 0 and timed[0][2] == threads
    assert seen == [threads - 1] + [threads - 1 if worth_it else threads] * 4  # batches of 5, then 20, 20, 20, 5
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize("decode, model, threads, expected", [
    (14.0, 9.0, 2, True),     # small PNGs, small CNN on 2 cores: decoding is the larger part
    (1.3, 3.0, 2, False),     # photos through a ResNet on 2 cores: the model needs both threads
    (1.0, 3.0, 8, True),      # 8 cores: one for decoding costs the model only 1/7
    (0.1, 3.0, 4, False),     # almost nothing to decode
    (5.0, 1.0, 1, False),     # one thread: nothing to give
])
def test_decoding_gets_a_core_only_when_that_finishes_sooner(decode, model, threads, expected):
    from cnnlab.evaluate.predict import _worth_a_core

    assert _worth_a_core(decode, model, threads) is expected
