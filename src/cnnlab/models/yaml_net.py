"""A network typed in from a tutorial: a YAML list of Keras-style layers.

    name: guide-cnn-yaml        # optional
    layers:
      - conv: {filters: 32, kernel: 3, activation: relu}
      - maxpool: 2
      - conv: {filters: 64, kernel: 3, activation: relu}
      - maxpool: {size: 2}
      - conv: {filters: 64, kernel: 3, activation: relu}
      - flatten
      - dense: {units: 64, activation: relu}
      - dense: {units: classes, activation: softmax}

`load_layers` checks the file and returns the layers as plain dicts with every default filled in
(`{"kind": "conv", "filters": 32, "kernel": 3, "stride": 1, "padding": "valid", "activation": "relu"}`);
that list is what a checkpoint stores, and `build_layers` turns it (or the raw form) into a module.
`build_from_yaml(path, ...)` does both and names the file in every error.

A network that ends in `conv: {filters: classes}` instead is a dense predictor (a segmenter): it
outputs one logit map per class, at the input's size. Skip connections (U-Net) use `concat`, whose
`from` lists the layers whose outputs it joins along the channels: a layer's number as in error
messages (1 = the first layer, 0 = the input image) or, negative, counted back from the concat
(-1 = the layer just before it). `upsample` enlarges the map (Keras' UpSampling2D). See
examples/unet.yaml:

      - conv: {filters: 16, kernel: 3, padding: same, activation: relu}     # layer 1
      - maxpool: 2
      - conv: {filters: 32, kernel: 3, padding: same, activation: relu}
      - upsample: 2
      - concat: [-1, 1]                     # the upsampled map and layer 1's, 48 channels
      - conv: {filters: classes, kernel: 1}

Conventions follow Keras, so a network copied from a tutorial means the same thing here:
convolutions default to 'valid' padding, pooling strides default to the pool size, and the input
size of a dense layer is worked out from the layers before it. The last layer is a dense layer of
`classes` units (one is appended when the list does not end with one). Its `softmax` is accepted
but not applied: the model outputs logits, and the loss and `predict` apply softmax themselves.
"""

from __future__ import annotations

import difflib
import math
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import yaml
from torch import Tensor, nn

from cnnlab.errors import ConfigError

_REQUIRED = object()


@dataclass(frozen=True)
class _Field:
    check: Callable[[Any], Any]  # returns the normalised value, or raises ValueError(what is right)
    default: Any = _REQUIRED


def _whole_number(minimum: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        # bool is a subclass of int, but `filters: yes` is a mistake, not 1 filter
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"a whole number ≥ {minimum}")
        return value

    return check


def _padding(value: Any) -> str | int:
    if value in ("valid", "same"):
        return value
    try:
        return _whole_number(0)(value)
    except ValueError:
        raise ValueError("valid, same or a whole number of pixels ≥ 0") from None


def _units(value: Any) -> str | int:
    if value == "classes":
        return value
    try:
        return _whole_number(1)(value)
    except ValueError:
        raise ValueError("a whole number ≥ 1, or the word classes") from None


def _filters(value: Any) -> str | int:
    if value == "classes":
        return value
    try:
        return _whole_number(1)(value)
    except ValueError:
        raise ValueError("a whole number ≥ 1, or the word classes (only in the last layer)") from None


def _layer_references(value: Any) -> list[int]:
    if isinstance(value, bool) or not isinstance(value, list) or len(value) < 2 or \
            not all(isinstance(item, int) and not isinstance(item, bool) for item in value):
        raise ValueError("a list of two or more layer numbers, e.g. [-1, 4] (-1: the layer before; "
                         "4: layer 4; 0: the input image)")
    return list(value)


def _upsample_mode(value: Any) -> str:
    if value not in ("nearest", "bilinear"):
        raise ValueError("nearest or bilinear")
    return value


def _rate(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError("a fraction from 0 up to (not including) 1, e.g. 0.5")
    return float(value)


# PyTorch's defaults, e.g. LeakyReLU's slope is 0.01 (Keras uses 0.3 or 0.2).
_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "silu": nn.SiLU,
}
_SOFTMAX = "softmax"  # only as the last dense layer's activation, and not applied there


