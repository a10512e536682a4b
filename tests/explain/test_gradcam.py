"""Grad-CAM finds the evidence where it is known to be, and works for every model family."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.errors import ConfigError
from cnnlab.explain.gradcam import default_target_layer, grad_cam
from tests.conftest import requires_fashion_mnist
from tests.explain.test_feature_maps import FAMILIES, _images, untrained

CANVAS, ITEM = 28, 14  # a 14×14 clothing item in one quadrant of a 28×28 canvas of noise


def _write_quadrant_dataset(root: Path, split: str, count: int, offset: int, rng) -> dict[str, int]:
    """Fashion-MNIST items shrunk to 14×14, each pasted into a random quadrant of a noise canvas;
    the class is the item's. Returns {file: quadrant}: 0 top-left, 1 top-right, 2 bottom-left,
    3 bottom-right."""
    from cnnlab.data.named import open_named

    source = open_named("fashion-mnist", split="train")
    quadrants = {}
    for index in range(offset, offset + count):
        canvas = rng.integers(0, 128, size=(CANVAS, CANVAS)).astype(np.uint8)
        quadrant = int(rng.integers(4))
        top, left = ITEM * (quadrant // 2), ITEM * (quadrant % 2)
        item = Image.fromarray(source.pixels[index]).resize((ITEM, ITEM), Image.Resampling.BILINEAR)
        canvas[top:top + ITEM, left:left + ITEM] = np.asarray(item)
        folder = root / split / source.class_names[int(source.targets[index])].replace("/", "-")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{index:05d}.png"
        Image.fromarray(canvas).save(path)
        quadrants[str(path)] = quadrant
    return quadrants


@requires_fashion_mnist
@pytest.mark.slow
def test_grad_cam_peaks_in_the_quadrant_that_holds_the_item(tmp_path):
    import cnnlab
    from cnnlab.explain.explain import prepare_image

    rng = np.random.default_rng(0)
    _write_quadrant_dataset(tmp_path / "data", "train", 2000, 0, rng)
    test_quadrants = _write_quadrant_dataset(tmp_path / "data", "test", 200, 50_000, rng)
    result = cnnlab.train(data=str(tmp_path / "data"), model="guide-cnn", epochs=2,
                          runs_dir=str(tmp_path / "runs"), name="quadrants", quiet=True)
    trained = cnnlab.load(result.run_dir, device="cpu")
    hits = correct = 0
    for path, quadrant in test_quadrants.items():
        image = trained.normalizer()(torch.from_numpy(prepare_image(trained, path))[None])
        cam = grad_cam(trained.model, image)
        x, y = cam.peak
        hits += 2 * (y >= ITEM) + (x >= ITEM) == quadrant
        correct += trained.class_names[cam.target] == Path(path).parent.name
    assert cam.layer == "features.relu2"  # the last 3×3 maps are too coarse; the 11×11 ones are used
    assert correct / len(test_quadrants) > 0.3  # chance is 0.1: the network learned the items
    assert hits / len(test_quadrants) >= 0.8, hits


@pytest.mark.parametrize("name", list(FAMILIES))
def test_grad_cam_works_for_every_family(name):
    model = untrained(name)
    images = _images(name)
    cam = grad_cam(model, images, target=3)
    assert cam.heatmap.shape == images.shape[-2:]
    assert 0 <= cam.heatmap.min() and cam.heatmap.max() <= 1
    assert cam.target == 3
    with torch.no_grad():
        assert cam.score == pytest.approx(float(model(images)[0, 3]), rel=1e-4, abs=1e-5)
    assert min(cam.coarse.shape) >= 2  # the default layer keeps some spatial detail
    assert not any(p.grad is not None for p in model.parameters())  # nothing accumulated in the model


@pytest.mark.parametrize("name, side, expected", [
    ("guide-cnn", 28, "features.relu2"), ("guide-cnn", 64, "features.relu3"), ("resnet18", 32, "layer1"),
    ("resnet18", 224, "layer4"), ("mobilenet_v3_small", 224, "features.12"), ("alexnet", 224, "features.11"),
    # a segmenter's 1×1 head holds the class scores themselves: its last decoder stage is used instead
    ("unet-small", 64, "up3"), ("unet", 64, "up4"),
])
def test_default_layer_is_the_last_stage_with_7x7_maps(name, side, expected):
    torch.manual_seed(0)
    from cnnlab.models.build import build_model, resolve_architecture

    model = build_model(resolve_architecture(name), in_channels=3, num_outputs=4,
                        image_size=(side, side)).eval()
    assert default_target_layer(model, torch.rand(1, 3, side, side)) == expected


def test_layer_override_and_its_errors():
    model = untrained("resnet18")
    images = _images("resnet18")
    assert grad_cam(model, images, layer="layer2").coarse.shape == (4, 4)
    assert grad_cam(model, images, layer="layer3.1.conv2").coarse.shape == (2, 2)
    with pytest.raises(ConfigError, match=r"--layer layer5: the model has no layer of that name\. "
                                          r"Did you mean layer.*Its convolutions are conv1"):
        grad_cam(model, images, layer="layer5")
    with pytest.raises(ConfigError, match=r"--layer fc: Grad-CAM needs a layer that outputs feature maps"):
        grad_cam(model, images, layer="fc")


def test_an_inplace_relu_after_the_layer_does_not_change_its_maps():
    model = untrained("vgg11")  # features.N convs are followed by ReLU(inplace=True)
    images = _images("vgg11")
    cam = grad_cam(model, images, layer="features.16")
    assert (cam.coarse >= 0).all() and cam.coarse.shape == (2, 2)


def test_no_positive_evidence_is_said_not_placed_at_the_corner(tmp_path):
    """Every active map lowers class 0's score: ReLU(Σ weight·A) is zero everywhere, so there is no
    peak to report (the argmax of all zeros would be x=0, y=0)."""
    from cnnlab.explain.gradcam import plot_grad_cam

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1, bias=False), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(2 * 4 * 4, 2, bias=False))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[3].weight[0].fill_(-1.0)  # class 0: every activation is evidence against it
        model[3].weight[1].fill_(1.0)
    image = torch.rand(1, 1, 4, 4) + 0.1
    against, towards = grad_cam(model, image, target=0, layer="1"), grad_cam(model, image, target=1, layer="1")
    assert not against.has_evidence and np.all(against.heatmap == 0)
    assert against.describe("T-shirt") == "Grad-CAM for T-shirt at 1: no positive evidence at this layer " \
                                          "(--layer picks another)"
    assert towards.has_evidence and towards.describe("Trouser").startswith("Grad-CAM for Trouser at 1 peaks at x=")
    pixels = (image[0].numpy() * 255).astype(np.uint8)
    for cam in (against, towards):
        path = plot_grad_cam(pixels, cam, tmp_path / f"{cam.target}.png", heading="h", target_label="x")
        assert path.stat().st_size > 0
