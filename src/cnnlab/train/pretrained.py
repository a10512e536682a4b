"""What a run starts from when it does not start from scratch: `--weights` and `--init-from`.

    weights (models/weights.py) → image size and normalisation they were trained with
    → a freshly initialised model → every layer that fits copied in (models/transfer.py)
    → a report (transfer.json in the run folder) → the new layers: the head that --freeze trains

`--weights` is strict: the weights must be this model's, up to its head (new classes) and its
first convolution (another number of channels); anything else is an error that suggests
`--init-from`, which transfers whatever fits and reports the rest.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from cnnlab.config import TrainConfig
from cnnlab.errors import CnnlabError, ConfigError
from cnnlab.io import write_text_atomic
from cnnlab.models.build import YAML_ARCHITECTURE, Architecture
from cnnlab.models.transfer import (FRESH_DENSE_DETAIL, SKIPPED, TransferReport, adapt_channel_values,
                                    class_specific_layers, is_inside_any, transfer_weights)
from cnnlab.models.weights import PretrainedWeights, load_weights

if TYPE_CHECKING:
    from torch import nn

    from cnnlab.console import Console
    from cnnlab.data.normalize import InputSpec
    from cnnlab.data.source import Source
    from cnnlab.tasks import Task

TRANSFER_REPORT = "transfer.json"


def load_pretrained(config: TrainConfig, architecture: Architecture) -> PretrainedWeights | None:
    """The weights `--weights` or `--init-from` names (None when the run starts from scratch)."""
    if config.init_from is not None:
        return load_weights(config.init_from, architecture, runs_dir=config.runs_dir, flag="--init-from")
    return load_weights(config.weights, architecture, runs_dir=config.runs_dir, flag="--weights")


def with_weights_defaults(config: TrainConfig, pretrained: PretrainedWeights | None) -> TrainConfig:
    """Images at the size the weights were trained at (224 for ImageNet) unless --image-size says."""
    if pretrained is None or pretrained.image_size is None or config.image_size is not None:
        return config
    height, width = pretrained.image_size
    return replace(config, image_size=f"{height},{width}")


def recorded_weights(config: TrainConfig, pretrained: PretrainedWeights | None) -> TrainConfig:
    """The config naming exactly what the run started from: a weights entry or a checkpoint file."""
    if pretrained is None:
        return config
    if config.init_from is not None:
        return replace(config, init_from=pretrained.name)
    return replace(config, weights=pretrained.name)


def pretrained_normalisation(pretrained: PretrainedWeights | None, channels: int) -> tuple | None:
    """(mean, std) the weights were trained with, for `channels`-channel images; None if unknown.
    Pretrained filters expect inputs scaled the way they saw them, so this beats the new data's own."""
    if pretrained is None or pretrained.mean is None or pretrained.std is None:
        return None
    return adapt_channel_values(pretrained.mean, channels), adapt_channel_values(pretrained.std, channels)


def _part_paths(model: "nn.Module", architecture: Architecture) -> tuple[str | tuple[str, ...], str | None]:
    """(classifier path, or the paths of every layer with one output per class where the registry names
    several; first convolution path or None) from the registry or the model itself."""
    from cnnlab.models.parts import classifier_path, first_conv_path
    from cnnlab.models.registry import model_entry

    entry = None if architecture.name == YAML_ARCHITECTURE else architecture.name
    try:
        first = first_conv_path(model, entry)
    except ConfigError:  # a network without convolutions
        first = None
    class_layers = model_entry(entry).metadata.get("class_layers") if entry else None
    return (tuple(class_layers) if class_layers else classifier_path(model, entry)), first


def _output_names(task: "Task") -> list[str] | None:
    return task.output_names or None


