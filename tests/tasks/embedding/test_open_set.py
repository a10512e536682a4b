"""The embedding task end to end on Fashion-MNIST: train on classes 0–6, verify on the unseen 7–9.

One small run (module-scoped) serves every test: the open-set margin over raw pixels and over a
classifier's penultimate layer (with a second seed), the threshold saved with the model, the commands
(embed, verify, enroll, identify), the report's embedding map in Chromium; --resume is checked on a run
of its own, tinier still."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import requires_fashion_mnist
from tests.helpers import run_cli

pytestmark = requires_fashion_mnist

TRAIN_PER_CLASS = 500  # 3,500 images of 7 identities (benchmarks/embedding_open_set.py's reduced protocol)
UNSEEN_PER_CLASS = 1000  # every test image of the 3 identities never trained on


def _write_class_folders(root: Path, source, classes, per_class: int, seed: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for label in classes:
        folder = root / source.class_names[label].replace("/", "-")
        folder.mkdir(parents=True)
        for index in rng.permutation(np.flatnonzero(source.targets == label))[:per_class]:
            Image.fromarray(source.pixels[index]).save(folder / f"{index}.png")
    return root


@pytest.fixture(scope="module")
def fashion_identities(tmp_path_factory) -> tuple[Path, Path]:
    """(seen/: classes 0–6 of the training set, unseen/: classes 7–9 of the test set), as class folders."""
    from cnnlab.data.named import open_named

    root = tmp_path_factory.mktemp("identities")
    train = open_named("fashion-mnist", split="train", download=False)
    test = open_named("fashion-mnist", split="test", download=False)
    return (_write_class_folders(root / "seen", train, range(7), TRAIN_PER_CLASS, seed=0),
            _write_class_folders(root / "unseen", test, range(7, 10), UNSEEN_PER_CLASS, seed=0))


# CNNLAB_TEST_PRECISION=fp32 trains on the fp32 path (the AVX2 machines') on a machine whose `auto` is bf16
PRECISION = ["--precision", os.environ["CNNLAB_TEST_PRECISION"]] if os.environ.get("CNNLAB_TEST_PRECISION") else []
TRAIN_FLAGS = ["--task", "embedding", "--epochs", 3, "--quiet", *PRECISION]  # the defaults otherwise
DIMENSIONS = 128


@pytest.fixture(scope="module")
def embedding_run(fashion_identities, tmp_path_factory) -> Path:
    seen, _ = fashion_identities
    runs = tmp_path_factory.mktemp("runs")
    outcome = run_cli("train", "--data", seen, *TRAIN_FLAGS, "--name", "embed", "--runs-dir", runs)
    assert outcome.exit_code == 0, outcome.stderr
    return runs / "embed"


@pytest.fixture(scope="module")
def unseen_evaluation(embedding_run, fashion_identities) -> dict:
    _, unseen = fashion_identities
    outcome = run_cli("evaluate", embedding_run, "--data", unseen, "--json")
    assert outcome.exit_code == 0, outcome.stderr
    return json.loads(outcome.stdout)


def _raw_pixel_metrics(folder: Path) -> dict:
    """The same seeded pairs, scored by the cosine of the raw pixel vectors."""
    from PIL import Image

    from cnnlab.data.sources import open_labelled_images
    from cnnlab.tasks.embedding.meter import pair_metrics
    from cnnlab.tasks.embedding.task import unit_rows

    source = open_labelled_images(folder)
    pixels = np.stack([np.asarray(Image.open(path), dtype=np.float32).ravel() for path in source.paths])
    return pair_metrics(unit_rows(pixels), np.asarray(source.targets))


def _train(seen: Path, runs: Path, name: str, *flags) -> Path:
    outcome = run_cli("train", "--data", seen, *flags, "--name", name, "--runs-dir", runs)
    assert outcome.exit_code == 0, outcome.stderr
    return runs / name


def _unseen_pixels(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    from cnnlab.data.sources import open_labelled_images

    source = open_labelled_images(folder)
    return np.stack([np.asarray(Image.open(path)) for path in source.paths]), np.asarray(source.targets)


def _embeddings(run: Path, pixels: np.ndarray) -> np.ndarray:
    from cnnlab.trained import load

    trained = load(run, device="cpu")
    with torch.inference_mode():
        return trained.outputs(torch.from_numpy(pixels[:, None])).float().numpy()


def _penultimate(run: Path, pixels: np.ndarray) -> np.ndarray:
    """What a classifier's last dense layer sees: its penultimate layer."""
    from cnnlab.models.parts import classifier
    from cnnlab.trained import load

    trained = load(run, device="cpu")
    seen = []
    hook = classifier(trained.model, trained.info.architecture.name).register_forward_hook(
        lambda module, inputs, output: seen.append(inputs[0].detach().float()))
    with torch.inference_mode():
        trained.outputs(torch.from_numpy(pixels[:, None]))
    hook.remove()
    return torch.cat(seen).numpy()