def _activation(value: Any) -> str:
    if value not in _ACTIVATIONS and value != _SOFTMAX:
        raise ValueError(f"one of {', '.join([*_ACTIVATIONS, _SOFTMAX])}")
    return value


def _optional_activation(value: Any) -> str | None:
    if value is None or value in ("linear", "none"):  # Keras spells "no activation" 'linear'
        return None
    return _activation(value)


_POOL_FIELDS = {"size": _Field(_whole_number(1)), "stride": _Field(_whole_number(1), default=None)}
_LAYER_FIELDS: dict[str, dict[str, _Field]] = {
    "conv": {
        "filters": _Field(_filters),
        "kernel": _Field(_whole_number(1)),
        "stride": _Field(_whole_number(1), default=1),
        "padding": _Field(_padding, default="valid"),
        "activation": _Field(_optional_activation, default=None),
    },
    "maxpool": _POOL_FIELDS,
    "avgpool": _POOL_FIELDS,
    "batchnorm": {},
    "dropout": {"rate": _Field(_rate)},
    "flatten": {},
    "dense": {"units": _Field(_units), "activation": _Field(_optional_activation, default=None)},
    "activation": {"activation": _Field(_activation)},
    "global_avg_pool": {},
    "upsample": {"scale": _Field(_whole_number(2), default=2),
                 "mode": _Field(_upsample_mode, default="nearest")},
    "concat": {"from": _Field(_layer_references)},
}
_KIND_ALIASES = {"globalavgpool": "global_avg_pool"}
# `- maxpool: 2` means size 2, `- dropout: 0.5` means rate 0.5, and so on.
_BARE_VALUE_FIELD = {"maxpool": "size", "avgpool": "size", "dropout": "rate", "dense": "units",
                     "activation": "activation", "upsample": "scale", "concat": "from"}


_EXAMPLE = """layers:
  - conv: {filters: 32, kernel: 3, activation: relu}
  - flatten
  - dense: {units: classes}"""


def _layer_error(source: str, number: int, kind: str | None, message: str) -> ConfigError:
    where = f"layer {number} ({kind})" if kind else f"layer {number}"
    return ConfigError(f"{source}: {where}: {message}")


# --- reading and checking the layer list ------------------------------------------------------


def _split_entry(entry: Any, source: str, number: int) -> tuple[str, dict[str, Any]]:
    """(kind, fields) from `flatten`, `{maxpool: 2}`, `{conv: {...}}` or `{kind: conv, ...}`."""
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, Mapping) and "kind" in entry:  # the normalised form, from a checkpoint
        return str(entry["kind"]), {key: value for key, value in entry.items() if key != "kind"}
    if isinstance(entry, Mapping) and len(entry) == 1:
        (kind, value), = entry.items()
        kind = str(kind)
        if value is None or isinstance(value, Mapping):
            return kind, dict(value or {})
        if isinstance(value, list) and kind != "concat":
            raise _layer_error(source, number, kind, f"expected its settings as a mapping, e.g. "
                               f"`- conv: {{filters: 32, kernel: 3}}`, got {value!r}")
        bare_field = _BARE_VALUE_FIELD.get(_KIND_ALIASES.get(kind, kind))
        if bare_field is None:
            raise _layer_error(source, number, kind, f"expected its settings as a mapping, e.g. "
                               f"`- conv: {{filters: 32, kernel: 3}}`, got {value!r}")
        return kind, {bare_field: value}
    raise _layer_error(source, number, None, f"expected a layer like `- flatten` or "
                       f"`- conv: {{filters: 32, kernel: 3}}`, got {entry!r}")


