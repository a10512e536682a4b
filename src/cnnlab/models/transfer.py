"""Moving pretrained weights into a new network, layer by layer, with a report of what moved.

A layer (a module with parameters or buffers: a convolution, a batch norm, a dense layer) is
transferred whole, when the weights have a tensor of the same name and shape for each of its own.
Otherwise it keeps its fresh initialisation, for one of two reasons the report tells apart:

  re-initialised   on purpose: the classifier of a model trained for other classes (a new head,
                   sized to the new classes), or a layer the weights do not have at all;
  skipped          the weights have the layer but at another shape (another image size changes
                   the first dense layer of guide-cnn, for instance).

One layer is adapted rather than skipped: the first convolution, when the images have another
number of channels than the weights were trained on. `adapt_first_conv` keeps the network's
response to grey images (all channels equal): 3 → 1 channel sums the filters over red, green and
blue; 1 → 3 (or S → C) repeats the source channels cyclically and scales them by S/C.

>>> import torch
>>> rgb = torch.ones(8, 3, 3, 3)
>>> adapt_first_conv(rgb, 1).shape, float(adapt_first_conv(rgb, 1)[0, 0, 0, 0])
(torch.Size([8, 1, 3, 3]), 3.0)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor, nn

LOADED = "loaded"
ADAPTED = "adapted"
REINITIALISED = "re-initialised"
SKIPPED = "skipped"
FRESH_DENSE_DETAIL = "dense layer before the classifier, fitted to the weights' own classes: starts fresh"
_SHOWN_PER_STATUS = 8  # the console shows this many layer names per status; transfer.json has them all


@dataclass
class LayerTransfer:
    layer: str  # module path, as in `model.named_modules()`: "features.conv1", "layer4.1.bn2"
    status: str  # LOADED, ADAPTED, REINITIALISED or SKIPPED
    detail: str = ""


@dataclass
class TransferReport:
    """Which layers came from the weights and which start from scratch (saved as transfer.json)."""

    source: str
    layers: list[LayerTransfer]
    unused: list[str] = field(default_factory=list)  # tensors of the weights the model has no place for

    def names(self, status: str) -> list[str]:
        return [layer.layer for layer in self.layers if layer.status == status]

    @property
    def new_layers(self) -> list[str]:
        """The layers that start from their initialisation: what `--freeze` trains (the new head)."""
        return [layer.layer for layer in self.layers if layer.status in (REINITIALISED, SKIPPED)]

    def summary(self) -> str:
        lines = [f"weights: {self.source}"]
        for status, title in ((LOADED, "loaded"), (ADAPTED, "adapted"), (REINITIALISED, "re-initialised"),
                              (SKIPPED, "skipped for shape mismatch")):
            layers = [layer for layer in self.layers if layer.status == status]
            shown = ", ".join(f"{layer.layer} ({layer.detail})" if layer.detail else layer.layer
                              for layer in layers[:_SHOWN_PER_STATUS])
            hidden = len(layers) - _SHOWN_PER_STATUS
            more = f", ... and {hidden} more" if hidden > 0 else ""
            lines.append(f"  {title} ({len(layers)}): {shown}{more}" if layers else f"  {title} (0)")
        if self.unused:
            lines.append(f"  not used: {len(self.unused)} tensor(s) of the weights, e.g. {self.unused[0]}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "layers": [asdict(layer) for layer in self.layers],
                "unused": self.unused}

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> "TransferReport":
        return cls(values["source"], [LayerTransfer(**layer) for layer in values["layers"]],
                   list(values.get("unused", [])))


def adapt_first_conv(weight: "Tensor", in_channels: int) -> "Tensor":
    """Filters (out, S, kh, kw) for images of `in_channels` channels, same response to grey images."""
    source_channels = weight.shape[1]
    if in_channels == source_channels:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeated = [channel % source_channels for channel in range(in_channels)]
    return weight[:, repeated] * (source_channels / in_channels)


def adapt_channel_values(values: tuple[float, ...], channels: int) -> tuple[float, ...]:
    """Per-channel normalisation values (mean or std) for `channels` channels, the same way:
    their average for one channel (the grey image the summed filters expect), else repeated.

    >>> adapt_channel_values((0.485, 0.456, 0.406), 1)
    (0.449,)
    """
    if len(values) == channels:
        return tuple(values)
    if channels == 1:
        return (round(sum(values) / len(values), 6),)
    return tuple(values[channel % len(values)] for channel in range(channels))


def _layer_tensors(model: "nn.Module") -> dict[str, dict[str, "Tensor"]]:
    """The model's state, grouped by layer: {"features.conv1": {"weight": ..., "bias": ...}}."""
    layers: dict[str, dict[str, Tensor]] = {}
    for key, tensor in model.state_dict().items():
        layer, _, name = key.rpartition(".")
        layers.setdefault(layer, {})[name] = tensor
    return layers


