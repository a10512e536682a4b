"""Segmentation end to end through the `cnnlab` command on a small fashion-mnist-masks: one short real
training run (shared by every test here) reaches a measured test mIoU; metrics.csv logs the loss's parts;
predict writes palette masks of class indices, overlays and each class's area; explain runs Seg-Grad-CAM;
the report opens in Chromium with every image loaded."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import requires_fashion_mnist
from tests.helpers import run_cli
from tests.report.chromium import CHROMIUM, check_page

pytestmark = requires_fashion_mnist

# 320 canvases of 48 px, 3 epochs in batches of 16 (60 steps), the smaller U-Net, Adam one-cycle at 0.01,
# cross-entropy + Dice, flips. Measured on the 64 test canvases, seed 0, with bf16 (auto on this
# AVX512-BF16 CPU) and --precision fp32: test mIoU (11 classes, background included) 0.121 and 0.106;
# background IoU 0.967 and 0.961; the items' silhouettes (every item class as one) IoU 0.924 and 0.911;
# item classes above an IoU of 0.05: 3 and 1. Such a short run learns where the items are, and only
# begins to name them (a model that outlined every item and named none would score an mIoU of ~0.088).
SHORT_RUN = ["--model", "unet-small", "--epochs", 3, "--batch-size", 16, "--lr", 0.01, "--seed", 0]
MIOU_BAND = (0.09, 0.40)


@pytest.fixture(scope="module")
def trained(mask_canvases, tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    outcome = run_cli("train", "--task", "segmentation", "--data", mask_canvases, *SHORT_RUN, "--runs-dir", runs,
                      "--name", "seg", "--quiet")
    assert outcome.exit_code == 0, outcome.stderr
    (runs / "train-stderr.txt").write_text(outcome.stderr)
    return runs / "seg"


def test_the_imbalance_warning_counts_pixels(trained):
    said = (trained.parent / "train-stderr.txt").read_text()
    assert re.search(r"the classes are imbalanced: background has [\d,]+ training pixels, \S.* [\d,]+\. ", said), said


@pytest.fixture(scope="module")
def test_scores(trained, mask_canvases) -> dict:
    outcome = run_cli("evaluate", trained, "--split", "test")
    assert outcome.exit_code == 0, outcome.stderr
    return json.loads(next(trained.glob("eval-*-test")).joinpath("metrics.json").read_text())


def test_a_short_run_learns_to_outline_and_name_the_items(trained, test_scores):
    assert test_scores["images"] == 64
    assert MIOU_BAND[0] <= test_scores["miou"] <= MIOU_BAND[1]
    assert test_scores["per_class"]["background"]["iou"] > 0.85
    counts = np.array(test_scores["confusion_matrix"]["counts"])
    items_found, items_missed, items_invented = counts[1:, 1:].sum(), counts[1:, 0].sum(), counts[0, 1:].sum()
    assert items_found / (items_found + items_missed + items_invented) > 0.8  # the silhouettes, whatever class
    named = [name for name, values in test_scores["per_class"].items() if name != "background" and values["iou"] > 0.05]
    assert named  # and, for some, which item it is
    assert test_scores["mean_dice"] >= test_scores["miou"]  # Dice ≥ IoU for every class
    with (trained / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and {"val_miou", "train_loss_ce", "train_loss_dice"} <= set(rows[0])
    for row in rows:  # the loss is its two parts
        assert float(row["train_loss"]) == pytest.approx(float(row["train_loss_ce"]) + float(row["train_loss_dice"]),
                                                         rel=1e-3)
    config = (trained / "config.yaml").read_text()
    assert "loss: ce+dice" in config and "augment: flip" in config  # the task's defaults


def test_predict_writes_masks_of_class_indices_overlays_and_areas(trained, mask_canvases, tmp_path):
    images = sorted((mask_canvases / "images" / "test").glob("*.png"))[:4]
    outcome = run_cli("predict", trained, *images, "-o", tmp_path / "areas.csv", "--draw", tmp_path / "drawn")
    assert outcome.exit_code == 0, outcome.stderr
    with (tmp_path / "areas.csv").open() as handle:
        lines = list(csv.DictReader(handle))
    assert list(lines[0]) == ["file", "class", "pixels", "fraction", "error"]
    classes = json.loads((trained / "weights" / "best.json").read_text())["task"]["class_names"]
    for image in images:
        mask_file = tmp_path / "drawn" / f"{image.stem}.mask.png"
        mask = Image.open(mask_file)
        assert mask.mode == "P" and mask.size == (48, 48)
        values = np.asarray(mask)
        assert set(np.unique(values)) <= set(range(len(classes)))
        mine = [line for line in lines if line["file"] == str(image)]
        assert {line["class"]: int(line["pixels"]) for line in mine} == {
            classes[value]: int(count) for value, count in zip(*np.unique(values, return_counts=True))}
        assert sum(float(line["fraction"]) for line in mine) == pytest.approx(1.0, abs=1e-4)
        overlay = Image.open(tmp_path / "drawn" / f"{image.stem}.png")
        assert overlay.size == (288, 288)  # 48 px enlarged ×6 to reach 256


def test_explain_shows_seg_grad_cam_for_a_class(trained, mask_canvases, tmp_path):
    image = sorted((mask_canvases / "images" / "test").glob("*.png"))[0]
    outcome = run_cli("explain", trained, image, "--class", "background", "--output-dir", tmp_path, "--max-maps", 4)
    assert outcome.exit_code == 0, outcome.stderr
    assert "Grad-CAM for background (" in outcome.stdout
    assert "up3" in outcome.stdout and "head" not in outcome.stdout  # the last decoder stage, not the 1×1 scores
    assert (tmp_path / image.stem / "gradcam.png").is_file()
    assert len(list((tmp_path / image.stem / "feature-maps").glob("*.png"))) >= 4


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium not installed: apt-get install chromium")
def test_the_segmentation_report_opens_in_chromium_with_every_image(trained, test_scores):
    outcome = run_cli("report", trained, "--mistakes", 2, "--samples", 2)
    assert outcome.exit_code == 0, outcome.stderr
    page = check_page(trained / "report.html")
    assert page.console_errors == []
    assert {"evaluation", "images", "training"} <= set(page.sections)
    assert "train pixels" in (trained / "report.html").read_text()  # the class table counts what the task counts
    alts = [image["alt"] for image in page.images]
    assert sum(alt.startswith("image, true mask, predicted mask and errors") for alt in alts) == 2  # worst + best
    assert {"IoU and Dice per class", "pixel confusion matrix"} <= set(alts)
    broken = [image["alt"] for image in page.images if not (image["complete"] and image["width"] > 0)]
    assert broken == []
