"""`--weights`: torchvision's ImageNet files from torch hub's cache (never downloaded in tests), files, errors."""

from __future__ import annotations

import json
import socket
import urllib.error
from pathlib import Path

import pytest
import torch
import yaml

from cnnlab.config import TrainConfig
from cnnlab.errors import CnnlabError, ConfigError
from cnnlab.models.build import resolve_architecture
from cnnlab.models.weights import hub_checkpoint_dir, imagenet_weights_entry, load_weights, weights_file_name
from cnnlab.train.pretrained import with_weights_defaults
from tests.helpers import run_cli

RESNET18_FILE = "resnet18-f37072fd.pth"  # the last part of ResNet18_Weights.IMAGENET1K_V1's URL


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to reach the network fails the test (torch hub's download, or any TCP connection)."""
    def refuse_download(url, *args, **kwargs):
        raise AssertionError(f"a test tried to download {url}")

    real_connect = socket.socket.connect

    def refuse_connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"a test tried to connect to {address}")
        return real_connect(self, address)

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse_download)
    monkeypatch.setattr(socket.socket, "connect", refuse_connect)


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


def _save_random_resnet18(folder: Path) -> dict[str, torch.Tensor]:
    """A weights file in torchvision's format (a state dict saved with torch.save), randomly initialised."""
    import torchvision

    torch.manual_seed(123)
    state = torchvision.models.resnet18(weights=None).state_dict()
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / RESNET18_FILE)
    return state


def test_the_file_name_and_folder_follow_torchvision_and_torch_home(torch_home):
    entry = imagenet_weights_entry("imagenet", resolve_architecture("resnet18"))
    assert weights_file_name(entry) == RESNET18_FILE
    assert hub_checkpoint_dir() == torch_home / "hub" / "checkpoints"


@pytest.mark.slow
def test_imagenet_weights_are_loaded_from_the_hub_cache_with_no_network(torch_home, no_network, tmp_path):
    saved = _save_random_resnet18(torch_home / "hub" / "checkpoints")
    runs = tmp_path / "runs"
    # 1-channel digits; --freeze trains only the new head, so every other tensor must come out as it went in
    outcome = run_cli("train", "--data", "digits", "--model", "resnet18", "--weights", "imagenet", "--freeze",
                      "--lr", 0.003, "--image-size", 32, "--limit", 64, "--epochs", 1, "--batch-size", 16, "--name", "imagenet",
                      "--runs-dir", runs)
    assert outcome.exit_code == 0, outcome.stderr
    assert "ImageNet weights ResNet18_Weights.IMAGENET1K_V1" in outcome.stderr
    assert "adapted (1): conv1 (the weights' 3 input channels summed into 1)" in outcome.stderr
    assert "re-initialised (1): fc (new head, 10 outputs, starting at zero)" in outcome.stderr
    assert "stage 1/1: head only (5,130 trainable parameters)" in outcome.stderr

    from safetensors.torch import load_file

    trained = load_file(runs / "imagenet" / "weights" / "last.safetensors")
    assert set(trained) == set(saved)
    for key, value in saved.items():
        if key.startswith("fc."):
            continue
        if key == "conv1.weight":
            assert torch.allclose(trained[key], value.sum(dim=1, keepdim=True)), key
        else:
            assert torch.equal(trained[key], value), key  # batch-norm statistics included: frozen in eval mode
    assert trained["fc.weight"].shape == (10, 512)

    sidecar = json.loads((runs / "imagenet" / "weights" / "last.json").read_text())
    assert sidecar["input"]["mean"] == [0.449] and sidecar["input"]["std"] == [0.226]  # ImageNet's, for grey
    assert sidecar["config"]["weights"] == "ResNet18_Weights.IMAGENET1K_V1"
    config = yaml.safe_load((runs / "imagenet" / "config.yaml").read_text())
    assert config["weights"] == "ResNet18_Weights.IMAGENET1K_V1" and config["freeze"] is True
    report = json.loads((runs / "imagenet" / "transfer.json").read_text())
    assert sum(layer["status"] == "loaded" for layer in report["layers"]) == 39


def test_a_missing_imagenet_file_offline_names_the_file_the_url_and_the_folder(torch_home, monkeypatch, tmp_path):
    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    outcome = run_cli("train", "--data", "digits", "--model", "resnet18", "--weights", "imagenet",
                      "--image-size", 32, "--runs-dir", tmp_path / "runs")
    assert outcome.exit_code == 2 and "Traceback" not in outcome.stderr
    message = outcome.stderr
    folder = torch_home / "hub" / "checkpoints"
    assert f"https://download.pytorch.org/models/{RESNET18_FILE}" in message
    assert f"put it in {folder}/ as {RESNET18_FILE}" in message
    assert "--weights PATH" in message and "name resolution" in message
    assert not (tmp_path / "runs").exists()  # refused before any run folder was made


