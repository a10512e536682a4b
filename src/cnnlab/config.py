"""Typed configuration for a training run, saved as `config.yaml` in every run folder.

`TrainConfig` is the one description of a run: the `cnnlab train` flags are generated from its
fields (so a flag and a config key can never drift apart), `-c run.yaml` takes the same keys,
and the resolved config written into the run folder reproduces the run:

    cnnlab train -c runs/demo/config.yaml --name demo-again
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_type_hints

from cnnlab.errors import ConfigError
from cnnlab.tasks import task_names

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle")
AUGMENTATIONS = ("none", "flip", "light", "standard")
TTA_MODES = ("none", "flip")
FITS = ("squash", "crop", "pad")  # as cnnlab.data.images.FITS, which this module does not import

# A recipe is a tested set of defaults; flags the user gives still win. Measured in docs/speed.md.
RECIPES: dict[str, dict[str, Any]] = {
    # ≥ 93% Fashion-MNIST test accuracy in 5 epochs (benchmarks/time_to_accuracy.py, docs/speed.md).
    "fast": {"model": "fast-cnn-v2", "epochs": 5, "batch_size": 128, "optimizer": "adamw", "lr": 0.004,
             "beta2": 0.99, "weight_decay": 5e-4, "schedule": "onecycle", "warmup": 0.15,
             "label_smoothing": 0.1, "augment": "flip", "tta": "flip"},
}
# The same at batch 512 (a rate twice as high, one epoch more): steps of 128 small images leave a GPU
# waiting for kernel launches. On an H100, seeds 0–2: 93.17/93.16/93.18% after 6 epochs, at 2.6–2.9 s
# of training, against 6.1–7.4 s for "fast" (docs/speed.md, "On a GPU").
RECIPES["fast-gpu"] = {**RECIPES["fast"], "epochs": 6, "batch_size": 512, "lr": 0.008}
CACHES = ("auto", "memory", "none")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def _option(help: str, *, flag: str | None = None, choices: tuple[str, ...] | None = None, **kwargs: Any):
    """A dataclass field that also describes its command-line flag."""
    metadata = {"help": help, "flag": flag, "choices": choices}
    return field(metadata=metadata, **kwargs)


# Settings that only some tasks read (a task lists those it reads in `Task.settings`): their values
# when unset, and what they do, for the message refusing them to the other tasks.
TASK_SETTINGS: dict[str, tuple[object, str]] = {
    "label_smoothing": (0.0, "softens an image's class label"),
    "class_weights": ("none", "weighs each image's loss by its class"),
    "loss": ("ce", "chooses a segmentation's pixel loss"),
    "embedding_dim": (128, "sets the length of an embedding"),
    "metric_loss": ("arcface", "chooses an embedding's margin loss"),
    "margin": (None, "sets an embedding loss's margin"),
    "scale": (30.0, "sets ArcFace's and CosFace's logit scale"),
    "verify_far": (0.01, "sets the false accept rate of an embedding's verification threshold"),
    "contrastive": (1.0, "weighs an embedding's two-view instance term"),
    "embedding_head": ("features", "chooses what an embedding layer reads"),
}
METRIC_LOSSES = ("arcface", "cosface", "triplet")  # --task embedding (cnnlab.tasks.embedding.losses)


@dataclass
class TrainConfig:
    data: str = _option("named dataset (fashion-mnist, mnist, cifar10, digits), a folder with one "
                        "sub-folder per class, a CSV of path,label, or an IDX images file", default="")
    model: str = _option("registered model name (see `cnnlab models`; a classifier is a detector's backbone) or a "
                         "YAML layer list [default: guide-cnn; cnnlab-det for --task detection]", default="guide-cnn")
    task: str = _option("what the network predicts (cnnlab tasks lists them)", choices=task_names(),
                        default="classification")
    epochs: int = _option("passes over the training data", default=10)
    batch_size: int = _option("images per optimisation step", default=32)
    optimizer: str = _option("optimisation algorithm (sgd uses momentum)", choices=OPTIMIZERS, default="adam")
    lr: float | str | None = _option("peak learning rate, or auto (run `cnnlab lr-find` first and use its "
                                     "suggestion) [default: auto with --weights or --init-from; else 0.003 for adam/adamw, "
                                     "0.05 for sgd]", default=None)
    momentum: float = _option("momentum for sgd", default=0.9)
    beta2: float = _option("adam/adamw: decay rate of the average of squared gradients (0.99 adapts sooner "
                           "than 0.999, which helps short runs)", default=0.999)
    schedule: str = _option("learning-rate schedule over the run (onecycle: warm up, then anneal)",
                            choices=SCHEDULES, default="onecycle")
    warmup: float | None = _option("share of the run's steps over which the rate rises linearly from 1/25 of "
                                   "--lr, before the schedule [default: 0.3 for onecycle, 0 for cosine and "
                                   "constant]", default=None)
    weight_decay: float = _option("L2 penalty (decoupled for adamw)", default=0.0)
    label_smoothing: float = _option("cross-entropy label smoothing, 0 to 1", default=0.0)
    class_weights: str = _option("weigh each image's loss by its class: balanced = inversely to the class's number "
                                 "of training images (every class then counts alike: for imbalanced data such "
                                 "as X-rays), NAME=W pairs such as 'NORMAL=3,PNEUMONIA=1' (others weigh 1), or "
                                 "none", default="none")
    loss: str = _option("segmentation: the pixel loss, cross-entropy, Dice or both [default: ce+dice]",
                        choices=("ce", "dice", "ce+dice"), default="ce")
    embedding_dim: int = _option("--task embedding: length of the (normalised) embedding vector", default=128)
    metric_loss: str = _option("--task embedding: arcface or cosface (an angular margin over a weight per training "
                               "identity) or triplet (batch-hard mining)", choices=METRIC_LOSSES, default="arcface")
    margin: float | None = _option("--task embedding: the loss's margin [default: 0.5 rad for arcface, 0.35 for "
                                   "cosface, 0.2 for triplet]", default=None)
    scale: float = _option("--task embedding: ArcFace/CosFace logit scale s", default=30.0)
    contrastive: float = _option("--task embedding: weight of the two-view instance term (NT-Xent over a shifted, "
                                 "possibly mirrored second view of each image) added to the margin loss; 0 turns "
                                 "it off", default=1.0)
    embedding_head: str = _option("--task embedding: what the embedding layer reads: the convolution features "
                                  "(features: a classifier's hidden dense layers dropped) or the classifier's "
                                  "last hidden layer (penultimate)", choices=("features", "penultimate"),
                                  default="features")
    verify_far: float = _option("--task embedding: false accept rate at which the verification threshold is chosen "
                                "on the validation pairs and saved with the model", default=0.01)
    seed: int = _option("random seed for splits, initialisation, shuffling and augmentation", default=0)
    device: str = _option("auto, cpu, cuda, cuda:N or mps", default="auto")
    workers: int | None = _option("data-loading processes [default: 0 for data in memory, else up to 4]",
                                  default=None)
    split: str = _option("which split of --data to train on", default="train")
    data_dir: str | None = _option("where named datasets are looked for (also $CNNLAB_DATA)", default=None)
    val_data: str | None = _option("a separate validation set; otherwise --val-fraction of --data", default=None)
    val_fraction: float = _option("fraction of --data held out for validation (stratified, seeded)",
                                  default=0.1)
    image_size: str | None = _option("resize images to N or H,W [default: the data's own size]", default=None)
    fit: str = _option("how images of another shape than --image-size are fitted to it: squash = stretch, "
                       "crop = scale to cover it and cut out the centre, pad = scale to fit inside it and add "
                       "black borders (crop and pad keep the aspect ratio)", choices=FITS, default="squash")
    channels: int | None = _option("1 (grayscale) or 3 (colour) [default: the data's own]", default=None)
    recipe: str | None = _option("a tested set of defaults that flags you give still override: fast = fast-cnn-v2, "
                                 "5 epochs, batch 128, AdamW (beta2 0.99) one-cycle at 0.004 with a 15% warm-up, "
                                 "label smoothing 0.1, flip augmentation and flip test-time augmentation; "
                                 "fast-gpu = the same at batch 512, peak 0.008, 6 epochs (keeps a GPU busy)",
                                 choices=tuple(RECIPES),
                                 default=None)
    tta: str = _option("test-time augmentation when the model evaluates and predicts: flip averages each "
                       "image with its mirror image", choices=TTA_MODES, default="none")
    augment: str = _option("augmentation preset: flip = mirror images, light = small shifts and zoom, "
                           "standard = crops, flips and colour jitter", choices=AUGMENTATIONS, default="none")
    limit: int | None = _option("use a seeded subset of N training images (quick runs)", default=None)
    strict: bool = _option("refuse to train if any image file is unreadable (default: skip and warn)",
                           default=False)
    cache: str = _option("hold decoded images in memory (auto: when they fit in 2 GiB)", choices=CACHES,
                         default="auto")
    max_image_pixels: int = _option("skip (naming them) image files of more pixels than this: decompression "
                                    "bombs, or images too large to decode safely",
                                    default=89_478_485)  # cnnlab.data.images.DEFAULT_MAX_IMAGE_PIXELS
    precision: str = _option("number format for the arithmetic: auto = bf16 mixed precision on CPUs with "
                             "native bfloat16 and on GPUs (fp16 where bf16 is missing), else fp32",
                             choices=PRECISIONS, default="auto")
    channels_last: bool | None = _option("store images as N×H×W×C, the layout fast convolutions prefer "
                                         "[default: on for CPU and CUDA]", default=None)
    compile: bool = _option("torch.compile the model (faster steps after a slow first epoch)", default=False)
    batch_threads: int | str = _option("CPU only: train each batch as N equal parts on N threads, a core each, "
                                       "adding their gradients (auto = one part per core, for networks under "
                                       "1M weights without dropout, on a 2-core CPU, at 64+ images a batch; "
                                       "batch norm then normalises each part by its own images; 1 = off: "
                                       "every operation spread over the cores)",
                                       default="auto")
    patience: int | None = _option("stop early after N epochs without a better validation loss",
                                   default=None)
    weights: str = _option("start from pretrained weights: imagenet (torchvision's, for the zoo models), "
                           "a weights name such as ResNet50_Weights.IMAGENET1K_V2, a cnnlab run folder, "
                           "a .safetensors/.pth file, or none", default="none")
    init_from: str | None = _option("transfer every layer that fits from this run folder or checkpoint "
                                    "(other architectures and classes allowed; a report lists what moved)",
                                    default=None)
    freeze: bool = _option("train only the new head; the pretrained backbone stays as it is", default=False)
    fine_tune: int | None = _option("train the new head alone for N epochs, then the whole network [default: 1 "
                                    "with --weights or --init-from (0 for a 1-epoch or distributed run), "
                                    "unless --freeze]", default=None)
    backbone_lr_factor: float = _option("after --fine-tune N epochs, the backbone learns at this fraction of "
                                        "--lr", default=0.1)
    few_shot: str = _option("a few-shot run (under 8 batches an epoch) from a cnnlab run on other "
                            "classes: auto trains the new head alone (--freeze) with --label-smoothing "
                            "0.2, unless --fine-tune, --freeze or --label-smoothing is given; off keeps "
                            "the other defaults",
                            choices=("auto", "off"), default="auto")
    name: str | None = _option("run folder name [default: <model>-<data>, numbered if taken]", default=None)
    runs_dir: str = _option("folder that holds run folders", default="runs")
    exist_ok: bool = _option("overwrite the run folder if --name already exists", default=False)

    def resolved_lr(self) -> float:
        """The learning rate to train with; `--lr auto` is resolved by `train()` before it asks."""
        if self.lr == "auto":
            raise ValueError("--lr auto is resolved by running the learning-rate finder first")
        if self.lr is not None:
            return float(self.lr)
        return 0.05 if self.optimizer == "sgd" else 0.003

    @property
    def pretrained(self) -> bool:
        """Whether the run starts from weights trained elsewhere."""
        return self.weights != "none" or self.init_from is not None

    @property
    def staged(self) -> bool:
        """Whether part of the network is frozen for some or all of the run."""
        return self.freeze or self.fine_tune is not None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, origin: str = "config") -> "TrainConfig":
        return cls(**coerce_fields(cls, values, origin=origin))

    def validate(self) -> "TrainConfig":
        _require(self.data != "", "--data is required (a dataset name, folder, CSV or IDX file)")
        _require(self.epochs >= 1, f"--epochs must be at least 1 (got {self.epochs})")
        _require(self.batch_size >= 1, f"--batch-size must be at least 1 (got {self.batch_size})")
        self._validate_finite()
        number = isinstance(self.lr, (int, float)) and not isinstance(self.lr, bool)
        _require(self.lr is None or self.lr == "auto" or (number and self.lr > 0),
                 f"--lr must be a positive number or auto (got {self.lr!r})")
        _require(0.0 <= self.label_smoothing < 1.0, "--label-smoothing must be in [0, 1)")
        self._validate_task_settings()
        _require(0.0 < self.beta2 < 1.0, f"--beta2 must be between 0 and 1, e.g. 0.99 (got {self.beta2})")
        _require(self.optimizer != "sgd" or self.beta2 == _field("beta2").default,
                 "--beta2 is Adam's setting; with --optimizer sgd set --momentum instead")
        _require(self.warmup is None or 0.0 <= self.warmup < 1.0,
                 f"--warmup is a share of the run's steps, from 0 up to (not including) 1 (got {self.warmup})")
        _require(0.0 < self.val_fraction < 1.0 or self.val_data is not None,
                 f"--val-fraction must be between 0 and 1 (got {self.val_fraction})")
        _require(self.channels in (None, 1, 3), f"--channels must be 1 or 3 (got {self.channels})")
        _require(self.limit is None or self.limit >= 2, f"--limit must be at least 2 (got {self.limit})")
        _require(self.patience is None or self.patience >= 1, "--patience must be at least 1")
        _require(self.workers is None or self.workers >= 0, "--workers must be 0 or more")
        _require(self.batch_threads == "auto" or (isinstance(self.batch_threads, int) and self.batch_threads >= 1),
                 f"--batch-threads must be auto or a whole number of at least 1 (got {self.batch_threads!r})")
        self._validate_transfer()
        if self.image_size is not None:
            parse_image_size(self.image_size)
        _require(self.recipe is None or self.recipe in RECIPES,
                 f"--recipe must be one of {', '.join(RECIPES)} (got {self.recipe!r})")
        for name in ("optimizer", "schedule", "augment", "task", "cache", "precision", "tta", "fit"):
            # The task registry as it is now (a task registered after this module was imported counts).
            choices = task_names() if name == "task" else _field(name).metadata["choices"]
            _require(getattr(self, name) in choices,
                     f"--{name.replace('_', '-')} must be one of {', '.join(choices)} "
                     f"(got {getattr(self, name)!r})")
        return self


    def _validate_finite(self) -> None:
        """inf and nan parse as floats, and no setting means anything with them: `--lr inf` turns every
        weight into nan at the first step, which would then train on silently."""
        for setting in fields(self):
            value = getattr(self, setting.name)
            if isinstance(value, float) and not math.isfinite(value):
                example = {"lr": " such as 0.003, or auto"}.get(setting.name, "")
                raise ConfigError(f"--{setting.name.replace('_', '-')} must be a finite number{example} "
                                  f"(got {value})")

    def _validate_task_settings(self) -> None:
        """Settings only some tasks read (label smoothing, class weights) are refused for the others,
        naming the task, rather than accepted and ignored."""
        from cnnlab.tasks import task_class

        if self.class_weights.strip() not in ("none", "balanced"):
            parse_class_weights(self.class_weights)
        reads = task_class(self.task).settings
        for name, (default, what) in TASK_SETTINGS.items():
            _require(getattr(self, name) == default or name in reads,
                     f"--{name.replace('_', '-')} {what}; --task {self.task} does not use it: leave it out")

    def _validate_transfer(self) -> None:
        _require(self.weights != "",
                 "--weights must be imagenet, a weights name, a run folder, a file or none")
        _require(self.weights == "none" or self.init_from is None,
                 "--weights and --init-from both say where the starting weights come from: pass one of them")
        _require(not (self.freeze and self.fine_tune is not None),
                 "--freeze trains only the head for the whole run and --fine-tune N unfreezes the backbone "
                 "after N epochs: pass one of them")
        _require(not self.staged or self.pretrained,
                 f"--{'freeze' if self.freeze else 'fine-tune'} keeps pretrained layers fixed, but the model "
                 f"starts from random weights: add --weights imagenet (or a run folder), or --init-from RUN")
        if self.fine_tune is not None:
            _require(0 <= self.fine_tune < self.epochs,
                     f"--fine-tune N trains the head alone for N epochs and then the whole network, so N "
                     f"must be at least 0 and less than --epochs {self.epochs} (got {self.fine_tune}); "
                     f"--freeze trains the head alone throughout")
        _require(self.backbone_lr_factor > 0,
                 f"--backbone-lr-factor must be positive, e.g. 0.1 (got {self.backbone_lr_factor})")


def _field(name: str) -> dataclasses.Field:
    return next(f for f in fields(TrainConfig) if f.name == name)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def parse_image_size(text: str | int | tuple[int, int] | None) -> tuple[int, int] | None:
    """'28' -> (28, 28); '32,48' -> (32, 48) as (height, width)."""
    if text is None or isinstance(text, tuple):
        return text
    parts = [p for p in str(text).replace("x", ",").split(",") if p.strip()]
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        sizes = []
    if len(sizes) not in (1, 2) or min(sizes, default=0) < 1:
        raise ConfigError(f"--image-size must be N or H,W with positive integers (got {text!r})")
    return (sizes[0], sizes[-1])


def parse_class_weights(spec: str) -> dict[str, float]:
    """"NORMAL=3,PNEUMONIA=1" -> {"NORMAL": 3.0, "PNEUMONIA": 1.0}; a ConfigError says what is wrong."""
    example = "none, balanced, or NAME=WEIGHT pairs such as cats=1,dogs=2.5"
    weights: dict[str, float] = {}
    for pair in spec.split(","):
        name, equals, value = pair.strip().rpartition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = float("nan")
        if not equals or not name.strip() or not weight >= 0 or weight == float("inf"):
            raise ConfigError(f"--class-weights must be {example}, with weights of 0 or more (got {spec!r})")
        weights[name.strip()] = weight
    if not any(weights.values()):
        raise ConfigError(f"--class-weights {spec}: at least one weight must be above 0")
    return weights


def coerce_fields(cls: type, values: dict[str, Any], *, origin: str) -> dict[str, Any]:
    """Check keys against the dataclass fields and convert YAML scalars to the declared types."""
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    result: dict[str, Any] = {}
    for raw_key, value in values.items():
        key = str(raw_key).replace("-", "_")
        if key not in known:
            import difflib

            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{origin}: unknown field {raw_key!r}{hint}")
        result[key] = _coerce(value, hints[key], f"{origin}: field {raw_key!r}")
    return result


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """The value as the first declared type that takes it (`float | str`: 0.01 → 0.01, "auto" stays)."""
    if value is None:
        return None
    declared = [t for t in get_args(hint) if t is not type(None)] or [hint]
    if declared[0] is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false (got {value!r})")
    for target in declared:
        try:
            if isinstance(value, bool):
                raise TypeError("a boolean is not a number or a name")
            return {int: _integer, float: float, str: str}[target](value)
        except (TypeError, ValueError):
            continue
    raise ConfigError(f"{where} must be {' or '.join(t.__name__ for t in declared)} (got {value!r})")


def _integer(value: Any) -> int:
    number = float(value)
    if not number.is_integer():
        raise ValueError(value)
    return int(number)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a plain dict (keys are validated by `TrainConfig.from_dict`)."""
    import yaml

    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping of field: value (got {type(values).__name__})")
    return values


