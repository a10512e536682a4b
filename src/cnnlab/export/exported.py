"""`ExportedModel`: an exported file (ONNX through ONNX Runtime, TorchScript through torch.jit.load)
with the inference interface of a run's `TrainedModel`, so predict, evaluate and serve take either.

    >>> model = cnnlab.load("runs/demo/export/model.onnx")   # doctest: +SKIP
    >>> model.predict_arrays(images, top_k=3)[0]["label"]     # doctest: +SKIP
    'Sneaker'

Everything it knows comes from the file itself (`cnnlab.export.metadata`): the task is rebuilt
with `task_from_json`, the input spec, class names and training config are the checkpoint's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from cnnlab.checkpoint import ModelInfo
from cnnlab.errors import CnnlabError
from cnnlab.export.metadata import format_of, read_metadata
from cnnlab.export.requirements import require
from cnnlab.tasks import Task, task_from_json
from cnnlab.trained import InferenceModel

Runner = Callable[[Tensor], Tensor]  # uint8 images (B, C, H, W) -> float32 outputs on the CPU


@dataclass
class ExportedModel(InferenceModel):
    """An exported file, ready to predict. `path` is the file (also `checkpoint`, the name evaluate
    records); `format` "onnx" or "torchscript"; `export` the file's export metadata (precision,
    exporter...); `runner` runs the network on uint8 images, normalisation included."""

    path: Path
    format: str
    info: ModelInfo
    task: Task
    export: dict[str, Any]
    runner: Runner = field(repr=False)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    tta_override: str | None = None

    @property
    def checkpoint(self) -> Path:
        return self.path

    @property
    def run_dir(self) -> Path:
        """Where results about this file go by default: the file's own folder (evaluate writes
        eval-<file name>-<data>-<split>/ there)."""
        return self.path.parent

    @property
    def evaluation_prefix(self) -> str:
        return f"{self.path.name}-"

    @property
    def model(self) -> Any:
        raise CnnlabError(f"{self.path}: an exported model has no gradients or layers to look into; explain "
                          "needs the run folder it was exported from")

    def normalizer(self) -> torch.nn.Module:
        """The normalisation the file applies inside its graph, for showing what the model sees."""
        return self.input.normalizer()

    @torch.inference_mode()
    def outputs(self, images: Tensor) -> Tensor:
        """Raw outputs for uint8 images (B, C, H, W), as `TrainedModel.outputs`: test-time flip when
        the model asks for it (the mirror image is flipped before the graph normalises it, which is
        the same, normalisation being per channel)."""
        if images.dtype != torch.uint8:
            raise CnnlabError(f"{self.path} takes uint8 pixels (0-255); got {images.dtype}")
        views = [images, images.flip(-1)] if self.tta == "flip" else [images]
        outputs = [self.runner(view) for view in views]
        return self.task.combine_views(outputs) if len(outputs) > 1 else outputs[0]


def load_exported(path: str | Path, *, device: str = "auto", tta: str | None = None, precision: str = "auto",
                  conf: float | None = None, iou: float | None = None) -> ExportedModel:
    """The exported file at `path` as an ExportedModel (see `cnnlab.trained.load` for the options).

    `precision` is the file's own: it computes in the precision it was exported in (`--fp16`), so
    only "auto" and "fp32" (for a float32 file) are taken."""
    path = Path(path)
    metadata = read_metadata(path)
    _check_precision(precision, metadata.export, path)
    task = task_from_json(metadata.info.task)
    task.configure(conf=conf, iou=iou)
    model_format = format_of(path)
    if model_format == "onnx":
        runner = onnx_runner(path, device)
        target = torch.device("cpu")
    else:
        target = _torch_device(device)
        runner = torchscript_runner(path, target)
    return ExportedModel(path, model_format, metadata.info, task, metadata.export, runner, target,
                         tta_override=tta)


def _check_precision(precision: str, export: dict[str, Any], path: Path) -> None:
    weights = export.get("weights", "fp32")
    if precision not in ("auto", weights):
        again = " with --fp16" if precision == "fp16" else ""
        raise CnnlabError(f"--precision {precision}: {path} computes in {weights}, the precision it was "
                          f"exported in; leave --precision out (or export again{again})")


def onnx_runner(path: Path, device: str = "auto") -> Runner:
    """An ONNX Runtime session over the file. "auto" uses CUDA where this ONNX Runtime has it and a
    GPU is there, else the CPU; the outputs come back as CPU tensors either way."""
    onnxruntime = require("onnxruntime", "running an ONNX file")
    available = onnxruntime.get_available_providers()
    wants_gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if device not in ("auto", "cpu") and not (wants_gpu and "CUDAExecutionProvider" in available):
        raise CnnlabError(f"--device {device}: this ONNX Runtime runs on {', '.join(available)}; use "
                          "--device cpu (or install onnxruntime-gpu for cuda)")
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if wants_gpu and \
        "CUDAExecutionProvider" in available else ["CPUExecutionProvider"]
    try:
        session = onnxruntime.InferenceSession(str(path), providers=providers)
    except Exception as error:  # ONNX Runtime's own exception types (InvalidGraph, Fail...)
        raise CnnlabError(f"{path}: ONNX Runtime cannot load it ({type(error).__name__}: {error})") from None
    input_name = session.get_inputs()[0].name

    def run(images: Tensor) -> Tensor:
        pixels = np.ascontiguousarray(images.cpu().numpy())
        return torch.from_numpy(session.run(None, {input_name: pixels})[0]).float()

    return run


def torchscript_runner(path: Path, device: torch.device) -> Runner:
    from cnnlab.export.torchscript_file import load_torchscript

    try:
        network = load_torchscript(path, device)
    except RuntimeError as error:
        raise CnnlabError(f"{path}: torch.jit.load cannot load it ({error})") from None

    def run(images: Tensor) -> Tensor:
        with torch.inference_mode():
            return network(images.to(device)).float().cpu()

    return run


def _torch_device(device: str) -> torch.device:
    from cnnlab.device import resolve_device

    return resolve_device(device)