def test_an_explicit_pth_file_is_read_as_torchvision_format(tmp_path, no_network):
    saved = _save_random_resnet18(tmp_path)
    weights = load_weights(str(tmp_path / RESNET18_FILE), resolve_architecture("resnet18"))
    assert all(torch.equal(weights.state_dict[k], v) for k, v in saved.items())
    assert weights.mean == (0.485, 0.456, 0.406) and weights.std == (0.229, 0.224, 0.225)
    assert weights.image_size == (224, 224) and len(weights.output_names) == 1000


def test_the_image_size_follows_the_weights_unless_given(tmp_path, no_network):
    _save_random_resnet18(tmp_path)
    weights = load_weights(str(tmp_path / RESNET18_FILE), resolve_architecture("resnet18"))
    config = TrainConfig(data="photos", model="resnet18")
    assert with_weights_defaults(config, weights).image_size == "224,224"
    assert with_weights_defaults(TrainConfig(data="p", image_size="96"), weights).image_size == "96"
    assert with_weights_defaults(config, None).image_size is None


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_pickle_that_runs_code_is_refused_and_not_executed(tmp_path):
    import pickle

    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"conv1.weight": Payload()}))
    with pytest.raises(CnnlabError, match="not a PyTorch weights file that can be read safely"):
        load_weights(str(path), resolve_architecture("resnet18"))
    assert not marker.exists()


@pytest.mark.parametrize("model, spec, message", [
    ("guide-cnn", "imagenet", "guide-cnn has no published ImageNet weights; the models that have them are alexnet"),
    ("examples/guide-cnn.yaml", "imagenet", "a YAML network has no published ImageNet weights"),
    ("resnet34", "ResNet18_Weights.IMAGENET1K_V1", "for another architecture than resnet34"),
    ("resnet18", "ResNet18_Weights.NOPE", "torchvision has no weights of that name"),
    ("resnet18", "no/such/file.pth", "--weights no/such/file.pth: no such file or run folder"),
])
def test_bad_weights_get_a_clear_error(model, spec, message):
    root = Path(__file__).resolve().parents[2]
    model = str(root / model) if model.endswith(".yaml") else model
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_weights(spec, resolve_architecture(model))


@pytest.mark.parametrize("args, message", [
    (("--freeze",), "--freeze keeps pretrained layers fixed, but the model starts from random weights"),
    (("--weights", "imagenet", "--fine-tune", "3", "--epochs", "3"), "--fine-tune N trains the head alone"),
    (("--weights", "imagenet", "--freeze", "--fine-tune", "1"), "pass one of them"),
    (("--weights", "imagenet", "--init-from", "runs/x"), "--weights and --init-from"),
    (("--lr", "fast"), "--lr must be a positive number or auto (got 'fast')"),
    (("--model", "guide-cnn", "--weights", "imagenet"), "guide-cnn has no published ImageNet weights"),
])
def test_bad_transfer_flags_get_one_clear_line(args, message, tmp_path):
    outcome = run_cli("train", "--data", "digits", *args, cwd=tmp_path)
    assert outcome.exit_code == 2, outcome.stderr
    assert message in outcome.stderr and "Traceback" not in outcome.stderr


@pytest.mark.parametrize("model", ["resnet18", "efficientnet_b0", "mobilenet_v3_small"])
def test_each_family_takes_its_torchvision_file_whole_but_the_head_and_first_conv(model, torch_home, no_network):
    import torchvision

    from cnnlab.models.build import build_model
    from cnnlab.tasks.classification import Classification
    from cnnlab.train.pretrained import transfer_pretrained

    architecture = resolve_architecture(model)
    entry = imagenet_weights_entry("imagenet", architecture)
    folder = hub_checkpoint_dir()
    folder.mkdir(parents=True)
    torch.save(torchvision.models.get_model(model, weights=None).state_dict(), folder / weights_file_name(entry))
    weights = load_weights("imagenet", architecture)
    net = build_model(architecture, in_channels=1, num_outputs=7, image_size=(64, 64))
    task = Classification([f"class {i}" for i in range(7)])
    report = transfer_pretrained(net, architecture, task, weights, TrainConfig(data="d", model=model,
                                                                              weights="imagenet"))
    assert len(report.names("adapted")) == 1 and len(report.names("re-initialised")) == 1
    assert report.names("skipped") == [] and report.unused == []
