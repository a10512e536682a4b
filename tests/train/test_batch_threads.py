"""--batch-threads: a batch trained as parts on threads gives the whole batch's gradient (batch norm:
each part's own), reproducibly, and is only chosen where it keeps a seed's run fixed."""

from __future__ import annotations

import copy
import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.models.build import create_model
from cnnlab.tasks.classification import Classification
from cnnlab.tasks.regression import Regression
from cnnlab.device import intra_op_threads
from cnnlab.train.batch_threads import BatchThreads, add_gradients, batch_parts, choose_batch_threads, part_models
from cnnlab.train.loop import _step_in_parts
from cnnlab.performance import Performance

CPU = torch.device("cpu")


def _digits(count: int, size: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Real handwritten digits (scikit-learn's), as uint8 1×size×size images and their labels."""
    from cnnlab.data.named import open_named

    source = open_named("digits", split="train")
    pixels = torch.as_tensor(source.pixels[:count]).reshape(count, 1, 8, 8).float()
    images = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False)
    return images.round().clamp(0, 255).to(torch.uint8), torch.as_tensor(source.targets[:count]).long()


def _normalizer() -> nn.Module:
    class Scale(nn.Module):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return images.float() / 255.0 - 0.5

    return Scale()


def _gradients(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("count,parts", [(128, 2), (113, 2), (10, 3), (2, 4), (1, 2)])
def test_batch_parts_cover_the_batch_in_nearly_equal_pieces(count, parts):
    slices = batch_parts(count, parts)
    covered = [index for part in slices for index in range(count)[part]]
    assert covered == list(range(count))
    sizes = [part.stop - part.start for part in slices]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1
    assert len(slices) == min(parts, count)


def test_gradients_are_added_in_order_in_the_weights_own_layout():
    weight = nn.Parameter(torch.zeros(8, 3, 3, 3).contiguous(memory_format=torch.channels_last))
    first, second = torch.randn(8, 3, 3, 3), torch.randn(8, 3, 3, 3)  # contiguous: another layout
    add_gradients([weight], [(first,), (second,)])
    assert weight.grad.stride() == weight.stride()
    torch.testing.assert_close(weight.grad, first + second, rtol=0, atol=0)
    unused = nn.Parameter(torch.zeros(3))
    add_gradients([unused], [(None,), (None,)])
    assert unused.grad is None


@pytest.mark.parametrize("task_name,parts", [("plain", 2), ("plain", 3), ("class-weighted", 2),
                                             ("class-weighted", 3), ("regression", 3)])
def test_a_batch_in_parts_has_the_whole_batchs_loss_and_gradient(task_name, parts):
    images, labels = _digits(96)
    if task_name == "plain":
        task, targets, outputs = Classification([str(d) for d in range(10)]), labels, 10
    elif task_name == "class-weighted":
        weights = [1.0 + 0.5 * d for d in range(10)]
        task, targets, outputs = Classification([str(d) for d in range(10)], class_weights=weights), labels, 10
    else:
        task = Regression(["value"], mean=[4.5], std=[2.9])
        targets, outputs = labels.float().unsqueeze(1), 1
    torch.manual_seed(0)
    model = create_model("guide-cnn", in_channels=1, num_outputs=outputs, image_size=(20, 20))
    performance = Performance(CPU, channels_last=True)  # fp32: agreement up to the order of additions
    performance.prepare_model(model)
    normalizer = _normalizer()

    whole_loss = task.loss(model(performance.prepare_inputs(normalizer(images))).float(), targets)
    whole_loss.backward()
    whole = _gradients(model)
    model.zero_grad(set_to_none=True)
    with intra_op_threads(2), BatchThreads(parts) as threads:
        loss, _, parts_outputs = _step_in_parts(threads, part_models(model, parts), task, normalizer, performance,
                                             images, targets)
    assert parts_outputs.shape == (96, outputs)
    torch.testing.assert_close(loss, whole_loss.detach(), rtol=1e-6, atol=1e-7)
    for name, (parameter, expected) in zip([n for n, _ in model.named_parameters()], zip(model.parameters(), whole)):
        assert parameter.grad.stride() == parameter.stride(), name
        torch.testing.assert_close(parameter.grad, expected, rtol=1e-5, atol=1e-6, msg=name)


def test_three_parts_add_their_gradients_in_the_parts_order_whichever_thread_ends_first():
    images, labels = _digits(96)
    task = Classification([str(d) for d in range(10)])
    torch.manual_seed(0)
    model = create_model("guide-cnn", in_channels=1, num_outputs=10, image_size=(20, 20))
    performance, normalizer = Performance(CPU), _normalizer()
    expected = None
    with intra_op_threads(1):  # as each part runs: the thread count decides oneDNN's order of additions
        for part in batch_parts(96, 3):  # one after another, here, then added in order
            share = (part.stop - part.start) / 96
            loss = task.loss(model(normalizer(images[part])).float(), labels[part]) * share
            gradients = torch.autograd.grad(loss, list(model.parameters()))
            expected = list(gradients) if expected is None else [e + g for e, g in zip(expected, gradients)]
    for _ in range(3):
        with intra_op_threads(3), BatchThreads(3) as threads:
            _step_in_parts(threads, part_models(model, 3), task, normalizer, performance, images, labels)
        for parameter, gradient in zip(model.parameters(), expected):
            torch.testing.assert_close(parameter.grad, gradient, rtol=0, atol=0)


def test_a_part_that_fails_raises_in_the_calling_thread_and_the_threads_stop():
    before = torch.get_num_threads()
    ran = []

    def fine() -> None:
        ran.append(threading.current_thread().name)

    def broken() -> None:
        raise ValueError("part 2 failed")

    with BatchThreads(3) as threads:
        assert torch.get_num_threads() == 1  # the calling thread leaves the other cores to the helpers
        with pytest.raises(ValueError, match="part 2 failed"):
            threads.run([fine, fine, broken])
        threads.run([fine, fine, fine])  # still usable after a failure
    assert len(ran) == 5 and len(set(ran)) == 3  # three threads did the work
    assert torch.get_num_threads() == before
    assert not [t for t in threading.enumerate() if t.name.startswith("cnnlab-batch-part")]


def _choose(model: nn.Module, setting: str | int = "auto", *, cores: int = 2, batch_size: int = 128,
            device: torch.device = CPU, distributed: bool = False, compiled: bool = False) -> int:
    with intra_op_threads(cores):
        return choose_batch_threads(setting, model, device=device, batch_size=batch_size,
                                    distributed=distributed, compiled=compiled)


def test_auto_takes_small_networks_without_dropout_on_two_cores():
    guide = create_model("guide-cnn", in_channels=1, num_outputs=10, image_size=(28, 28))
    assert _choose(guide) == 2
    assert _choose(guide, batch_size=64) == 2  # parts of at least 32 images
    assert _choose(guide, batch_size=63) == 1
    assert _choose(guide, batch_size=32) == 1  # Keras' and cnnlab's default batch: parts too small
    assert _choose(guide, cores=1) == 1
    assert _choose(guide, cores=4) == 1  # measured on 2 cores only: more cores keep PyTorch's own way
    assert _choose(guide, device=torch.device("cuda")) == 1
    assert _choose(guide, distributed=True) == 1
    assert _choose(guide, compiled=True) == 1
    batch_norm = create_model("fast-cnn-v2", in_channels=1, num_outputs=10, image_size=(28, 28))
    assert _choose(batch_norm) == 2
    dropout = nn.Sequential(nn.Conv2d(1, 8, 3), nn.Flatten(), nn.Dropout(0.5), nn.LazyLinear(10))
    assert _choose(dropout) == 1
    large = nn.Sequential(nn.Flatten(), nn.Linear(784, 2000))  # 1.57M weights: the one-core optimiser step
    assert _choose(large) == 1


def test_a_number_is_taken_where_it_works_and_refused_where_it_cannot():
    guide = create_model("guide-cnn", in_channels=1, num_outputs=10, image_size=(28, 28))
    assert _choose(guide, 3, cores=8, batch_size=32) == 3
    assert _choose(guide, 1) == 1
    dropout = nn.Sequential(nn.Conv2d(1, 8, 3), nn.Flatten(), nn.Dropout(0.5), nn.LazyLinear(10))
    assert _choose(dropout, 1) == 1
    with pytest.raises(ConfigError, match=r"--batch-threads 2: layer '2' draws random numbers.*--batch-threads 1"):
        _choose(dropout, 2)
    from torchvision.ops import StochasticDepth

    stochastic_depth = nn.Sequential(nn.Conv2d(1, 8, 3), StochasticDepth(0.2, "row"))
    with pytest.raises(ConfigError, match="layer '1' draws random numbers"):
        _choose(stochastic_depth, 2)
    with pytest.raises(ConfigError, match="CPU cores; on cuda"):
        _choose(guide, 2, device=torch.device("cuda"))
    with pytest.raises(ConfigError, match="--nproc or --batch-threads"):
        _choose(guide, 2, distributed=True)
    with pytest.raises(ConfigError, match="--compile"):
        _choose(guide, 2, compiled=True)


@pytest.mark.parametrize("value,message", [(0, "at least 1"), ("two", "auto or a whole number")])
def test_config_refuses_what_is_not_a_thread_count(value, message):
    from cnnlab.config import TrainConfig

    with pytest.raises(ConfigError, match=message):
        TrainConfig(data="digits", batch_threads=value).validate()


def test_training_with_batch_threads_is_reproducible_and_learns_as_well(tmp_path):
    import cnnlab

    def train(threads: str | int, name: str) -> tuple[list[float], float, str]:
        with intra_op_threads(2):
            result = cnnlab.train(data="digits", model="guide-cnn", image_size="20", epochs=4, batch_size=128,
                                  seed=1, batch_threads=threads, runs_dir=str(tmp_path), name=name, quiet=True)
        accuracy = cnnlab.evaluate(result.run_dir, split="test", quiet=True).metrics["accuracy"]
        return [row["train_loss"] for row in result.history], accuracy, result.arithmetic

    first_losses, first_accuracy, arithmetic = train("auto", "parts-a")
    second_losses, second_accuracy, _ = train("auto", "parts-b")
    whole_losses, whole_accuracy, whole_arithmetic = train(1, "whole")
    assert "each batch in 2 parts on 2 threads" in arithmetic and "parts" not in whole_arithmetic
    assert first_losses == second_losses and first_accuracy == second_accuracy  # bit for bit
    assert first_losses != whole_losses  # it did train in parts (other rounding)
    assert first_accuracy > 0.85 and whole_accuracy > 0.85
    assert abs(first_accuracy - whole_accuracy) < 0.04, (first_accuracy, whole_accuracy)


def test_batch_norm_parts_share_the_weights_and_keep_the_first_parts_statistics():
    images, labels = _digits(128, size=28)
    task = Classification([str(d) for d in range(10)])
    torch.manual_seed(0)
    model = create_model("fast-cnn-v2", in_channels=1, num_outputs=10, image_size=(28, 28)).train()
    performance, normalizer = Performance(CPU), _normalizer()
    models = part_models(model, 2)
    assert all(a is b for a, b in zip(models[0].parameters(), models[1].parameters()))
    assert not any(a is b for a, b in zip(models[0].buffers(), models[1].buffers()))
    reference = copy.deepcopy(model)  # each half alone, one after the other, on one thread
    other_half = copy.deepcopy(model)
    with intra_op_threads(1):
        first, second = batch_parts(128, 2)
        expected_loss = 0.5 * (task.loss(reference(normalizer(images[first])).float(), labels[first])
                               + task.loss(other_half(normalizer(images[second])).float(), labels[second]))
        expected_loss.backward()
    with intra_op_threads(2), BatchThreads(2) as threads:
        loss, _, _ = _step_in_parts(threads, models, task, normalizer, performance, images, labels)
    torch.testing.assert_close(loss, expected_loss.detach(), rtol=1e-6, atol=1e-7)
    # "ghost batch norm": the gradient of the halves normalised each by its own images
    for parameter, expected, other in zip(model.parameters(), reference.parameters(), other_half.parameters()):
        torch.testing.assert_close(parameter.grad, expected.grad + other.grad, rtol=1e-5, atol=1e-6)
    # the network keeps the first half's running statistics; the copy's are left behind with it
    torch.testing.assert_close(model.features.bn1.running_mean, reference.features.bn1.running_mean, rtol=0, atol=0)
    assert not torch.equal(model.features.bn1.running_mean, models[1].features.bn1.running_mean)


def test_a_batch_norm_network_trains_in_parts_reproducibly(tmp_path):
    import cnnlab

    def train(name: str) -> tuple[list[float], float, str]:
        with intra_op_threads(2):
            result = cnnlab.train(data="digits", model="fast-cnn-v2", image_size="16", epochs=3, batch_size=64,
                                  seed=2, runs_dir=str(tmp_path), name=name, quiet=True)
        accuracy = cnnlab.evaluate(result.run_dir, split="test", quiet=True).metrics["accuracy"]
        return [row["val_loss"] for row in result.history], accuracy, result.arithmetic

    first_losses, first_accuracy, arithmetic = train("bn-a")
    second_losses, second_accuracy, _ = train("bn-b")
    assert "each batch in 2 parts on 2 threads" in arithmetic
    assert first_losses == second_losses and first_accuracy == second_accuracy
    assert first_accuracy > 0.9