def _tar_at_far_over_all_pairs(vectors: np.ndarray, labels: np.ndarray, far: float = 1e-2) -> float:
    """TAR at FAR over every pair of the images (4.5 million for 3,000), by brute force: no pair sampling
    between the contenders, whose differences would otherwise be within the sampling's noise."""
    units = vectors.astype(np.float64) / np.linalg.norm(vectors, axis=1, keepdims=True)
    upper = np.triu_indices(len(labels), 1)
    similarities = (units @ units.T)[upper]
    same = (labels[:, None] == labels[None, :])[upper]
    threshold = np.quantile(similarities[~same], 1 - far)
    return float((similarities[same] > threshold).mean())


def test_the_embedding_beats_raw_pixels_and_a_classifiers_penultimate_layer_on_unseen_identities(
        embedding_run, fashion_identities, tmp_path):
    """The issue's target, on its protocol scaled down (3,500 training images, 3 epochs): trained on
    classes 0–6, TAR at FAR 1e-2 on every pair of the 3,000 test images of the unseen 7–9, for the
    embedding (seeds 0 and 1), raw pixels and a guide-cnn classifier's penultimate layer trained on
    the same images. Measured on this protocol (bf16, auto on an AVX512-BF16 CPU / --precision fp32,
    the AVX2 path): embedding seed 0 21.3% / 19.6%, seed 1 20.7% / 20.2%; raw pixels 15.0%; the
    classifier 10.5% / 9.0%. Over seeds 0–7 the embedding measured 14.6–25.0% (mean 20.5%, 15 of 16
    above the pixels; docs/embeddings.md §5), so the mean of two seeds is held to beat the pixels by a
    point, and each seed the classifier."""
    seen, unseen = fashion_identities
    pixels, labels = _unseen_pixels(unseen)
    second = _train(seen, tmp_path, "embed-seed1", *TRAIN_FLAGS, "--seed", 1)
    classifier_run = _train(seen, tmp_path, "classifier", "--model", "guide-cnn", "--epochs", 3, "--quiet", *PRECISION)
    scores = {"embedding seed 0": _tar_at_far_over_all_pairs(_embeddings(embedding_run, pixels), labels),
              "embedding seed 1": _tar_at_far_over_all_pairs(_embeddings(second, pixels), labels),
              "raw pixels": _tar_at_far_over_all_pairs(pixels.reshape(len(pixels), -1), labels),
              "classifier penultimate": _tar_at_far_over_all_pairs(_penultimate(classifier_run, pixels), labels)}
    embedding = (scores["embedding seed 0"] + scores["embedding seed 1"]) / 2
    assert scores["raw pixels"] == pytest.approx(0.1503, abs=1e-3), scores  # the same pairs every time
    assert embedding > scores["raw pixels"] + 0.01, scores
    assert embedding > scores["classifier penultimate"] + 0.02, scores
    assert min(scores["embedding seed 0"], scores["embedding seed 1"]) > scores["classifier penultimate"], scores
    assert embedding <= 0.45, scores  # far above what was measured would mean the pairs went wrong


def test_the_evaluation_of_unseen_identities_is_well_above_chance(unseen_evaluation, fashion_identities):
    """`cnnlab evaluate` on the unseen identities: its 3,000 seeded genuine and 3,000 impostor pairs, and
    rank-1 with one seeded gallery image per identity. Measured (seed 0), bf16 / fp32: TAR at FAR 1e-2
    19.3% / 17.0% (raw pixels on these pairs 16.8%), EER 26.7% / 26.2%, 10-fold accuracy 73.7% / 73.5%,
    rank-1 45.9% / 47.8% (pixels 82.7%). Rank-1 hangs on which one image stands for each of the 3
    identities: over 200 seeded galleries it averages 68.1% / 66.0% (sd 10), the pixels' 75.7%; the
    instance term that lifts TAR at FAR 1e-2 spreads each identity out (docs/embeddings.md §5)."""
    _, unseen = fashion_identities
    raw = _raw_pixel_metrics(unseen)
    assert unseen_evaluation["identities"] == 3 and unseen_evaluation["images"] == 3 * UNSEEN_PER_CLASS
    assert unseen_evaluation["genuine_pairs"] == unseen_evaluation["impostor_pairs"] == 3000
    shown = {name: (metrics["tar_at_far_1e-2"], metrics["eer"], metrics["rank_1"],
                    metrics["ten_fold_accuracy"]["mean"])
             for name, metrics in (("embedding", unseen_evaluation), ("raw pixels", raw))}
    assert 0.08 <= unseen_evaluation["tar_at_far_1e-2"] <= 0.45, shown
    assert unseen_evaluation["eer"] <= 0.35, shown
    assert unseen_evaluation["rank_1"] >= 0.4, shown  # chance: 1/3
    assert unseen_evaluation["ten_fold_accuracy"]["mean"] >= 0.65, shown


