"""Writing a TorchScript file: the traced network, cnnlab's metadata as the archive's extra files.

PyTorch 2.14 marks torch.jit as deprecated (in favour of torch.export); it still writes and loads,
and a TorchScript file runs from C++ (libtorch) without Python. Its warnings are kept off the user's
screen here: ONNX is the format cnnlab recommends (docs/deploy.md)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from cnnlab.export.metadata import ExportMetadata


def write_torchscript(network: nn.Module, example: Tensor, path: Path, metadata: ExportMetadata) -> str:
    """`network` traced on `example` (a batch of two images, so no size is frozen at one) and saved
    with the metadata; returns the exporter's name."""
    extra_files = {f"{key}.json": text for key, text in metadata.documents().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(network, example)
        torch.jit.save(traced, str(path), _extra_files=extra_files)
    return "torch.jit.trace"


def load_torchscript(path: Path, device: torch.device) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(path), map_location=device).eval()
