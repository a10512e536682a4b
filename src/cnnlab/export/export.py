"""`export()`: a run's model as one file that runs without cnnlab's training code (`cnnlab export`).

    >>> result = cnnlab.export("runs/demo")                 # doctest: +SKIP
    >>> result.path, result.check.passed                    # doctest: +SKIP
    (PosixPath('runs/demo/export/model.onnx'), True)

The file takes uint8 pixels (batch, channels, height, width) at the model's input size and
normalises them itself, so a user feeds decoded images as they are; it answers the raw outputs
(logits, standardised values, a detector's head) that the task decodes. Its metadata makes it
self-contained (`cnnlab.export.metadata`). Before the file takes its name it is checked against
the PyTorch model on real images (`cnnlab.export.check`); a file that fails is never left behind.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from cnnlab.errors import CnnlabError
from cnnlab.export.check import TOLERANCES, CheckResult, check_images, compare, require_passed
from cnnlab.export.metadata import DEFAULT_NAMES, ExportMetadata, describe_export, format_of, is_cnnlab_export
from cnnlab.io import atomic_path
from cnnlab.trained import TrainedModel, is_exported_file, load

log = logging.getLogger(__name__)
FORMATS = ("onnx", "torchscript")


@dataclass
class ExportResult:
    path: Path
    format: str
    exporter: str
    precision: str  # the weights': fp32 or fp16
    check: CheckResult

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size


class PixelsToOutputs(nn.Module):
    """What is exported: uint8 pixels → normalised floats (the run's Normalizer) → the network."""

    def __init__(self, normalizer: nn.Module, network: nn.Module):
        super().__init__()
        self.normalizer, self.network = normalizer, network

    def forward(self, images: Tensor) -> Tensor:
        return self.network(self.normalizer(images))


def export(run: str | Path, *, format: str = "onnx", output: str | Path | None = None, fp16: bool = False,
           optimize: bool = False, opset: int | None = None, force: bool = False,
           check_images_count: int = 32, check_data: Sequence[str] | None = None,
           tolerance: float | None = None, data_dir: str | None = None,
           runs_dir: str | Path = "runs") -> ExportResult:
    """Export `run`'s best model to `output` (default RUN/export/model.onnx, or model.pt for
    TorchScript) and check it on `check_images_count` of the run's validation images (or the files
    in `check_data`) against `tolerance` (default 1e-4, 1e-2 with `fp16`; see cnnlab.export.check).

    `fp16` and `optimize` (ONNX Runtime's graph optimisation) are ONNX options, as is `opset`
    (default: the exporter's). An `output` that holds a file cnnlab did not export is refused
    unless `force`."""
    _check_options(run, format, fp16, optimize, opset, tolerance)
    trained = load(run, device="cpu", precision="fp32", tta="none", runs_dir=runs_dir)
    trained.task.check_export(format)
    path = Path(output) if output else trained.run_dir / "export" / DEFAULT_NAMES[format]
    _check_output(path, format, force)
    images, source = check_images(trained, check_images_count, check_data=check_data, data_dir=data_dir)
    precision = "fp16" if fp16 else "fp32"
    tolerance = TOLERANCES[precision] if tolerance is None else tolerance
    network = PixelsToOutputs(trained.input.normalizer(), trained.model).eval()
    example = torch.zeros(2, *trained.input.shape, dtype=torch.uint8)  # two: no size frozen at a batch of one
    with atomic_path(path) as temp:
        exporter = _write(format, network, example, temp, trained, fp16=fp16, optimize=optimize, opset=opset)
        check = compare(trained, _runner(format, temp), images, source, tolerance)
        require_passed(check, path)
    return ExportResult(path, format, exporter, precision, check)


def _check_options(run: str | Path, format: str, fp16: bool, optimize: bool, opset: int | None,
                   tolerance: float | None) -> None:
    if format not in FORMATS:
        raise CnnlabError(f"--format {format!r}: choose one of {', '.join(FORMATS)}")
    if is_exported_file(run):
        raise CnnlabError(f"{run}: already an exported file; export takes the run folder it came from")
    if format != "onnx":
        flags = (("--fp16", fp16), ("--optimize", optimize), ("--opset", opset))
        given = [flag for flag, value in flags if value]
        if given:
            raise CnnlabError(f"{', '.join(given)}: options of --format onnx, not {format}")
    if opset is not None and opset < 7:
        raise CnnlabError(f"--opset {opset}: ONNX opsets start at 7 for these networks; leave it out for the "
                          "exporter's default")
    if tolerance is not None and not tolerance >= 0:
        raise CnnlabError(f"--tolerance {tolerance}: a maximum difference, 0 or more")


def _check_output(path: Path, format: str, force: bool) -> None:
    """Refuse an --output that load() would not recognise, or that holds something cnnlab did not
    export (a user's file is replaced only with --force)."""
    if format_of(path) != format:
        endings = ", ".join(ending for ending, kind in (
            (".onnx", "onnx"), (".pt", "torchscript"), (".ts", "torchscript")) if kind == format)
        article = "an" if format == "onnx" else "a"
        raise CnnlabError(f"--output {path}: {article} {format} file's name ends in {endings}, so that "
                          "cnnlab predict and evaluate recognise it")
    if path.is_dir():
        raise CnnlabError(f"--output {path}: a folder is there; name the file to write")
    taken = path.exists() or path.is_symlink()
    if taken and not force and (path.is_symlink() or not is_cnnlab_export(path)):
        what = "a link" if path.is_symlink() else "a file cnnlab did not export"
        raise CnnlabError(f"--output {path}: {what} is there; refusing to replace it: choose another "
                          "--output, or add --force to replace it")


def _write(format: str, network: nn.Module, example: Tensor, path: Path, trained: TrainedModel, *,
           fp16: bool, optimize: bool, opset: int | None) -> str:
    """The file at `path`, metadata included; returns the exporter used."""
    if format == "torchscript":
        from cnnlab.export.torchscript_file import write_torchscript

        exporter = "torch.jit.trace"
        metadata = _metadata(trained, format, "fp32", False, None, exporter)
        return write_torchscript(network, example, path, metadata)
    from cnnlab.export import onnx_file

    exporter = onnx_file.write_onnx(network, example, path, opset=opset)
    if fp16:
        onnx_file.to_float16(path)
    if optimize:
        onnx_file.optimize(path)
    written_opset = _onnx_opset(path)
    precision = "fp16" if fp16 else "fp32"
    onnx_file.write_metadata(path, _metadata(trained, format, precision, optimize, written_opset, exporter))
    return exporter


def _metadata(trained: TrainedModel, format: str, precision: str, optimized: bool, opset: int | None,
              exporter: str) -> ExportMetadata:
    facts = describe_export(model_format=format, precision=precision, optimized=optimized, opset=opset,
                            exporter=exporter, source=str(trained.checkpoint))
    return ExportMetadata(trained.info, facts)


def _onnx_opset(path: Path) -> int | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), None)


def _runner(format: str, path: Path):
    from cnnlab.export.exported import onnx_runner, torchscript_runner

    return onnx_runner(path, "cpu") if format == "onnx" else torchscript_runner(path, torch.device("cpu"))
