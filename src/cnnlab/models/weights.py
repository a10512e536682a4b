"""Pretrained weights: from `--weights` / `--init-from` to tensors plus how they were trained.

Weights are data (as in torchvision's `_api.py`): torchvision's weights entry for a zoo model
(`ResNet18_Weights.IMAGENET1K_V1`, named by the registry's `weights` metadata) carries the file's
URL, its preprocessing (input size, mean and std) and its class names. `load_weights` turns any
of the accepted sources into one `PretrainedWeights`:

    imagenet                    the zoo model's default ImageNet weights (a torchvision detector's:
                                its backbone's ImageNet weights)
    coco                        a torchvision detector's COCO weights
    ResNet50_Weights.IMAGENET1K_V1   a particular torchvision weights entry for the model
    COCO_V1, IMAGENET1K_V2      an entry of the model's own weights, by its member name
    runs/NAME (or NAME)         a cnnlab run folder: its best checkpoint
    file.safetensors            a cnnlab checkpoint (with its sidecar) or plain safetensors
    file.pth / .pt              a state dict in torchvision's format, read with
                                `torch.load(weights_only=True)`, which refuses to run code

Offline first: an ImageNet file is looked for where torch hub keeps it,
`torch.hub.get_dir()/checkpoints/<file name from the URL>` (`$TORCH_HOME/hub/checkpoints/`), and
only downloaded when it is not there; when that fails too, the error names the file, its URL, the
folder to put it in and the `--weights PATH` alternative.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnlab.errors import CnnlabError, ConfigError
from cnnlab.models.build import YAML_ARCHITECTURE, Architecture

if TYPE_CHECKING:
    from torch import Tensor

IMAGENET = "imagenet"
COCO = "coco"
NONE = "none"
_WEIGHTS_ENTRY = re.compile(r"^[A-Za-z0-9_]+_Weights\.[A-Za-z0-9_]+$")  # torchvision's "Enum.MEMBER" names
_WEIGHTS_MEMBER = re.compile(r"^[A-Z][A-Z0-9]*_[A-Z0-9_]+$")  # "COCO_V1", "IMAGENET1K_V2": the model's own enum


@dataclass
class PretrainedWeights:
    """Weights to start from, and what is known about how they were trained."""

    state_dict: dict[str, "Tensor"]
    name: str  # what config.yaml records: a torchvision weights name or the file read
    description: str  # for messages, e.g. "ImageNet weights ResNet18_Weights.IMAGENET1K_V1"
    mean: tuple[float, ...] | None = None  # the normalisation they were trained with (0–1 scale)
    std: tuple[float, ...] | None = None
    image_size: tuple[int, int] | None = None  # the input size they were trained at
    output_names: list[str] | None = None  # what their head predicts: class names, ImageNet categories
    architecture: Architecture | None = None  # known for cnnlab checkpoints
    part: str | None = None  # the part of the model they are for (a detector's backbone), None: all of it


def load_weights(spec: str, architecture: Architecture, *, runs_dir: str | Path = "runs",
                 flag: str = "--weights") -> PretrainedWeights | None:
    """The weights `spec` names for a model of `architecture` (None for `none`).

    >>> from cnnlab.models.build import resolve_architecture
    >>> load_weights("none", resolve_architecture("resnet18")) is None
    True
    """
    if spec == NONE:
        return None
    published = spec in (IMAGENET, COCO) or _WEIGHTS_ENTRY.match(spec) or _WEIGHTS_MEMBER.match(spec)
    if published and not Path(spec).exists() and not (Path(runs_dir) / spec).is_dir():
        return _torchvision_weights(spec, architecture, flag)
    path = Path(spec)
    if path.is_file():
        return _file_weights(path, architecture, flag)
    if path.is_dir() or (Path(runs_dir) / spec).is_dir():
        from cnnlab.runs import find_checkpoint

        return _cnnlab_checkpoint(find_checkpoint(spec, "best", runs_dir))
    raise ConfigError(f"{flag} {spec}: no such file or run folder; pass imagenet, coco (torchvision's detectors), "
                      f"a torchvision weights name "
                      f"such as ResNet18_Weights.IMAGENET1K_V1, a run folder, a .safetensors or .pth file, "
                      f"or none")


# --- torchvision's published weights --------------------------------------------------------

def imagenet_weights_entry(spec: str, architecture: Architecture, flag: str = "--weights") -> Any:
    """torchvision's weights entry (a `WeightsEnum` member) for `imagenet`, `coco`, an entry's name, or
    a member name of the model's own weights (`COCO_V1`)."""
    from torchvision.models import get_weight

    default = _published_weights_name(architecture)
    if default is not None and (spec in (IMAGENET, COCO) or _WEIGHTS_MEMBER.match(spec)):
        default = _entry_for_word(spec, architecture, default, flag)
    if default is None:
        from cnnlab.models.registry import list_models

        model = "a YAML network" if architecture.name == YAML_ARCHITECTURE else architecture.name
        having = ", ".join(entry.name for entry in list_models() if entry.metadata.get("weights")
                           and entry.metadata.get("task", "classification") == _model_task(architecture))
        raise ConfigError(f"{flag} {spec}: {model} has no published ImageNet weights; the models that have "
                          f"them are {having}. Train it from scratch (--weights none), or start from one of "
                          f"your runs with --weights RUN or --init-from RUN")
    name = default if spec in (IMAGENET, COCO) or _WEIGHTS_MEMBER.match(spec) else spec
    try:
        entry = get_weight(name)
    except (ValueError, KeyError, AttributeError):
        raise ConfigError(f"{flag} {spec}: torchvision has no weights of that name; "
                          f"{architecture.name}'s default is {default} (--weights imagenet)") from None
    if type(entry).__name__ not in _weights_enums(architecture):
        raise ConfigError(f"{flag} {spec}: those weights are for another architecture than "
                          f"{architecture.name} (its weights are {default.split('.')[0]}.*)")
    return entry


