"""The check at export time: the exported file and the PyTorch model on the same real images.

The PyTorch side is the checkpoint in float32 on the CPU, without test-time augmentation; the
exported side is the file as `cnnlab.load` runs it (ONNX Runtime, or torch.jit.load), fed the same
uint8 pixels. Two things must hold:

  max |Δ| of the raw outputs ≤ tolerance × max(1, max |output|)
      tolerance 1e-4 for float32 weights (ONNX Runtime's kernels sum in another order than
      PyTorch's: 1e-7 to 1e-5 is usual), 1e-2 for --fp16 (float16 keeps ~3 significant digits);
      scaled by the outputs' size, so large logits (resnet18's reach 10) are held to the same
      relative standard as small ones
  every agreement the task names (`Task.output_agreement`) is 100%: a classifier's top-1 answer
      for every image
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor

from cnnlab.errors import CnnlabError
from cnnlab.trained import TrainedModel

TOLERANCES = {"fp32": 1e-4, "fp16": 1e-2}


@dataclass
class CheckResult:
    images: int
    source: str  # where the images came from
    max_abs_diff: float
    output_scale: float  # max(1, max |output|) of the PyTorch model's outputs
    tolerance: float
    agreement: dict[str, float] = field(default_factory=dict)

    @property
    def allowed(self) -> float:
        return self.tolerance * self.output_scale

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.allowed and all(share == 1.0 for share in self.agreement.values())

    def describe(self) -> str:
        shares = "".join(f", {name} {share:.1%} ({round(share * self.images)}/{self.images})"
                         for name, share in self.agreement.items())
        return (f"export check on {self.images} images ({self.source}): max |Δ| {self.max_abs_diff:.2e} "
                f"(allowed {self.allowed:.2e} = {self.tolerance:g} × {self.output_scale:.3g}){shares}")

    def to_json(self) -> dict[str, object]:
        return {"images": self.images, "source": self.source, "max_abs_diff": self.max_abs_diff,
                "allowed": self.allowed, "tolerance": self.tolerance, "agreement": self.agreement,
                "passed": self.passed}


def compare(trained: TrainedModel, run_exported: Callable[[Tensor], Tensor], images: Tensor, source: str,
            tolerance: float) -> CheckResult:
    """Run both on `images` (uint8, N×C×H×W) and measure how far apart they are."""
    with torch.inference_mode():
        reference = trained.model(trained.normalizer()(images.to(trained.device))).float().cpu()
    exported = run_exported(images).float().cpu()
    if exported.shape != reference.shape:
        raise CnnlabError(f"the exported model's outputs have the shape {tuple(exported.shape)}, the PyTorch "
                          f"model's {tuple(reference.shape)}: the export is broken")
    difference = (reference - exported).abs()
    max_abs_diff = float(difference.max()) if torch.isfinite(difference).all() else float("inf")
    scale = max(1.0, float(reference.abs().max()))
    return CheckResult(len(images), source, max_abs_diff, scale, tolerance,
                       trained.task.output_agreement(reference, exported))


def require_passed(result: CheckResult, path: Path) -> None:
    if not result.passed:
        raise CnnlabError(f"the exported model disagrees with the PyTorch model, so {path} was not written: "
                          f"{result.describe()}; try without --fp16/--optimize, or another --opset")


# --- the images ----------------------------------------------------------------------------------

def check_images(trained: TrainedModel, count: int, *, check_data: Sequence[str] | None = None,
                 data_dir: str | None = None) -> tuple[Tensor, str]:
    """(uint8 images at the model's input, where they came from): `count` of the validation images
    the run held out of its own data (stratified, seeded), or of the files in `check_data`."""
    if count < 1:
        raise CnnlabError(f"--check-images {count}: the check needs at least 1 image")
    if check_data:
        return _files(trained, check_data, count)
    from cnnlab.data.pipeline import limit_source
    from cnnlab.data.prepare import load_images
    from cnnlab.evaluate.evaluate import own_data

    try:
        _, _, source = own_data(trained, "val", data_dir)
    except CnnlabError as error:
        raise CnnlabError(f"the export check needs real images and the run's own cannot be read ({error}); "
                          "pass --check-data with image files or a folder of them like those the model will "
                          "see") from None
    source = limit_source(source, count, seed=0)
    imageset, _ = load_images(source, trained.input.geometry, cache="memory", workers=0)
    images = [item[0] for item in (imageset[index] for index in range(len(imageset))) if item is not None]
    if not images:
        raise CnnlabError("none of the run's validation images could be read for the export check; pass "
                          "--check-data with image files")
    return torch.stack(images), f"the run's validation images, {trained.info.config.get('data')}"


def _files(trained: TrainedModel, check_data: Sequence[str], count: int) -> tuple[Tensor, str]:
    import numpy as np

    from cnnlab.data.prepare import decode_files
    from cnnlab.evaluate.predict import expand_paths

    files = [path for _, path, error in expand_paths(check_data) if error is None][:count]
    pixels = [result for batch in decode_files(files, trained.input.geometry, workers=0)
              for _, result in batch if isinstance(result, np.ndarray)]
    if not pixels:
        raise CnnlabError(f"--check-data {' '.join(check_data)}: no readable image files there")
    return torch.from_numpy(np.stack(pixels)), f"--check-data {' '.join(check_data)}"