def transfer_pretrained(model: "nn.Module", architecture: Architecture, task: "Task",
                        pretrained: PretrainedWeights, config: TrainConfig,
                        batches_per_epoch: int | None = None) -> TransferReport:
    """Copy the pretrained layers that fit into `model`; check `--weights` fit as a whole.
    `batches_per_epoch` (the run's training data) decides whether dense layers start fresh."""
    classifier, first_conv = _part_paths(model, architecture)
    same_outputs = pretrained.output_names is not None and pretrained.output_names == _output_names(task)
    own_transfer = getattr(model, "transfer_pretrained", None)  # a model that knows its published weights
    fresh: tuple[str, ...] = ()
    if callable(own_transfer):
        report = own_transfer(pretrained.state_dict, source=pretrained.description, only=pretrained.part)
    else:
        fresh = _fresh_dense_layers(model, classifier, pretrained, same_outputs, batches_per_epoch)
        report = transfer_weights(model, pretrained.state_dict, source=pretrained.description,
                                  classifier=classifier, first_conv=first_conv, keep_classifier=same_outputs,
                                  fresh=fresh)
    if config.init_from is not None:
        flag, spec = "--init-from", config.init_from
    else:
        flag, spec = "--weights", config.weights
    trained_as = f" (they were trained as {pretrained.architecture.label})" if pretrained.architecture else ""
    if not report.names("loaded") and not report.names("adapted"):
        raise ConfigError(f"{flag} {spec}: no layer of --model {architecture.label} fits those weights"
                          f"{trained_as}; pass the --model they were trained with")
    # The classifier's layers (a detector's class layers) are new on purpose; so is whatever lies outside
    # the part the weights are for (a detector's neck and heads, for ImageNet backbone weights).
    new_on_purpose = (*_as_tuple(classifier), *fresh)
    misfits = [layer for layer in report.new_layers if not is_inside_any(layer, new_on_purpose)
               and (pretrained.part is None or is_inside_any(layer, pretrained.part))]
    if flag == "--weights" and (misfits or report.unused):
        layer = next((item for item in report.layers if item.layer in misfits), None)
        example = (f"{layer.layer}: {layer.detail}" if layer
                   else f"{report.unused[0]} has no place in the model")
        size = " and --image-size" if layer is not None and layer.status == SKIPPED else ""
        raise ConfigError(f"--weights {spec} do not fit --model {architecture.label}{trained_as}: "
                          f"{len(misfits) + len(report.unused)} difference(s), e.g. {example}. "
                          f"Pass the --model{size} they were trained with, or --init-from {spec} to transfer "
                          f"only the layers that fit")
    return report


def _as_tuple(paths: str | tuple[str, ...]) -> tuple[str, ...]:
    return (paths,) if isinstance(paths, str) else paths


def _fresh_dense_layers(model: "nn.Module", classifier: str | tuple[str, ...], pretrained: PretrainedWeights,
                        same_outputs: bool, batches_per_epoch: int | None) -> tuple[str, ...]:
    """The dense layers before the classifier that start fresh: those of a cnnlab run trained on other
    classes, for a few-shot run (fewer batches an epoch than the range test needs, MIN_SWEEP_BATCHES).

    A run has a handful of classes, and its dense layers keep little but what tells them apart: guide-cnn's
    fc1 from digits 0–4 tells digits 5–9 apart worse than a random fc1 does (a linear probe: 82.8% against
    85.4–88.9%), and 20 steps at the backbone's rate cannot re-learn it, so keeping it lost 3–6 points to
    training from scratch. Fresh, it gains (docs/transfer-learning.md, section 6). With more data (an epoch
    of 8+ batches: Fashion-MNIST's 250-image protocol) the layer is kept, as measured there. ImageNet's
    1,000 classes leave dense layers general, so torchvision's weights keep theirs (vgg's classifier.0, .3)."""
    from cnnlab.train.lr_find import MIN_SWEEP_BATCHES

    few_shot = batches_per_epoch is not None and batches_per_epoch < MIN_SWEEP_BATCHES
    if not few_shot or same_outputs or pretrained.architecture is None or not isinstance(classifier, str):
        return ()
    return class_specific_layers(model, classifier)


FEW_SHOT_LABEL_SMOOTHING = 0.2


def few_shot_config(config: TrainConfig, report: TransferReport,
                    task: "Task") -> tuple[TrainConfig, str | None]:
    """(the config, what changed and why): a few-shot run whose dense layers start fresh (a cnnlab run on
    other classes, under MIN_SWEEP_BATCHES batches an epoch: `_fresh_dense_layers`) trains the new head
    alone, `--freeze`, at `--label-smoothing 0.2` — unless the user chose the stages or the smoothing
    (then `config.few_shot` is "off": config._with_pretrained_defaults).

    Why: a linear probe on the transferred convolutions scores 93.8% on the digits protocol, but
    fine-tuning everything from 50 images after a 2-step head stage reached 87.9% (scratch: 87.5%); the
    fresh fc1 and classifier, trained alone, keep the convolutions as they are, and the smoothing keeps
    them from learning 50 images by heart (train loss 0.01 by epoch 10 without it). Over seeds 0–2 this
    gained +3.7 points on the fp32 path and +3.1 on bf16, no seed losing (docs/transfer-learning.md,
    section 6); --freeze alone gained +2.0 and +0.9."""
    fresh = [item.layer for item in report.layers if item.detail == FRESH_DENSE_DETAIL]
    if config.few_shot != "auto" or not fresh or "label_smoothing" not in task.settings:
        return config, None
    chosen = replace(config, freeze=True, fine_tune=None, label_smoothing=FEW_SHOT_LABEL_SMOOTHING)
    return chosen, (f"few-shot run ({', '.join(fresh)} starts fresh): training the new head alone "
                    f"(--freeze) with --label-smoothing {FEW_SHOT_LABEL_SMOOTHING:g}, which gains most over "
                    f"training from scratch on so few images; pass --fine-tune N, --label-smoothing or "
                    f"--few-shot off to choose")