def _entry_for_word(spec: str, architecture: Architecture, default: str, flag: str) -> str:
    """The entry `imagenet`, `coco` or a member name (`COCO_V1`) means for this model: a detector's
    `weights` are COCO's and its `backbone_weights` ImageNet's; a classifier's `weights` ImageNet's."""
    from cnnlab.models.registry import model_entry

    backbone = model_entry(architecture.name).metadata.get("backbone_weights")
    if _WEIGHTS_MEMBER.match(spec):
        enum = (backbone if backbone and spec.startswith("IMAGENET") else default).split(".")[0]
        return f"{enum}.{spec}"
    if spec == IMAGENET:
        return backbone or default
    if backbone is None:  # COCO for a classifier
        raise ConfigError(f"{flag} coco: {architecture.name} is a classifier, with ImageNet weights only "
                          f"(--weights imagenet); COCO weights are for torchvision's detectors "
                          f"(cnnlab models detection)")
    return default


def _weights_enums(architecture: Architecture) -> set[str]:
    """The names of the weights enums this model takes (a detector's own and its backbone's)."""
    from cnnlab.models.registry import model_entry

    metadata = model_entry(architecture.name).metadata
    return {name.split(".")[0] for name in (metadata.get("weights"), metadata.get("backbone_weights")) if name}


def _published_weights_name(architecture: Architecture) -> str | None:
    if architecture.name == YAML_ARCHITECTURE:
        return None
    from cnnlab.models.registry import model_entry

    return model_entry(architecture.name).metadata.get("weights")


def weights_file_name(entry: Any) -> str:
    """The file name torch hub stores a weights entry under: the last part of its URL."""
    from urllib.parse import urlparse

    return Path(urlparse(entry.url).path).name