def _is_inside(layer: str, path: str) -> bool:
    return layer == path or layer.startswith(path + ".")


def is_inside_any(layer: str, paths: str | tuple[str, ...]) -> bool:
    return any(_is_inside(layer, path) for path in ((paths,) if isinstance(paths, str) else paths))


def _shape(tensor: "Tensor") -> str:
    return "×".join(map(str, tensor.shape)) or "scalar"


def transfer_weights(model: "nn.Module", weights: dict[str, "Tensor"], *, source: str,
                     classifier: str | tuple[str, ...], first_conv: str | None = None,
                     keep_classifier: bool = False, fresh: tuple[str, ...] = ()) -> TransferReport:
    """Copy every layer of `weights` that fits into `model` (in place) and report what happened.

    `classifier` (a module path, or several: LR-ASPP has two class convolutions) is re-initialised
    unless `keep_classifier` (same classes); the layers in `fresh` keep their fresh initialisation
    (`class_specific_layers`); the weight of `first_conv` is adapted when only its number of input
    channels differs.
    """
    import torch

    taken: dict[str, Tensor] = {}
    layers: list[LayerTransfer] = []
    new_head: list[Tensor] = []
    model_layers = _layer_tensors(model)
    for layer, tensors in model_layers.items():
        if is_inside_any(layer, classifier) and not keep_classifier:
            outputs = next(iter(tensors.values())).shape[0]
            layers.append(LayerTransfer(layer, REINITIALISED, f"new head, {outputs} outputs, starting at zero"))
            new_head.extend(tensors.values())
            continue
        if layer in fresh:
            layers.append(LayerTransfer(layer, REINITIALISED, FRESH_DENSE_DETAIL))
            continue
        outcome = _fit_layer(layer, tensors, weights, adapt=layer == first_conv)
        layers.append(outcome[0])
        taken.update(outcome[1])
    with torch.no_grad():
        model.load_state_dict(taken, strict=False)
        # A new head starts at zero (as Big Transfer's does): every class gets the same score at first.
        # Randomly initialised, it turns the pretrained features — large, since they were trained — into
        # large random scores, confidently wrong, which a few fine-tuning steps cannot undo.
        for tensor in new_head:
            tensor.zero_()
    unused = [key for key in weights
              if key.rpartition(".")[2] not in model_layers.get(key.rpartition(".")[0], {})]
    return TransferReport(source, layers, unused)


def class_specific_layers(model: "nn.Module", classifier: str) -> tuple[str, ...]:
    """The dense layers between the last convolution and `classifier`: guide-cnn's `head.fc1`.

    Trained with a classifier for the weights' classes, such a layer keeps little but what tells those
    classes apart (with 5 classes, the 64 features of guide-cnn's fc1 span a space a random layer's
    would beat: docs/transfer-learning.md, section 6); the convolutions below it are what transfers.

    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> class_specific_layers(net, "4")
    ('2',)
    """
    from torch import nn

    names = [name for name, _ in model.named_modules()]
    convolutions = [i for i, (_, module) in enumerate(model.named_modules()) if isinstance(module, nn.Conv2d)]
    if not convolutions or classifier not in names:
        return ()
    return tuple(name for i, (name, module) in enumerate(model.named_modules())
                 if i > convolutions[-1] and isinstance(module, nn.Linear) and name != classifier
                 and not _is_inside(name, classifier) and names.index(classifier) > i)


def _fit_layer(layer: str, tensors: dict[str, "Tensor"], weights: dict[str, "Tensor"],
               *, adapt: bool) -> tuple[LayerTransfer, dict[str, "Tensor"]]:
    """How one layer fares: loaded (or adapted) with its tensors, or left as it is and why."""
    taken: dict[str, Tensor] = {}
    detail = ""
    for name, tensor in tensors.items():
        key = f"{layer}.{name}" if layer else name
        if key not in weights:
            return LayerTransfer(layer, REINITIALISED, f"not in the weights: {key}"), {}
        value = weights[key]
        if value.shape != tensor.shape:
            if adapt and name == "weight" and value.ndim == 4 and value.shape[0] == tensor.shape[0] \
                    and value.shape[2:] == tensor.shape[2:]:
                value = adapt_first_conv(value.float(), tensor.shape[1]).to(tensor.dtype)
                source_channels, channels = weights[key].shape[1], tensor.shape[1]
                detail = (f"the weights' {source_channels} input channels summed into 1" if channels == 1 else
                          f"{channels} input channels from the weights' {source_channels}, repeated and "
                          f"scaled by {source_channels}/{channels}")
            else:
                return LayerTransfer(layer, SKIPPED, f"{name}: weights {_shape(value)}, "
                                                     f"model {_shape(tensor)}"), {}
        taken[key] = value
    return LayerTransfer(layer, ADAPTED if detail else LOADED, detail), taken
