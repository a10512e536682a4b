"""From a `--model` argument to an architecture record, and from that record to a module.

The record (`Architecture`) is what a checkpoint stores, so a model is rebuilt from the JSON
sidecar alone: a registry name, or the full layer list of a YAML network (the YAML file itself
may have moved or changed since).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnlab.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

YAML_ARCHITECTURE = "yaml"


@dataclass(frozen=True)
class Architecture:
    name: str  # a registry name, or "yaml"
    layers: tuple[dict[str, Any], ...] | None = None  # the YAML network's normalised layer list
    label: str = ""  # what the user typed: a registry name or the YAML file's path

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "layers": list(self.layers) if self.layers else None, "label": self.label}

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> "Architecture":
        layers = values.get("layers")
        return cls(values["name"], tuple(layers) if layers else None, values.get("label", values["name"]))

    @property
    def short_name(self) -> str:
        return Path(self.label).stem if self.name == YAML_ARCHITECTURE else self.name


def resolve_architecture(model: str) -> Architecture:
    """`guide-cnn`, `resnet18`, ... or `path/to/net.yaml`."""
    from cnnlab.models.registry import MODELS

    if model.lower().endswith((".yaml", ".yml")):
        from cnnlab.models.yaml_net import load_layers

        return Architecture(YAML_ARCHITECTURE, tuple(load_layers(model)), label=model)
    if model not in MODELS and Path(model).is_file():
        raise ConfigError(f"--model {model}: a model file must be a .yaml layer list")
    MODELS.get(model)  # raises with the known names and close matches
    return Architecture(model, label=model)


def build_model(architecture: Architecture, *, in_channels: int, num_outputs: int,
                image_size: tuple[int, int]) -> "nn.Module":
    if architecture.name == YAML_ARCHITECTURE:
        from cnnlab.models.yaml_net import build_layers

        return build_layers(list(architecture.layers or ()), in_channels=in_channels,
                            num_outputs=num_outputs, image_size=image_size, source=architecture.label or "layers")
    from cnnlab.models.registry import model_entry

    return model_entry(architecture.name).builder(in_channels=in_channels, num_outputs=num_outputs,
                                                  image_size=image_size)


def create_model(model: str, *, in_channels: int = 3, num_outputs: int = 10,
                 image_size: tuple[int, int] = (224, 224)) -> "nn.Module":
    """Build a registered model or a YAML network, randomly initialised.

    >>> net = create_model("guide-cnn", in_channels=1, num_outputs=10, image_size=(28, 28))
    >>> sum(p.numel() for p in net.parameters())
    93322
    """
    return build_model(resolve_architecture(model), in_channels=in_channels, num_outputs=num_outputs,
                       image_size=image_size)