def hub_checkpoint_dir() -> Path:
    """Where torch hub keeps downloaded weights: `$TORCH_HOME/hub/checkpoints` (~/.cache/torch/...)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def _torchvision_weights(spec: str, architecture: Architecture, flag: str) -> PretrainedWeights:
    entry = imagenet_weights_entry(spec, architecture, flag)
    path = _local_or_downloaded(entry, flag, spec)
    metadata = _registry_metadata(architecture)
    if "backbone_weights" in metadata:
        return _detector_weights(entry, path, architecture, metadata)
    return _with_entry_preprocessing(_without_unused_parts(read_torch_file(path), metadata), entry,
                                     description=f"ImageNet weights {_entry_name(entry)} ({path})")


def _without_unused_parts(state_dict: dict[str, "Tensor"], metadata: dict[str, Any]) -> dict[str, "Tensor"]:
    """The tensors without those of parts the registered model leaves out on purpose (its
    `unused_weights` prefixes: torchvision's auxiliary segmentation head, published with the
    weights and built here without)."""
    prefixes = tuple(metadata.get("unused_weights", ()))
    return {key: value for key, value in state_dict.items() if not (prefixes and key.startswith(prefixes))}


def _model_task(architecture: Architecture) -> str:
    """The task a registered model is built for ("classification" unless its entry says otherwise): the
    models to suggest weights from are those of the same task."""
    return str(_registry_metadata(architecture).get("task", "classification"))


def _registry_metadata(architecture: Architecture) -> dict[str, Any]:
    if architecture.name == YAML_ARCHITECTURE:
        return {}
    from cnnlab.models.registry import model_entry

    return dict(model_entry(architecture.name).metadata)


def _detector_weights(entry: Any, path: Path, architecture: Architecture, metadata: dict[str, Any]
                      ) -> PretrainedWeights:
    """A torchvision detector's COCO weights (its whole state dict), or its backbone's ImageNet weights
    (renamed to the detector's keys; the rest of the detector starts from scratch). Either way the
    images are normalised as the weights saw them, and trained at the run's own size."""
    name = _entry_name(entry)
    if type(entry).__name__ == metadata["weights"].split(".")[0]:
        return PretrainedWeights(read_torch_file(path), name=name, description=f"COCO weights {name} ({path})",
                                 mean=tuple(metadata["weights_mean"]), std=tuple(metadata["weights_std"]),
                                 output_names=list(entry.meta.get("categories") or []) or None)
    from cnnlab.models.torchvision_detectors import backbone_weights

    preset = entry.transforms()
    return PretrainedWeights(backbone_weights(architecture.name, entry), name=name,
                             description=f"ImageNet weights {name} for the backbone ({path})",
                             mean=tuple(float(v) for v in preset.mean), std=tuple(float(v) for v in preset.std),
                             part=metadata["backbone"])


def _entry_name(entry: Any) -> str:
    return f"{type(entry).__name__}.{entry.name}"


def _with_entry_preprocessing(state_dict: dict[str, "Tensor"], entry: Any, *, description: str,
                              name: str | None = None) -> PretrainedWeights:
    """The weights with the entry's own preprocessing: its crop size, mean and std, and categories."""
    preset = entry.transforms()
    # classification presets crop; segmentation presets (SemanticSegmentation) only resize
    crop = list(getattr(preset, "crop_size", None) or preset.resize_size)
    return PretrainedWeights(
        state_dict,
        name=name or _entry_name(entry),
        description=description,
        mean=tuple(float(v) for v in preset.mean),
        std=tuple(float(v) for v in preset.std),
        image_size=(crop[0], crop[-1]),
        output_names=list(entry.meta.get("categories") or []) or None,
    )


def _local_or_downloaded(entry: Any, flag: str, spec: str) -> Path:
    """The entry's file from torch hub's cache, downloading it there if it is missing."""
    import torch

    folder = hub_checkpoint_dir()
    path = folder / weights_file_name(entry)
    if path.is_file():
        return path
    match = torch.hub.HASH_REGEX.search(path.name)  # torchvision's names carry a sha256 prefix
    try:
        folder.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(entry.url, str(path), hash_prefix=match.group(1) if match else None,
                                       progress=True)
    except (OSError, RuntimeError, ValueError) as error:  # no network (URLError is an OSError), bad hash
        raise CnnlabError(
            f"{flag} {spec}: {_entry_name(entry)} is not on this machine and could not be downloaded "
            f"({error}). Download {entry.url} and put it in {folder}/ as {path.name} (the folder follows "
            f"$TORCH_HOME), or pass the file itself with --weights PATH"
        ) from None
    return path


# --- files and runs -------------------------------------------------------------------------

def read_torch_file(path: Path) -> dict[str, "Tensor"]:
    """A state dict saved with `torch.save`, read without running any code from the file."""
    import pickle
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's notes on pickle protocols; the error says it all
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError) as error:
        if isinstance(error, pickle.UnpicklingError) or "weights_only" in str(error):
            raise CnnlabError(_refused_pickle(path, str(error))) from None
        first = str(error).strip().splitlines()[0].split(". ")[0] if str(error).strip() else type(error).__name__
        raise CnnlabError(f"{path}: not a PyTorch weights file that can be read safely ({first})") from None
    for key in ("state_dict", "model"):  # training scripts often wrap the state dict
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise CnnlabError(f"{path}: expected a state dict (layer name → tensor), "
                          f"found {type(loaded).__name__}")
    return dict(loaded)


