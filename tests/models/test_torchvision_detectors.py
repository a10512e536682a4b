"""torchvision's detectors as cnnlab models: each computes its own loss from cnnlab's dense box targets
and decodes boxes inside the image; COCO weights load offline from torch hub's cache (a real file made
here, never downloaded) with the class layers replaced; and one tiny run of the mobile Faster R-CNN goes
through train (loss parts logged), evaluate, predict and --resume.

Everything is tiny (64-px canvases, 4 training images, batches of 4): these are ResNet-50 and
MobileNetV3 detectors, and only their plumbing is tested here; benchmarks/ measures them."""

from __future__ import annotations

import contextlib
import csv
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cnnlab.models.build import resolve_architecture
from cnnlab.models.torchvision_detectors import SPECS, pack_detections, torchvision_targets
from cnnlab.models.weights import hub_checkpoint_dir, imagenet_weights_entry, load_weights, weights_file_name
from cnnlab.tasks.detection.task import Detection
from tests.conftest import requires_fashion_mnist
from tests.helpers import run_cli

SIDE = 64
CLASSES = [f"class{index}" for index in range(10)]
FASHION_CLASSES = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"}
# torchvision's own names for each detector's losses, without "loss_"
LOSS_PARTS = {
    "fasterrcnn_mobilenet_v3_large_fpn": {"classifier", "box_reg", "objectness", "rpn_box_reg"},
    "retinanet_resnet50_fpn": {"classification", "bbox_regression"},
    "retinanet_resnet50_fpn_v2": {"classification", "bbox_regression"},
    "fcos_resnet50_fpn": {"classification", "bbox_regression", "bbox_ctrness"},
    "ssdlite320_mobilenet_v3_large": {"classification", "bbox_regression"},
}
FASTER_RCNN = "fasterrcnn_mobilenet_v3_large_fpn"
# Each run: 4 canvases in one batch a step, so an epoch is one step; the rate is low enough that the
# randomly initialised "COCO" weights stay finite.
RUN = ["--task", "detection", "--model", FASTER_RCNN, "--weights", "COCO_V1", "--batch-size", 4, "--lr", 0.0005,
       "--image-size", SIDE, "--augment", "none"]


def _targets() -> torch.Tensor:
    """Two images: two objects (class 1 and 3), then one object and a padding row. Pixels at 64×64."""
    return torch.tensor([[[1.0, 4, 6, 30, 28, 0], [3, 30, 34, 60, 62, 0]],
                         [[2.0, 10, 8, 40, 44, 0], [-1, 0, 0, 0, 0, 0]]])


def test_dense_targets_become_torchvision_targets_with_background_zero():
    converted = torchvision_targets(_targets())
    assert converted[0]["labels"].tolist() == [2, 4]  # cnnlab's 1 and 3, after torchvision's background 0
    assert converted[1]["boxes"].tolist() == [[10.0, 8.0, 40.0, 44.0]]  # the padding row is gone
    crowd = torch.tensor([[[0.0, 1, 1, 5, 5, 1]]])  # flag 1: a crowd/difficult box, no loss in torchvision
    assert torchvision_targets(crowd)[0]["labels"].numel() == 0


