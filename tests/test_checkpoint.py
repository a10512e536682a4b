"""Checkpoints: safetensors + JSON, atomic, self-describing, and never unpickled."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from cnnlab.data.normalize import InputSpec
from cnnlab.errors import CnnlabError
from cnnlab.models.build import Architecture, create_model
from cnnlab.checkpoint import (ModelInfo, load_model_checkpoint, load_training_state,
                                     match_parameter_layouts, restore_training_state, save_model_checkpoint,
                                     save_training_state, scheduler_state)
from cnnlab.train.optim import build_optimizer, build_scheduler


def _info() -> ModelInfo:
    return ModelInfo(Architecture("guide-cnn", label="guide-cnn"),
                     {"name": "classification", "class_names": list("abc"), "label_smoothing": 0.0},
                     InputSpec(1, 28, 28, (0.28,), (0.35,)), epoch=3, metrics={"val_loss": 0.5}, config={"seed": 1})


def test_model_checkpoint_round_trip_and_sidecar(tmp_path):
    model = create_model("guide-cnn", in_channels=1, num_outputs=3, image_size=(28, 28))
    path = tmp_path / "best.safetensors"
    save_model_checkpoint(path, model.state_dict(), _info())
    tensors, info = load_model_checkpoint(path)
    assert all(torch.equal(tensors[k], v) for k, v in model.state_dict().items())
    assert info.class_names == ["a", "b", "c"] and info.input.shape == (1, 28, 28) and info.epoch == 3
    sidecar = json.loads((tmp_path / "best.json").read_text())
    assert sidecar["format"] == "cnnlab.checkpoint/1"
    assert sidecar["input"] == {"channels": 1, "height": 28, "width": 28, "mean": [0.28], "std": [0.35],
                                "fit": "squash"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.json", "best.safetensors"]  # no temp files left


def test_a_pickle_disguised_as_a_checkpoint_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(CnnlabError, match="not a readable safetensors file"):
        load_model_checkpoint(path)
    assert not marker.exists()


def test_torch_save_file_is_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    torch.save({"weight": torch.ones(2)}, path)
    with pytest.raises(CnnlabError):
        load_model_checkpoint(path)


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(CnnlabError, match="nowhere.safetensors does not exist"):
        load_model_checkpoint(tmp_path / "nowhere.safetensors")


def test_failed_write_leaves_the_previous_checkpoint_intact(tmp_path):
    model = create_model("guide-cnn", in_channels=1, num_outputs=3, image_size=(28, 28))
    path = tmp_path / "last.safetensors"
    save_model_checkpoint(path, model.state_dict(), _info())
    before = path.read_bytes()
    broken = {"shared": torch.ones(4), "view": None}  # not a tensor: the write fails midway
    with pytest.raises(Exception):
        save_model_checkpoint(path, broken, _info())  # type: ignore[arg-type]
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.json", "last.safetensors"]


def test_training_state_restores_optimizer_and_schedule_exactly(tmp_path):
    torch.manual_seed(0)
    model = create_model("guide-cnn", in_channels=1, num_outputs=3, image_size=(28, 28))
    optimizer = build_optimizer(model, "adamw", lr=0.01, weight_decay=0.1)
    scheduler = build_scheduler(optimizer, "onecycle", total_steps=20)
    images, targets = torch.randn(8, 1, 28, 28), torch.randint(0, 3, (8,))

    def step(m, o, s):
        o.zero_grad()
        torch.nn.functional.cross_entropy(m(images), targets).backward()
        o.step()
        s.step()

    for _ in range(3):
        step(model, optimizer, scheduler)
    save_training_state(tmp_path / "state.safetensors", model_state=model.state_dict(),
                        optimizer_state=optimizer.state_dict(),
                        scheduler_state=scheduler_state(scheduler),
                        progress={"epoch": 1}, info=_info())
    state = load_training_state(tmp_path / "state.safetensors")
    clone = create_model("guide-cnn", in_channels=1, num_outputs=3, image_size=(28, 28))
    clone_optimizer = build_optimizer(clone, "adamw", lr=0.01, weight_decay=0.1)
    clone_scheduler = build_scheduler(clone_optimizer, "onecycle", total_steps=20)
    restore_training_state(state, clone, clone_optimizer, clone_scheduler)
    assert state.progress == {"epoch": 1}
    for _ in range(2):
        step(model, optimizer, scheduler)
        step(clone, clone_optimizer, clone_scheduler)
    assert optimizer.param_groups[0]["lr"] == clone_optimizer.param_groups[0]["lr"]
    for a, b in zip(model.parameters(), clone.parameters()):
        assert torch.equal(a, b)


def test_adam_is_fused_and_a_channels_last_resume_continues_exactly(tmp_path):
    """The fused Adam step pairs weight i with moment i in memory order; a channels-last weight's
    moments come back from the file contiguous, so they must be given its layout before a step."""
    torch.manual_seed(0)
    images, targets = torch.randn(8, 1, 28, 28), torch.randint(0, 3, (8,))

    def build():
        net = create_model("guide-cnn", in_channels=1, num_outputs=3, image_size=(28, 28))
        opt = build_optimizer(net, "adamw", lr=0.01, weight_decay=0.1)
        return net, opt, build_scheduler(opt, "onecycle", total_steps=20)

    def step(m, o, s):
        o.zero_grad()
        inputs = images.contiguous(memory_format=torch.channels_last)
        torch.nn.functional.cross_entropy(m(inputs), targets).backward()
        o.step()
        s.step()

    model, optimizer, scheduler = build()
    assert optimizer.param_groups[0]["fused"] is True
    model.to(memory_format=torch.channels_last)
    for _ in range(3):
        step(model, optimizer, scheduler)
    save_training_state(tmp_path / "state.safetensors", model_state=model.state_dict(),
                        optimizer_state=optimizer.state_dict(), scheduler_state=scheduler_state(scheduler),
                        progress={"epoch": 1}, info=_info())
    clone, clone_optimizer, clone_scheduler = build()
    restore_training_state(load_training_state(tmp_path / "state.safetensors"), clone, clone_optimizer,
                           clone_scheduler)
    clone.to(memory_format=torch.channels_last)  # as training does, after restoring
    moment = clone_optimizer.state[clone.features.conv2.weight]["exp_avg"]
    assert moment.is_contiguous() and not moment.is_contiguous(memory_format=torch.channels_last)
    match_parameter_layouts(clone_optimizer)
    assert clone_optimizer.state[clone.features.conv2.weight]["exp_avg"].is_contiguous(
        memory_format=torch.channels_last)
    for _ in range(2):
        step(model, optimizer, scheduler)
        step(clone, clone_optimizer, clone_scheduler)
    for a, b in zip(model.parameters(), clone.parameters()):
        assert torch.equal(a, b)


def test_without_matching_layouts_the_fused_step_would_go_wrong(tmp_path):
    """The reason for match_parameter_layouts: the same state in the wrong layout gives other weights."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 8, 3).to(memory_format=torch.channels_last)
    twin = torch.nn.Conv2d(4, 8, 3).to(memory_format=torch.channels_last)
    twin.load_state_dict(conv.state_dict())
    optimizers = [torch.optim.Adam(m.parameters(), lr=0.01, fused=True) for m in (conv, twin)]
    inputs = torch.randn(2, 4, 6, 6).contiguous(memory_format=torch.channels_last)
    for module, optimizer in zip((conv, twin), optimizers):
        module(inputs).square().sum().backward()
        optimizer.step()
    moments = optimizers[1].state[twin.weight]
    for name in ("exp_avg", "exp_avg_sq"):
        moments[name] = moments[name].contiguous()  # as read back from a file
    for module, optimizer in zip((conv, twin), optimizers):
        optimizer.zero_grad()
        module(inputs).square().sum().backward()
        optimizer.step()
    assert not torch.equal(conv.weight, twin.weight)


