"""`load()`: a trained model with everything needed to use it, rebuilt from its checkpoint alone.

    >>> trained = cnnlab.load("runs/demo")            # doctest: +SKIP
    >>> trained.input.shape, trained.class_names[:2]   # doctest: +SKIP
    ((1, 28, 28), ['T-shirt/top', 'Trouser'])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from cnnlab.data.normalize import InputSpec
from cnnlab.device import resolve_device
from cnnlab.errors import CnnlabError
from cnnlab.runs import find_checkpoint
from cnnlab.tasks import Task, task_from_json
from cnnlab.checkpoint import ModelInfo, load_model_checkpoint
from cnnlab.performance import Performance, resolve_performance

if TYPE_CHECKING:
    from cnnlab.export.exported import ExportedModel


class InferenceModel:
    """What predict, evaluate and serve use of a model, whatever holds it: a run's checkpoint
    (`TrainedModel`) or an exported file (`cnnlab.export.exported.ExportedModel`). Subclasses have
    `info`, `task`, `device`, `checkpoint` (the file the model came from), `tta_override`, and
    `outputs(images)`."""

    info: ModelInfo
    task: Task
    tta_override: str | None

    @property
    def input(self) -> InputSpec:
        return self.info.input

    @property
    def class_names(self) -> list[str] | None:
        return getattr(self.task, "class_names", None)

    @property
    def tta(self) -> str:
        """The test-time augmentation this model was trained to use ("none" or "flip")."""
        return self.tta_override or self.info.config.get("tta", "none")

    @property
    def evaluation_prefix(self) -> str:
        """What evaluate's default folder name starts with after "eval-": nothing for a run; an
        exported file's name, so that files side by side keep their evaluations apart."""
        return ""

    def outputs(self, images: Tensor) -> Tensor:
        raise NotImplementedError

    def predict_arrays(self, images: Tensor, top_k: int = 1,
                       origins: list[tuple[int, int]] | None = None) -> list[dict[str, Any]]:
        """The task's prediction for each uint8 image (B, C, H, W) at the model's input; `origins`
        are the images' own (width, height), for tasks that answer in the image's pixels."""
        return self.task.predictions(self.outputs(images), top_k=top_k, origins=origins)

    def set_threshold(self, spec: str | None) -> None:
        """Answer a class whenever its probability reaches a threshold ("PNEUMONIA=0.3"), for
        `predict_arrays` and evaluation; None: the most probable class (the default)."""
        if spec is None:
            if hasattr(self.task, "set_threshold"):
                self.task.set_threshold(None)
            return
        self.task.configure(threshold=spec)


@dataclass
class TrainedModel(InferenceModel):
    model: nn.Module  # in eval mode, on `device`
    info: ModelInfo
    task: Task
    device: torch.device
    checkpoint: Path
    tta_override: str | None = None  # evaluate/predict --tta
    performance: Performance | None = None  # the arithmetic for inference (precision, memory layout)
    _normalizer: nn.Module | None = field(default=None, repr=False)

    @property
    def run_dir(self) -> Path:
        return self.checkpoint.parent.parent

    def normalizer(self) -> nn.Module:
        if self._normalizer is None:
            self._normalizer = self.input.normalizer().to(self.device)
        return self._normalizer

    @torch.inference_mode()
    def outputs(self, images: Tensor) -> Tensor:
        """Raw outputs (logits, or standardised values) for uint8 images (B, C, H, W), with test-time
        augmentation when the model asks for it (flip: the image and its mirror image, combined)."""
        inputs = self.normalizer()(images.to(self.device))
        views = [inputs, inputs.flip(-1)] if self.tta == "flip" else [inputs]
        outputs = [self._forward(view) for view in views]
        return self.task.combine_views(outputs) if len(outputs) > 1 else outputs[0]

    def _forward(self, inputs: Tensor) -> Tensor:
        performance = self.performance or Performance(self.device)
        with performance.autocast():
            return self.model(performance.prepare_inputs(inputs)).float()


def load(run: str | Path, *, which: str = "best", device: str = "auto", runs_dir: str | Path = "runs",
         tta: str | None = None, precision: str = "auto", conf: float | None = None,
         iou: float | None = None) -> "TrainedModel | ExportedModel":
    """Load a run folder (its best checkpoint by default), a run name, or a .safetensors file; or a
    file `cnnlab export` wrote (.onnx, or TorchScript .pt/.ts), as an `ExportedModel` that predicts
    and evaluates the same way (`cnnlab.export.exported`).

    `tta` ("none" or "flip") overrides the test-time augmentation recorded with the model. `conf`
    and `iou` set a detector's score and overlap thresholds (a task without them refuses them).
    `precision` as for training: "auto" runs bfloat16 where the CPU or GPU has it natively (several
    times faster; about 1 prediction in 1,000, the near ties, can differ from "fp32")."""
    if tta not in (None, "none", "flip"):
        raise CnnlabError(f"--tta must be none or flip (got {tta!r})")
    if is_exported_file(run):
        from cnnlab.export.exported import load_exported

        return load_exported(run, device=device, tta=tta, precision=precision, conf=conf, iou=iou)
    checkpoint = find_checkpoint(run, which, runs_dir)
    state_dict, info = load_model_checkpoint(checkpoint)
    task = task_from_json(info.task)
    task.configure(conf=conf, iou=iou)
    model = task.build_model(info.architecture, in_channels=info.input.channels, image_size=info.input.size)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        raise CnnlabError(f"{checkpoint}: weights do not fit the architecture in its sidecar ({error})") from None
    target = resolve_device(device)
    performance = resolve_performance(target, precision=precision)
    model = performance.prepare_model(model.to(target).eval())
    return TrainedModel(model, info, task, target, checkpoint, tta_override=tta, performance=performance)


def is_exported_file(run: str | Path) -> bool:
    """Whether `run` names a file `cnnlab export` writes (by its ending: .onnx, .pt, .ts, .torchscript)."""
    from cnnlab.export.metadata import format_of

    return not isinstance(run, InferenceModel) and format_of(run) is not None and not Path(run).is_dir()


def refuse_exported(run: str | Path, command: str) -> None:
    """A CnnlabError when `run` is an exported file: `command` needs the network's gradients or its
    layers, which only the run folder has."""
    if is_exported_file(run):
        raise CnnlabError(f"{run}: an exported model has no gradients or layers to look into; {command} "
                          f"needs the run folder it was exported from (cnnlab {command} RUN ...)")
