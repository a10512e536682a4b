"""`summarize` / `format_summary`: the Keras-style table, checked against hand-computed counts."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from cnnlab.models.registry import model_entry
from cnnlab.models.summary import format_summary, summarize
from cnnlab.models.yaml_net import build_from_yaml

GUIDE_YAML = Path(__file__).resolve().parents[2] / "examples" / "guide-cnn.yaml"

# (layer, output shape, params): conv params are (3·3·in + 1)·out, dense params are (in + 1)·out.
GUIDE_ROWS_28 = [
    ("conv1", (32, 26, 26), (3 * 3 * 1 + 1) * 32),  # 320
    ("relu1", (32, 26, 26), 0),
    ("pool1", (32, 13, 13), 0),
    ("conv2", (64, 11, 11), (3 * 3 * 32 + 1) * 64),  # 18,496
    ("relu2", (64, 11, 11), 0),
    ("pool2", (64, 5, 5), 0),
    ("conv3", (64, 3, 3), (3 * 3 * 64 + 1) * 64),  # 36,928
    ("relu3", (64, 3, 3), 0),
    ("flatten", (576,), 0),
    ("fc1", (64,), (576 + 1) * 64),  # 36,928
    ("relu4", (64,), 0),
    ("fc2", (10,), (64 + 1) * 10),  # 650
]


def _guide(in_channels: int, side: int) -> nn.Module:
    return model_entry("guide-cnn").builder(in_channels=in_channels, num_outputs=10, image_size=(side, side))


def test_guide_cnn_rows_at_28():
    summary = summarize(_guide(1, 28), (1, 28, 28))
    prefixes = ["features."] * 8 + ["head."] * 4
    expected = [(prefix + row[0], *row[1:]) for prefix, row in zip(prefixes, GUIDE_ROWS_28)]
    assert [(row.name, row.output_shape, row.params) for row in summary.rows] == expected
    assert [row.type for row in summary.rows][:3] == ["Conv2d", "ReLU", "MaxPool2d"]
    assert summary.total_params == summary.trainable_params == 93_322
    assert summary.non_trainable_params == 0


def test_yaml_guide_has_the_same_rows_without_prefixes():
    model = build_from_yaml(GUIDE_YAML, in_channels=1, num_outputs=10, image_size=(28, 28))
    summary = summarize(model, (1, 28, 28))
    assert [(row.name, row.output_shape, row.params) for row in summary.rows] == GUIDE_ROWS_28


def test_guide_cnn_at_32_matches_the_tensorflow_tutorial():
    # TensorFlow's CNN tutorial (CIFAR-10, 3×32×32) reports "Total params: 122,570".
    summary = summarize(_guide(3, 32), (3, 32, 32))
    assert summary.total_params == 122_570
    assert summary.rows[-1].output_shape == (10,)


def test_format_summary_reads_like_keras():
    text = format_summary(summarize(_guide(1, 28), (1, 28, 28)))
    lines = text.splitlines()
    assert lines[0] == "Input shape: 1×28×28"
    assert lines[2].split() == ["Layer", "(type)", "Output", "shape", "Param", "#", "Mult-adds"]
    conv2 = next(line for line in lines if line.startswith("features.conv2"))
    assert conv2.split() == ["features.conv2", "(Conv2d)", "64×11×11", "18,496", "2,230,272"]  # 11·11·64 · 3·3·32
    assert lines[-6:] == [
        "Total params: 93,322",
        "Trainable params: 93,322",
        "Non-trainable params: 0",
        "Multiply-adds per image: 2,794,240",
        "Convolutions: 59.7% of the parameters, 98.7% of the multiply-adds (a filter's weights are reused at "
        "every position)",
        "(softmax is applied by the loss/predict, not by the model)",
    ]


def _flop_counter_mult_adds(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, *input_shape))
    return counter.get_total_flops() // 2  # PyTorch counts a multiply-add as 2 FLOPs


def test_mult_adds_agree_with_pytorchs_flop_counter():
    for model, shape in [(_guide(1, 28), (1, 28, 28)),
                         (model_entry("resnet18").builder(in_channels=3, num_outputs=10, image_size=(32, 32)),
                          (3, 32, 32)),
                         (model_entry("mobilenet_v3_small").builder(in_channels=3, num_outputs=5,
                                                                    image_size=(64, 64)), (3, 64, 64))]:
        summary = summarize(model, shape)
        assert summary.mult_adds == _flop_counter_mult_adds(model, shape) > 0


def test_no_softmax_note_when_the_model_does_not_end_in_a_linear():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1))
    summary = summarize(model, (1, 8, 8))
    assert summary.rows[-1].output_shape == (4, 1, 1)
    assert "softmax" not in format_summary(summary)
    # 4 filters × a 6×6 output × 3·3 weights: 1,296 multiply-adds, all in convolutions, so no share line
    assert format_summary(summary).splitlines()[-2:] == ["Non-trainable params: 0", "Multiply-adds per image: 1,296"]


def test_resnet18_totals_equal_the_parameter_sum():
    model = model_entry("resnet18").builder(in_channels=3, num_outputs=10, image_size=(32, 32))
    summary = summarize(model, (3, 32, 32))
    expected = sum(p.numel() for p in model.parameters())
    assert summary.total_params == expected == 11_181_642
    assert sum(row.params for row in summary.rows) == expected
    rows = {row.name: row for row in summary.rows}
    assert rows["conv1"].output_shape == (64, 16, 16)
    assert rows["layer4.1.conv2"].output_shape == (512, 1, 1)
    assert rows["fc"].params == (512 + 1) * 10
    assert summary.ends_with_linear


def _batchnorm_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 2)
    )


def test_batchnorm_statistics_are_not_parameters():
    summary = summarize(_batchnorm_model(), (3, 8, 8))
    # conv (27 + 1)·8 = 224, batch-norm scale and shift 2·8 = 16, dense (288 + 1)·2 = 578
    assert [row.params for row in summary.rows] == [224, 16, 0, 0, 578]
    assert (summary.total_params, summary.non_trainable_params) == (818, 0)
    assert all(row.trainable for row in summary.rows)


def test_frozen_parameters_are_non_trainable():
    model = _batchnorm_model()
    for parameter in [*model[0].parameters(), *model[1].parameters()]:
        parameter.requires_grad = False
    summary = summarize(model, (3, 8, 8))
    assert (summary.total_params, summary.trainable_params, summary.non_trainable_params) == (818, 578, 240)
    assert [row.trainable for row in summary.rows] == [False, False, True, True, True]
    assert "Non-trainable params: 240" in format_summary(summary)


def test_training_modes_are_restored():
    model = _batchnorm_model().train()
    model[1].eval()  # a frozen batch-norm stays in eval mode during fine-tuning
    summarize(model, (3, 8, 8))
    assert model.training and model[0].training and not model[1].training
    assert model[1].num_batches_tracked.item() == 0  # the blank image did not touch the statistics


class _Scaled(nn.Module):
    """Owns a parameter of its own next to a child: its row must count it, once."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(4))
        self.linear = nn.Linear(3, 4)

    def forward(self, inputs: Tensor) -> Tensor:
        return self.linear(inputs) * self.scale


def test_own_parameters_and_shared_weights_are_counted_once():
    first, second = nn.Linear(4, 4), nn.Linear(4, 4)
    second.weight = first.weight  # tied weights: 16 shared + two biases of 4
    model = nn.Sequential(_Scaled(), first, second)
    summary = summarize(model, (1, 1, 3))
    rows = {row.name: row.params for row in summary.rows}
    assert rows == {"0": 4, "0.linear": 16, "1": 20, "2": 4}
    assert summary.total_params == sum(p.numel() for p in model.parameters()) == 44
    assert summary.rows[0].output_shape == (1, 1, 4)


def test_a_layer_that_never_runs_shows_a_dash():
    class SkipsALayer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used, self.unused = nn.Linear(2, 2), nn.Linear(2, 3)

        def forward(self, inputs: Tensor) -> Tensor:
            return self.used(inputs)

    summary = summarize(SkipsALayer(), (1, 1, 2))
    assert [(row.name, row.output_shape) for row in summary.rows] == [("used", (1, 1, 2)), ("unused", None)]
    assert "unused (Linear)" in format_summary(summary)
    assert [line.split()[2] for line in format_summary(summary).splitlines() if "unused" in line] == ["-"]
