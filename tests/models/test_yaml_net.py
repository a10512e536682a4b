"""Networks typed in as YAML layer lists: the guide's CNN, every layer kind, every error message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.models import parts
from cnnlab.models.registry import model_entry
from cnnlab.models.yaml_net import build_from_yaml, build_layers, load_layers

GUIDE_YAML = Path(__file__).resolve().parents[2] / "examples" / "guide-cnn.yaml"
MNIST = {"in_channels": 1, "num_outputs": 10, "image_size": (28, 28)}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "net.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _layers_yaml(*layers: str) -> str:
    return "layers:\n" + "".join(f"  - {layer}\n" for layer in layers)


def _param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_guide_yaml_has_the_guide_cnns_parameter_count_and_layer_names():
    model = build_from_yaml(GUIDE_YAML, **MNIST)
    guide = model_entry("guide-cnn").builder(**MNIST)
    assert _param_count(model) == _param_count(guide) == 93_322
    assert [name for name, _ in model.named_children()] == [
        "conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "conv3", "relu3",
        "flatten", "fc1", "relu4", "fc2",
    ]
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_guide_yaml_computes_what_the_guide_cnn_computes():
    torch.manual_seed(0)
    model = build_from_yaml(GUIDE_YAML, **MNIST).eval()
    guide = model_entry("guide-cnn").builder(**MNIST).eval()
    with torch.no_grad():
        for ours, theirs in zip(model.parameters(), guide.parameters(), strict=True):
            assert ours.shape == theirs.shape
            ours.copy_(theirs)
        images = torch.rand(4, 1, 28, 28)
        torch.testing.assert_close(model.forward_features(images), guide.forward_features(images))
        # identical logits also show the softmax in the YAML was not built into the model
        torch.testing.assert_close(model(images), guide(images))


def test_features_and_head_split_at_flatten():
    model = build_from_yaml(GUIDE_YAML, **MNIST)
    images = torch.rand(3, 1, 28, 28)
    features = model.forward_features(images)
    assert features.shape == (3, 64, 3, 3)
    torch.testing.assert_close(model.forward_head(features), model(images))


def test_parts_find_first_conv_classifier_and_last_conv():
    model = build_from_yaml(GUIDE_YAML, **MNIST)
    assert parts.first_conv(model) is model.conv1
    assert parts.classifier(model) is model.fc2
    assert parts.last_conv_layer(model) == ("conv3", model.conv3)


def test_load_layers_fills_every_default():
    layers = load_layers(GUIDE_YAML)
    assert layers[0] == {"kind": "conv", "filters": 32, "kernel": 3, "stride": 1, "padding": "valid",
                         "activation": "relu"}
    assert layers[1] == layers[3] == {"kind": "maxpool", "size": 2, "stride": 2}
    assert layers[5] == {"kind": "flatten"}
    assert layers[-1] == {"kind": "dense", "units": "classes", "activation": "softmax"}


def test_round_trip_through_json_builds_the_same_network():
    layers = load_layers(GUIDE_YAML)
    stored = json.loads(json.dumps(layers))
    assert stored == layers
    torch.manual_seed(0)
    original = build_layers(layers, **MNIST)
    torch.manual_seed(0)
    rebuilt = build_layers(stored, **MNIST)
    assert str(rebuilt) == str(original)
    assert rebuilt.layer_specs == layers
    for (name, ours), (_, theirs) in zip(rebuilt.state_dict().items(), original.state_dict().items()):
        torch.testing.assert_close(ours, theirs, msg=name)


def test_a_final_classes_layer_is_appended_when_missing(tmp_path):
    path = _write(tmp_path, _layers_yaml("conv: {filters: 4, kernel: 3}", "flatten", "dense: 16"))
    layers = load_layers(path)
    assert layers[-1] == {"kind": "dense", "units": "classes", "activation": None}
    model = build_layers(layers, in_channels=3, num_outputs=5, image_size=(8, 8))
    assert (model.fc1.in_features, model.fc1.out_features) == (4 * 6 * 6, 16)
    assert (model.fc2.in_features, model.fc2.out_features) == (16, 5)


VARIANTS = _layers_yaml(
    "conv: {filters: 8, kernel: 3, padding: same}",
    "batchnorm",
    "activation: leaky_relu",
    "avgpool: {size: 3, stride: 2}",
    "conv: {filters: 8, kernel: 5, stride: 2, padding: 2, activation: gelu}",
    "dropout: 0.25",
    "conv: {filters: 16, kernel: 3, padding: same, activation: silu}",
    "globalavgpool",
    "batchnorm",
    "dense: {units: 12, activation: tanh}",
    "dropout: {rate: 0.5}",
    "dense: {units: 12, activation: elu}",
    "activation: sigmoid",
    "dense: {units: classes}",
)


def test_every_layer_kind_builds_with_the_right_shapes_and_names(tmp_path):
    model = build_from_yaml(_write(tmp_path, VARIANTS), in_channels=3, num_outputs=4, image_size=(20, 30))
    assert [name for name, _ in model.named_children()] == [
        "conv1", "bn1", "leaky_relu1", "avgpool1", "conv2", "gelu1", "dropout1", "conv3", "silu1",
        "gap1", "bn2", "fc1", "tanh1", "dropout2", "fc2", "elu1", "sigmoid1", "fc3",
    ]
    assert isinstance(model.bn1, nn.BatchNorm2d) and isinstance(model.bn2, nn.BatchNorm1d)
    # same padding keeps 20×30; avgpool 3/2 gives 9×14; the 5×5 stride-2 conv with padding 2 gives 5×7
    assert model.forward_features(torch.zeros(2, 3, 20, 30)).shape == (2, 16, 5, 7)
    assert model.dropout1.p == 0.25 and model.dropout2.p == 0.5


def test_every_layer_kind_trains_one_step(tmp_path):
    torch.manual_seed(0)
    model = build_from_yaml(_write(tmp_path, VARIANTS), in_channels=3, num_outputs=4, image_size=(20, 30))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model.conv1.weight.detach().clone()
    loss = nn.functional.cross_entropy(model(torch.rand(4, 3, 20, 30)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert not torch.equal(model.conv1.weight, before)
    assert model.bn1.num_batches_tracked.item() == 1


def test_raw_and_normalised_lists_build_alike():
    raw = [{"conv": {"filters": 8, "kernel": 3}}, {"maxpool": 2}, "flatten", {"dense": {"units": "classes"}}]
    torch.manual_seed(0)
    from_raw = build_layers(raw, **MNIST)
    torch.manual_seed(0)
    from_normalised = build_layers(from_raw.layer_specs, **MNIST)
    assert str(from_raw) == str(from_normalised)
    assert from_normalised.layer_specs == from_raw.layer_specs
    assert from_raw.layer_specs[1] == {"kind": "maxpool", "size": 2, "stride": 2}


LAYER_ERRORS = [
    (["convolution: {filters: 8}"], ["layer 1 (convolution)", "known kinds: conv, maxpool"]),
    (["conv: {filters: 8}"], ["layer 1 (conv)", "field 'kernel' is required"]),
    (["conv: {filters: many, kernel: 3}"], ["field 'filters' must be a whole number ≥ 1"]),
    (["conv: {filters: true, kernel: 3}"], ["field 'filters' must be a whole number", "got True"]),
    (["conv: {filter: 8, kernel: 3}"], ["unknown field 'filter'", "did you mean 'filters'"]),
    (["conv: {filters: 8, kernel: 3, padding: full}"], ["field 'padding' must be valid, same or a whole"]),
    (["conv: {filters: 8, kernel: 3, stride: 2, padding: same}"], ["field 'padding'", "padding: 1 instead"]),
    (["conv: 8"], ["layer 1 (conv)", "expected its settings as a mapping"]),
    (["42"], ["layer 1:", "expected a layer like"]),
    (["maxpool: {size: 2, strides: 2}"], ["unknown field 'strides'", "did you mean 'stride'"]),
    (["flatten", "dropout: 1.5"], ["layer 2 (dropout)", "field 'rate' must be a fraction"]),
    (["flatten", "activation: swish"], ["layer 2 (activation)", "field 'activation' must be one of relu"]),
    (["flatten", "dense: {units: some}"], ["field 'units' must be a whole number ≥ 1, or the word"]),
    (
        ["flatten", "dense: {units: 64, activation: softmax}", "dense: {units: classes}"],
        ["layer 2 (dense)", "field 'activation': softmax is only allowed on the last layer"],
    ),
    (["flatten", "dense: {units: 10, activation: softmax}"], ["layer 2 (dense)", "units: classes"]),
    (
        ["flatten", "dense: {units: classes, activation: relu}"],
        ["layer 2 (dense)", "field 'activation'", "softmax or no activation"],
    ),
]


@pytest.mark.parametrize("layers, expected", LAYER_ERRORS)
def test_layer_errors_name_the_file_layer_and_field(tmp_path, layers, expected):
    path = _write(tmp_path, _layers_yaml(*layers))
    with pytest.raises(ConfigError) as raised:
        load_layers(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: ")
    for part in expected:
        assert part in message


SHAPE_ERRORS = [
    (
        ["conv: {filters: 8, kernel: 3}", *["maxpool: 2"] * 5],
        (28, 28),
        "layer 6 (maxpool): the feature map is 1×1 and cannot be pooled by 2 (size: 2); "
        "use a larger --image-size or fewer pooling layers",
    ),
    (
        ["conv: {filters: 8, kernel: 5}"],
        (4, 9),
        "layer 1 (conv): the feature map is 4×9 and a 5×5 kernel (kernel: 5) does not fit",
    ),
    (
        ["conv: {filters: 8, kernel: 3}", "dense: 32", "flatten"],
        (28, 28),
        "layer 2 (dense): it needs a flat input but gets a 8×26×26 feature map; add `- flatten`",
    ),
    (
        ["conv: {filters: 8, kernel: 3}"],
        (28, 28),
        "layer 2 (dense): the final dense layer of `classes` units needs a flat input but gets a 8×26×26",
    ),
    (
        ["conv: {filters: 8, kernel: 3}", "flatten", "conv: {filters: 8, kernel: 3}"],
        (28, 28),
        "layer 3 (conv): the input is already flat after layer 2",
    ),
    (
        ["conv: {filters: 8, kernel: 3}", "global_avg_pool", "maxpool: 2"],
        (28, 28),
        "layer 3 (maxpool): the input is already flat after layer 2",
    ),
]


@pytest.mark.parametrize("layers, image_size, expected", SHAPE_ERRORS)
def test_shape_errors_say_what_to_change(tmp_path, layers, image_size, expected):
    path = _write(tmp_path, _layers_yaml(*layers))
    with pytest.raises(ConfigError) as raised:
        build_from_yaml(path, in_channels=1, num_outputs=10, image_size=image_size)
    assert str(raised.value).startswith(f"{path}: {expected}")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("layers: [conv: {filters: 8\n", "not valid YAML"),
        ("- conv: {filters: 8, kernel: 3}\n", "expected a mapping with a `layers:` list"),
        ("layers: []\n", "`layers` must be a non-empty list"),
        ("layer:\n  - flatten\n", "unknown top-level key(s) layer"),
    ],
)
def test_file_errors_name_the_file(tmp_path, text, expected):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load_layers(path)
    assert str(raised.value).startswith(f"{path}: ")
    assert expected in str(raised.value)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: no such file"):
        load_layers(tmp_path / "nope.yaml")
