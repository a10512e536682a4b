"""Find and swap the named parts of a model: the first convolution, the classifier, the last conv.

Fine-tuning replaces the first convolution (for a different number of input channels) and the
classifier (for a different number of classes); Grad-CAM hooks the last convolution. Parts are
addressed by dotted module paths, the same names that appear in `model.named_modules()` and in
`state_dict` keys ("layer4.1.conv2", "classifier.6").

Where a part lives comes from, in this order: the model itself (a `first_conv_path` / `classifier_path`
attribute, as YAML-built networks and networks wrapping a registry model have), then the model's registry
entry (`first_conv` and `classifier` metadata), then the model's structure (the first `nn.Conv2d`, the last `nn.Linear`).
"""

from __future__ import annotations

import difflib
from typing import TypeVar, Union

from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.models.registry import ModelBuilder, model_entry
from cnnlab.registry import Entry

EntryOrName = Union[Entry[ModelBuilder], str, None]
ModuleT = TypeVar("ModuleT", bound=nn.Module)


def get_module(model: nn.Module, dotted_path: str) -> nn.Module:
    """The sub-module at `dotted_path`; "" is the model itself.

    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Sequential(nn.ReLU(), nn.Linear(4, 2)))
    >>> get_module(model, "1.1")
    Linear(in_features=4, out_features=2, bias=True)
    """
    try:
        return model.get_submodule(dotted_path)
    except AttributeError:
        names = [name for name, _ in model.named_modules() if name]
        close = difflib.get_close_matches(dotted_path, names, n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(
            f"the model has no layer named {dotted_path!r}.{hint} "
            f"Its layers are listed by `model.named_modules()`, e.g. {', '.join(names[:5])}"
        ) from None


def set_module(model: nn.Module, dotted_path: str, new_module: nn.Module) -> None:
    """Put `new_module` where the sub-module at `dotted_path` is now.

    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4, 2))
    >>> set_module(model, "2", nn.Linear(4, 7))
    >>> model[2].out_features
    7
    """
    get_module(model, dotted_path)  # a typo should fail here, not quietly add a new attribute
    parent_path, _, child_name = dotted_path.rpartition(".")
    # setattr on the parent registers the module under the same name, so `state_dict` keys stay.
    setattr(get_module(model, parent_path), child_name, new_module)


def _declared_path(model: nn.Module, entry_or_name: EntryOrName, part: str) -> str | None:
    own = getattr(model, f"{part}_path", None)
    if own:  # a network wrapping a registry model (a detector, an embedding net) knows where its parts went
        return own
    if entry_or_name is not None:
        entry = model_entry(entry_or_name) if isinstance(entry_or_name, str) else entry_or_name
        if entry.metadata.get(part):
            return entry.metadata[part]
    return None


def _find_path(model: nn.Module, module_type: type[nn.Module], *, last: bool) -> str:
    paths = [name for name, module in model.named_modules() if isinstance(module, module_type)]
    if not paths:
        raise ConfigError(f"the model has no {module_type.__name__} layer")
    return paths[-1] if last else paths[0]


def first_conv_path(model: nn.Module, entry_or_name: EntryOrName = None) -> str:
    """Dotted path of the convolution that sees the input images."""
    return _declared_path(model, entry_or_name, "first_conv") or _find_path(model, nn.Conv2d, last=False)


def classifier_path(model: nn.Module, entry_or_name: EntryOrName = None) -> str:
    """Dotted path of the final `nn.Linear`, the one that outputs one score per class."""
    return _declared_path(model, entry_or_name, "classifier") or _find_path(model, nn.Linear, last=True)


def first_conv(model: nn.Module, entry_or_name: EntryOrName = None) -> nn.Conv2d:
    """The convolution that sees the input images (registry metadata first, then structure).

    >>> from cnnlab.models.registry import model_entry
    >>> model = model_entry("guide-cnn").builder(in_channels=1, num_outputs=10, image_size=(28, 28))
    >>> first_conv(model, "guide-cnn")
    Conv2d(1, 32, kernel_size=(3, 3), stride=(1, 1))
    """
    return _expect(get_module(model, first_conv_path(model, entry_or_name)), nn.Conv2d, "first_conv")


def classifier(model: nn.Module, entry_or_name: EntryOrName = None) -> nn.Linear:
    """The final `nn.Linear` (registry metadata first, then structure).

    >>> from cnnlab.models.registry import model_entry
    >>> model = model_entry("guide-cnn").builder(in_channels=1, num_outputs=10, image_size=(28, 28))
    >>> classifier(model, "guide-cnn")
    Linear(in_features=64, out_features=10, bias=True)
    """
    return _expect(get_module(model, classifier_path(model, entry_or_name)), nn.Linear, "classifier")


def last_conv_layer(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """Name and module of the last `nn.Conv2d` in module order: Grad-CAM's default target.

    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 8, 3), nn.Flatten())
    >>> last_conv_layer(model)
    ('2', Conv2d(4, 8, kernel_size=(3, 3), stride=(1, 1)))
    """
    path = _find_path(model, nn.Conv2d, last=True)
    return path, model.get_submodule(path)


def _expect(module: nn.Module, module_type: type[ModuleT], part: str) -> ModuleT:
    if not isinstance(module, module_type):
        raise ConfigError(
            f"the model's {part} should be a {module_type.__name__}, but it is a {type(module).__name__}"
        )
    return module