def test_the_threshold_chosen_on_validation_is_saved_with_the_model(embedding_run, unseen_evaluation):
    from cnnlab.trained import load

    task = load(embedding_run).task
    assert task.threshold is not None and -1.0 < task.threshold < 1.0
    assert unseen_evaluation["at_model_threshold"]["threshold"] == pytest.approx(task.threshold)
    # chosen at FAR 1e-2 on the validation pairs of the best epoch, and written in its metadata
    from cnnlab.checkpoint import load_model_checkpoint

    _, info = load_model_checkpoint(embedding_run / "weights/best.safetensors")
    assert info.task["threshold"] == task.threshold and info.task["verify_far"] == 0.01


def test_the_model_saves_its_margin_layer_but_answers_with_the_unit_embedding(embedding_run):
    from safetensors.torch import load_file

    from cnnlab.trained import load

    weights = load_file(embedding_run / "weights/best.safetensors")
    assert weights["margin.weight"].shape == (7, DIMENSIONS)
    trained = load(embedding_run)
    outputs = trained.outputs(torch.zeros(3, 1, 28, 28, dtype=torch.uint8))
    assert outputs.shape == (3, DIMENSIONS)
    assert torch.allclose(outputs.norm(dim=1), torch.ones(3), atol=1e-3)


def test_embed_verify_enroll_identify_round_trip(embedding_run, fashion_identities, tmp_path):
    from cnnlab.tasks.embedding.search import Index

    _, unseen = fashion_identities
    # A gallery of the unseen identities (20 images each) and probes that are not in it.
    gallery, probes = tmp_path / "gallery", {}
    for person in sorted(unseen.iterdir()):
        files = sorted(person.iterdir())
        (gallery / person.name).mkdir(parents=True)
        for file in files[:20]:
            (gallery / person.name / file.name).write_bytes(file.read_bytes())
        probes[person.name] = files[20:23]
    enrolled = run_cli("enroll", embedding_run, gallery, "--output", tmp_path / "index.npz")
    assert enrolled.exit_code == 0, enrolled.stderr
    index = Index.load(tmp_path / "index.npz")
    assert index.vectors.shape == (60, DIMENSIONS) and index.identities == sorted(probes)
    assert set(np.load(tmp_path / "index.npz").files) == {"format", "vectors", "labels", "identities", "checkpoint"}

    right = 0
    for person, files in probes.items():
        found = run_cli("identify", embedding_run, tmp_path / "index.npz", *files, "--top-k", 2, "--threshold", -1)
        assert found.exit_code == 0, found.stderr
        lines = found.stdout.strip().splitlines()
        assert len(lines) == 3 and all(line.count(" ") >= 4 for line in lines)  # answer + two identities, scores
        right += sum(line.split(": ")[1].split("  ")[0] == person for line in lines)
    assert right >= 6  # of 9 probes; rank-1 on these identities is measured at 0.8–0.9
    unknown = run_cli("identify", embedding_run, tmp_path / "index.npz", probes["Bag"][0], "--threshold", 1)
    assert ": unknown  (" in unknown.stdout

    a, b = probes["Bag"][0], probes["Bag"][1]
    verdict = run_cli("verify", embedding_run, a, b, "--threshold", -1)
    assert verdict.exit_code == 0 and "same identity" in verdict.stdout
    embedded = run_cli("embed", embedding_run, a, b, "--output", tmp_path / "x.npy")
    assert embedded.exit_code == 0, embedded.stderr
    vectors = np.load(tmp_path / "x.npy")
    similarity = float(verdict.stdout.split()[1].rstrip(","))
    assert vectors.shape == (2, DIMENSIONS) and float(vectors[0] @ vectors[1]) == pytest.approx(similarity, abs=1e-4)
    assert (tmp_path / "x.csv").read_text().splitlines()[1:] == [f"0,{a}", f"1,{b}"]


def test_a_pairs_file_is_scored_as_the_evaluation_scores_pairs(embedding_run, fashion_identities, tmp_path):
    _, unseen = fashion_identities
    files = {person.name: sorted(person.iterdir())[:4] for person in sorted(unseen.iterdir())}
    lines = ["a,b,same"]
    for person, images in files.items():
        lines += [f"{images[0]},{images[1]},1", f"{images[2]},{images[3]},1"]
    names = list(files)
    for one, two in zip(names, names[1:] + names[:1]):
        lines += [f"{files[one][0]},{files[two][1]},0", f"{files[one][2]},{files[two][3]},0"]
    (tmp_path / "pairs.csv").write_text("\n".join(lines) + "\n")
    scored = run_cli("verify", embedding_run, "--pairs", tmp_path / "pairs.csv")
    assert scored.exit_code == 0, scored.stderr
    metrics = json.loads(scored.stdout)
    assert metrics["genuine_pairs"] == 6 and metrics["impostor_pairs"] == 6
    assert 0.0 <= metrics["eer"] <= 1.0 and len(metrics["ten_fold_accuracy"]["folds"]) == 10