def head_layers(model: "nn.Module", architecture: Architecture, report: TransferReport) -> tuple[str, ...]:
    """The layers that --freeze trains: the classifier and every layer the weights did not provide."""
    classifier, _ = _part_paths(model, architecture)
    classifiers = (classifier,) if isinstance(classifier, str) else classifier
    return tuple(sorted({*classifiers, *report.new_layers}))


def save_transfer_report(run_dir: Path, report: TransferReport) -> None:
    write_text_atomic(run_dir / TRANSFER_REPORT, json.dumps(report.to_json(), indent=2) + "\n")


def load_transfer_report(run_dir: Path) -> TransferReport:
    path = run_dir / TRANSFER_REPORT
    try:
        return TransferReport.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CnnlabError(f"{path}: cannot read which layers came from the pretrained weights ({error}); "
                          f"it is needed to --resume a run with --freeze or --fine-tune") from None


def own_image_size(source: "Source", probe: int = 16) -> tuple[int, int] | None:
    """(height, width) the data's images share, from the arrays or the first files' headers; None if mixed."""
    if source.pixels is not None:
        return tuple(source.pixels.shape[1:3])
    from cnnlab.data.images import probe_image

    sizes = set()
    for path in list(source.paths or [])[:probe]:
        try:
            width, height, _ = probe_image(path)
        except CnnlabError:
            continue  # named when the images are loaded
        sizes.add((height, width))
    return sizes.pop() if len(sizes) == 1 else None


RESIZE_NOTE_FACTOR = 2.0  # say so from twice the pixels on


def describe_resize(config: TrainConfig, pretrained: PretrainedWeights, own: tuple[int, int] | None,
                    architecture: Architecture) -> str | None:
    """The cost of training at the weights' input size when the data's images are much smaller
    (28-pixel images enlarged to ImageNet's 224: 64× the pixels, and about 64× the time a step), with
    the --image-size that avoids it; None when it costs little or the size was asked for."""
    if own is None or pretrained.image_size is None:
        return None
    (height, width), (own_height, own_width) = pretrained.image_size, own
    factor = (height * width) / (own_height * own_width)
    if factor < RESIZE_NOTE_FACTOR:
        return None
    smallest = 0
    if architecture.name != YAML_ARCHITECTURE:
        from cnnlab.models.registry import model_entry

        smallest = model_entry(architecture.name).metadata.get("min_size", 0)
    suggested = f"{max(own_height, smallest)},{max(own_width, smallest)}" if own_height != own_width \
        else str(max(own_height, smallest))
    flag = f"--init-from {config.init_from}" if config.init_from is not None else f"--weights {config.weights}"
    smallest_note = f" ({architecture.label}'s smallest)" if smallest > min(own) else ""
    return (f"{flag}: the weights were trained on {height}×{width} images, so yours ({own_height}×{own_width}) "
            f"are enlarged to that: {factor:.0f}× the pixels, and about {factor:.0f}× the computation a step "
            f"would take at their own size. Pass --image-size {suggested}{smallest_note} to train at (near) "
            f"their own size, or a size in between; the pretrained filters work at any size")


def describe_input(spec: "InputSpec", pretrained: PretrainedWeights | None) -> str:
    mean = ", ".join(f"{v:.3f}" for v in spec.mean)
    std = ", ".join(f"{v:.3f}" for v in spec.std)
    from_weights = pretrained is not None and pretrained.mean is not None
    origin = "the pretrained weights'" if from_weights else "the data's"
    return f"normalisation: {origin} mean ({mean}), std ({std})"


def note_pretrained_input(console: "Console", spec: "InputSpec", pretrained: PretrainedWeights | None,
                          config: TrainConfig, source: "Source", architecture: Architecture, *,
                          size_asked: bool) -> None:
    """What pretrained weights did to the input: the normalisation they brought, and (unless
    --image-size was given) a warning when their image size enlarges the data's images a lot."""
    if pretrained is None:
        return
    console.info(describe_input(spec, pretrained))
    resize = None if size_asked else describe_resize(config, pretrained, own_image_size(source), architecture)
    if resize:
        console.warn(resize)