def test_a_training_state_that_does_not_fit_the_model_names_its_file(tmp_path):
    model = create_model("guide-cnn", in_channels=1, num_outputs=3, image_size=(28, 28))
    optimizer = build_optimizer(model, "adam", lr=0.01)
    scheduler = build_scheduler(optimizer, "constant", total_steps=4)
    path = tmp_path / "train-state.safetensors"
    save_training_state(path, model_state=model.state_dict(), optimizer_state=optimizer.state_dict(),
                        scheduler_state=scheduler_state(scheduler), progress={"epoch": 1}, info=_info())
    other = create_model("fast-cnn", in_channels=1, num_outputs=3, image_size=(28, 28))
    other_optimizer = build_optimizer(other, "adam", lr=0.01)
    with pytest.raises(CnnlabError, match=r"train-state\.safetensors: the saved weights do not fit the "
                                          r"architecture 'guide-cnn'"):
        restore_training_state(load_training_state(path), other, other_optimizer,
                               build_scheduler(other_optimizer, "constant", total_steps=4))


def test_the_float16_loss_scale_survives_a_resume(tmp_path):
    """A resumed fp16 run goes on with the loss scale it had, not the initial 65,536 (which would skip
    steps again while it backs off). The scaler is real; CPU stands in for CUDA, where cnnlab uses one."""
    from cnnlab.performance import Performance

    model = create_model("guide-cnn", in_channels=1, num_outputs=3, image_size=(28, 28))
    optimizer = build_optimizer(model, "sgd", lr=0.1)
    before = Performance(torch.device("cpu"))
    before.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16, growth_interval=3)
    loss = model(torch.rand(2, 1, 28, 28)).sum() * float("inf")  # an overflow: the scale backs off
    before.backward_and_step(loss, optimizer)
    saved = before.loss_scaler_state()
    assert saved["scale"] == 2.0**15
    path = tmp_path / "train-state.safetensors"
    save_training_state(path, model_state=model.state_dict(), optimizer_state=optimizer.state_dict(),
                        scheduler_state={}, progress={"epoch": 1}, info=_info(), loss_scaler=saved)

    after = Performance(torch.device("cpu"))
    after.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16, growth_interval=3)
    after.restore_loss_scaler(load_training_state(path).loss_scaler)
    assert after.scaler.get_scale() == 2.0**15
    assert after.loss_scaler_state() == saved


def test_a_run_without_a_loss_scaler_saves_none():
    from cnnlab.performance import Performance

    performance = Performance(torch.device("cpu"), torch.bfloat16)
    assert performance.scaler is None and performance.loss_scaler_state() is None
    performance.restore_loss_scaler({"scale": 8.0})  # nothing to restore into: ignored
