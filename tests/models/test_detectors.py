"""Detectors: one dense tensor out, over cnnlab-det's own backbone or any registry model's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.errors import ConfigError
from cnnlab.models.build import build_model, create_model, resolve_architecture
from cnnlab.models.detectors import Detector, detector_on_backbone
from cnnlab.models.parts import get_module
from cnnlab.models.registry import model_entry
from cnnlab.tasks.detection.boxes import pad_boxes
from cnnlab.tasks.detection.centernet import decode, detection_loss

GUIDE_YAML = str(Path(__file__).resolve().parents[2] / "examples" / "guide-cnn.yaml")


def test_cnnlab_det_outputs_classes_plus_four_channels_at_stride_4_in_both_modes():
    model = create_model("cnnlab-det", in_channels=3, num_outputs=5, image_size=(96, 64))
    assert isinstance(model, Detector) and model.stride == 4 and model.num_classes == 5
    images = torch.randn(2, 3, 96, 64)
    assert model(images).shape == (2, 9, 24, 16)
    assert model.eval()(images).shape == (2, 9, 24, 16)
    entry = model_entry("cnnlab-det")
    assert entry.metadata["task"] == "detection" and entry.metadata["family"] == "detection"
    assert isinstance(get_module(model, entry.metadata["first_conv"]), torch.nn.Conv2d)
    assert get_module(model, entry.metadata["classifier"]).out_channels == 5  # the class heatmaps
    assert model.first_conv_path == entry.metadata["first_conv"]
    assert model.classifier_path == entry.metadata["classifier"]


def test_the_description_quotes_the_parameters_and_arithmetic_at_96_pixels_and_10_classes():
    from cnnlab.models.summary import summarize

    model = create_model("cnnlab-det", in_channels=1, num_outputs=10, image_size=(96, 96))
    summary = summarize(model, (1, 96, 96))
    description = model_entry("cnnlab-det").description
    assert f"{summary.total_params / 1e6:.2f}M params, {summary.mult_adds / 1e6:.1f}M mult-adds at 96×96" \
        in description


def test_the_heatmap_starts_at_one_percent_everywhere():
    model = create_model("cnnlab-det", in_channels=1, num_outputs=10, image_size=(64, 64)).eval()
    with torch.no_grad():
        probabilities = torch.sigmoid(model(torch.randn(4, 1, 64, 64))[:, :10])
    assert probabilities.mean().item() == pytest.approx(0.01, abs=0.003)


@pytest.mark.parametrize("size, message", [
    ((100, 96), "multiples of 16, but the images are 100×96: pass --image-size 96"),
    ((16, 16), "at least 32×32"),
])
def test_cnnlab_det_names_the_image_sizes_it_takes(size, message):
    with pytest.raises(ConfigError, match=message):
        create_model("cnnlab-det", in_channels=1, num_outputs=3, image_size=size)


def test_cnnlab_det_runs_channels_last_and_under_bfloat16_autocast():
    model = create_model("cnnlab-det", in_channels=3, num_outputs=4, image_size=(64, 64))
    model = model.to(memory_format=torch.channels_last)
    images = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = model(images)
    assert outputs.shape == (2, 8, 16, 16) and outputs.dtype == torch.bfloat16
    assert torch.isfinite(outputs.float()).all()


@pytest.mark.parametrize("name, size, taps", [
    ("guide-cnn", (96, 96), ("relu3",)),  # 'valid' convolutions: 20×20 maps, resized to 24×24
    ("fast-cnn-v2", (96, 96), ("conv3", "relu4")),  # conv3 runs at stride 4, then pool3 halves it
    ("resnet18", (64, 64), ("layer1", "layer2", "layer3", "layer4")),
    (GUIDE_YAML, (96, 96), ("relu3",)),
])
def test_detector_on_backbone_keeps_the_classification_models_layer_names(name, size, taps):
    torch.manual_seed(0)
    detector = detector_on_backbone(name, in_channels=1, num_classes=3, image_size=size)
    assert detector.taps == taps
    images = torch.randn(2, 1, *size)
    assert detector(images).shape == (2, 7, size[0] // 4, size[1] // 4)
    classifier = build_model(resolve_architecture(name), in_channels=1, num_outputs=3, image_size=size)
    wanted = classifier.state_dict()
    kept = detector.backbone.state_dict()
    assert set(kept) <= set(wanted) and kept
    assert all(kept[key].shape == wanted[key].shape for key in kept)
    # classification weights load by name, and the first convolution is among them
    detector.backbone.load_state_dict({key: wanted[key] for key in kept})
    first_conv = get_module(detector, detector.first_conv_path)
    assert isinstance(first_conv, torch.nn.Conv2d) and first_conv.in_channels == 1
    assert f"{detector.first_conv_path}.weight" in {f"backbone.{key}" for key in kept}
    # nothing left that the forward pass does not use (DDP would fail on unused parameters)
    detector(images).sum().backward()
    assert all(parameter.grad is not None for parameter in detector.parameters())


def test_detector_on_backbone_checks_the_stride_and_the_image_size():
    with pytest.raises(ConfigError, match="multiples of 4, but the images are 98×96"):
        detector_on_backbone("fast-cnn-v2", in_channels=1, num_classes=3, image_size=(98, 96))
    with pytest.raises(ConfigError, match="power of two"):
        detector_on_backbone("fast-cnn-v2", in_channels=1, num_classes=3, image_size=(96, 96), stride=3)


def test_a_backbone_coarser_than_the_head_still_gives_the_heads_size():
    # at stride 2 fast-cnn-v2's finest map (stride 2) is tapped; at stride 16 its coarsest (8) is resized down
    fine = detector_on_backbone("fast-cnn-v2", in_channels=1, num_classes=2, image_size=(64, 64), stride=2)
    assert fine.taps == ("conv2", "conv3", "relu4") and fine(torch.zeros(1, 1, 64, 64)).shape == (1, 6, 32, 32)
    coarse = detector_on_backbone("fast-cnn-v2", in_channels=1, num_classes=2, image_size=(64, 64), stride=16)
    assert coarse.taps == ("relu4",) and coarse(torch.zeros(1, 1, 64, 64)).shape == (1, 6, 4, 4)


# --- the detector learns -----------------------------------------------------------------------------

CANVAS, DIGIT_SCALE = 64, 3
EPOCHS = 16
AP_BAND = (0.45, 1.0)


def digit_canvases(count: int, digits: np.ndarray, labels: np.ndarray, rng: np.random.Generator
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` black 64×64 canvases, each with 1–3 of the 8×8 `digits` enlarged ×3 at random places,
    side by side or touching but not overlapping; boxes are the digits' inked pixels. Returns the
    images normalised to −1..1 (N, 1, 64, 64) and their targets (N, 3, 6)."""
    images = np.zeros((count, 1, CANVAS, CANVAS), np.float32)
    items = []
    for image in images:
        boxes: list[list[int]] = []
        classes: list[int] = []
        for _ in range(rng.integers(1, 4)):
            for _attempt in range(20):
                index = int(rng.integers(len(digits)))
                patch = np.kron(digits[index], np.ones((DIGIT_SCALE, DIGIT_SCALE)))
                rows, columns = np.nonzero(patch)
                left, top = (int(value) for value in rng.integers(0, CANVAS - patch.shape[0] + 1, 2))
                box = [left + columns.min(), top + rows.min(), left + columns.max() + 1, top + rows.max() + 1]
                if all(min(box[2], other[2]) <= max(box[0], other[0]) or min(box[3], other[3]) <= max(box[1], other[1])
                       for other in boxes):
                    region = image[0, top:top + patch.shape[0], left:left + patch.shape[1]]
                    np.maximum(region, patch, out=region)
                    boxes.append(box)
                    classes.append(int(labels[index]))
                    break
        items.append((np.array(boxes, np.float32), np.array(classes), np.zeros(len(classes))))
    return torch.from_numpy(images / 8.0 - 1.0), pad_boxes(items, max_objects=3)