def _check_known_fields(values: dict[str, Any], kind: str) -> None:
    fields = _LAYER_FIELDS[kind]
    for name in values:
        if name not in fields:
            close = difflib.get_close_matches(str(name), fields, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ValueError(f"unknown field '{name}'; {hint}its fields: {', '.join(fields) or 'none'}")


def _field_value(values: dict[str, Any], name: str, spec: _Field) -> Any:
    if name not in values:
        if spec.default is _REQUIRED:
            raise ValueError(f"field '{name}' is required")
        return spec.default
    try:
        return spec.check(values[name])
    except ValueError as problem:
        raise ValueError(f"field '{name}' must be {problem}, got {values[name]!r}") from None


def _normalise_layer(entry: Any, source: str, number: int) -> dict[str, Any]:
    kind, values = _split_entry(entry, source, number)
    kind = _KIND_ALIASES.get(kind, kind)
    if kind not in _LAYER_FIELDS:
        known = ", ".join(_LAYER_FIELDS)
        raise _layer_error(source, number, kind, f"unknown layer kind; known kinds: {known}")
    try:
        _check_known_fields(values, kind)
        fields = _LAYER_FIELDS[kind].items()
        layer = {"kind": kind} | {name: _field_value(values, name, spec) for name, spec in fields}
    except ValueError as problem:
        raise _layer_error(source, number, kind, str(problem)) from None
    return _fill_dependent_defaults(layer, source, number)


def _fill_dependent_defaults(layer: dict[str, Any], source: str, number: int) -> dict[str, Any]:
    kind = layer["kind"]
    if kind in ("maxpool", "avgpool") and layer["stride"] is None:
        layer["stride"] = layer["size"]  # Keras: the pool steps by its own size
    if kind == "conv" and layer["padding"] == "same" and layer["stride"] != 1:
        # PyTorch pads 'same' only for stride 1; Keras pads unevenly for larger strides.
        raise _layer_error(source, number, kind, f"field 'padding': same needs stride 1; with stride "
                           f"{layer['stride']} write padding: {layer['kernel'] // 2} instead")
    return layer


def _ends_in_class_maps(layers: list[dict[str, Any]]) -> bool:
    return layers[-1]["kind"] == "conv" and layers[-1]["filters"] == "classes"


def _check_class_maps(layers: list[dict[str, Any]], source: str) -> None:
    """`filters: classes` only on the last layer; no flatten or dense before a map per class."""
    for number, layer in enumerate(layers[:-1], start=1):
        if layer["kind"] == "conv" and layer["filters"] == "classes":
            raise _layer_error(source, number, "conv", "field 'filters': classes is only allowed on the last "
                               "layer, the one that outputs a logit map per class")
        if _ends_in_class_maps(layers) and layer["kind"] in ("flatten", "dense", "global_avg_pool"):
            raise _layer_error(source, number, layer["kind"], "the network ends in `conv: {filters: "
                               "classes}` (one logit map per class, for segmentation), so it keeps its "
                               "maps: no flatten, dense or global_avg_pool before it")


def _check_last_dense(layers: list[dict[str, Any]], source: str) -> None:
    last = layers[-1]
    if last["activation"] not in (None, _SOFTMAX):
        outputs = ("logit maps (one per class)" if _ends_in_class_maps(layers)
                   else "logits (one raw score per class)")
        raise _layer_error(source, len(layers), last["kind"], f"field 'activation': the last "
                           f"{last['kind']} layer outputs the {outputs}, so it takes softmax or no "
                           f"activation, not {last['activation']}")
    for number, layer in enumerate(layers[:-1], start=1):
        if layer.get("activation") == _SOFTMAX:
            raise _layer_error(source, number, layer["kind"], "field 'activation': softmax is only allowed "
                               "on the last layer, written `dense: {units: classes, activation: softmax}`; "
                               "the model outputs logits and the loss and predict apply softmax")


def _normalise_layers(entries: Any, source: str) -> list[dict[str, Any]]:
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{source}: `layers` must be a non-empty list, e.g.\n{_EXAMPLE}")
    layers = [_normalise_layer(entry, source, number) for number, entry in enumerate(entries, start=1)]
    ends_in_classes = layers[-1]["kind"] == "dense" and layers[-1]["units"] == "classes"
    if not ends_in_classes and not _ends_in_class_maps(layers):
        layers.append({"kind": "dense", "units": "classes", "activation": None})
    _check_class_maps(layers, source)
    _check_last_dense(layers, source)
    return layers


def load_layers(path: str | Path) -> list[dict[str, Any]]:
    """Read and check a YAML network file; return its layers as plain, JSON-ready dicts.

    Every default is filled in and a final `dense: {units: classes}` is appended when missing,
    so the list says everything needed to rebuild the network.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "tiny.yaml"
    >>> _ = path.write_text("layers:\\n  - conv: {filters: 8, kernel: 3}\\n  - maxpool: 2\\n  - flatten\\n")
    >>> for layer in load_layers(path): print(layer)
    {'kind': 'conv', 'filters': 8, 'kernel': 3, 'stride': 1, 'padding': 'valid', 'activation': None}
    {'kind': 'maxpool', 'size': 2, 'stride': 2}
    {'kind': 'flatten'}
    {'kind': 'dense', 'units': 'classes', 'activation': None}
    """
    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file; give a YAML file with a `layers:` list") from None
    except (OSError, UnicodeDecodeError) as problem:
        raise ConfigError(f"{path}: cannot be read: {problem}") from None
    except yaml.YAMLError as problem:
        raise ConfigError(f"{path}: not valid YAML: {problem}") from None
    top_level_keys = set(document) if isinstance(document, dict) else set()
    unknown = sorted(map(str, top_level_keys - {"name", "description", "layers"}))
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {', '.join(unknown)}; "
                          f"allowed: name, description, layers")
    if not isinstance(document, dict) or "layers" not in document:
        raise ConfigError(f"{path}: expected a mapping with a `layers:` list, e.g.\n{_EXAMPLE}")
    return _normalise_layers(document["layers"], str(path))