def test_detections_are_packed_best_first_and_padded_with_class_minus_one():
    found = [{"boxes": torch.tensor([[1.0, 2, 3, 4]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([5])},
             {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}]
    packed = pack_detections(found, max_detections=3)
    assert packed.shape == (2, 3, 6)
    assert packed[0, 0].tolist() == pytest.approx([1, 2, 3, 4, 0.9, 4])  # torchvision's 5 is cnnlab's 4
    assert packed[0, 1:, 5].tolist() == [-1, -1] and packed[1, :, 5].tolist() == [-1, -1, -1]


@pytest.mark.parametrize("name", list(SPECS))
def test_each_detector_scores_dense_targets_and_decodes_boxes_inside_the_image(name):
    # Losses and decoding only (Faster R-CNN trains below): a step of the ResNet-50 ones, or of SSDlite's
    # depthwise convolutions, costs seconds on a CPU.
    torch.manual_seed(0)
    task = Detection(CLASSES)
    model = task.build_model(resolve_architecture(name), in_channels=1, image_size=(SIDE, SIDE))
    assert task.outputs == "boxes" and task.image_size == (SIDE, SIDE)
    images = torch.rand(2, 1, SIDE, SIDE)

    model.train()
    _, loss, parts = task.forward_loss(model, images, _targets(), contextlib.nullcontext)
    assert set(parts) == LOSS_PARTS[name]
    assert math.isfinite(loss.item()) and loss.item() > 0
    assert loss.item() == pytest.approx(sum(value.item() for value in parts.values()), rel=1e-5)

    model.eval()
    with torch.no_grad():
        rows = model(images)
    assert rows.shape == (2, 100, 6)
    found = task.decode(rows, conf=0.0)
    assert sum(len(boxes) for boxes, _, _ in found) > 0  # a fresh detector's scores sit above 0
    for boxes, scores, labels in found:
        assert bool((boxes >= 0).all() and (boxes <= SIDE).all())
        assert bool((boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all())
        assert scores.tolist() == sorted(scores.tolist(), reverse=True)
        assert set(labels.tolist()) <= set(range(len(CLASSES)))


# --- COCO weights from torch hub's cache ----------------------------------------------------------------

@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """TORCH_HOME (set for the module's tests) holding a real file under the COCO weights' own name:
    torchvision's Faster R-CNN built for COCO's 91 classes, saved as torchvision's COCO files are
    (frozen batch norm: no num_batches_tracked). Yields the file's tensors. Downloading fails the test."""
    import torchvision

    home = tmp_path_factory.mktemp("torch-home")

    def refuse_download(url, *args, **kwargs):
        raise AssertionError(f"a test tried to download {url}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(home))
        patch.setattr(torch.hub, "download_url_to_file", refuse_download)
        entry = imagenet_weights_entry("coco", resolve_architecture(FASTER_RCNN))
        torch.manual_seed(7)
        detector = torchvision.models.get_model(FASTER_RCNN, weights=None, weights_backbone=None)
        state = {key: value for key, value in detector.state_dict().items() if not key.endswith("num_batches_tracked")}
        hub_checkpoint_dir().mkdir(parents=True)
        torch.save(state, hub_checkpoint_dir() / weights_file_name(entry))
        yield state


def test_coco_weights_load_from_the_hub_cache_with_new_class_layers(hub):
    architecture = resolve_architecture(FASTER_RCNN)
    weights = load_weights("coco", architecture)
    assert weights.name == "FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1"
    assert str(hub_checkpoint_dir() / "fasterrcnn_mobilenet_v3_large_fpn-fb6a3cc7.pth") in weights.description
    assert weights.mean == pytest.approx((0.485, 0.456, 0.406)) and weights.image_size is None  # the run's own size
    for same in ("COCO_V1", "FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1"):
        assert load_weights(same, architecture).name == weights.name

    task = Detection(CLASSES)
    model = task.build_model(architecture, in_channels=1, image_size=(SIDE, SIDE))
    report = model.transfer_pretrained(weights.state_dict, source=weights.description)
    state = model.state_dict()
    loaded = [key for key in hub if not key.startswith(("roi_heads.box_predictor", "backbone.body.0.0"))]
    assert all(torch.equal(state[key], hub[key]) for key in loaded)  # every other layer is the file's
    assert torch.allclose(state["backbone.body.0.0.weight"], hub["backbone.body.0.0.weight"].sum(1, keepdim=True))
    assert state["roi_heads.box_predictor.cls_score.weight"].shape == (11, 1024)  # 10 classes + background
    assert state["roi_heads.box_predictor.bbox_pred.weight"].shape == (44, 1024)
    assert sorted(report.names("re-initialised")) == ["roi_heads.box_predictor.bbox_pred",
                                                      "roi_heads.box_predictor.cls_score"]
    assert report.names("adapted") == ["backbone.body.0.0"] and not report.names("skipped") and not report.unused


def test_imagenet_weights_fill_only_the_backbone(hub):
    """--weights imagenet: the backbone's ImageNet file (a real one, made here) under the detector's keys;
    the FPN, the RPN and the box head start from scratch, and --weights does not call that a misfit."""
    import torchvision

    architecture = resolve_architecture(FASTER_RCNN)
    entry = imagenet_weights_entry("imagenet", architecture)
    assert weights_file_name(entry) == "mobilenet_v3_large-8738ca79.pth"
    torch.manual_seed(3)
    classifier = torchvision.models.mobilenet_v3_large(weights=None).state_dict()
    torch.save(classifier, hub_checkpoint_dir() / weights_file_name(entry))
    weights = load_weights("imagenet", architecture)
    assert weights.part == "backbone.body" and all(key.startswith("backbone.body.") for key in weights.state_dict)

    from cnnlab.config import TrainConfig
    from cnnlab.train.pretrained import transfer_pretrained

    task = Detection(CLASSES)
    model = task.build_model(architecture, in_channels=3, image_size=(SIDE, SIDE))
    # what a run does with them: the model's own transfer, then the check that --weights fit
    report = transfer_pretrained(model, architecture, task, weights, TrainConfig(model=FASTER_RCNN, weights="imagenet"))
    state = model.state_dict()
    assert torch.equal(state["backbone.body.4.block.1.0.weight"], classifier["features.4.block.1.0.weight"])
    assert torch.equal(state["backbone.body.16.1.running_var"], classifier["features.16.1.running_var"])
    assert all(layer.startswith("backbone.body.") for layer in report.names("loaded"))
    assert {layer.split(".")[0] for layer in report.names("re-initialised")} == {"backbone", "rpn", "roi_heads"}


def test_coco_weights_are_refused_for_a_classifier(hub):
    from cnnlab.errors import ConfigError

    with pytest.raises(ConfigError, match="COCO weights are for torchvision's detectors"):
        load_weights("coco", resolve_architecture("resnet18"))


def test_the_detectors_are_listed_for_detection():
    outcome = run_cli("models", "detection")
    assert outcome.exit_code == 0, outcome.stderr
    listed = [line.split()[0] for line in outcome.stdout.splitlines() if "[detection]" in line]
    assert sorted(listed) == sorted(["cnnlab-det", *SPECS])


# --- one tiny run through the commands ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def canvases(tmp_path_factory) -> Path:
    from cnnlab.data.canvases import write_fashion_canvases
    from tests.data.conftest import FASHION_MNIST_DEBIAN

    return write_fashion_canvases(tmp_path_factory.mktemp("data") / "canvases", fashion_mnist_dir=FASHION_MNIST_DEBIAN,
                                  canvas=SIDE, train_images=4, val_images=2, test_images=2)


def _train(canvases: Path, runs: Path, name: str, epochs: int):
    return run_cli("train", "--data", canvases, *RUN, "--epochs", epochs, "--runs-dir", runs, "--name", name)


@pytest.fixture(scope="module")
def trained(hub, canvases, tmp_path_factory):
    """Two steps (two epochs of one batch) from the hub's "COCO" weights; (run folder, its output)."""
    runs = tmp_path_factory.mktemp("runs")
    outcome = _train(canvases, runs, "frcnn", 2)
    assert outcome.exit_code == 0, outcome.stderr
    return runs / "frcnn", outcome


@requires_fashion_mnist
def test_a_run_logs_what_the_weights_kept_and_each_part_of_the_loss(trained):
    run, outcome = trained
    assert "loaded (116)" in outcome.stderr and "adapted (1): backbone.body.0.0" in outcome.stderr
    assert "re-initialised (2): roi_heads.box_predictor.cls_score (new class layer, 11 outputs" in outcome.stderr
    with (run / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2
    for row in rows:
        for part in LOSS_PARTS[FASTER_RCNN]:
            train_part, val_part = float(row[f"train_loss_{part}"]), float(row[f"val_loss_{part}"])
            assert math.isfinite(train_part) and train_part >= 0 and math.isfinite(val_part) and val_part >= 0
        total = sum(float(row[f"train_loss_{part}"]) for part in LOSS_PARTS[FASTER_RCNN])
        assert float(row["train_loss"]) == pytest.approx(total, rel=1e-3)
        assert 0.0 <= float(row["val_map"]) <= 1.0
    info = json.loads((run / "weights" / "best.json").read_text())
    assert info["task"]["outputs"] == "boxes" and info["input"]["mean"] == pytest.approx([0.449])


@requires_fashion_mnist
def test_evaluate_scores_the_test_canvases(trained, canvases):
    run, _ = trained
    outcome = run_cli("evaluate", run, "--split", "test", "--conf", 0.001)
    assert outcome.exit_code == 0, outcome.stderr
    metrics = json.loads((run / "eval-canvases-test" / "metrics.json").read_text())
    objects = sum(len(path.read_text().splitlines()) for path in (canvases / "labels" / "test").glob("*.txt"))
    assert metrics["images"] == 2 and metrics["objects"] == objects
    assert 0.0 <= metrics["map"] <= metrics["map50"] <= 1.0


@requires_fashion_mnist
def test_predict_on_a_folder_writes_one_row_per_box(trained, canvases, tmp_path):
    run, _ = trained
    folder = canvases / "images" / "test"
    for output in ("boxes.csv", "boxes.json"):
        outcome = run_cli("predict", run, folder, "--conf", 0.001, "--output", tmp_path / output)
        assert outcome.exit_code == 0, outcome.stderr
    with (tmp_path / "boxes.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    found = json.loads((tmp_path / "boxes.json").read_text())
    counts = {Path(entry["file"]).name: len(entry["objects"]) for entry in found}
    assert sum(counts.values()) > 0
    for name, count in counts.items():
        assert sum(1 for row in rows if Path(row["file"]).name == name) == max(count, 1)
    for row in rows:
        if row["label"]:
            x1, y1, x2, y2 = (float(row[key]) for key in ("x1", "y1", "x2", "y2"))
            assert 0 <= x1 <= x2 <= SIDE and 0 <= y1 <= y2 <= SIDE and row["label"] in FASHION_CLASSES


class _StopAfterFirstEpoch:
    def on_epoch_end(self, state, row):
        state.stop_reason = "stopped by the test after epoch 1"


@requires_fashion_mnist
def test_resume_continues_to_the_same_weights(trained, canvases, tmp_path):
    """The two-epoch run stopped after epoch 1 (its checkpoint saved), then --resume: the weights of the
    uninterrupted run, across the change from the head-only stage to the whole network."""
    import cnnlab

    run, _ = trained
    arguments = dict(zip(RUN[::2], RUN[1::2]))
    fields = {flag.removeprefix("--").replace("-", "_"): value for flag, value in arguments.items()}
    fields["image_size"] = str(fields["image_size"])
    cnnlab.train(data=str(canvases), epochs=2, runs_dir=str(tmp_path), name="stopped", quiet=True,
                 callbacks=[_StopAfterFirstEpoch()], **fields)
    resumed = run_cli("train", "--resume", tmp_path / "stopped", "--runs-dir", tmp_path)
    assert resumed.exit_code == 0, resumed.stderr
    assert "after epoch 1 of 2" in resumed.stderr
    straight = load_file(str(run / "weights" / "last.safetensors"))
    again = load_file(str(tmp_path / "stopped" / "weights" / "last.safetensors"))
    assert straight.keys() == again.keys()
    assert [key for key in straight if not torch.equal(straight[key], again[key])] == []


def test_grad_cam_explains_a_box_through_the_backbone():
    from cnnlab.explain.gradcam import default_target_layer, grad_cam

    torch.manual_seed(0)
    task = Detection(CLASSES)
    model = task.build_model(resolve_architecture(FASTER_RCNN), in_channels=1, image_size=(SIDE, SIDE)).eval()
    image = torch.rand(1, 1, SIDE, SIDE)
    with torch.no_grad():
        rows = model(image)
    target = task.explain_target(rows)
    assert default_target_layer(model, image) == "backbone.body.12"
    cam = grad_cam(model, image, target.score)
    assert cam.heatmap.shape == (SIDE, SIDE) and float(cam.heatmap.max()) > 0


def test_a_detector_is_refused_for_classification_by_name():
    from cnnlab.errors import ConfigError
    from cnnlab.tasks.classification import Classification

    with pytest.raises(ConfigError, match=f"--model {FASTER_RCNN} is made for --task detection, not classification"):
        Classification(CLASSES).build_model(resolve_architecture(FASTER_RCNN), in_channels=1, image_size=(SIDE, SIDE))
