"""Fast paths change speed, not results: bf16 and channels-last train to the same accuracy as fp32."""

from __future__ import annotations

import pytest
import torch

from cnnlab.errors import ConfigError
from cnnlab.performance import cpu_supports_bf16, resolve_performance

CPU = torch.device("cpu")


def test_auto_picks_bf16_only_where_the_cpu_has_it():
    performance = resolve_performance(CPU)
    assert performance.autocast_dtype == (torch.bfloat16 if cpu_supports_bf16() else None)
    assert performance.channels_last


def test_fp32_and_layout_can_be_forced():
    performance = resolve_performance(CPU, precision="fp32", channels_last=False)
    assert performance.autocast_dtype is None and not performance.channels_last
    assert performance.describe() == "fp32"


def test_fp16_on_cpu_is_refused_with_the_alternative():
    with pytest.raises(ConfigError, match="use bf16"):
        resolve_performance(CPU, precision="fp16")


def test_channels_last_model_keeps_its_state_dict_keys():
    from cnnlab.models.build import create_model

    model = create_model("guide-cnn", in_channels=1, num_outputs=10, image_size=(28, 28))
    keys = list(model.state_dict())
    prepared = resolve_performance(CPU, precision="fp32", channels_last=True).prepare_model(model)
    assert prepared is model and list(model.state_dict()) == keys
    assert model.features.conv2.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.slow
def test_mixed_precision_and_layout_reach_fp32_accuracy(digits_split_folder, tmp_path):
    import cnnlab

    settings = [("fp32", False), ("auto", True)]
    accuracies = {}
    for precision, channels_last in settings:
        result = cnnlab.train(data=str(digits_split_folder), image_size="24", epochs=6, seed=3, precision=precision,
                              channels_last=channels_last, runs_dir=str(tmp_path), quiet=True)
        accuracies[precision] = cnnlab.evaluate(result.run_dir, quiet=True).metrics["accuracy"]
    assert accuracies["fp32"] > 0.93
    assert abs(accuracies["auto"] - accuracies["fp32"]) < 0.02, accuracies


def test_training_without_augmentation_does_not_load_torchvision(tmp_path):
    # torchvision takes about a second to import; a guide-cnn run on ready-sized images needs none of it.
    import subprocess
    import sys

    script = (f"import sys, cnnlab; cnnlab.train(data='fashion-mnist', model='guide-cnn', epochs=1, limit=300, "
              f"device='cpu', runs_dir={str(tmp_path)!r}, name='t', quiet=True); "
              f"print('torchvision' in sys.modules)")
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert completed.stdout.strip().splitlines()[-1] == "False"
