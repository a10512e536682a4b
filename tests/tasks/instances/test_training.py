"""Instance segmentation end to end on a tiny fashion-mnist-instances: a small Mask R-CNN's loss falls
over a few steps; through the `cnnlab` command a run trains, evaluates (mask and box mAP), predicts an
index mask per image whose values are the ids of the objects listed, and export refuses it clearly."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import FASHION_DIR, requires_fashion_mnist
from tests.helpers import run_cli

pytestmark = requires_fashion_mnist

TINY_SET = {"canvas": 64, "train_images": 16, "val_images": 4, "test_images": 4, "max_items": 2}
# 8 steps of Adam (lr 0.001) on the same 4 canvases, seed 0, fp32: the loss (RPN + box + mask parts) went
# 4.886, 4.253, 4.011, 2.411, 1.598, 1.395, 1.132, 0.934: the mean of the last two over the first, 0.211.
LOSS_RATIO_BAND = (0.1, 0.6)


@pytest.fixture(scope="module")
def instances(tmp_path_factory) -> Path:
    from cnnlab.data.instance_canvases import write_instance_canvases

    return write_instance_canvases(tmp_path_factory.mktemp("inst") / "fashion-mnist-instances",
                                   fashion_mnist_dir=FASHION_DIR, **TINY_SET)


def test_the_generated_set_is_coco_with_a_mask_per_item(instances, tmp_path):
    from cnnlab.data.instance_canvases import write_instance_canvases
    from cnnlab.tasks.instances.task import InstanceSegmentation

    source = InstanceSegmentation.open_data(instances, split="test")
    assert len(source) == 4 and source.class_names[0] == "T-shirt/top"
    masks = source.targets.masks(0)
    assert masks.shape[1:] == (64, 64) and (masks.sum(axis=0) <= 1).all()  # silhouettes never overlap
    again = write_instance_canvases(tmp_path / "again", fashion_mnist_dir=FASHION_DIR, **TINY_SET)
    for split in ("train", "test"):
        name = f"annotations/instances_{split}.json"
        assert (again / name).read_bytes() == (instances / name).read_bytes()


def test_a_small_mask_rcnn_learns_a_few_canvases(instances):
    from cnnlab.data.prepare import Geometry
    from cnnlab.models.torchvision_maskrcnn import build_maskrcnn
    from cnnlab.tasks.instances.task import InstanceSegmentation

    torch.manual_seed(0)
    source = InstanceSegmentation.open_data(instances, split="train")
    chosen = [index for index in range(len(source)) if len(source.targets.images[index])][:4]
    images = torch.stack([torch.from_numpy(np.asarray(Image.open(source.paths[i]), np.float32) / 255)[None]
                          for i in chosen])
    targets = source.targets[np.array(chosen)].dense([(64, 64)] * 4, Geometry(1, 64, 64, "squash"))
    assert targets.shape == (4, 2, 64, 64) and targets.dtype == torch.uint8
    model = build_maskrcnn("maskrcnn_resnet18_fpn_small", in_channels=1, num_classes=10, image_size=(64, 64)).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=0.001)
    losses = []
    for _ in range(8):
        parts = model(images, targets)
        assert set(parts) == {"classifier", "box_reg", "mask", "objectness", "rpn_box_reg"}
        loss = torch.stack(list(parts.values())).sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    ratio = np.mean(losses[-2:]) / losses[0]
    print("losses", [round(value, 3) for value in losses], "ratio", round(float(ratio), 3))
    assert LOSS_RATIO_BAND[0] < ratio < LOSS_RATIO_BAND[1], losses


def test_train_evaluate_predict_through_the_command(instances, tmp_path):
    runs = tmp_path / "runs"
    outcome = run_cli("train", "--task", "instance-segmentation", "--data", instances, "--epochs", 1,
                      "--batch-size", 8, "--limit", 8, "--precision", "fp32", "--runs-dir", runs, "--name", "tiny",
                      "--quiet")
    assert outcome.exit_code == 0, outcome.stderr
    run = runs / "tiny"
    with (run / "metrics.csv").open() as handle:
        row = next(csv.DictReader(handle))
    assert {"val_mask_map", "train_loss_mask", "train_loss_classifier"} <= set(row)

    outcome = run_cli("evaluate", run, "--split", "test")
    assert outcome.exit_code == 0, outcome.stderr
    metrics = json.loads(next(run.glob("eval-*-test")).joinpath("metrics.json").read_text())
    assert metrics["images"] == 4 and {"mask_map", "box_map", "mask_map50", "box_map50"} <= set(metrics)
    assert "mask mAP@[.5:.95]" in outcome.stdout and "box mAP@[.5:.95]" in outcome.stdout

    images = sorted((instances / "images" / "test").glob("*.png"))[:2]
    outcome = run_cli("predict", run, *images, "--conf", 0.0, "-o", tmp_path / "objects.csv", "--draw",
                      tmp_path / "drawn")
    assert outcome.exit_code == 0, outcome.stderr
    with (tmp_path / "objects.csv").open() as handle:
        lines = list(csv.DictReader(handle))
    assert list(lines[0]) == ["file", "id", "label", "category_id", "score", "x1", "y1", "x2", "y2", "area", "error"]
    for image in images:
        index_mask = Image.open(tmp_path / "drawn" / f"{image.stem}.instances.png")
        assert index_mask.mode == "L" and index_mask.size == (64, 64)
        ids = [int(line["id"]) for line in lines if line["file"] == str(image) and line["id"]]
        values = set(np.unique(np.asarray(index_mask)).tolist())
        assert ids and values <= {0, *ids}  # 0 background, else the id of an object in the CSV
        assert Image.open(tmp_path / "drawn" / f"{image.stem}.png").mode == "RGB"  # the colour overlay

    outcome = run_cli("export", run)
    assert outcome.exit_code != 0 and "not supported for instance segmentation yet" in outcome.stderr
    assert "Traceback" not in outcome.stderr