def average_precision_50(detections, targets: torch.Tensor, num_classes: int) -> float:
    """VOC's AP at IoU 0.5 (all-point interpolation; each true box matched once, best score first),
    averaged over the classes that have objects."""
    from torchvision.ops import box_iou

    per_class = []
    for label in range(num_classes):
        scored, total = [], 0
        for (boxes, scores, labels), rows in zip(detections, targets):
            truth = rows[rows[:, 0] == label, 1:5]
            total += len(truth)
            order = scores[labels == label].argsort(descending=True)
            mine, mine_scores = boxes[labels == label][order], scores[labels == label][order]
            overlaps = box_iou(mine, truth) if len(truth) else torch.zeros(len(mine), 0)
            taken = torch.zeros(len(truth), dtype=torch.bool)
            for index in range(len(mine)):
                candidates = overlaps[index].masked_fill(taken, -1.0)
                hit = len(truth) > 0 and candidates.max() >= 0.5
                if hit:
                    taken[candidates.argmax()] = True
                scored.append((float(mine_scores[index]), bool(hit)))
        if total:
            scored.sort(key=lambda pair: -pair[0])
            hits = torch.tensor([hit for _, hit in scored], dtype=torch.float64)
            recall = torch.cat([torch.zeros(1, dtype=torch.float64), hits.cumsum(0) / total])
            precision = hits.cumsum(0) / torch.arange(1, len(hits) + 1)
            # the precision envelope: at each recall, the best precision at that recall or beyond
            envelope = precision.flip(0).cummax(0).values.flip(0)
            per_class.append(float(((recall[1:] - recall[:-1]) * envelope).sum()))
    return sum(per_class) / len(per_class)