def save_config(config: TrainConfig, path: Path) -> None:
    import yaml

    from cnnlab.io import write_text_atomic

    write_text_atomic(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


def with_recipe(config: TrainConfig, explicit: set[str]) -> TrainConfig:
    """`config` with its task's defaults (a detector's model) and then its recipe's values, for every
    field the user did not set explicitly."""
    from cnnlab.tasks import task_class

    config = _with_task_defaults(config, explicit)
    if config.recipe is None:
        return _with_pretrained_defaults(config, explicit)
    if config.recipe not in RECIPES:
        raise ConfigError(f"--recipe must be one of {', '.join(RECIPES)} (got {config.recipe!r})")
    chosen = {k: v for k, v in RECIPES[config.recipe].items() if k not in explicit}
    reads = task_class(config.task).settings
    for name in TASK_SETTINGS:
        if name not in reads:
            chosen.pop(name, None)  # e.g. the recipe's label smoothing, for classes; a regression run has none
    return _with_pretrained_defaults(dataclasses.replace(config, **chosen), explicit | set(chosen))


def _with_pretrained_defaults(config: TrainConfig, explicit: set[str]) -> TrainConfig:
    """A run from pretrained weights (--weights, --init-from) trains its new head alone for an epoch,
    then the whole network with the backbone at a tenth of the rate, at the rate the range test finds
    for the head (`--lr auto`) — for every one of these the user (or the recipe) did not set.

    Why: the new head starts at zero and needs a rate several times the default 0.003 (the range test
    picks 0.03–0.04 for guide-cnn's), while the pretrained backbone needs a gentle one; at the default
    rate with no stages a transferred model gained little or lost against training from scratch.
    Measured over seeds on both the bf16 and the fp32 code paths: docs/transfer-learning.md, section 6
    (benchmarks/transfer_learning.py). A few-shot run (under 8 batches an epoch: known once the data
    is loaded) also gets `--lr auto` without a range test (train/lr_find.rate_without_sweep), and from
    a cnnlab run on other classes a fresh start for the dense layers before the classifier and, with
    `--few-shot auto`, the head alone at --label-smoothing 0.2 (train/pretrained.few_shot_config)."""
    if not config.pretrained:
        return config
    chosen: dict[str, Any] = {}
    if "lr" not in explicit:
        chosen["lr"] = "auto"
    if not ({"fine_tune", "freeze"} & explicit) and not config.freeze:
        # --fine-tune N must leave the whole network an epoch; DistributedDataParallel cannot follow a
        # backbone unfrozen mid-run: both then train everything from the first step, the backbone slower.
        chosen["fine_tune"] = 1 if config.epochs >= 2 and not _distributed_launch() else 0
    if "few_shot" not in explicit and {"fine_tune", "freeze", "label_smoothing"} & explicit:
        chosen["few_shot"] = "off"  # the user chose the stages or the smoothing: the few-shot rule keeps out
    return dataclasses.replace(config, **chosen)


def _distributed_launch() -> bool:
    """Whether this process is one of several that torchrun started (cnnlab.train.distributed)."""
    import os

    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _with_task_defaults(config: TrainConfig, explicit: set[str]) -> TrainConfig:
    from cnnlab.tasks import task_class

    defaults = {k: v for k, v in task_class(config.task).defaults.items() if k not in explicit}
    if "optimizer" in explicit and "optimizer" not in task_class(config.task).defaults:
        # The task's rate was tuned for the default optimiser; another one keeps its own default rate.
        defaults.pop("lr", None)
    return dataclasses.replace(config, **defaults) if defaults else config
