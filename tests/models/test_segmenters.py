"""Segmenters (models/segmenters.py, segmentation_zoo.py, YAML skips): logits at the input's own
size for any size, parameter counts as computed by hand, gradients everywhere, backbone weights by
name, and torchvision's weights from a local file (never the network)."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from cnnlab.errors import CnnlabError, ConfigError
from cnnlab.models.build import resolve_architecture
from cnnlab.models.registry import MODELS
from cnnlab.models.segmenters import UNet, UNetConfig, segmenter_on_backbone
from cnnlab.models.transfer import ADAPTED, LOADED, REINITIALISED, SKIPPED, transfer_weights
from cnnlab.models.weights import hub_checkpoint_dir, load_weights
from cnnlab.models.yaml_net import build_from_yaml, build_layers

EXAMPLE_UNET = Path(__file__).resolve().parents[2] / "examples" / "unet.yaml"
TORCHVISION_SEGMENTERS = ["fcn_resnet50", "deeplabv3_resnet50", "deeplabv3_mobilenet_v3_large",
                          "lraspp_mobilenet_v3_large"]
LRASPP_FILE = "lraspp_mobilenet_v3_large-d234d4ea.pth"  # the last part of its weights entry's URL


def _parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def _build(name: str, *, in_channels: int = 1, classes: int = 5, size: tuple[int, int] = (64, 64)) -> nn.Module:
    return MODELS.get(name).builder(in_channels=in_channels, num_outputs=classes, image_size=size)


# --- every registered segmenter ------------------------------------------------------------------

def test_the_segmenters_are_registered_for_the_segmentation_task():
    names = {entry.name for entry in MODELS if entry.metadata.get("task") == "segmentation"}
    assert names == {"unet", "unet-small", "unet-classic", *TORCHVISION_SEGMENTERS}


@pytest.mark.parametrize("name, sizes", [
    ("unet", [(32, 32), (64, 48), (37, 53), (17, 16)]),
    ("unet-small", [(8, 8), (37, 53)]),
    ("unet-classic", [(35, 19)]),
    *[(name, [(45, 33)]) for name in TORCHVISION_SEGMENTERS],
])
def test_logits_have_the_input_size_for_any_size(name, sizes):
    torch.manual_seed(0)
    model = _build(name, in_channels=1, classes=5, size=sizes[0]).eval()
    for size in sizes:
        with torch.no_grad():
            assert tuple(model(torch.randn(2, 1, *size)).shape) == (2, 5, *size)


def test_an_image_smaller_than_the_unets_poolings_is_refused():
    with pytest.raises(ConfigError, match="at least 16×16 pixels.*--image-size 16"):
        _build("unet", size=(12, 12))


# --- the U-Net's options ---------------------------------------------------------------------------

def _unet_parameters_by_hand(config: UNetConfig, in_channels: int, classes: int) -> int:
    """What a U-Net holds, counted layer by layer from its widths (not from the module)."""
    widths = [min(config.base_width * 2 ** level, config.max_width) for level in range(config.depth + 1)]

    def conv3(inputs: int, outputs: int) -> int:  # a bias only without batch norm, which has 2 per channel
        return inputs * outputs * 9 + (2 * outputs if config.batch_norm else outputs)

    def double(inputs: int, outputs: int) -> int:
        return conv3(inputs, outputs) + conv3(outputs, outputs)

    total = double(in_channels, widths[0])
    total += sum(double(widths[level], widths[level + 1]) for level in range(config.depth))
    kernel = 4 if config.upsampling == "transposed" else 1  # 2×2 transposed conv, or 1×1 before resizing
    for level in range(config.depth):
        deeper, out = widths[level + 1], widths[level]
        total += deeper * out * kernel + out + double(2 * out, out)
    return total + widths[0] * classes + classes


@pytest.mark.parametrize("config", [
    UNetConfig(), UNetConfig(depth=3, base_width=8), UNetConfig(depth=2, base_width=12, batch_norm=False),
    UNetConfig(upsampling="transposed"), UNetConfig(depth=5, base_width=16, max_width=128),
])
def test_unet_parameters_follow_its_options(config):
    model = UNet(config, in_channels=3, num_classes=7)
    assert _parameters(model) == _unet_parameters_by_hand(config, 3, 7)
    assert model.config == config


def test_each_option_changes_the_parameters_as_expected():
    def count(**options) -> int:
        return _parameters(UNet(UNetConfig(**options), in_channels=1, num_classes=11))

    # batch norm: 2 parameters per channel instead of a bias (1): one per output channel of the 18 convs
    assert count() - count(batch_norm=False) == 2 * (16 + 32 + 64 + 128 + 256 + 128 + 64 + 32 + 16)
    # 2×2 transposed convs instead of 1×1: 3 more weights per (deeper, out) pair of the 4 levels
    assert count(upsampling="transposed") - count() == 3 * (256 * 128 + 128 * 64 + 64 * 32 + 32 * 16)
    # twice the base width (with room to double at every level): each 3×3 conv twice as wide both ways
    assert 3.9 < count(base_width=32, max_width=512) / count() < 4
    assert MODELS.get("unet").builder(in_channels=1, num_outputs=11, image_size=(64, 64)).config == UNetConfig()


@pytest.mark.parametrize("options, message", [
    ({"depth": 0}, "depth must be at least 1"),
    ({"base_width": 0}, "base width must be at least 1"),
    ({"upsampling": "nearest"}, "upsampling is one of bilinear, transposed"),
])
def test_bad_unet_options_are_named(options, message):
    with pytest.raises(ConfigError, match=message):
        UNetConfig(**options)


def test_gradients_reach_every_parameter_and_one_step_lowers_the_loss():
    torch.manual_seed(0)
    model = _build("unet-small", classes=3, size=(24, 40))
    images, masks = torch.randn(4, 1, 24, 40), torch.randint(0, 3, (4, 24, 40))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(3):
        loss = nn.functional.cross_entropy(model(images), masks)
        optimizer.zero_grad()
        loss.backward()
        if not losses:
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_odd_sizes_are_padded_to_the_poolings_multiple_and_cropped_back():
    """The logits of a 37×53 image are those of the same image zero-padded to 40×56 (multiples of
    2³ for unet-small's 3 poolings), cropped to 37×53."""
    torch.manual_seed(0)
    model = _build("unet-small", size=(37, 53)).eval()
    images = torch.randn(1, 1, 37, 53)
    padded = nn.functional.pad(images, (0, 56 - 53, 0, 40 - 37))
    with torch.no_grad():
        assert torch.allclose(model(images), model(padded)[..., :37, :53], atol=1e-5)
        assert not torch.allclose(model(images), model(nn.functional.pad(padded, (0, 8, 0, 8)))[..., :37, :53],
                                  atol=1e-5)  # more padding would change the pixels near the edge


def test_summary_prints_a_unet_with_every_layer_and_the_total():
    from cnnlab.cli.models import summary_command

    result = CliRunner().invoke(summary_command, ["unet", "--input", "1,64,64", "--classes", "11"])
    assert result.exit_code == 0, result.output
    total = _parameters(_build("unet", classes=11))
    assert f"Total params: {total:,}" in result.output
    assert re.search(r"^head \(Conv2d\) +11×64×64 +187 ", result.output, re.MULTILINE)
    assert "up4.block.conv2 (Conv2d)" in result.output


# --- any backbone as the encoder -----------------------------------------------------------------

@pytest.mark.parametrize("name, in_channels, size, taps", [
    ("guide-cnn", 1, (28, 28), ("relu1", "relu2", "pool2", "relu3")),
    ("resnet18", 3, (32, 32), ("relu", "layer1", "layer2", "layer3", "layer4")),
])
def test_a_backbone_becomes_a_unet_encoder_with_its_own_layer_names(name, in_channels, size, taps):
    torch.manual_seed(0)
    model = segmenter_on_backbone(name, in_channels=in_channels, num_classes=6, image_size=size)
    assert model.taps == taps
    for height, width in (size, (size[0] + 5, size[1] + 3)):
        output = model(torch.randn(2, in_channels, height, width))
        assert tuple(output.shape) == (2, 6, height, width)
    output.square().mean().backward()
    assert all(parameter.grad is not None for parameter in model.parameters())
    # the classification model's names survive under `backbone.`, so its weights load by name
    classifier = MODELS.get(name).builder(in_channels=in_channels, num_outputs=6, image_size=size)
    backbone_keys = {key for key in model.state_dict() if key.startswith("backbone.")}
    assert backbone_keys == {f"backbone.{key}" for key in classifier.state_dict()
                             if f"backbone.{key}" in backbone_keys}
    missing, _ = model.load_state_dict({f"backbone.{key}": value for key, value in classifier.state_dict().items()},
                                       strict=False)
    assert not [key for key in missing if key.startswith("backbone.")]


def test_a_segmenter_given_as_the_backbone_is_built_as_it_is():
    assert isinstance(segmenter_on_backbone("unet", in_channels=1, num_classes=3, image_size=(32, 32)), UNet)
    model = segmenter_on_backbone(str(EXAMPLE_UNET), in_channels=1, num_classes=3, image_size=(32, 32))
    assert tuple(model(torch.zeros(1, 1, 32, 32)).shape) == (1, 3, 32, 32)


# --- U-Nets written as YAML layers ---------------------------------------------------------------

def test_the_yaml_unet_joins_the_maps_it_names_and_trains_a_step():
    torch.manual_seed(0)
    model = build_from_yaml(EXAMPLE_UNET, in_channels=1, num_outputs=5, image_size=(32, 48))
    images, masks = torch.randn(3, 1, 32, 48), torch.randint(0, 5, (3, 32, 48))
    logits = model(images)
    assert tuple(logits.shape) == (3, 5, 32, 48)
    assert model.classifier_path == "conv8" and model.first_conv_path == "conv1"
    assert model.routes == {16: (16, 11), 21: (21, 7), 26: (26, 3)}  # child index → layer numbers joined

    # the same computation by hand: the encoder's relu1..relu3 joined to the upsampled maps
    model.eval()
    with torch.no_grad():
        skip1 = model.relu1(model.bn1(model.conv1(images)))
        skip2 = model.relu2(model.bn2(model.conv2(model.pool1(skip1))))
        skip3 = model.relu3(model.bn3(model.conv3(model.pool2(skip2))))
        hidden = model.relu4(model.bn4(model.conv4(model.pool3(skip3))))
        for level, skip in ((5, skip3), (6, skip2), (7, skip1)):
            hidden = torch.cat([nn.functional.interpolate(hidden, scale_factor=2, mode="bilinear"), skip], 1)
            hidden = getattr(model, f"relu{level}")(getattr(model, f"bn{level}")(getattr(model, f"conv{level}")(hidden)))
        assert torch.allclose(model(images), model.conv8(hidden), atol=1e-5)
    model.train()

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model.conv1.weight.detach().clone()
    loss = nn.functional.cross_entropy(model(images), masks)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and not torch.equal(model.conv1.weight, before)
    rebuilt = build_layers(model.layer_specs, in_channels=1, num_outputs=5, image_size=(32, 48))
    assert str(rebuilt) == str(model) and rebuilt.routes == model.routes  # what a checkpoint rebuilds


SKIP_ERRORS = [
    (["conv: {filters: 4, kernel: 3, padding: same}", "maxpool: 2", "concat: [-1, 1]", "conv: {filters: classes, kernel: 1}"],
     "layer 3 (concat): the maps it joins must have the same height and width, but they are: layer 2 4×4, "
     "layer 1 8×8"),
    (["conv: {filters: 4, kernel: 3, padding: same}", "concat: [-1, 3]"],
     "layer 2 (concat): field 'from': 3 is not an earlier layer"),
    (["conv: {filters: 4, kernel: 3, padding: same}", "concat: [-1]"],
     "layer 2 (concat): field 'from' must be a list of two or more layer numbers"),
    (["conv: {filters: classes, kernel: 3, padding: same}", "conv: {filters: 4, kernel: 1}"],
     "layer 1 (conv): field 'filters': classes is only allowed on the last layer"),
    (["conv: {filters: 4, kernel: 3}", "conv: {filters: classes, kernel: 1}"],
     "layer 2 (conv): a network that ends in `conv: {filters: classes}` outputs one logit map per class at "
     "the input's size, 8×8, but its maps are 6×6"),
    (["conv: {filters: 4, kernel: 3, padding: same}", "flatten", "conv: {filters: classes, kernel: 1}"],
     "layer 2 (flatten): the network ends in `conv: {filters: classes}`"),
]


@pytest.mark.parametrize("layers, message", SKIP_ERRORS)
def test_bad_skips_and_class_maps_get_a_clear_error(tmp_path, layers, message):
    path = tmp_path / "net.yaml"
    path.write_text("layers:\n" + "".join(f"  - {layer}\n" for layer in layers))
    with pytest.raises(ConfigError) as raised:
        build_from_yaml(path, in_channels=1, num_outputs=3, image_size=(8, 8))
    assert str(raised.value).startswith(f"{path}: ") and message in str(raised.value)


# --- torchvision's segmentation models and their weights ---------------------------------------

@pytest.mark.parametrize("name", TORCHVISION_SEGMENTERS)
def test_torchvision_models_output_one_tensor_with_their_own_layer_names(name):
    import torchvision

    model = _build(name, in_channels=1, classes=5, size=(32, 32))
    entry = MODELS.get(name)
    assert model.get_submodule(entry.metadata["classifier"]).out_channels == 5
    assert model.get_submodule(entry.metadata["first_conv"]).in_channels == 1
    assert model.aux_classifier is None if hasattr(model, "aux_classifier") else True
    reference = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=5)
    assert set(model.state_dict()) == {key for key in reference.state_dict() if not key.startswith("aux_")}


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return tmp_path / "torch-home"


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to download or open a TCP connection fails the test."""
    def refuse_download(url, *args, **kwargs):
        raise AssertionError(f"a test tried to download {url}")

    real_connect = socket.socket.connect

    def refuse_connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"a test tried to connect to {address}")
        return real_connect(self, address)

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse_download)
    monkeypatch.setattr(socket.socket, "connect", refuse_connect)


def _save_random_lraspp(torch_home: Path) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """torchvision's LR-ASPP with random weights, saved where torch hub keeps the published file."""
    import torchvision

    torch.manual_seed(7)
    reference = torchvision.models.get_model("lraspp_mobilenet_v3_large", weights=None, weights_backbone=None,
                                             num_classes=21).eval()
    for module in reference.modules():  # non-trivial statistics, so that loading them shows
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    folder = hub_checkpoint_dir()
    assert folder == torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    # torchvision publishes its segmentation weights with the auxiliary head, which cnnlab builds without
    published = {**reference.state_dict(), "aux_classifier.4.weight": torch.zeros(21, 10, 1, 1)}
    torch.save(published, folder / LRASPP_FILE)
    return reference, reference.state_dict()


