"""Writing an ONNX file: torch.onnx's exporter, then optional float16 weights and ONNX Runtime's
graph optimisation, then cnnlab's metadata."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from torch import Tensor, nn

from cnnlab.errors import CnnlabError
from cnnlab.export.metadata import INPUT_NAME, OUTPUT_NAME, ExportMetadata
from cnnlab.export.requirements import require

log = logging.getLogger(__name__)


def write_onnx(network: nn.Module, example: Tensor, path: Path, *, opset: int | None) -> str:
    """`network` (uint8 images in, outputs out) as ONNX at `path`, with a dynamic batch axis;
    returns which exporter wrote it.

    torch.onnx's current exporter (`dynamo=True`: torch.export, then ONNX Script) comes first; the
    older TorchScript-based one only when it fails, with the reason logged, so a network the new
    exporter cannot capture (data-dependent control flow) still exports."""
    import torch

    require("onnxscript", "ONNX export")
    require("onnx", "ONNX export")
    names = dict(input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's progress notes and deprecations of its own
            torch.onnx.export(network, (example,), str(path), dynamo=True, external_data=False, verbose=False,
                              dynamic_shapes={INPUT_NAME: {0: torch.export.Dim("batch")}}, **names)
        return "torch.onnx.export(dynamo=True)"
    except Exception as error:  # the exporter raises many kinds; each is a reason to try the older one
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        log.warning(f"torch.onnx's current exporter (dynamo=True) failed ({type(error).__name__}: {reason}); "
                    "exporting with the TorchScript-based one (dynamo=False) instead")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(network, (example,), str(path), dynamo=False,
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, **names)
    except Exception as error:
        raise CnnlabError(f"ONNX export failed with both of torch.onnx's exporters ({type(error).__name__}: "
                          f"{error}); try --format torchscript") from None
    return "torch.onnx.export(dynamo=False)"


def to_float16(path: Path) -> None:
    """Weights and arithmetic in float16, the uint8 input and float32 output kept (so a caller feeds
    and reads the same arrays as from the float32 file); half the file's size."""
    onnx = require("onnx", "--fp16")
    float16 = require("onnxruntime.transformers.float16", "--fp16")
    model = float16.convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
    onnx.save(model, str(path))


def optimize(path: Path) -> None:
    """ONNX Runtime's graph optimisations (constant folding, conv + batch-norm + activation fusion...)
    saved into the file, so sessions start from the optimised graph.

    The extended level, not "all": "all" adds layout changes tuned to this machine's CPU, which the
    ONNX Runtime documentation advises against saving for use elsewhere. The fused nodes are ONNX
    Runtime's own (com.microsoft domain): the file is then for ONNX Runtime."""
    onnxruntime = require("onnxruntime", "--optimize")
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    optimized = path.with_name(f"optimized-{path.name}")
    options.optimized_model_filepath = str(optimized)
    onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    optimized.replace(path)


def write_metadata(path: Path, metadata: ExportMetadata) -> None:
    """cnnlab's metadata into the file's metadata_props (ONNX Runtime's optimiser drops them, so this
    comes last), replacing any of the same keys."""
    onnx = require("onnx", "ONNX export")
    model = onnx.load(str(path))
    values = {**metadata.plain_keys(), **metadata.documents()}
    kept = [(entry.key, entry.value) for entry in model.metadata_props if entry.key not in values]
    del model.metadata_props[:]
    for key, value in [*kept, *values.items()]:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