# --- building the module ------------------------------------------------------------------------


class GlobalAvgPool(nn.Module):
    """Average each channel over the whole feature map: (B, C, H, W) -> (B, C), like Keras'."""

    def forward(self, images: Tensor) -> Tensor:
        return images.mean(dim=(2, 3))


class Concat(nn.Module):
    """Join feature maps of the same height and width along the channels (a `concat` layer)."""

    def forward(self, maps: list[Tensor]) -> Tensor:
        return torch.cat(maps, 1)


class YamlNet(nn.Module):
    """A network built from a layer list: its children run in order, like `nn.Sequential`'s.

    They are named like the guide's layers (conv1, relu1, pool1, ..., flatten, fc1, ..., fc{n}),
    so `state_dict` keys and feature-map titles read naturally. The head starts at the first
    flatten or global_avg_pool, or is the final `conv: {filters: classes}` of a dense predictor.

    Skips: `routes` maps a `concat` child's index to the layer numbers it joins (0 = the input);
    `keeps` maps a child's index to the layer number whose output it ends, for the layers a concat
    reads. Only those outputs are held during a forward pass.
    """

    def __init__(
        self,
        children: OrderedDict[str, nn.Module],
        *,
        head_start: int,
        layers: list[dict[str, Any]],
        first_conv_path: str | None,
        classifier_path: str,
        routes: dict[int, tuple[int, ...]] | None = None,
        keeps: dict[int, int] | None = None,
    ):
        super().__init__()
        for name, module in children.items():
            self.add_module(name, module)
        self.head_start = head_start
        self.routes, self.keeps = dict(routes or {}), dict(keeps or {})
        self.layer_specs = layers  # the normalised list it was built from, for the checkpoint sidecar
        # `cnnlab.models.parts` reads these when there is no registry entry to say where they are
        self.first_conv_path = first_conv_path
        self.classifier_path = classifier_path

    def _run(self, hidden: Tensor, start: int, stop: int | None) -> Tensor:
        modules = list(self.children())
        kept = {0: hidden} if self.routes else {}
        for index, module in enumerate(modules[start:stop], start=start):
            route = self.routes.get(index)
            hidden = module([kept[number] for number in route]) if route else module(hidden)
            if index in self.keeps:
                kept[self.keeps[index]] = hidden
        return hidden

    def forward_features(self, images: Tensor) -> Tensor:
        return self._run(images, 0, self.head_start)  # (B, C, h, w), the last feature map

    def forward_head(self, features: Tensor) -> Tensor:
        # (B, num_outputs) logits, or (B, num_outputs, H, W) logit maps; the head has no concat
        return self._run(features, self.head_start, None)

    def forward(self, images: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(images))