def _refused_pickle(path: Path, torch_message: str) -> str:
    """cnnlab's own words for a file torch's safe loader refused: what the file holds, that cnnlab never
    unpickles, and how to give it the weights instead (never torch's advice to unpickle it anyway)."""
    named = re.search(r"GLOBAL ([\w.]+)", torch_message)
    what = (f" (it names {named.group(1)}, which unpickling would import and call)" if named else
            " (pickle instructions beyond the plain tensors of a state dict)")
    return (f"{path}: not a PyTorch weights file that can be read safely: a pickle that holds more than "
            f"tensors{what}. cnnlab never unpickles such a file: "
            "unpickling runs whatever code its author put in it. Convert the weights to safetensors where you "
            "trust the file's source (load it there, then safetensors.torch.save_file(state_dict, "
            "'weights.safetensors')) and pass the .safetensors file")


def _file_weights(path: Path, architecture: Architecture, flag: str) -> PretrainedWeights:
    if path.suffix == ".safetensors":
        from cnnlab.checkpoint import has_cnnlab_metadata

        if has_cnnlab_metadata(path):
            return _cnnlab_checkpoint(path)
        from safetensors.torch import load_file

        return PretrainedWeights(load_file(str(path)), name=str(path), description=f"weights file {path}")
    state_dict = read_torch_file(path)
    metadata = _registry_metadata(architecture)
    if "backbone_weights" in metadata:  # a torchvision detector's file: normalised as its COCO weights were
        return PretrainedWeights(state_dict, name=str(path), description=f"weights file {path} (torchvision format)",
                                 mean=tuple(metadata["weights_mean"]), std=tuple(metadata["weights_std"]))
    if _published_weights_name(architecture) is not None:
        # A .pth file for a zoo model is taken to be torchvision's: its ImageNet preprocessing applies.
        entry = imagenet_weights_entry(IMAGENET, architecture, flag)
        state_dict = _without_unused_parts(state_dict, metadata)
        return _with_entry_preprocessing(state_dict, entry, name=str(path),
                                         description=f"weights file {path} (torchvision format)")
    return PretrainedWeights(state_dict, name=str(path), description=f"weights file {path}")


def _cnnlab_checkpoint(path: Path) -> PretrainedWeights:
    from cnnlab.checkpoint import load_model_checkpoint

    state_dict, info = load_model_checkpoint(path)
    names = info.output_names
    return PretrainedWeights(state_dict, name=str(path), description=f"checkpoint {path}",
                             mean=info.input.mean, std=info.input.std, image_size=info.input.size,
                             output_names=list(names) if names else None, architecture=info.architecture)
