"""The model registry: `@register_model` fills it, `create_model` and `list_models` read it.

Every builder takes the same keyword-only arguments, so any model can be trained on any data:

    builder(*, in_channels: int, num_outputs: int, image_size: tuple[int, int], **options) -> nn.Module

The entry's metadata says where the parts that fine-tuning and Grad-CAM need live:
`first_conv` and `classifier` are dotted module paths inside the built model, `min_size` is the
smallest input side the architecture accepts, `family` groups related models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from cnnlab.errors import ConfigError
from cnnlab.registry import Entry, Registry

if TYPE_CHECKING:
    from torch import nn

ModelBuilder = Callable[..., "nn.Module"]


def _load_builtin_models() -> None:
    # Imported here, not at module top, so that `import cnnlab` does not import torch.
    from cnnlab.models import guide  # noqa: F401  (registration order is the listing order)
    from cnnlab.models import fast  # noqa: F401
    from cnnlab.models import zoo  # noqa: F401
    from cnnlab.models import detectors  # noqa: F401
    from cnnlab.models import segmenters  # noqa: F401
    from cnnlab.models import segmentation_zoo  # noqa: F401
    from cnnlab.models import torchvision_detectors  # noqa: F401
    from cnnlab.models import torchvision_maskrcnn  # noqa: F401


MODELS: Registry[ModelBuilder] = Registry("model", loader=_load_builtin_models)


def register_model(
    name: str,
    *,
    description: str,
    family: str,
    first_conv: str,
    classifier: str,
    min_size: int,
    **metadata: Any,
) -> Callable[[ModelBuilder], ModelBuilder]:
    return MODELS.register(
        name,
        description=description,
        family=family,
        first_conv=first_conv,
        classifier=classifier,
        min_size=min_size,
        **metadata,
    )


def list_models() -> list[Entry[ModelBuilder]]:
    """All registered models, in registration order."""
    return list(MODELS)


def model_entry(name: str) -> Entry[ModelBuilder]:
    return MODELS.get(name)


def check_input_size(name: str, image_size: tuple[int, int], min_size: int) -> None:
    """Refuse an input smaller than the model's smallest, suggesting exactly that smallest size."""
    if min(image_size) < min_size:
        height, width = image_size
        suggested = f"{max(height, min_size)},{max(width, min_size)}" if height != width else str(min_size)
        raise ConfigError(
            f"model {name!r} needs images of at least {min_size}×{min_size} pixels, but they are "
            f"{height}×{width}: pass --image-size {suggested} or larger to resize them"
        )