def test_resume_of_an_embedding_run_is_exact(fashion_identities, tmp_path):
    """Stopped after epoch 1 and resumed: the same weights — the margin layer's included — bit for bit,
    and the same threshold, as a run that went straight through."""
    from safetensors.torch import load_file

    from cnnlab.checkpoint import load_model_checkpoint

    seen, _ = fashion_identities
    runs = tmp_path / "runs"
    flags = ["--data", seen, "--task", "embedding", "--embedding-dim", 16, "--limit", 256, "--batch-size", 32,
             "--schedule", "constant", "--runs-dir", runs, "--quiet"]
    assert run_cli("train", *flags, "--epochs", 2, "--name", "straight").exit_code == 0
    assert run_cli("train", *flags, "--epochs", 1, "--name", "resumed").exit_code == 0
    resumed = run_cli("train", "--resume", runs / "resumed", "--epochs", 2)
    assert resumed.exit_code == 0, resumed.stderr
    straight_weights = load_file(runs / "straight/weights/last.safetensors")
    resumed_weights = load_file(runs / "resumed/weights/last.safetensors")
    assert "margin.weight" in straight_weights and straight_weights.keys() == resumed_weights.keys()
    assert all(torch.equal(straight_weights[name], resumed_weights[name]) for name in straight_weights)
    thresholds = [load_model_checkpoint(runs / name / "weights/last.safetensors")[1].task["threshold"]
                  for name in ("straight", "resumed")]
    assert thresholds[0] is not None and thresholds[0] == thresholds[1]


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists() and not __import__("shutil").which("chromium"),
                    reason="Chromium not installed: apt-get install chromium")
def test_the_reports_embedding_map_renders_in_chromium(embedding_run, fashion_identities, unseen_evaluation):
    from tests.report.chromium import check_page

    _, unseen = fashion_identities
    outcome = run_cli("report", embedding_run, "--data", unseen, "--max-maps", 4, "--samples", 2)
    assert outcome.exit_code == 0, outcome.stderr
    page = check_page(embedding_run / "report.html")
    assert page.console_errors == []
    assert "evaluation" in page.sections
    shown = {image["alt"]: image for image in page.images}
    assert shown["t-SNE map of the embeddings"]["width"] > 300 and shown["verification ROC"]["width"] > 300
    assert all(image["complete"] and image["width"] > 0 for image in page.images)
    html = (embedding_run / "report.html").read_text(encoding="utf-8")
    assert "TAR at FAR 1e-2" in html and "rank-1 identification" in html


def test_an_exported_embedding_model_embeds_verifies_and_identifies_as_the_run(embedding_run, fashion_identities,
                                                                              tmp_path):
    """`cnnlab export` writes the evaluation-mode network (the embedding alone: no margin layer, no
    second view), and embed, verify, enroll and identify take the file as they take the run."""
    _, unseen = fashion_identities
    exported = run_cli("export", embedding_run, "--output", tmp_path / "model.onnx")
    assert exported.exit_code == 0, exported.stderr
    images = [sorted((unseen / person).iterdir())[0] for person in ("Sneaker", "Ankle boot", "Bag")]
    vectors = {}
    for name, model, precision in [("run", embedding_run, ["--precision", "fp32"]), ("onnx", tmp_path / "model.onnx", [])]:
        embedded = run_cli("embed", model, *images, "--output", tmp_path / f"{name}.npy", *precision)
        assert embedded.exit_code == 0, embedded.stderr
        vectors[name] = np.load(tmp_path / f"{name}.npy")
    assert vectors["onnx"].shape == (3, DIMENSIONS)
    assert np.abs(vectors["onnx"] - vectors["run"]).max() < 1e-4
    verdicts = [run_cli("verify", model, images[0], images[1], *precision).stdout.split(",")[0]
                for model, precision in ((embedding_run, ["--precision", "fp32"]), (tmp_path / "model.onnx", []))]
    assert verdicts[0] == verdicts[1] and verdicts[0].startswith("similarity ")
    enrolled = run_cli("enroll", tmp_path / "model.onnx", unseen, "--output", tmp_path / "index.npz")
    assert enrolled.exit_code == 0, enrolled.stderr
    found = run_cli("identify", tmp_path / "model.onnx", tmp_path / "index.npz", images[2], "--threshold", -1)
    assert found.exit_code == 0 and ": Bag  (" in found.stdout, found.stdout  # the Bag image is enrolled itself