def test_average_precision_50_by_hand():
    targets = pad_boxes([([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 0], [0, 0])])
    boxes = torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 31]])
    # hit (0.9), miss (0.8), hit (0.7): precision 1, ½, ⅔ at recall ½, ½, 1 → AP = ½·1 + ½·⅔
    detections = [(boxes, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 0, 0]))]
    assert average_precision_50(detections, targets, 1) == pytest.approx(0.5 + 0.5 * 2 / 3)


def trained_average_precision(seed: int, epochs: int = EPOCHS, batch: int = 16, rate: float = 5e-3) -> float:
    """Train cnnlab-det from scratch on 300 canvases with a plain loop; its AP50 on 100 held-out ones
    (digits it never saw)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(0)
    train_images, train_targets = digit_canvases(300, digits.images[:1200], digits.target[:1200], rng)
    test_images, test_targets = digit_canvases(100, digits.images[1200:], digits.target[1200:], rng)
    torch.manual_seed(seed)
    model = create_model("cnnlab-det", in_channels=1, num_outputs=10, image_size=(CANVAS, CANVAS))
    optimiser = torch.optim.Adam(model.parameters(), lr=rate)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=rate, pct_start=0.2,
                                                   total_steps=epochs * (len(train_images) // batch))
    for _ in range(epochs):
        order = torch.randperm(len(train_images))
        for start in range(0, len(order) - batch + 1, batch):
            chosen = order[start:start + batch]
            loss, _ = detection_loss(model(train_images[chosen]), train_targets[chosen], 10, model.stride)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
    with torch.no_grad():
        detections = decode(model.eval()(test_images), 10, model.stride, conf=0.01)
    return average_precision_50(detections, test_targets, 10)


@pytest.mark.slow
def test_cnnlab_det_learns_to_find_and_name_digits_on_canvases():
    # 16 epochs of 18 steps: about 40 s of one core's time. Untrained, AP50 is about 0.
    assert AP_BAND[0] <= trained_average_precision(seed=0) <= AP_BAND[1]