def _side_text(shape: tuple[int, ...]) -> str:
    return "×".join(map(str, shape))


@dataclass
class _NetworkBuilder:
    """Adds layers one by one while tracking the shape of one image: (C, H, W), or (F,) once flat."""

    source: str
    shape: tuple[int, ...]
    num_outputs: int
    children: OrderedDict[str, nn.Module] = field(default_factory=OrderedDict)
    counts: Counter[str] = field(default_factory=Counter)
    flattened_at: int | None = None  # layer number of the first flatten / global_avg_pool
    head_start: int | None = None  # child index where the head starts
    layer_shapes: list[tuple[int, ...]] = field(default_factory=list)  # [input, after layer 1, ...]
    layer_ends: list[int] = field(default_factory=list)  # [-1, index of layer 1's last child, ...]
    routes: dict[int, tuple[int, ...]] = field(default_factory=dict)

    def add(self, prefix: str, module: nn.Module) -> None:
        self.counts[prefix] += 1
        count = self.counts[prefix]
        self.children[prefix if prefix == "flatten" and count == 1 else f"{prefix}{count}"] = module

    def add_activation(self, activation: str | None) -> None:
        if activation is not None:
            self.add(activation, _ACTIVATIONS[activation]())

    def error(self, number: int, layer: dict[str, Any], message: str) -> ConfigError:
        return _layer_error(self.source, number, layer["kind"], message)

    def require_feature_map(self, number: int, layer: dict[str, Any]) -> tuple[int, int, int]:
        if len(self.shape) != 3:
            raise self.error(number, layer, f"the input is already flat after layer {self.flattened_at}; "
                             f"conv, pooling and global_avg_pool layers must come before flatten")
        channels, height, width = self.shape
        return channels, height, width

    def start_head(self, number: int) -> None:
        if self.head_start is None:
            self.head_start, self.flattened_at = len(self.children), number


def _conv_padding(layer: dict[str, Any]) -> str | int:
    """PyTorch's padding argument: "same", or pixels on each side ('valid' is none)."""
    return 0 if layer["padding"] == "valid" else layer["padding"]


def _conv_output_side(side: int, layer: dict[str, Any]) -> int:
    padding = _conv_padding(layer)
    if padding == "same":
        return side
    return (side + 2 * padding - layer["kernel"]) // layer["stride"] + 1


def _add_conv(net: _NetworkBuilder, layer: dict[str, Any], number: int) -> None:
    channels, height, width = net.require_feature_map(number, layer)
    out_height, out_width = _conv_output_side(height, layer), _conv_output_side(width, layer)
    if out_height < 1 or out_width < 1:
        kernel = layer["kernel"]
        raise net.error(number, layer, f"the feature map is {height}×{width} and a {kernel}×{kernel} "
                        f"kernel (kernel: {kernel}) does not fit; use a larger --image-size, "
                        f"padding: same, or fewer pooling layers")
    filters = net.num_outputs if layer["filters"] == "classes" else layer["filters"]
    if layer["filters"] == "classes":
        net.start_head(number)
    conv = nn.Conv2d(channels, filters, layer["kernel"], stride=layer["stride"], padding=_conv_padding(layer))
    net.add("conv", conv)
    if layer["activation"] != _SOFTMAX:  # softmax belongs to the loss and predict, never the model
        net.add_activation(layer["activation"])
    net.shape = (filters, out_height, out_width)


