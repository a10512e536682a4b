"""`load()`: a trained model with everything needed to use it, rebuilt from its checkpoint alone.

    >>> trained = cnnlab.load("runs/demo")            # doctest: +SKIP
    >>> trained.input.shape, trained.class_names[:2]   # doctest: +SKIP
    ((1, 28, 28), ['T-shirt/top', 'Trouser'])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from cnnlab.data.normalize import InputSpec
from cnnlab.device import resolve_device
from cnnlab.errors import CnnlabError
from cnnlab.models.build import build_model
from cnnlab.runs import find_checkpoint
from cnnlab.tasks import Task, task_from_json
from cnnlab.train.checkpoint import ModelInfo, load_model_checkpoint


@dataclass
class TrainedModel:
    model: nn.Module  # in eval mode, on `device`
    info: ModelInfo
    task: Task
    device: torch.device
    checkpoint: Path
    tta_override: str | None = None  # evaluate/predict --tta
    _normalizer: nn.Module | None = field(default=None, repr=False)

    @property
    def input(self) -> InputSpec:
        return self.info.input

    @property
    def class_names(self) -> list[str] | None:
        return self.info.class_names

    @property
    def run_dir(self) -> Path:
        return self.checkpoint.parent.parent

    def normalizer(self) -> nn.Module:
        if self._normalizer is None:
            self._normalizer = self.input.normalizer().to(self.device)
        return self._normalizer

    @property
    def tta(self) -> str:
        """The test-time augmentation this model was trained to use ("none" or "flip")."""
        return self.tta_override or self.info.config.get("tta", "none")

    @torch.inference_mode()
    def outputs(self, images: Tensor) -> Tensor:
        """Raw outputs (logits, or standardised values) for uint8 images (B, C, H, W), with test-time
        augmentation when the model asks for it (flip: the image and its mirror image, combined)."""
        inputs = self.normalizer()(images.to(self.device))
        if self.tta == "flip":
            return self.task.combine_views([self.model(inputs).float(), self.model(inputs.flip(-1)).float()])
        return self.model(inputs).float()

    def predict_arrays(self, images: Tensor, top_k: int = 1) -> list[dict[str, Any]]:
        return self.task.predictions(self.outputs(images), top_k=top_k)


def load(run: str | Path, *, which: str = "best", device: str = "auto", runs_dir: str | Path = "runs",
         tta: str | None = None) -> TrainedModel:
    """Load a run folder (its best checkpoint by default), a run name, or a .safetensors file.

    `tta` ("none" or "flip") overrides the test-time augmentation recorded with the model."""
    if tta not in (None, "none", "flip"):
        raise CnnlabError(f"--tta must be none or flip (got {tta!r})")
    checkpoint = find_checkpoint(run, which, runs_dir)
    state_dict, info = load_model_checkpoint(checkpoint)
    task = task_from_json(info.task)
    model = build_model(info.architecture, in_channels=info.input.channels, num_outputs=task.num_outputs,
                        image_size=info.input.size)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        raise CnnlabError(f"{checkpoint}: weights do not fit the architecture in its sidecar ({error})") from None
    target = resolve_device(device)
    return TrainedModel(model.to(target).eval(), info, task, target, checkpoint, tta_override=tta)
