"""fast-cnn-v2 (the model of --recipe fast) and fast-cnn, built as docs/speed.md describes them."""

from __future__ import annotations

import pytest
import torch

from cnnlab.models.build import create_model
from cnnlab.models.registry import model_entry


@pytest.mark.parametrize("name, expected", [("fast-cnn", 166_186), ("fast-cnn-v2", 192_082)])
def test_description_quotes_the_parameter_count_at_28_pixels(name, expected):
    model = create_model(name, in_channels=1, num_outputs=10, image_size=(28, 28))
    count = sum(p.numel() for p in model.parameters())
    assert count == expected
    assert f"{round(count / 1000)}k params at 28×28" in model_entry(name).description


def test_each_pool_follows_its_convolution_and_precedes_batch_norm():
    model = create_model("fast-cnn", in_channels=1, num_outputs=10, image_size=(28, 28))
    names = [name for name, _ in model.features.named_children()]
    assert names == ["conv1", "pool1", "bn1", "relu1", "conv2", "pool2", "bn2", "relu2",
                     "conv3", "bn3", "relu3", "conv4", "pool4", "bn4", "relu4"]
    assert not any(isinstance(m, torch.nn.Dropout) for m in model.modules())
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert model.forward_features(torch.zeros(2, 1, 28, 28)).shape == (2, 96, 3, 3)


def test_v2_pools_after_its_third_convolution_so_the_fourth_runs_at_an_eighth_of_the_side():
    model = create_model("fast-cnn-v2", in_channels=1, num_outputs=10, image_size=(28, 28))
    names = [name for name, _ in model.features.named_children()]
    assert names == ["conv1", "pool1", "bn1", "relu1", "conv2", "pool2", "bn2", "relu2",
                     "conv3", "pool3", "bn3", "relu3", "conv4", "bn4", "relu4"]
    seen = {}
    model.features.conv4.register_forward_hook(lambda module, args, output: seen.update(conv4=output.shape))
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert seen["conv4"] == (2, 128, 3, 3)
    # Other sizes: three pools floor the side to a multiple of 8, as the head's input size assumes.
    assert model_entry("fast-cnn-v2").builder(in_channels=3, num_outputs=4, image_size=(35, 20))(
        torch.zeros(1, 3, 35, 20)).shape == (1, 4)


def test_v2_does_less_arithmetic_per_image_than_fast_cnn():
    from torch.utils.flop_counter import FlopCounterMode

    def flops(name: str) -> int:
        model = create_model(name, in_channels=1, num_outputs=10, image_size=(28, 28))
        with FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 1, 28, 28))
        return counter.get_total_flops()

    assert flops("fast-cnn-v2") / flops("fast-cnn") == pytest.approx(0.62, abs=0.01)


def test_v2_averages_large_maps_down_to_3x3_before_its_dense_layer():
    """A 224-px photo leaves 28×28 maps: flattened whole they gave the dense layer 100k inputs and the
    recipe's rate threw the logits off (docs in fast.py); averaged to 3×3 it has 1,152, as at 28 px."""
    small = create_model("fast-cnn-v2", in_channels=1, num_outputs=10, image_size=(28, 28))
    assert [name for name, _ in small.head.named_children()] == ["flatten", "fc"]  # 3×3 already
    large = create_model("fast-cnn-v2", in_channels=3, num_outputs=4, image_size=(224, 224))
    assert isinstance(large.head.pool, torch.nn.AdaptiveAvgPool2d)
    assert large.head.fc.in_features == 128 * 3 * 3
    assert large(torch.zeros(2, 3, 224, 224)).shape == (2, 4)
    tall = create_model("fast-cnn-v2", in_channels=1, num_outputs=2, image_size=(64, 20))  # maps 8×2
    assert tall.head.fc.in_features == 128 * 3 * 2
    # fast-cnn keeps flattening, so runs trained with it at any size still load
    assert create_model("fast-cnn", in_channels=3, num_outputs=4, image_size=(224, 224)).head.fc.in_features \
        == 96 * 28 * 28