def _add_pool(net: _NetworkBuilder, layer: dict[str, Any], number: int) -> None:
    channels, height, width = net.require_feature_map(number, layer)
    size, stride = layer["size"], layer["stride"]
    if min(height, width) < size:
        raise net.error(number, layer, f"the feature map is {height}×{width} and cannot be pooled by {size} "
                        f"(size: {size}); use a larger --image-size or fewer pooling layers")
    if layer["kind"] == "maxpool":
        net.add("pool", nn.MaxPool2d(size, stride=stride))
    else:
        net.add("avgpool", nn.AvgPool2d(size, stride=stride))
    net.shape = (channels, (height - size) // stride + 1, (width - size) // stride + 1)


def _add_batchnorm(net: _NetworkBuilder, layer: dict[str, Any], number: int) -> None:
    net.add("bn", nn.BatchNorm2d(net.shape[0]) if len(net.shape) == 3 else nn.BatchNorm1d(net.shape[0]))


def _add_dropout(net: _NetworkBuilder, layer: dict[str, Any], number: int) -> None:
    net.add("dropout", nn.Dropout(layer["rate"]))


def _add_flatten(net: _NetworkBuilder, layer: dict[str, Any], number: int) -> None:
    net.start_head(number)
    net.add("flatten", nn.Flatten())  # on an already flat input this changes nothing, as in Keras
    net.shape = (math.prod(net.shape),)


def _add_global_avg_pool(net: _NetworkBuilder, layer: dict[str, Any], number: int) -> None:
    channels, _, _ = net.require_feature_map(number, layer)
    net.start_head(number)
    net.add("gap", GlobalAvgPool())
    net.shape = (channels,)


def _add_dense(net: _NetworkBuilder, layer: dict[str, Any], number: int) -> None:
    if len(net.shape) != 1:
        # The final `classes` layer may have been appended, so say which layer this is.
        which = "the final dense layer of `classes` units" if layer["units"] == "classes" else "it"
        raise net.error(number, layer, f"{which} needs a flat input but gets a {_side_text(net.shape)} "
                        f"feature map; add `- flatten` (or `- global_avg_pool`) before it")
    units = net.num_outputs if layer["units"] == "classes" else layer["units"]
    net.add("fc", nn.Linear(net.shape[0], units))
    if layer["activation"] != _SOFTMAX:  # softmax belongs to the loss and predict, never the model
        net.add_activation(layer["activation"])
    net.shape = (units,)


def _add_activation(net: _NetworkBuilder, layer: dict[str, Any], number: int) -> None:
    net.add_activation(layer["activation"])


def _add_upsample(net: _NetworkBuilder, layer: dict[str, Any], number: int) -> None:
    channels, height, width = net.require_feature_map(number, layer)
    mode, scale = layer["mode"], layer["scale"]
    corners = {} if mode == "nearest" else {"align_corners": False}  # PyTorch's default, said aloud
    net.add("up", nn.Upsample(scale_factor=scale, mode=mode, **corners))
    net.shape = (channels, height * scale, width * scale)


def _add_concat(net: _NetworkBuilder, layer: dict[str, Any], number: int) -> None:
    net.require_feature_map(number, layer)
    sources = []
    for reference in layer["from"]:
        source = number + reference if reference < 0 else reference
        if not 0 <= source < number:
            raise net.error(number, layer, f"field 'from': {reference} is not an earlier layer; use -1 .. "
                            f"-{number} (counted back from this layer), 1 .. {number - 1} (a layer's number) "
                            f"or 0 (the input image)")
        if len(net.layer_shapes[source]) != 3:
            raise net.error(number, layer, f"field 'from': layer {source} is flat; concat joins feature maps")
        sources.append(source)
    sizes = {source: net.layer_shapes[source][1:] for source in sources}
    if len(set(sizes.values())) > 1:
        named = ", ".join(f"{'the input' if source == 0 else f'layer {source}'} {_side_text(size)}"
                          for source, size in sizes.items())
        images = _side_text(net.layer_shapes[0][1:])
        raise net.error(number, layer, f"the maps it joins must have the same height and width, but "
                        f"they are: {named} (for {images} images). Use padding: same, one upsample per "
                        f"pooling, and an --image-size divisible by 2 per pooling layer")
    net.routes[len(net.children)] = tuple(sources)
    net.add("concat", Concat())
    net.shape = (sum(net.layer_shapes[source][0] for source in sources), *net.layer_shapes[sources[0]][1:])


_ADD_LAYER: dict[str, Callable[[_NetworkBuilder, dict[str, Any], int], None]] = {
    "conv": _add_conv,
    "maxpool": _add_pool,
    "avgpool": _add_pool,
    "batchnorm": _add_batchnorm,
    "dropout": _add_dropout,
    "flatten": _add_flatten,
    "dense": _add_dense,
    "activation": _add_activation,
    "global_avg_pool": _add_global_avg_pool,
    "upsample": _add_upsample,
    "concat": _add_concat,
}


def _child_names(children: OrderedDict[str, nn.Module], module_type: type[nn.Module]) -> list[str]:
    return [name for name, module in children.items() if isinstance(module, module_type)]


def build_layers(layers: list[Any], *, in_channels: int, num_outputs: int, image_size: tuple[int, int],
                 source: str = "layers") -> YamlNet:
    """Build the network a layer list describes, for images of `in_channels`×`image_size`.

    `layers` is what `load_layers` returns (or the same in raw YAML form); `source` names where the
    list came from in error messages. The output is logits, one per `num_outputs`.

    >>> layers = [{"conv": {"filters": 8, "kernel": 3, "activation": "relu"}}, {"maxpool": 2}, "flatten"]
    >>> model = build_layers(layers, in_channels=1, num_outputs=10, image_size=(28, 28))
    >>> [name for name, _ in model.named_children()]
    ['conv1', 'relu1', 'pool1', 'flatten', 'fc1']
    >>> model.fc1
    Linear(in_features=1352, out_features=10, bias=True)
    """
    normalised = _normalise_layers(layers, source)
    net = _NetworkBuilder(source, shape=(in_channels, *image_size), num_outputs=num_outputs)
    net.layer_shapes.append(net.shape)
    net.layer_ends.append(-1)
    for number, layer in enumerate(normalised, start=1):
        _ADD_LAYER[layer["kind"]](net, layer, number)
        net.layer_shapes.append(net.shape)
        net.layer_ends.append(len(net.children) - 1)
    assert net.head_start is not None  # the final dense layer cannot be added before a flatten
    if _ends_in_class_maps(normalised) and net.shape[1:] != tuple(image_size):
        size = _side_text(tuple(image_size))
        raise net.error(len(normalised), normalised[-1], f"a network that ends in `conv: {{filters: "
                        f"classes}}` outputs one logit map per class at the input's size, {size}, "
                        f"but its maps are {_side_text(net.shape[1:])}; use padding: same and one upsample "
                        f"per pooling layer")
    read = {number for sources in net.routes.values() for number in sources}
    classifier_type = nn.Conv2d if _ends_in_class_maps(normalised) else nn.Linear
    return YamlNet(
        net.children,
        head_start=net.head_start,
        layers=normalised,
        first_conv_path=next(iter(_child_names(net.children, nn.Conv2d)), None),
        classifier_path=_child_names(net.children, classifier_type)[-1],
        routes=net.routes,
        keeps={net.layer_ends[number]: number for number in read if number > 0},
    )


def build_from_yaml(
    path: str | Path, *, in_channels: int, num_outputs: int, image_size: tuple[int, int]
) -> YamlNet:
    """`build_layers(load_layers(path), ...)`, with the file named in every error message.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "tiny.yaml"
    >>> _ = path.write_text("layers:\\n  - conv: {filters: 8, kernel: 3}\\n  - global_avg_pool\\n")
    >>> build_from_yaml(path, in_channels=3, num_outputs=5, image_size=(32, 32)).fc1
    Linear(in_features=8, out_features=5, bias=True)
    """
    layers = load_layers(path)
    return build_layers(
        layers, in_channels=in_channels, num_outputs=num_outputs, image_size=image_size, source=str(path)
    )


def is_dense_predictor(layers: list[Any]) -> bool:
    """Whether a layer list ends in a `conv: {filters: classes}`: a network that outputs one logit
    map per class (a segmenter), rather than one logit per class."""
    return _ends_in_class_maps(_normalise_layers(layers, "layers"))