def test_published_weights_load_from_the_hub_cache_and_compute_what_torchvision_computes(torch_home, no_network):
    reference, state = _save_random_lraspp(torch_home)
    weights = load_weights("imagenet", resolve_architecture("lraspp_mobilenet_v3_large"))
    assert weights.name == "LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1"
    assert weights.image_size == (520, 520) and weights.mean == (0.485, 0.456, 0.406)
    assert len(weights.output_names) == 21 and weights.output_names[15] == "person"
    assert set(weights.state_dict) == set(state)  # the auxiliary head's tensors left out

    model = _build("lraspp_mobilenet_v3_large", in_channels=3, classes=21).eval()
    report = transfer_weights(model, weights.state_dict, source=weights.description,
                              classifier="classifier.high_classifier", first_conv="backbone.0.0", keep_classifier=True)
    assert report.names(LOADED) == [layer.layer for layer in report.layers] and not report.unused
    images = torch.randn(2, 3, 48, 40)
    with torch.no_grad():
        assert torch.allclose(model(images), reference(images)["out"], atol=1e-5)


def test_weights_for_21_rgb_classes_go_into_a_grey_5_class_model(torch_home, no_network):
    from cnnlab.config import TrainConfig
    from cnnlab.tasks.classification import Classification
    from cnnlab.train.pretrained import head_layers, transfer_pretrained

    _, state = _save_random_lraspp(torch_home)
    architecture = resolve_architecture("lraspp_mobilenet_v3_large")
    weights = load_weights("imagenet", architecture)
    model = _build("lraspp_mobilenet_v3_large", in_channels=1, classes=5)
    task = Classification(["background", "a", "b", "c", "d"])  # what transfer reads of a task: its outputs
    report = transfer_pretrained(model, architecture, task, weights, TrainConfig(data="p", weights="imagenet"))
    assert report.names(ADAPTED) == ["backbone.0.0"]
    assert torch.allclose(model.backbone["0"][0].weight, state["backbone.0.0.weight"].sum(1, keepdim=True))
    # both class convolutions (at 1/8 and 1/16) are new, start at zero, and are what --freeze trains
    class_layers = ["classifier.low_classifier", "classifier.high_classifier"]
    assert report.names(REINITIALISED) == class_layers and not report.names(SKIPPED) and not report.unused
    assert all(float(model.get_submodule(path).weight.abs().sum()) == 0.0 for path in class_layers)
    assert head_layers(model, architecture, report) == tuple(sorted(class_layers))
    assert torch.equal(model.classifier.cbr[0].weight, state["classifier.cbr.0.weight"])


def test_missing_weights_offline_name_the_file_the_url_and_the_folder(torch_home, monkeypatch):
    def offline(url, *args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(CnnlabError) as raised:
        load_weights("imagenet", resolve_architecture("deeplabv3_mobilenet_v3_large"))
    message = str(raised.value)
    assert "https://download.pytorch.org/models/deeplabv3_mobilenet_v3_large-fc3c493d.pth" in message
    assert str(torch_home / "hub" / "checkpoints") in message and "--weights PATH" in message
