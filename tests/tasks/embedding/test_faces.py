"""The detection front-end of verification (`cnnlab verify --detector RUN`): a cnnlab detection run finds
the object in each photo, the square around its box is cropped, the crop is embedded.

A tiny detection run is trained here on generated 32×32 canvases, each holding one 12×12 bright square
(a stand-in for a face) at a random place; the photos verified are new canvases of the same kind. The
crop must land on the square: it covers it, and the square fills a good share of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import run_cli

SIDE, OBJECT = 32, 12
# 64 canvases, 8 epochs in batches of 16, guide-cnn as the detector's backbone: ~30 s of CPU on 2 cores.
# Measured (bf16, seed 0) on the 6 photos below, canvases it never saw: IoU of the best box with the
# square 0.42–0.80 (mean 0.55); the crop covers 83–100% of the square, which fills 53–74% of the crop.
# With --precision fp32 (the AVX2 path): IoU 0.44–0.85 (mean 0.57), covers 92–100%, fills 47–74%.
DETECTOR_RUN = ["--task", "detection", "--model", "guide-cnn", "--epochs", 8, "--batch-size", 16, "--seed", 0]


def _canvas(rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A noisy dark canvas with one bright square (a dark bar across it): pixels and its box x1, y1, x2, y2."""
    canvas = rng.integers(0, 60, size=(SIDE, SIDE)).astype(np.uint8)
    top, left = (int(value) for value in rng.integers(0, SIDE - OBJECT + 1, size=2))
    canvas[top:top + OBJECT, left:left + OBJECT] = 220
    canvas[top + OBJECT // 2 - 1:top + OBJECT // 2 + 1, left + 2:left + OBJECT - 2] = 40
    return canvas, (left, top, left + OBJECT, top + OBJECT)


def _yolo_canvases(root: Path, count: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "classes.txt").write_text("face\n")
    for number in range(count):
        pixels, (x1, y1, x2, y2) = _canvas(rng)
        Image.fromarray(pixels).save(root / "images" / f"{number:03d}.png")
        centre_x, centre_y = (x1 + x2) / 2 / SIDE, (y1 + y2) / 2 / SIDE
        (root / "labels" / f"{number:03d}.txt").write_text(f"0 {centre_x} {centre_y} {OBJECT / SIDE} {OBJECT / SIDE}\n")
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """A detection run finding the squares, and a tiny embedding run to embed the crops with."""
    root = tmp_path_factory.mktemp("faces")
    runs = root / "runs"
    canvases = _yolo_canvases(root / "canvases", 64, seed=0)
    found = run_cli("train", "--data", canvases, *DETECTOR_RUN, "--runs-dir", runs, "--name", "finder", "--quiet")
    assert found.exit_code == 0, found.stderr
    rng = np.random.default_rng(1)
    for identity in ("a", "b"):  # two "identities" of 24×24 noise: what the embedding learns does not matter here
        (root / "people" / identity).mkdir(parents=True)
        for number in range(16):
            pixels = rng.integers(0, 256, size=(24, 24)).astype(np.uint8) // (1 if identity == "a" else 2)
            Image.fromarray(pixels).save(root / "people" / identity / f"{number}.png")
    embedded = run_cli("train", "--task", "embedding", "--data", root / "people", "--embedding-dim", 8, "--epochs", 1,
                       "--batch-size", 8, "--runs-dir", runs, "--name", "embedder", "--quiet")
    assert embedded.exit_code == 0, embedded.stderr
    return runs


def _photos(folder: Path, count: int) -> list[tuple[Path, tuple[int, int, int, int]]]:
    folder.mkdir()
    rng = np.random.default_rng(2)  # canvases the detector never trained on
    photos = []
    for number in range(count):
        pixels, box = _canvas(rng)
        Image.fromarray(pixels).save(folder / f"photo{number}.png")
        photos.append((folder / f"photo{number}.png", box))
    return photos


def _overlap(inner: tuple[float, ...], outer: tuple[float, ...]) -> float:
    """The share of box `inner`'s area that lies inside box `outer`."""
    width = max(0.0, min(inner[2], outer[2]) - max(inner[0], outer[0]))
    height = max(0.0, min(inner[3], outer[3]) - max(inner[1], outer[1]))
    return width * height / ((inner[2] - inner[0]) * (inner[3] - inner[1]))


def test_the_detector_front_end_crops_the_object_and_embeds_the_crop(runs, tmp_path, monkeypatch):
    from cnnlab.tasks.embedding import faces
    from cnnlab.tasks.embedding.search import embed_files

    crops: list[tuple[tuple[float, ...], np.ndarray]] = []
    original = faces.square_crop

    def recording_crop(pixels, box, margin=faces.MARGIN):
        crop = original(pixels, box, margin)
        crops.append((tuple(box), crop))
        return crop

    monkeypatch.setattr(faces, "square_crop", recording_crop)
    photos = _photos(tmp_path / "photos", 6)
    landed, ious = 0, []
    for (first, first_box), (second, second_box) in zip(photos[0::2], photos[1::2]):
        verdict = faces.verify_faces(runs / "embedder", first, second, detector=str(runs / "finder"), threshold=0.5)
        (found_first, crop_first), (found_second, crop_second) = crops[-2:]
        for truth, found, crop in ((first_box, found_first, crop_first), (second_box, found_second, crop_second)):
            # the crop is the square around the found box, 20% wider on each side, clipped to the photo
            side = max(found[2] - found[0], found[3] - found[1]) * (1 + 2 * faces.MARGIN)
            assert crop.shape[0] <= round(side) + 1 and crop.shape[1] <= round(side) + 1
            # where the crop lies in the photo: found by matching its pixels
            photo = np.asarray(Image.open(first if truth == first_box else second).convert("RGB"))
            top, left = _locate(photo, crop)
            window = (left, top, left + crop.shape[1], top + crop.shape[0])
            object_share = OBJECT * OBJECT / (crop.shape[0] * crop.shape[1])
            width = max(0.0, min(found[2], truth[2]) - max(found[0], truth[0]))
            height = max(0.0, min(found[3], truth[3]) - max(found[1], truth[1]))
            ious.append(width * height / ((found[2] - found[0]) * (found[3] - found[1]) + OBJECT * OBJECT
                                          - width * height))
            if _overlap(truth, window) >= 0.75 and object_share >= 0.3:
                landed += 1
        # the similarity is the cosine of the two crops' embeddings, as `embed` computes them
        saved = []
        for number, (_, crop) in enumerate(crops[-2:]):
            Image.fromarray(crop).save(tmp_path / f"crop{number}.png")
            saved.append(tmp_path / f"crop{number}.png")
        vectors = embed_files(runs / "embedder", saved).vectors
        assert verdict.similarity == pytest.approx(float(vectors[0] @ vectors[1]), abs=1e-4)
        assert verdict.threshold == 0.5 and verdict.same == (verdict.similarity >= 0.5)
    assert landed == 6, f"{landed} of 6 crops cover the object"
    assert min(ious) >= 0.3 and np.mean(ious) >= 0.45, ious  # the detector's box itself


def _locate(photo: np.ndarray, crop: np.ndarray) -> tuple[int, int]:
    """Top, left of `crop` inside `photo` (an exact copy of a window of it)."""
    height, width = crop.shape[:2]
    for top in range(photo.shape[0] - height + 1):
        for left in range(photo.shape[1] - width + 1):
            if np.array_equal(photo[top:top + height, left:left + width], crop):
                return top, left
    raise AssertionError("the crop is not a window of the photo")


def test_the_verify_command_takes_a_detector_run(runs, tmp_path):
    photos = _photos(tmp_path / "photos", 2)
    outcome = run_cli("verify", runs / "embedder", photos[0][0], photos[1][0], "--detector", runs / "finder",
                      "--threshold", -1)
    assert outcome.exit_code == 0, outcome.stderr
    assert "similarity" in outcome.stdout and "same identity" in outcome.stdout
