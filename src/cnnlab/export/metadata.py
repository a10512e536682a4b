"""What an exported file says about itself, so that the file alone is enough to use it.

Both formats carry the same two JSON documents:

  cnnlab.model    the checkpoint's ModelInfo (`cnnlab.checkpoint`): architecture, task (its
                  `to_json`, rebuilt by `cnnlab.tasks.task_from_json`), input size, channels,
                  normalisation and fit, the training config and the epoch's metrics
  cnnlab.export   how the file was made and what it takes: the input's name, dtype (uint8 pixels,
                  N×C×H×W, normalised inside the graph), the output's name, the weights' precision,
                  the exporter, whether ONNX Runtime optimised it

ONNX keeps them in the model's `metadata_props`, beside plain keys for tools that know nothing of
cnnlab (`class_names`, `input_size`, `channels`, `mean`, `std`, `fit`, `task`, `architecture`,
`cnnlab_version`, `input_format`; Netron shows them). TorchScript keeps them as the archive's
extra files `cnnlab.model.json` and `cnnlab.export.json`, which a zip reader gets without loading
the model.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnlab.checkpoint import ModelInfo
from cnnlab.errors import CnnlabError

FORMAT = "cnnlab.export/1"
MODEL_KEY = "cnnlab.model"
EXPORT_KEY = "cnnlab.export"
INPUT_NAME = "images"
OUTPUT_NAME = "outputs"
INPUT_FORMAT = ("uint8 pixels 0-255, shape (batch, channels, height, width); the graph scales them and "
                "normalises them with `mean` and `std` itself")

# File name endings → format. TorchScript has no settled ending: .pt is PyTorch's own habit.
SUFFIXES = {".onnx": "onnx", ".pt": "torchscript", ".ts": "torchscript", ".torchscript": "torchscript"}
DEFAULT_NAMES = {"onnx": "model.onnx", "torchscript": "model.pt"}


@dataclass
class ExportMetadata:
    """What an exported file carries: the model's ModelInfo and how it was exported."""

    info: ModelInfo
    export: dict[str, Any]

    def documents(self) -> dict[str, str]:
        """The two JSON documents, by key."""
        return {MODEL_KEY: json.dumps(self.info.to_json()), EXPORT_KEY: json.dumps(self.export)}

    def plain_keys(self) -> dict[str, str]:
        """The same facts as flat keys, for tools that know nothing of cnnlab (ONNX only)."""
        from cnnlab import __version__

        spec = self.info.input
        keys = {
            "input_size": json.dumps([spec.height, spec.width]),
            "channels": str(spec.channels),
            "mean": json.dumps(list(spec.mean)),
            "std": json.dumps(list(spec.std)),
            "fit": spec.fit,
            "task": json.dumps(self.info.task),
            "architecture": self.info.architecture.short_name,
            "cnnlab_version": __version__,
            "input_format": INPUT_FORMAT,
        }
        class_names = self.info.class_names
        if class_names is not None:
            keys["class_names"] = json.dumps(class_names)
        return keys


def format_of(path: str | Path) -> str | None:
    """"onnx" or "torchscript" by the file's ending; None for anything else."""
    return SUFFIXES.get(Path(path).suffix.lower())


def describe_export(*, model_format: str, precision: str, optimized: bool, opset: int | None,
                    exporter: str, source: str) -> dict[str, Any]:
    import torch

    return {"format": FORMAT, "model_format": model_format,
            "input": {"name": INPUT_NAME, "dtype": "uint8", "layout": "NCHW", "normalized_in_graph": True,
                      "dynamic_axes": ["batch"]},
            "output": {"name": OUTPUT_NAME, "dtype": "float32"},
            "weights": precision, "optimized": optimized, "opset": opset, "exporter": exporter,
            "torch_version": torch.__version__, "source": source}


def read_metadata(path: str | Path) -> ExportMetadata:
    """The metadata of an exported file (ONNX or TorchScript), read without running the model; a
    CnnlabError names the file when it is not one cnnlab exported."""
    path = Path(path)
    if not path.is_file():
        raise CnnlabError(f"{path}: no such file")
    model_format = format_of(path)
    documents = _onnx_documents(path) if model_format == "onnx" else _torchscript_documents(path)
    return _parse(documents, path)


def is_cnnlab_export(path: str | Path) -> bool:
    """Whether `path` is a file cnnlab exported (what may be replaced without --force)."""
    try:
        read_metadata(path)
        return True
    except CnnlabError:
        return False


def _onnx_documents(path: Path) -> dict[str, str]:
    from cnnlab.export.requirements import require

    onnx = require("onnx", "reading an ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # onnx raises DecodeError, ValueError, OSError... for a file that is not one
        raise CnnlabError(f"{path}: not a readable ONNX file ({type(error).__name__}: {error})") from None
    return {entry.key: entry.value for entry in model.metadata_props}


def _torchscript_documents(path: Path) -> dict[str, str]:
    """The extra files of a TorchScript archive (a zip: <archive>/extra/NAME), read as a zip."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            extra = {Path(name).name: name for name in names if Path(name).parent.name == "extra"}
            return {key: archive.read(extra[f"{key}.json"]).decode("utf-8")
                    for key in (MODEL_KEY, EXPORT_KEY) if f"{key}.json" in extra}
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError) as error:
        raise CnnlabError(f"{path}: not a TorchScript file ({error}); cnnlab exports TorchScript with "
                          "`cnnlab export RUN --format torchscript`") from None


def _parse(documents: dict[str, str], path: Path) -> ExportMetadata:
    missing = [key for key in (MODEL_KEY, EXPORT_KEY) if key not in documents]
    if missing:
        raise CnnlabError(f"{path}: not a model cnnlab exported (no {' or '.join(missing)} metadata); export "
                          "one with `cnnlab export RUN`, or use the run folder")
    try:
        model, export = json.loads(documents[MODEL_KEY]), json.loads(documents[EXPORT_KEY])
    except ValueError as error:
        raise CnnlabError(f"{path}: its cnnlab metadata is not valid JSON ({error}); export it "
                          "again") from None
    if not isinstance(export, dict) or export.get("format") != FORMAT:
        found = export.get("format") if isinstance(export, dict) else type(export).__name__
        raise CnnlabError(f"{path}: its export metadata is {found!r}, not {FORMAT!r}; export it again "
                          "with this cnnlab")
    return ExportMetadata(ModelInfo.from_json(model, origin=str(path)), export)
